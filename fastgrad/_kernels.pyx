"""Cython bindings of the C kernels in csrc/.

Each binding validates its arguments (ndarray, dtype float32/float64, C-contiguous, aligned, native
byte order, matching shapes, sizes that fit a Py_ssize_t, index and label ranges), allocates the
outputs, and only then calls the C kernel with the GIL released: no C kernel ever sees a buffer it
could read or write out of bounds. Nothing here is differentiable: the op table in ops.py decides
what is computed and what is saved.
"""
cimport numpy as cnp
from fastgrad._validate cimport check_float as _check, check_layout as _check_layout, check_ndarray
from libc.string cimport memset
from cpython.pyport cimport PY_SSIZE_T_MAX
import numpy as np

cnp.import_array()

cdef extern from "common.h" nogil:
    void fg_set_num_threads(int n)
    int fg_get_num_threads()
    int fg_default_num_threads()
    int fg_openmp_enabled()
    Py_ssize_t fg_first_out_of_range(const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t stop)
    enum: FG_OMP_MIN_CHEAP
    enum: FG_OMP_MIN_EXP

cdef extern from "elementwise.h" nogil:
    void fg_relu_forward_f32(const float *x, float *y, Py_ssize_t n)
    void fg_relu_forward_f64(const double *x, double *y, Py_ssize_t n)
    void fg_relu_backward_f32(const float *dy, const float *y, float *dx, Py_ssize_t n)
    void fg_relu_backward_f64(const double *dy, const double *y, double *dx, Py_ssize_t n)
    void fg_leaky_relu_forward_f32(const float *x, float *y, Py_ssize_t n, float slope)
    void fg_leaky_relu_forward_f64(const double *x, double *y, Py_ssize_t n, double slope)
    void fg_leaky_relu_backward_f32(const float *dy, const float *x, float *dx, Py_ssize_t n,
                                    float slope)
    void fg_leaky_relu_backward_f64(const double *dy, const double *x, double *dx, Py_ssize_t n,
                                    double slope)
    void fg_elu_forward_f32(const float *x, float *y, Py_ssize_t n, float alpha)
    void fg_elu_forward_f64(const double *x, double *y, Py_ssize_t n, double alpha)
    void fg_elu_backward_f32(const float *dy, const float *x, float *dx, Py_ssize_t n,
                             float alpha)
    void fg_elu_backward_f64(const double *dy, const double *x, double *dx, Py_ssize_t n,
                             double alpha)
    void fg_sigmoid_forward_f32(const float *x, float *y, Py_ssize_t n)
    void fg_sigmoid_forward_f64(const double *x, double *y, Py_ssize_t n)
    void fg_sigmoid_backward_f32(const float *dy, const float *y, float *dx, Py_ssize_t n)
    void fg_sigmoid_backward_f64(const double *dy, const double *y, double *dx, Py_ssize_t n)
    void fg_tanh_forward_f32(const float *x, float *y, Py_ssize_t n)
    void fg_tanh_forward_f64(const double *x, double *y, Py_ssize_t n)
    void fg_tanh_backward_f32(const float *dy, const float *y, float *dx, Py_ssize_t n)
    void fg_tanh_backward_f64(const double *dy, const double *y, double *dx, Py_ssize_t n)
    void fg_maximum_forward_f32(const float *a, const float *b, float *y, Py_ssize_t n)
    void fg_maximum_forward_f64(const double *a, const double *b, double *y, Py_ssize_t n)
    void fg_maximum_backward_f32(const float *dy, const float *a, const float *b, float *da,
                                 float *db, Py_ssize_t n)
    void fg_maximum_backward_f64(const double *dy, const double *a, const double *b, double *da,
                                 double *db, Py_ssize_t n)

