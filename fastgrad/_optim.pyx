"""Cython bindings of csrc/optim.c: the optimizer updates, one C pass per parameter buffer.

The `def` functions are what fastgrad/optim.py calls from `Optimizer.step()`: they check their
buffers once (ndarray, float32/float64, one dtype, one size, C-contiguous, aligned, native byte
order, writeable where written, no two overlapping) and then run the pass with the GIL released.
The `cdef ... noexcept nogil` functions (declared in _optim.pxd, which says how to call them from
an optimizer's state) take raw pointers and the group's hyperparameters, compute the scalars the
pass needs in double exactly as optim.py's NumPy code did, and round each once to the buffer type.
"""
cimport numpy as cnp
from fastgrad._validate cimport check_layout, check_ndarray
from libc.math cimport pow, sqrt
from libc.stdint cimport uintptr_t

cnp.import_array()

cdef extern from "optim.h" nogil:
    void fg_sgd_f32(float *w, const float *dw, Py_ssize_t n, float lr, float weight_decay)
    void fg_sgd_f64(double *w, const double *dw, Py_ssize_t n, double lr, double weight_decay)
    void fg_sgd_momentum_f32(float *w, const float *dw, float *v, Py_ssize_t n, float lr,
                             float momentum, float weight_decay)
    void fg_sgd_momentum_f64(double *w, const double *dw, double *v, Py_ssize_t n, double lr,
                             double momentum, double weight_decay)
    void fg_rmsprop_f32(float *w, const float *dw, float *c, Py_ssize_t n, float lr, float decay,
                        float one_minus_decay, float eps, float weight_decay)
    void fg_rmsprop_f64(double *w, const double *dw, double *c, Py_ssize_t n, double lr,
                        double decay, double one_minus_decay, double eps, double weight_decay)
    void fg_adam_f32(float *w, const float *dw, float *m, float *v, Py_ssize_t n, float step_size,
                     float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                     float bias_sqrt2, float eps, float weight_decay)
    void fg_adam_f64(double *w, const double *dw, double *m, double *v, Py_ssize_t n,
                     double step_size, double beta1, double one_minus_beta1, double beta2,
                     double one_minus_beta2, double bias_sqrt2, double eps, double weight_decay)
    void fg_adamw_f32(float *w, const float *dw, float *m, float *v, Py_ssize_t n,
                      float step_size, float beta1, float one_minus_beta1, float beta2,
                      float one_minus_beta2, float bias_sqrt2, float eps, float weight_decay,
                      float w_scale)
    void fg_adamw_f64(double *w, const double *dw, double *m, double *v, Py_ssize_t n,
                      double step_size, double beta1, double one_minus_beta1, double beta2,
                      double one_minus_beta2, double bias_sqrt2, double eps, double weight_decay,
                      double w_scale)


# ------------------------------------------------------------------------------------------------
# the C-level entry points (_optim.pxd). The scalar expressions are optim.py's, in double (this
# module is compiled with -ffp-contract=off, so none of them is fused either); <float> rounds to
# nearest, as NumPy rounds a Python float that meets a float32 array. `beta**t` in Python is
# C pow(beta, double(t)).

cdef void sgd_update(floating *w, const floating *dw, Py_ssize_t n, double lr,
                     double weight_decay) noexcept nogil:
    if floating is float:
        fg_sgd_f32(w, dw, n, <float>lr, <float>weight_decay)
    else:
        fg_sgd_f64(w, dw, n, lr, weight_decay)


cdef void sgd_momentum_update(floating *w, const floating *dw, floating *v, Py_ssize_t n,
                              double lr, double momentum, double weight_decay) noexcept nogil:
    if floating is float:
        fg_sgd_momentum_f32(w, dw, v, n, <float>lr, <float>momentum, <float>weight_decay)
    else:
        fg_sgd_momentum_f64(w, dw, v, n, lr, momentum, weight_decay)


cdef void rmsprop_update(floating *w, const floating *dw, floating *c, Py_ssize_t n, double lr,
                         double decay, double eps, double weight_decay) noexcept nogil:
    cdef floating lr_ = <floating>lr, decay_ = <floating>decay, rest = <floating>(1.0 - decay)
    cdef floating eps_ = <floating>eps, wd = <floating>weight_decay
    if floating is float:
        fg_rmsprop_f32(w, dw, c, n, lr_, decay_, rest, eps_, wd)
    else:
        fg_rmsprop_f64(w, dw, c, n, lr_, decay_, rest, eps_, wd)


