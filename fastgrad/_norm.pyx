"""Cython bindings of csrc/norm.c: batch norm and layer norm.

Like _kernels: every argument is checked here (ndarray, float32/float64, one dtype, C-contiguous,
shapes) and outputs are allocated before the C kernel runs with the GIL released. Kept apart from
_kernels.pyx so that the layers' bindings and the activations' can change independently.
"""
cimport numpy as cnp
from fastgrad._validate cimport check_float
import numpy as np

cnp.import_array()

cdef extern from "norm.h" nogil:
    void fg_batchnorm_forward_f32(const float *x, const float *gamma, const float *beta,
                                  Py_ssize_t n, Py_ssize_t d, double eps, float *y, float *mean,
                                  float *invstd, float *rm, float *rv, double momentum,
                                  double *acc)
    void fg_batchnorm_forward_f64(const double *x, const double *gamma, const double *beta,
                                  Py_ssize_t n, Py_ssize_t d, double eps, double *y, double *mean,
                                  double *invstd, double *rm, double *rv, double momentum,
                                  double *acc)
    void fg_batchnorm_backward_f32(const float *dy, const float *x, const float *mean,
                                   const float *invstd, const float *gamma, Py_ssize_t n,
                                   Py_ssize_t d, float *dx, float *dgamma, float *dbeta,
                                   double *acc)
    void fg_batchnorm_backward_f64(const double *dy, const double *x, const double *mean,
                                   const double *invstd, const double *gamma, Py_ssize_t n,
                                   Py_ssize_t d, double *dx, double *dgamma, double *dbeta,
                                   double *acc)
    void fg_layernorm_forward_f32(const float *x, const float *gamma, const float *beta,
                                  Py_ssize_t n, Py_ssize_t d, double eps, float *y, float *mean,
                                  float *invstd)
    void fg_layernorm_forward_f64(const double *x, const double *gamma, const double *beta,
                                  Py_ssize_t n, Py_ssize_t d, double eps, double *y,
                                  double *mean, double *invstd)
    void fg_layernorm_backward_f32(const float *dy, const float *x, const float *mean,
                                   const float *invstd, const float *gamma, Py_ssize_t n,
                                   Py_ssize_t d, float *dx, float *dgamma, float *dbeta,
                                   double *acc)
    void fg_layernorm_backward_f64(const double *dy, const double *x, const double *mean,
                                   const double *invstd, const double *gamma, Py_ssize_t n,
                                   Py_ssize_t d, double *dx, double *dgamma, double *dbeta,
                                   double *acc)