cdef extern from "routing.h" nogil:
    void fg_max_forward_f32(const float *x, Py_ssize_t o, Py_ssize_t w, Py_ssize_t i, float *y,
                            Py_ssize_t *idx)
    void fg_max_forward_f64(const double *x, Py_ssize_t o, Py_ssize_t w, Py_ssize_t i, double *y,
                            Py_ssize_t *idx)
    void fg_max_backward_f32(const float *dy, const Py_ssize_t *idx, Py_ssize_t o, Py_ssize_t w,
                             Py_ssize_t i, float *dx)
    void fg_max_backward_f64(const double *dy, const Py_ssize_t *idx, Py_ssize_t o, Py_ssize_t w,
                             Py_ssize_t i, double *dx)
    void fg_maxout_forward_f32(const float *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p, float *y,
                               Py_ssize_t *idx)
    void fg_maxout_forward_f64(const double *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p,
                               double *y, Py_ssize_t *idx)
    void fg_maxout_backward_f32(const float *dy, const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t h,
                                Py_ssize_t p, float *dz)
    void fg_maxout_backward_f64(const double *dy, const Py_ssize_t *idx, Py_ssize_t n,
                                Py_ssize_t h, Py_ssize_t p, double *dz)

cdef extern from "losses.h" nogil:
    double fg_softmax_ce_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n,
                             Py_ssize_t c, float *grad, double *loss)
    double fg_softmax_ce_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n,
                             Py_ssize_t c, double *grad, double *loss)
    double fg_svm_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                      float delta, float *grad, double *loss)
    double fg_svm_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                      double delta, double *grad, double *loss)

ctypedef void (*unary_f32)(const float *, float *, Py_ssize_t) noexcept nogil
ctypedef void (*unary_f64)(const double *, double *, Py_ssize_t) noexcept nogil
ctypedef void (*binary_f32)(const float *, const float *, float *, Py_ssize_t) noexcept nogil
ctypedef void (*binary_f64)(const double *, const double *, double *, Py_ssize_t) noexcept nogil
# the same with one scalar parameter (a slope, an alpha) after the size
ctypedef void (*unary_p_f32)(const float *, float *, Py_ssize_t, float) noexcept nogil
ctypedef void (*unary_p_f64)(const double *, double *, Py_ssize_t, double) noexcept nogil
ctypedef void (*binary_p_f32)(const float *, const float *, float *, Py_ssize_t, float) noexcept nogil
ctypedef void (*binary_p_f64)(const double *, const double *, double *, Py_ssize_t,
                              double) noexcept nogil


# ------------------------------------------------------------------------------------------------
# threads

def set_num_threads(int n):
    """Use `n` >= 1 OpenMP threads in the kernels that are large enough to split."""
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    fg_set_num_threads(n)


def get_num_threads():
    """The number of threads the kernels use for large inputs."""
    return fg_get_num_threads()


def default_num_threads():
    """OpenMP's default team size (OMP_NUM_THREADS, else the core count); 1 without OpenMP."""
    return fg_default_num_threads()