cdef void adam_update(floating *w, const floating *dw, floating *m, floating *v, Py_ssize_t n,
                      double lr, double beta1, double beta2, double eps, double weight_decay,
                      Py_ssize_t t) noexcept nogil:
    _adam(False, w, dw, m, v, n, lr, beta1, beta2, eps, weight_decay, t)


cdef void adamw_update(floating *w, const floating *dw, floating *m, floating *v, Py_ssize_t n,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       Py_ssize_t t) noexcept nogil:
    _adam(True, w, dw, m, v, n, lr, beta1, beta2, eps, weight_decay, t)


cdef inline void _adam(bint decoupled, floating *w, const floating *dw, floating *m, floating *v,
                       Py_ssize_t n, double lr, double beta1, double beta2, double eps,
                       double weight_decay, Py_ssize_t t) noexcept nogil:
    cdef double step_size = lr / (1.0 - pow(beta1, <double>t))
    cdef double bias_sqrt2 = sqrt(1.0 - pow(beta2, <double>t))
    cdef floating s = <floating>step_size, b1 = <floating>beta1, r1 = <floating>(1.0 - beta1)
    cdef floating b2 = <floating>beta2, r2 = <floating>(1.0 - beta2), bs = <floating>bias_sqrt2
    cdef floating e = <floating>eps, wd = <floating>weight_decay
    cdef floating keep = <floating>(1.0 - lr * weight_decay)
    if floating is float:
        if decoupled:
            fg_adamw_f32(w, dw, m, v, n, s, b1, r1, b2, r2, bs, e, wd, keep)
        else:
            fg_adam_f32(w, dw, m, v, n, s, b1, r1, b2, r2, bs, e, wd)
    else:
        if decoupled:
            fg_adamw_f64(w, dw, m, v, n, s, b1, r1, b2, r2, bs, e, wd, keep)
        else:
            fg_adam_f64(w, dw, m, v, n, s, b1, r1, b2, r2, bs, e, wd)


# ------------------------------------------------------------------------------------------------
# validation, with the GIL, before any pass runs

cdef inline void *_data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _check_one(object a, str op, str arg, int t, object w, bint write) except -1:
    """Raise unless `a` is a buffer the pass may read (and write, if `write`) as n elements of
    type t (t < 0: float32 or float64, which is returned), n = w.size."""
    check_ndarray(a, op, arg)
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int ta = cnp.PyArray_TYPE(arr)
    if t < 0:
        if ta != cnp.NPY_FLOAT32 and ta != cnp.NPY_FLOAT64:
            raise TypeError(f"{op}: {arg} must be float32 or float64, got {arr.dtype}")
    elif ta != t:
        raise TypeError(f"{op}: {arg} is {arr.dtype} but the parameter is {w.dtype}")
    check_layout(arr, op, arg)
    if write and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{op}: {arg} is read-only; the update writes it in place")
    if t >= 0 and cnp.PyArray_SIZE(arr) != cnp.PyArray_SIZE(<cnp.ndarray>w):
        raise ValueError(f"{op}: {arg} has shape {a.shape} but the parameter has shape {w.shape}")
    return ta


cdef int _check_buffers(str op, tuple names, tuple arrays) except -1:
    """Check arrays[0] (the parameter, written), arrays[1] (its gradient, read) and the state
    buffers after them (written); return the dtype's type number. The pass reads and writes
    element i of each at once, so no two may share memory (not even the same buffer twice)."""
    cdef Py_ssize_t k, j, count = len(arrays)
    cdef object w = arrays[0]
    cdef int t = _check_one(w, op, names[0], -1, w, True)
    for k in range(1, count):
        _check_one(arrays[k], op, names[k], t, w, k != 1)
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(<cnp.ndarray>w)
    cdef uintptr_t a0, b0
    if nbytes == 0:
        return t
    for k in range(count):
        a0 = <uintptr_t>_data(arrays[k])
        for j in range(k + 1, count):
            b0 = <uintptr_t>_data(arrays[j])
            if a0 < b0 + <uintptr_t>nbytes and b0 < a0 + <uintptr_t>nbytes:
                raise ValueError(f"{op}: {names[k]} and {names[j]} share memory; each needs its own buffer")
    return t


