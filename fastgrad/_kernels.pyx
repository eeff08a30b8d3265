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
    void fg_maximum_forward_f32(const float *a, const float *b, float *y, Py_ssize_t n)
    void fg_maximum_forward_f64(const double *a, const double *b, double *y, Py_ssize_t n)
    void fg_maximum_backward_f32(const float *dy, const float *a, const float *b, float *da,
                                 float *db, Py_ssize_t n)
    void fg_maximum_backward_f64(const double *dy, const double *a, const double *b, double *da,
                                 double *db, Py_ssize_t n)
    void fg_gate_forward_f32(int act, const float *x, float *y, Py_ssize_t n, float p)
    void fg_gate_forward_f64(int act, const double *x, double *y, Py_ssize_t n, double p)
    void fg_gate_backward_f32(int act, const float *dy, const float *s, float *dx, Py_ssize_t n,
                              float p)
    void fg_gate_backward_f64(int act, const double *dy, const double *s, double *dx, Py_ssize_t n,
                              double p)

cdef extern from "activations.h" nogil:
    enum: FG_ACT_RELU, FG_ACT_LEAKY_RELU, FG_ACT_SIGMOID, FG_ACT_TANH, FG_ACT_ELU

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

cdef cnp.ndarray _gate(object x, int act, double p, str op):
    """y = f(x) of activation `act`, into a new array."""
    cdef int t = _check(x, op, "x")
    cdef cnp.ndarray y = _empty_like(<cnp.ndarray>x, t)
    cdef Py_ssize_t n = y.size
    cdef void *px = _data(<cnp.ndarray>x)
    cdef void *py = _data(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            gate_forward(act, <const float *>px, <float *>py, n, <float>p)
        else:
            gate_forward(act, <const double *>px, <double *>py, n, p)
    return y


cdef cnp.ndarray _gate_grad(object dy, object s, int act, double p, str op, str arg_s):
    """dx = f'(s) dy of activation `act` (s its saved output or input), into a new array."""
    cdef int t = _check_same(dy, s, op, "dy", arg_s)
    cdef cnp.ndarray dx = _empty_like(<cnp.ndarray>dy, t)
    cdef Py_ssize_t n = dx.size
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef void *ps = _data(<cnp.ndarray>s)
    cdef void *pd = _data(dx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            gate_backward(act, <const float *>pg, <const float *>ps, <float *>pd, n, <float>p)
        else:
            gate_backward(act, <const double *>pg, <const double *>ps, <double *>pd, n, p)
    return dx


def relu_forward(x):
    """y = max(x, 0)."""
    return _gate(x, FG_ACT_RELU, 0.0, "relu_forward")


def relu_backward(dy, y):
    """dx = dy * [y > 0], from the saved output y."""
    return _gate_grad(dy, y, FG_ACT_RELU, 0.0, "relu_backward", "y")


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), finite for every x."""
    return _gate(x, FG_ACT_SIGMOID, 0.0, "sigmoid_forward")


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), from the saved output y."""
    return _gate_grad(dy, y, FG_ACT_SIGMOID, 0.0, "sigmoid_backward", "y")


def tanh_forward(x):
    """y = tanh(x)."""
    return _gate(x, FG_ACT_TANH, 0.0, "tanh_forward")


def tanh_backward(dy, y):
    """dx = dy * (1 - y**2), from the saved output y."""
    return _gate_grad(dy, y, FG_ACT_TANH, 0.0, "tanh_backward", "y")


def leaky_relu_forward(x, double negative_slope):
    """y = x where x > 0, else negative_slope * x."""
    return _gate(x, FG_ACT_LEAKY_RELU, negative_slope, "leaky_relu_forward")


def leaky_relu_backward(dy, x, double negative_slope):
    """dx = dy where x > 0, else negative_slope * dy (the slope at 0 is negative_slope)."""
    return _gate_grad(dy, x, FG_ACT_LEAKY_RELU, negative_slope, "leaky_relu_backward", "x")


def elu_forward(x, double alpha):
    """y = x where x > 0, else alpha * (exp(x) - 1)."""
    return _gate(x, FG_ACT_ELU, alpha, "elu_forward")


def elu_backward(dy, x, double alpha):
    """dx = dy where x > 0, else dy * alpha * exp(x), from the input x."""
    return _gate_grad(dy, x, FG_ACT_ELU, alpha, "elu_backward", "x")


def maximum_forward(a, b):
    """y = max(a, b) elementwise, a and b of one shape (NaN if either is NaN)."""
    cdef int t = _check_same(a, b, "maximum_forward", "a", "b")
    cdef cnp.ndarray y = _empty_like(<cnp.ndarray>a, t)
    cdef Py_ssize_t n = y.size
    cdef void *pa = _data(<cnp.ndarray>a)
    cdef void *pb = _data(<cnp.ndarray>b)
    cdef void *py = _data(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _maximum(<const float *>pa, <const float *>pb, <float *>py, n)
        else:
            _maximum(<const double *>pa, <const double *>pb, <double *>py, n)
    return y


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
            _maximum_grad(<const float *>pg, <const float *>pa, <const float *>pb, <float *>pda,
                          <float *>pdb, n)
        else:
            _maximum_grad(<const double *>pg, <const double *>pa, <const double *>pb,
                          <double *>pda, <double *>pdb, n)
    return da, db


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
            _max_forward(<const float *>px, co, cw, ci, <float *>py, pi)
        else:
            _max_forward(<const double *>px, co, cw, ci, <double *>py, pi)
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
            _max_backward(<const float *>pg, pi, co, cw, ci, <float *>pd)
        else:
            _max_backward(<const double *>pg, pi, co, cw, ci, <double *>pd)
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
            maxout_forward_into(<const float *>pz, n, h, pieces, <float *>py, pi)
        else:
            maxout_forward_into(<const double *>pz, n, h, pieces, <double *>py, pi)
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
    cdef cnp.ndarray dz = np.empty((n, h * pieces), dtype=dy.dtype)  # zeroed, then scattered into
    cdef void *pg = _data(<cnp.ndarray>dy)
    cdef const Py_ssize_t *pi = <const Py_ssize_t *>_data(<cnp.ndarray>idx)
    cdef void *pd = _data(dz)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            maxout_backward_into(<const float *>pg, pi, n, h, pieces, <float *>pd)
        else:
            maxout_backward_into(<const double *>pg, pi, n, h, pieces, <double *>pd)
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
            loss = softmax_ce(<const float *>ps, pl, n, c, <float *>pg, &loss_n[0])
        else:
            loss = softmax_ce(<const double *>ps, pl, n, c, <double *>pg, &loss_n[0])
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
            loss = svm(<const float *>ps, pl, n, c, <float>delta, <float *>pg, &loss_n[0])
        else:
            loss = svm(<const double *>ps, pl, n, c, delta, <double *>pg, &loss_n[0])
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


# the C-level entry points of _kernels.pxd: one function over `floating` each, the pointer types
# choosing the float or double kernel at compile time

cdef void gate_forward(int act, const floating *x, floating *y, Py_ssize_t n,
                       floating p) noexcept nogil:
    if floating is float:
        fg_gate_forward_f32(act, x, y, n, p)
    else:
        fg_gate_forward_f64(act, x, y, n, p)


cdef void gate_backward(int act, const floating *dy, const floating *s, floating *dx, Py_ssize_t n,
                        floating p) noexcept nogil:
    if floating is float:
        fg_gate_backward_f32(act, dy, s, dx, n, p)
    else:
        fg_gate_backward_f64(act, dy, s, dx, n, p)


cdef void bias_act_forward(floating *z, const floating *b, floating *y, Py_ssize_t n, Py_ssize_t m,
                           int act, floating p) noexcept nogil:
    if floating is float:
        fg_bias_act_forward_f32(z, b, y, n, m, act, p)
    else:
        fg_bias_act_forward_f64(z, b, y, n, m, act, p)


cdef void act_backward_colsum(const floating *dy, const floating *s, floating *dz, floating *db,
                              Py_ssize_t n, Py_ssize_t m, int act, floating p) noexcept nogil:
    if floating is float:
        fg_act_backward_colsum_f32(dy, s, dz, db, n, m, act, p)
    else:
        fg_act_backward_colsum_f64(dy, s, dz, db, n, m, act, p)


cdef double softmax_ce(const floating *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                       floating *grad, double *loss_n) noexcept nogil:
    if floating is float:
        return fg_softmax_ce_f32(scores, labels, n, c, grad, loss_n)
    else:
        return fg_softmax_ce_f64(scores, labels, n, c, grad, loss_n)


cdef double svm(const floating *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                floating delta, floating *grad, double *loss_n) noexcept nogil:
    if floating is float:
        return fg_svm_f32(scores, labels, n, c, delta, grad, loss_n)
    else:
        return fg_svm_f64(scores, labels, n, c, delta, grad, loss_n)


cdef void maxout_forward_into(const floating *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p,
                              floating *y, Py_ssize_t *idx) noexcept nogil:
    if floating is float:
        fg_maxout_forward_f32(z, n, h, p, y, idx)
    else:
        fg_maxout_forward_f64(z, n, h, p, y, idx)


cdef void maxout_backward_into(const floating *dy, const Py_ssize_t *idx, Py_ssize_t n,
                               Py_ssize_t h, Py_ssize_t p, floating *dz) noexcept nogil:
    memset(dz, 0, n * h * p * sizeof(floating))
    if floating is float:
        fg_maxout_backward_f32(dy, idx, n, h, p, dz)
    else:
        fg_maxout_backward_f64(dy, idx, n, h, p, dz)


# the same for the kernels only this module's bindings call

cdef inline void _maximum(const floating *a, const floating *b, floating *y,
                          Py_ssize_t n) noexcept nogil:
    if floating is float:
        fg_maximum_forward_f32(a, b, y, n)
    else:
        fg_maximum_forward_f64(a, b, y, n)


cdef inline void _maximum_grad(const floating *dy, const floating *a, const floating *b,
                               floating *da, floating *db, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fg_maximum_backward_f32(dy, a, b, da, db, n)
    else:
        fg_maximum_backward_f64(dy, a, b, da, db, n)


cdef inline void _max_forward(const floating *x, Py_ssize_t o, Py_ssize_t w, Py_ssize_t i,
                              floating *y, Py_ssize_t *idx) noexcept nogil:
    if floating is float:
        fg_max_forward_f32(x, o, w, i, y, idx)
    else:
        fg_max_forward_f64(x, o, w, i, y, idx)


cdef inline void _max_backward(const floating *dy, const Py_ssize_t *idx, Py_ssize_t o,
                               Py_ssize_t w, Py_ssize_t i, floating *dx) noexcept nogil:
    if floating is float:
        fg_max_backward_f32(dy, idx, o, w, i, dx)
    else:
        fg_max_backward_f64(dy, idx, o, w, i, dx)


# ---------------------------------------------------------------------------------------------
# the kernels' thread choice (csrc/adapt.h, through FG_OMP_FOR in csrc/common.h)

cdef extern from "adapt.h" nogil:
    void fg_adapt_reset()
    void fg_adapt_counts(long long *serial, long long *parallel)
    void fg_adapt_force_others(double cores)
    double fg_adapt_others()


def adapt_counts():
    """(calls run on one thread, calls run on a team) since the last `adapt_reset()`, counting the
    kernel calls large enough to be split."""
    cdef long long serial = 0, parallel = 0
    fg_adapt_counts(&serial, &parallel)
    return int(serial), int(parallel)


def adapt_reset():
    """Forget every kernel timing (each kernel measures a team and one thread again)."""
    fg_adapt_reset()


def _adapt_force_others(double cores):
    """Test hook: take `cores` as the other processes' load (a negative value: measure again)."""
    fg_adapt_force_others(cores)


fg_adapt_others()  # the first window of the machine's load opens at import (csrc/adapt.c)