def parallel_thresholds():
    """{"cheap": n, "exp": n}: kernels split over threads only when their size exceeds n."""
    return {"cheap": FG_OMP_MIN_CHEAP, "exp": FG_OMP_MIN_EXP}


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP (else they always run on one thread)."""
    return bool(fg_openmp_enabled())


# ------------------------------------------------------------------------------------------------
# validation: everything is checked here, with the GIL, before any kernel runs

cdef cnp.ndarray _empty_like(cnp.ndarray a, int t):
    return cnp.PyArray_EMPTY(a.ndim, a.shape, t, 0)


cdef inline void *_data(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


# _check_layout(a, op, arg) and _check(a, op, arg) -> type number: fastgrad/_validate.pxd


cdef int _check_same(object a, object b, str op, str arg_a, str arg_b) except -1:
    """Raise unless `a` and `b` are valid kernel buffers of one dtype and one shape."""
    cdef int ta = _check(a, op, arg_a)
    cdef int tb = _check(b, op, arg_b)
    if ta != tb:
        raise TypeError(f"{op}: {arg_a} is {a.dtype} but {arg_b} is {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{op}: {arg_a} has shape {a.shape} but {arg_b} has shape {b.shape}")
    return ta


cdef int _check_index(object a, str op, str arg, tuple shape, Py_ssize_t stop) except -1:
    """Raise unless `a` is a C-contiguous intp ndarray of `shape` with values in [0, stop)."""
    check_ndarray(a, op, arg)
    if not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(<cnp.ndarray>a), cnp.NPY_INTP):
        raise TypeError(f"{op}: {arg} must be {np.dtype(np.intp)} (numpy.intp), got {a.dtype}")
    _check_layout(<cnp.ndarray>a, op, arg)
    if a.shape != shape:
        raise ValueError(f"{op}: {arg} has shape {a.shape}, expected {shape}")
    cdef const Py_ssize_t *p = <const Py_ssize_t *>_data(<cnp.ndarray>a)
    cdef Py_ssize_t k = fg_first_out_of_range(p, a.size, stop)
    if k >= 0:
        raise ValueError(f"{op}: {arg} value {p[k]} at position {k} is out of range [0, {stop})")
    return 0


# ------------------------------------------------------------------------------------------------
# elementwise gates

cdef cnp.ndarray _unary(object x, unary_f32 f32, unary_f64 f64, str op):
    cdef int t = _check(x, op, "x")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray y = _empty_like(xa, t)
    cdef Py_ssize_t n = xa.size
    cdef void *px = _data(xa)
    cdef void *py = _data(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>px, <float *>py, n)
        else:
            f64(<const double *>px, <double *>py, n)
    return y


cdef cnp.ndarray _binary(object a, object b, binary_f32 f32, binary_f64 f64, str op, str arg_a,
                         str arg_b):
    cdef int t = _check_same(a, b, op, arg_a, arg_b)
    cdef cnp.ndarray aa = <cnp.ndarray>a
    cdef cnp.ndarray out = _empty_like(aa, t)
    cdef Py_ssize_t n = aa.size
    cdef void *pa = _data(aa)
    cdef void *pb = _data(<cnp.ndarray>b)
    cdef void *po = _data(out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>pa, <const float *>pb, <float *>po, n)
        else:
            f64(<const double *>pa, <const double *>pb, <double *>po, n)
    return out


def relu_forward(x):
    """y = max(x, 0)."""
    return _unary(x, fg_relu_forward_f32, fg_relu_forward_f64, "relu_forward")


def relu_backward(dy, y):
    """dx = dy * [y > 0], from the saved output y."""
    return _binary(dy, y, fg_relu_backward_f32, fg_relu_backward_f64, "relu_backward", "dy", "y")


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), finite for every x."""
    return _unary(x, fg_sigmoid_forward_f32, fg_sigmoid_forward_f64, "sigmoid_forward")


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), from the saved output y."""
    return _binary(dy, y, fg_sigmoid_backward_f32, fg_sigmoid_backward_f64, "sigmoid_backward",
                   "dy", "y")


def tanh_forward(x):
    """y = tanh(x)."""
    return _unary(x, fg_tanh_forward_f32, fg_tanh_forward_f64, "tanh_forward")


def tanh_backward(dy, y):
    """dx = dy * (1 - y**2), from the saved output y."""
    return _binary(dy, y, fg_tanh_backward_f32, fg_tanh_backward_f64, "tanh_backward", "dy", "y")


def maximum_forward(a, b):
    """y = max(a, b) elementwise, a and b of one shape (NaN if either is NaN)."""
    return _binary(a, b, fg_maximum_forward_f32, fg_maximum_forward_f64, "maximum_forward", "a",
                   "b")


def maximum_backward(dy, a, b):
    """(da, db): dy routed to a where a >= b, to b elsewhere."""
    cdef int t = _check_same(dy, a, "maximum_backward", "dy", "a")
    _check_same(dy, b, "maximum_backward", "dy", "b")
    cdef cnp.ndarray da = _empty_like(<cnp.ndarray>dy, t)
    cdef cnp.ndarray db = _empty_like(<cnp.ndarray>dy, t)
    cdef Py_ssize_t n = da.size
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef void *pa = _data(<cnp.ndarray>a)
    cdef void *pb = _data(<cnp.ndarray>b)
    cdef void *pda = _data(da)
    cdef void *pdb = _data(db)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_maximum_backward_f32(<const float *>pg, <const float *>pa, <const float *>pb,
                                    <float *>pda, <float *>pdb, n)
        else:
            fg_maximum_backward_f64(<const double *>pg, <const double *>pa, <const double *>pb,
                                    <double *>pda, <double *>pdb, n)
    return da, db


cdef cnp.ndarray _unary_p(object x, double p, unary_p_f32 f32, unary_p_f64 f64, str op):
    cdef int t = _check(x, op, "x")
    cdef cnp.ndarray y = _empty_like(<cnp.ndarray>x, t)
    cdef Py_ssize_t n = y.size
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *py = _data(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>px, <float *>py, n, <float>p)
        else:
            f64(<const double *>px, <double *>py, n, p)
    return y


cdef cnp.ndarray _binary_p(object dy, object x, double p, binary_p_f32 f32, binary_p_f64 f64,
                           str op):
    cdef int t = _check_same(dy, x, op, "dy", "x")
    cdef cnp.ndarray dx = _empty_like(<cnp.ndarray>dy, t)
    cdef Py_ssize_t n = dx.size
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *pd = _data(dx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>pg, <const float *>px, <float *>pd, n, <float>p)
        else:
            f64(<const double *>pg, <const double *>px, <double *>pd, n, p)
    return dx


def leaky_relu_forward(x, double negative_slope):
    """y = x where x > 0, else negative_slope * x."""
    return _unary_p(x, negative_slope, fg_leaky_relu_forward_f32, fg_leaky_relu_forward_f64,
                    "leaky_relu_forward")


def leaky_relu_backward(dy, x, double negative_slope):
    """dx = dy where x > 0, else negative_slope * dy (the slope at 0 is negative_slope)."""
    return _binary_p(dy, x, negative_slope, fg_leaky_relu_backward_f32,
                     fg_leaky_relu_backward_f64, "leaky_relu_backward")


def elu_forward(x, double alpha):
    """y = x where x > 0, else alpha * (exp(x) - 1)."""
    return _unary_p(x, alpha, fg_elu_forward_f32, fg_elu_forward_f64, "elu_forward")


def elu_backward(dy, x, double alpha):
    """dx = dy where x > 0, else dy * alpha * exp(x), from the input x."""
    return _binary_p(dy, x, alpha, fg_elu_backward_f32, fg_elu_backward_f64, "elu_backward")


# ------------------------------------------------------------------------------------------------
# max routing

cdef tuple _split(tuple shape, Py_ssize_t start, Py_ssize_t stop, str op):
    """(outer, width, inner) of `shape` reduced over its axes [start, stop)."""
    if not 0 <= start < stop <= len(shape):
        raise ValueError(f"{op}: axes [{start}, {stop}) are not a non-empty range of the "
                         f"axes of shape {shape}")
    for n in shape:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{op}: shape {shape} must hold non-negative integers")
    # Python integers: the products cannot wrap around before they are checked
    o = w = i = 1
    for k in range(start):
        o *= int(shape[k])
    for k in range(start, stop):
        w *= int(shape[k])
    for k in range(stop, len(shape)):
        i *= int(shape[k])
    if o * w * i > PY_SSIZE_T_MAX:
        raise ValueError(f"{op}: shape {shape} has more elements than fit a Py_ssize_t")
    if w == 0:
        raise ValueError(f"{op}: cannot reduce over empty axes of shape {shape}")
    return o, w, i


def max_forward(x, Py_ssize_t start, Py_ssize_t stop):
    """Max of x over its consecutive axes [start, stop), and the flat index of the first maximal
    entry within those axes: (y, idx), both of shape x.shape[:start] + x.shape[stop:]."""
    cdef int t = _check(x, "max_forward", "x")
    cdef tuple shape = x.shape
    o, w, i = _split(shape, start, stop, "max_forward")
    cdef Py_ssize_t co = o, cw = w, ci = i
    out_shape = shape[:start] + shape[stop:]
    cdef cnp.ndarray y = np.empty(out_shape, dtype=x.dtype)
    cdef cnp.ndarray idx = np.empty(out_shape, dtype=np.intp)
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *py = _data(y)
    cdef Py_ssize_t *pi = <Py_ssize_t *>_data(idx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_max_forward_f32(<const float *>px, co, cw, ci, <float *>py, pi)
        else:
            fg_max_forward_f64(<const double *>px, co, cw, ci, <double *>py, pi)
    return y, idx


def max_backward(dy, idx, tuple shape, Py_ssize_t start, Py_ssize_t stop):
    """dx of `shape`: dy scattered to the entries idx (from max_forward) names, zeros elsewhere."""
    cdef int t = _check(dy, "max_backward", "dy")
    o, w, i = _split(shape, start, stop, "max_backward")
    cdef Py_ssize_t co = o, cw = w, ci = i
    out_shape = shape[:start] + shape[stop:]
    if dy.shape != out_shape:
        raise ValueError(f"max_backward: dy has shape {dy.shape}, expected {out_shape} for a "
                         f"reduction of {shape} over axes [{start}, {stop})")
    _check_index(idx, "max_backward", "idx", out_shape, cw)
    cdef cnp.ndarray dx = np.zeros(shape, dtype=dy.dtype)  # the kernel only scatters
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef const Py_ssize_t *pi = <const Py_ssize_t *>_data(<cnp.ndarray>idx)
    cdef void *pd = _data(dx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_max_backward_f32(<const float *>pg, pi, co, cw, ci, <float *>pd)
        else:
            fg_max_backward_f64(<const double *>pg, pi, co, cw, ci, <double *>pd)
    return dx


cdef tuple _maxout_shape(tuple zshape, Py_ssize_t pieces, str op):
    if len(zshape) != 2 or pieces < 1 or zshape[1] % pieces:
        raise ValueError(f"{op}: expected z of shape (N, H * pieces) with pieces={pieces}, "
                         f"got {zshape}")
    return (zshape[0], zshape[1] // pieces)


def maxout_forward(z, Py_ssize_t pieces):
    """z (N, H * pieces) -> (y, idx) of shape (N, H): max of each run of `pieces` columns, and
    the position of the first maximal one within its run."""
    cdef int t = _check(z, "maxout_forward", "z")
    cdef tuple out_shape = _maxout_shape(z.shape, pieces, "maxout_forward")
    cdef Py_ssize_t n = out_shape[0], h = out_shape[1]
    cdef cnp.ndarray y = np.empty(out_shape, dtype=z.dtype)
    cdef cnp.ndarray idx = np.empty(out_shape, dtype=np.intp)
    cdef void *pz = _data(<cnp.ndarray>z)
    cdef void *py = _data(y)
    cdef Py_ssize_t *pi = <Py_ssize_t *>_data(idx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_maxout_forward_f32(<const float *>pz, n, h, pieces, <float *>py, pi)
        else:
            fg_maxout_forward_f64(<const double *>pz, n, h, pieces, <double *>py, pi)
    return y, idx


def maxout_backward(dy, idx, Py_ssize_t pieces):
    """dz (N, H * pieces): dy (N, H) routed to the column idx names in each run, zeros elsewhere."""
    cdef int t = _check(dy, "maxout_backward", "dy")
    if dy.ndim != 2 or pieces < 1:
        raise ValueError(f"maxout_backward: expected dy of shape (N, H) and pieces >= 1, got "
                         f"{dy.shape} and pieces={pieces}")
    _check_index(idx, "maxout_backward", "idx", dy.shape, pieces)
    cdef Py_ssize_t n = dy.shape[0], h = dy.shape[1]
    if h and pieces > PY_SSIZE_T_MAX // h or n and h * pieces > PY_SSIZE_T_MAX // n:
        raise ValueError(f"maxout_backward: dy {dy.shape} with pieces={pieces} gives more "
                         "elements than fit a Py_ssize_t")
    cdef cnp.ndarray dz = np.zeros((n, h * pieces), dtype=dy.dtype)  # the kernel only scatters
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef const Py_ssize_t *pi = <const Py_ssize_t *>_data(<cnp.ndarray>idx)
    cdef void *pd = _data(dz)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_maxout_backward_f32(<const float *>pg, pi, n, h, pieces, <float *>pd)
        else:
            fg_maxout_backward_f64(<const double *>pg, pi, n, h, pieces, <double *>pd)
    return dz


# ------------------------------------------------------------------------------------------------
# losses

cdef int _check_scores(object scores, object labels, str op) except -1:
    """scores (N, C) with N, C >= 1; labels N intp values in [0, C). Returns the scores' type."""
    cdef int t = _check(scores, op, "scores")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{op}: scores must be (N, C) with N, C >= 1, got shape {scores.shape}")
    _check_index(labels, op, "labels", (scores.shape[0],), scores.shape[1])
    return t