def check_buffers(w, dw, *state, str op="update"):
    """Raise (TypeError / ValueError naming the buffer) unless w, dw and the state buffers are
    what the C-level entry points of _optim.pxd need; return "f32" or "f64"."""
    names = ("the parameter", "its gradient") + tuple(f"state buffer {k}" for k in range(len(state)))
    cdef int t = _check_buffers(op, names, (w, dw) + state)
    return "f32" if t == cnp.NPY_FLOAT32 else "f64"


cdef int _check_step(Py_ssize_t t, str op) except -1:
    if t < 1:
        raise ValueError(f"{op}: the step count must be >= 1 (it is incremented before the update), got {t}")
    return 0


# ------------------------------------------------------------------------------------------------
# the bindings optim.py calls (arrays in place; nothing returned)

def sgd(w, dw, double lr, double weight_decay=0.0):
    """w -= lr * g, g = dw + weight_decay * w (in place; weight_decay 0: g = dw)."""
    cdef int t = _check_buffers("SGD", ("the parameter", "its gradient"), (w, dw))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>w)
    cdef void *pw = _data(w)
    cdef void *pd = _data(dw)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            sgd_update(<float *>pw, <const float *>pd, n, lr, weight_decay)
        else:
            sgd_update(<double *>pw, <const double *>pd, n, lr, weight_decay)


def sgd_momentum(w, dw, v, double lr, double momentum, double weight_decay=0.0):
    """v = momentum v + g; w -= lr v (in place)."""
    cdef int t = _check_buffers("SGD", ("the parameter", "its gradient", "the momentum buffer"),
                                (w, dw, v))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>w)
    cdef void *pw = _data(w)
    cdef void *pd = _data(dw)
    cdef void *pv = _data(v)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            sgd_momentum_update(<float *>pw, <const float *>pd, <float *>pv, n, lr, momentum,
                                weight_decay)
        else:
            sgd_momentum_update(<double *>pw, <const double *>pd, <double *>pv, n, lr, momentum,
                                weight_decay)


def rmsprop(w, dw, c, double lr, double decay, double eps, double weight_decay=0.0):
    """c = decay c + (1 - decay) g**2; w -= lr g / (sqrt(c) + eps) (in place)."""
    cdef int t = _check_buffers("RMSProp", ("the parameter", "its gradient", "square_avg"),
                                (w, dw, c))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>w)
    cdef void *pw = _data(w)
    cdef void *pd = _data(dw)
    cdef void *pc = _data(c)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            rmsprop_update(<float *>pw, <const float *>pd, <float *>pc, n, lr, decay, eps,
                           weight_decay)
        else:
            rmsprop_update(<double *>pw, <const double *>pd, <double *>pc, n, lr, decay, eps,
                           weight_decay)


def adam(w, dw, m, v, double lr, double beta1, double beta2, double eps, double weight_decay,
         Py_ssize_t t):
    """One Adam step at step count t >= 1 (L2 decay coupled into g), in place."""
    _adam_binding(False, "Adam", w, dw, m, v, lr, beta1, beta2, eps, weight_decay, t)


def adamw(w, dw, m, v, double lr, double beta1, double beta2, double eps, double weight_decay,
          Py_ssize_t t):
    """One AdamW step at step count t >= 1 (w *= 1 - lr weight_decay first), in place."""
    _adam_binding(True, "AdamW", w, dw, m, v, lr, beta1, beta2, eps, weight_decay, t)


cdef int _adam_binding(bint decoupled, str op, object w, object dw, object m, object v, double lr,
                       double beta1, double beta2, double eps, double weight_decay,
                       Py_ssize_t t) except -1:
    _check_step(t, op)
    cdef int dt = _check_buffers(op, ("the parameter", "its gradient", "exp_avg", "exp_avg_sq"),
                                 (w, dw, m, v))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>w)
    cdef void *pw = _data(w)
    cdef void *pd = _data(dw)
    cdef void *pm = _data(m)
    cdef void *pv = _data(v)
    with nogil:
        if dt == cnp.NPY_FLOAT32:
            _adam(decoupled, <float *>pw, <const float *>pd, <float *>pm, <float *>pv, n, lr, beta1,
                  beta2, eps, weight_decay, t)
        else:
            _adam(decoupled, <double *>pw, <const double *>pd, <double *>pm, <double *>pv, n, lr,
                  beta1, beta2, eps, weight_decay, t)
    return 0