cdef inline void *_data(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef int _check(object a, str op, str arg, int t=-1, tuple shape=None) except -1:
    """Raise unless `a` is a valid kernel buffer (fastgrad/_validate.pxd), of type t and `shape`
    if given."""
    cdef int ta = check_float(a, op, arg)
    if t >= 0 and ta != t:
        want = "float32" if t == cnp.NPY_FLOAT32 else "float64"
        raise TypeError(f"{op}: {arg} is {a.dtype} but the input is {want}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{op}: {arg} has shape {a.shape}, expected {shape}")
    return ta


cdef tuple _check_2d(object x, str op):
    cdef int t = _check(x, op, "x")
    if x.ndim != 2:
        raise ValueError(f"{op}: x must be 2-D (N, D), got shape {x.shape}")
    return t, x.shape[0], x.shape[1]


def batchnorm_forward(x, gamma, beta, double eps, running_mean=None, running_var=None,
                      double momentum=0.1):
    """(y, mean, invstd) of batch norm over the rows of x (N, D) with gamma, beta (D,).

    When running_mean and running_var (D,) are given they are updated in place with the batch
    mean and the unbiased batch variance (needs N >= 2).
    """
    cdef int t
    cdef Py_ssize_t n, d
    t, n, d = _check_2d(x, "batchnorm")
    _check(gamma, "batchnorm", "gamma", t, (d,))
    _check(beta, "batchnorm", "beta", t, (d,))
    if n < 1:
        raise ValueError(f"batchnorm: empty batch (x shape {x.shape}); the batch statistics are undefined")
    if not eps > 0:
        raise ValueError(f"batchnorm: eps must be > 0, got {eps}")
    cdef void *prm = NULL
    cdef void *prv = NULL
    if (running_mean is None) != (running_var is None):
        raise ValueError("batchnorm: give both running_mean and running_var, or neither")
    if running_mean is not None:
        _check(running_mean, "batchnorm", "running_mean", t, (d,))
        _check(running_var, "batchnorm", "running_var", t, (d,))
        if not running_mean.flags.writeable or not running_var.flags.writeable:
            raise ValueError("batchnorm: the running statistics must be writeable")
        if n < 2:
            raise ValueError(
                f"batchnorm: expected more than 1 value per feature when training, got x of shape {x.shape}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"batchnorm: momentum must be in [0, 1], got {momentum}")
        prm = _data(<cnp.ndarray>running_mean)
        prv = _data(<cnp.ndarray>running_var)
    cdef cnp.ndarray y = np.empty((n, d), dtype=x.dtype)
    cdef cnp.ndarray mean = np.empty(d, dtype=x.dtype)
    cdef cnp.ndarray invstd = np.empty(d, dtype=x.dtype)
    cdef cnp.ndarray acc = np.empty(d, dtype=np.float64)
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *pg = _data(<cnp.ndarray>gamma)
    cdef void *pb = _data(<cnp.ndarray>beta)
    cdef void *py = _data(y)
    cdef void *pm = _data(mean)
    cdef void *pi = _data(invstd)
    cdef double *pacc = <double *>_data(acc)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            batchnorm_forward_into(<const float *>px, <const float *>pg, <const float *>pb, n, d,
                                   eps, <float *>py, <float *>pm, <float *>pi, <float *>prm,
                                   <float *>prv, momentum, pacc)
        else:
            batchnorm_forward_into(<const double *>px, <const double *>pg, <const double *>pb, n,
                                   d, eps, <double *>py, <double *>pm, <double *>pi,
                                   <double *>prm, <double *>prv, momentum, pacc)
    return y, mean, invstd


cdef tuple _norm_backward(object dy, object x, object mean, object invstd, object gamma,
                          bint needs_x, bint batch):
    cdef str op = "batchnorm_backward" if batch else "layernorm_backward"
    cdef int t
    cdef Py_ssize_t n, d
    t, n, d = _check_2d(x, op)
    _check(dy, op, "dy", t, (n, d))
    _check(mean, op, "mean", t, ((d,) if batch else (n,)))
    _check(invstd, op, "invstd", t, ((d,) if batch else (n,)))
    _check(gamma, op, "gamma", t, (d,))
    cdef cnp.ndarray dx = np.empty((n, d), dtype=x.dtype) if needs_x else None
    cdef cnp.ndarray dgamma = np.empty(d, dtype=x.dtype)
    cdef cnp.ndarray dbeta = np.empty(d, dtype=x.dtype)
    cdef cnp.ndarray acc = np.empty(2 * d, dtype=np.float64)
    cdef void *pdy = _data(<cnp.ndarray>dy)
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *pm = _data(<cnp.ndarray>mean)
    cdef void *pi = _data(<cnp.ndarray>invstd)
    cdef void *pg = _data(<cnp.ndarray>gamma)
    cdef void *pdx = _data(dx) if needs_x else NULL
    cdef void *pdg = _data(dgamma)
    cdef void *pdb = _data(dbeta)
    cdef double *pacc = <double *>_data(acc)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            norm_backward_into(batch, <const float *>pdy, <const float *>px, <const float *>pm,
                               <const float *>pi, <const float *>pg, n, d, <float *>pdx,
                               <float *>pdg, <float *>pdb, pacc)
        else:
            norm_backward_into(batch, <const double *>pdy, <const double *>px, <const double *>pm,
                               <const double *>pi, <const double *>pg, n, d, <double *>pdx,
                               <double *>pdg, <double *>pdb, pacc)
    return dx, dgamma, dbeta


def batchnorm_backward(dy, x, mean, invstd, gamma, bint needs_x=True):
    """(dx or None, dgamma, dbeta) of batch norm, recomputing xhat from x, mean and invstd."""
    return _norm_backward(dy, x, mean, invstd, gamma, needs_x, True)


def layernorm_forward(x, gamma, beta, double eps):
    """(y, mean, invstd) of layer norm over the columns of each row of x (N, D); gamma, beta (D,)."""
    cdef int t
    cdef Py_ssize_t n, d
    t, n, d = _check_2d(x, "layernorm")
    _check(gamma, "layernorm", "gamma", t, (d,))
    _check(beta, "layernorm", "beta", t, (d,))
    if d < 1:
        raise ValueError(f"layernorm: rows of zero features (x shape {x.shape}) have no statistics")
    if not eps > 0:
        raise ValueError(f"layernorm: eps must be > 0, got {eps}")
    cdef cnp.ndarray y = np.empty((n, d), dtype=x.dtype)
    cdef cnp.ndarray mean = np.empty(n, dtype=x.dtype)
    cdef cnp.ndarray invstd = np.empty(n, dtype=x.dtype)
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *pg = _data(<cnp.ndarray>gamma)
    cdef void *pb = _data(<cnp.ndarray>beta)
    cdef void *py = _data(y)
    cdef void *pm = _data(mean)
    cdef void *pi = _data(invstd)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            layernorm_forward_into(<const float *>px, <const float *>pg, <const float *>pb, n, d,
                                   eps, <float *>py, <float *>pm, <float *>pi)
        else:
            layernorm_forward_into(<const double *>px, <const double *>pg, <const double *>pb, n,
                                   d, eps, <double *>py, <double *>pm, <double *>pi)
    return y, mean, invstd


def layernorm_backward(dy, x, mean, invstd, gamma, bint needs_x=True):
    """(dx or None, dgamma, dbeta) of layer norm, recomputing xhat from x, mean and invstd."""
    return _norm_backward(dy, x, mean, invstd, gamma, needs_x, False)


# --- the entry points of _norm.pxd: one function over `floating` each ------------------------

cdef void layernorm_forward_into(const floating *x, const floating *gamma, const floating *beta,
                                 Py_ssize_t n, Py_ssize_t d, double eps, floating *y,
                                 floating *mean, floating *invstd) noexcept nogil:
    if floating is float:
        fg_layernorm_forward_f32(x, gamma, beta, n, d, eps, y, mean, invstd)
    else:
        fg_layernorm_forward_f64(x, gamma, beta, n, d, eps, y, mean, invstd)


cdef void batchnorm_forward_into(const floating *x, const floating *gamma, const floating *beta,
                                 Py_ssize_t n, Py_ssize_t d, double eps, floating *y,
                                 floating *mean, floating *invstd, floating *rm, floating *rv,
                                 double momentum, double *acc) noexcept nogil:
    if floating is float:
        fg_batchnorm_forward_f32(x, gamma, beta, n, d, eps, y, mean, invstd, rm, rv, momentum, acc)
    else:
        fg_batchnorm_forward_f64(x, gamma, beta, n, d, eps, y, mean, invstd, rm, rv, momentum, acc)


cdef void norm_backward_into(bint batch, const floating *dy, const floating *x,
                             const floating *mean, const floating *invstd, const floating *gamma,
                             Py_ssize_t n, Py_ssize_t d, floating *dx, floating *dgamma,
                             floating *dbeta, double *acc) noexcept nogil:
    if floating is float:
        if batch:
            fg_batchnorm_backward_f32(dy, x, mean, invstd, gamma, n, d, dx, dgamma, dbeta, acc)
        else:
            fg_layernorm_backward_f32(dy, x, mean, invstd, gamma, n, d, dx, dgamma, dbeta, acc)
    else:
        if batch:
            fg_batchnorm_backward_f64(dy, x, mean, invstd, gamma, n, d, dx, dgamma, dbeta, acc)
        else:
            fg_layernorm_backward_f64(dy, x, mean, invstd, gamma, n, d, dx, dgamma, dbeta, acc)