def softmax_cross_entropy(scores, labels, bint want_grad=True):
    """(loss, grad): the mean cross-entropy of softmax(scores) (N, C) against labels (N,), and its
    gradient (softmax(scores) - onehot(labels)) / N (None unless want_grad)."""
    cdef int t = _check_scores(scores, labels, "softmax_cross_entropy")
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1]
    cdef cnp.ndarray grad = np.empty((n, c), dtype=scores.dtype) if want_grad else None
    cdef double[::1] loss_n = np.empty(n, dtype=np.float64)
    cdef void *ps = _data(<cnp.ndarray>scores)
    cdef const Py_ssize_t *pl = <const Py_ssize_t *>_data(<cnp.ndarray>labels)
    cdef void *pg = _data(grad) if want_grad else NULL
    cdef double loss
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = fg_softmax_ce_f32(<const float *>ps, pl, n, c, <float *>pg, &loss_n[0])
        else:
            loss = fg_softmax_ce_f64(<const double *>ps, pl, n, c, <double *>pg, &loss_n[0])
    return loss, grad


def svm_loss(scores, labels, double delta, bint want_grad=True):
    """(loss, grad): the mean multiclass hinge loss of scores (N, C) against labels (N,), and its
    gradient (None unless want_grad)."""
    cdef int t = _check_scores(scores, labels, "svm_loss")
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1]
    cdef cnp.ndarray grad = np.empty((n, c), dtype=scores.dtype) if want_grad else None
    cdef double[::1] loss_n = np.empty(n, dtype=np.float64)
    cdef void *ps = _data(<cnp.ndarray>scores)
    cdef const Py_ssize_t *pl = <const Py_ssize_t *>_data(<cnp.ndarray>labels)
    cdef void *pg = _data(grad) if want_grad else NULL
    cdef double loss
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = fg_svm_f32(<const float *>ps, pl, n, c, <float>delta, <float *>pg, &loss_n[0])
        else:
            loss = fg_svm_f64(<const double *>ps, pl, n, c, delta, <double *>pg, &loss_n[0])
    return loss, grad


# ------------------------------------------------------------------------------------------------
# the fused passes of the affine layer, for fastgrad._linalg (declared in _kernels.pxd; it
# validates). They live in this module to share its thread setting and OpenMP build.

cdef extern from "affine.h" nogil:
    void fg_bias_act_forward_f32(float *z, const float *b, float *y, Py_ssize_t n, Py_ssize_t m,
                                 int act, float param)
    void fg_bias_act_forward_f64(double *z, const double *b, double *y, Py_ssize_t n,
                                 Py_ssize_t m, int act, double param)
    void fg_act_backward_colsum_f32(const float *dy, const float *s, float *dz, float *db,
                                    Py_ssize_t n, Py_ssize_t m, int act, float param)
    void fg_act_backward_colsum_f64(const double *dy, const double *s, double *dz, double *db,
                                    Py_ssize_t n, Py_ssize_t m, int act, double param)


cdef void bias_act_forward_f32(float *z, const float *b, float *y, Py_ssize_t n, Py_ssize_t m,
                               int act, float param) noexcept nogil:
    fg_bias_act_forward_f32(z, b, y, n, m, act, param)


cdef void bias_act_forward_f64(double *z, const double *b, double *y, Py_ssize_t n, Py_ssize_t m,
                               int act, double param) noexcept nogil:
    fg_bias_act_forward_f64(z, b, y, n, m, act, param)


cdef void act_backward_colsum_f32(const float *dy, const float *s, float *dz, float *db,
                                  Py_ssize_t n, Py_ssize_t m, int act, float param) noexcept nogil:
    fg_act_backward_colsum_f32(dy, s, dz, db, n, m, act, param)


cdef void act_backward_colsum_f64(const double *dy, const double *s, double *dz, double *db,
                                  Py_ssize_t n, Py_ssize_t m, int act, double param) noexcept nogil:
    fg_act_backward_colsum_f64(dy, s, dz, db, n, m, act, param)


cdef void maxout_forward_f32(const float *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p, float *y,
                             Py_ssize_t *idx) noexcept nogil:
    fg_maxout_forward_f32(z, n, h, p, y, idx)


cdef void maxout_forward_f64(const double *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p, double *y,
                             Py_ssize_t *idx) noexcept nogil:
    fg_maxout_forward_f64(z, n, h, p, y, idx)


cdef void maxout_backward_f32(const float *dy, const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t h,
                              Py_ssize_t p, float *dz) noexcept nogil:
    memset(dz, 0, n * h * p * sizeof(float))
    fg_maxout_backward_f32(dy, idx, n, h, p, dz)


cdef void maxout_backward_f64(const double *dy, const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t h,
                              Py_ssize_t p, double *dz) noexcept nogil:
    memset(dz, 0, n * h * p * sizeof(double))
    fg_maxout_backward_f64(dy, idx, n, h, p, dz)


cdef void gate_forward_f32(int gate, const float *x, float *y, Py_ssize_t n, float param) noexcept nogil:
    if gate == 0:
        fg_relu_forward_f32(x, y, n)
    elif gate == 1:
        fg_leaky_relu_forward_f32(x, y, n, param)
    elif gate == 2:
        fg_elu_forward_f32(x, y, n, param)
    elif gate == 3:
        fg_sigmoid_forward_f32(x, y, n)
    else:
        fg_tanh_forward_f32(x, y, n)


cdef void gate_forward_f64(int gate, const double *x, double *y, Py_ssize_t n, double param) noexcept nogil:
    if gate == 0:
        fg_relu_forward_f64(x, y, n)
    elif gate == 1:
        fg_leaky_relu_forward_f64(x, y, n, param)
    elif gate == 2:
        fg_elu_forward_f64(x, y, n, param)
    elif gate == 3:
        fg_sigmoid_forward_f64(x, y, n)
    else:
        fg_tanh_forward_f64(x, y, n)


cdef void gate_backward_f32(int gate, const float *dy, const float *s, float *dx, Py_ssize_t n,
                            float param) noexcept nogil:
    if gate == 0:
        fg_relu_backward_f32(dy, s, dx, n)
    elif gate == 1:
        fg_leaky_relu_backward_f32(dy, s, dx, n, param)
    elif gate == 2:
        fg_elu_backward_f32(dy, s, dx, n, param)
    elif gate == 3:
        fg_sigmoid_backward_f32(dy, s, dx, n)
    else:
        fg_tanh_backward_f32(dy, s, dx, n)


cdef void gate_backward_f64(int gate, const double *dy, const double *s, double *dx, Py_ssize_t n,
                            double param) noexcept nogil:
    if gate == 0:
        fg_relu_backward_f64(dy, s, dx, n)
    elif gate == 1:
        fg_leaky_relu_backward_f64(dy, s, dx, n, param)
    elif gate == 2:
        fg_elu_backward_f64(dy, s, dx, n, param)
    elif gate == 3:
        fg_sigmoid_backward_f64(dy, s, dx, n)
    else:
        fg_tanh_backward_f64(dy, s, dx, n)


cdef double softmax_ce_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                           float *grad, double *loss_n) noexcept nogil:
    return fg_softmax_ce_f32(scores, labels, n, c, grad, loss_n)


cdef double softmax_ce_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                           double *grad, double *loss_n) noexcept nogil:
    return fg_softmax_ce_f64(scores, labels, n, c, grad, loss_n)


cdef double svm_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                    float delta, float *grad, double *loss_n) noexcept nogil:
    return fg_svm_f32(scores, labels, n, c, delta, grad, loss_n)


cdef double svm_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                    double delta, double *grad, double *loss_n) noexcept nogil:
    return fg_svm_f64(scores, labels, n, c, delta, grad, loss_n)


# ---------------------------------------------------------------------------------------------
# the kernels' thread choice (csrc/adapt.h, through FG_OMP_FOR in csrc/common.h)

cdef extern from "adapt.h" nogil:
    void fg_adapt_reset()
    void fg_adapt_counts(long long *serial, long long *parallel)
    void fg_adapt_force_others(double cores)
    double fg_adapt_others()
    long long fg_adapt_stalls()


def adapt_counts():
    """(calls run on one thread, calls run on a team) since the last `adapt_reset()`, counting the
    kernel calls large enough to be split."""
    cdef long long serial = 0, parallel = 0
    fg_adapt_counts(&serial, &parallel)
    return int(serial), int(parallel)


def adapt_stalls():
    """Kernel team calls since the last `adapt_reset()` that waited for a core another process
    took (each stopped every team for a while: csrc/adapt.c)."""
    return int(fg_adapt_stalls())


def adapt_reset():
    """Forget every kernel timing (each kernel measures a team and one thread again)."""
    fg_adapt_reset()


def _adapt_force_others(double cores):
    """Test hook: take `cores` as the other processes' load (a negative value: measure again)."""
    fg_adapt_force_others(cores)


fg_adapt_others()  # the first window of the machine's load opens at import (csrc/adapt.c)
