"""Matrix products through BLAS, and the fully connected layer built on them.

BLAS comes from `scipy.linalg.cython_blas` (sgemm for float32, dgemm for float64) and is called with
the GIL released. BLAS is column-major while fastgrad's buffers are row-major; a row-major matrix read
as column-major is its transpose, so a row-major product C = op(A) op(B) is computed as the
column-major product C^T = op(B)^T op(A)^T: the operands are swapped, the transpose flags are passed
through, and no operand is ever copied. An F-contiguous operand (e.g. `W.T` of a C-contiguous NumPy
array) is the row-major buffer of its transpose, so it costs a flipped flag, not a copy.

Every function validates its arguments (ndarray, float32/float64 in native byte order, aligned, one
dtype, 2-D, contiguous, matching shapes, sizes that fit BLAS's int) before any `nogil` code.
Nothing here is differentiable: ops.py decides what is computed.
"""
cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.stdlib cimport calloc, free
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

cnp.import_array()

from fastgrad._kernels cimport act_backward_colsum, bias_act_forward

cdef extern from "activations.h" nogil:
    enum: FG_ACT_NONE
    enum: FG_ACT_COUNT
    enum: FG_ACT_FROM_INPUT
    cdef struct fg_activation_info:
        const char *name
        const char *param
        int grad_from_input
    const fg_activation_info fg_activations[]

cdef extern from "adapt.h" nogil:
    ctypedef unsigned long long uint64_t "uint64_t"
    ctypedef long long int64_t "int64_t"
    uint64_t fg_adapt_key(int site, int64_t a, int64_t b, int64_t c)
    int fg_adapt_threads(uint64_t key, int n)
    void fg_adapt_record(uint64_t key, int threads, int64_t ns)
    int64_t fg_now_ns()
    int fg_blas_bind(void *symbol_in_caller)
    void fg_blas_set_threads(int n)
    void fg_blas_forget()
    int fg_blas_bound()
    void fg_adapt_reset()
    void fg_adapt_counts(int64_t *serial, int64_t *parallel)
    double fg_adapt_others()
    void fg_adapt_force_others(double cores)

cdef int CHUNKS_TARGET = 16
cdef int blas_threads = 1  # the setting (fg.set_num_threads); 1 or n is used per call

# A product of fewer multiply-adds than this runs on one BLAS thread without being timed (OpenBLAS
# itself stays on one thread below 4 * 65536).
cdef enum:
    BLAS_MIN_PARALLEL = 262144
    BLAS_MIN_CHUNK = 1048576  # multiply-adds: ~10-20 us on one core, well above a team's start-up

cdef extern from "forkgate.h" nogil:
    void fg_gemm_enter()
    void fg_gemm_exit()
    void fg_fork_prepare()
    void fg_fork_parent()
    void fg_fork_child()
    int fg_fork_gate_enabled()

def _activation_table():
    names, params, from_input = {}, [], []
    for code in range(FG_ACT_COUNT):
        names[None if code == FG_ACT_NONE else fg_activations[code].name.decode()] = code
        params.append(fg_activations[code].param.decode() or None)
        from_input.append(fg_activations[code].grad_from_input == FG_ACT_FROM_INPUT)
    return names, params, from_input


#: Activation name -> code of enum fg_activation, read from its one table (csrc/activations.h);
#: None is the layer without an activation.
ACTIVATIONS, _PARAM, _FROM_INPUT = _activation_table()
#: Activation name -> the keyword of fg.affine that holds its parameter (None if it has none).
ACTIVATION_PARAMS = {name: _PARAM[code] for name, code in ACTIVATIONS.items()}


cdef struct Matrix:
    # A validated 2-D operand: the row-major buffer `data` of shape (rows, cols) if not `trans`,
    # of shape (cols, rows) if `trans` (an F-contiguous array: the buffer holds its transpose).
    void *data
    Py_ssize_t rows
    Py_ssize_t cols
    bint trans


cdef int _dtype(object a, str op, str arg) except -1:
    """The type number of ndarray `a` if it is float32/float64 (native byte order, aligned), else
    TypeError (ValueError when it is not aligned)."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{op}: {arg} must be a numpy.ndarray, got {type(a).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{op}: {arg} must be float32 or float64, got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):
        raise TypeError(f"{op}: {arg} must be in native byte order, got {a.dtype.str}")
    if not cnp.PyArray_ISALIGNED(<cnp.ndarray>a):
        raise ValueError(f"{op}: {arg} must be aligned (use numpy.require(a, requirements='CA'))")
    return t


cdef int _same_dtype(int t, object a, str op, str arg, object first) except -1:
    if _dtype(a, op, arg) != t:
        raise TypeError(f"{op}: {arg} is {a.dtype} but the other operands are {first.dtype}")
    return 0


cdef Matrix _matrix(object a, str op, str arg) except *:
    """`a` (already dtype-checked) as a BLAS operand: 2-D, C- or F-contiguous, sizes that fit an int."""
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef Matrix mat
    if arr.ndim != 2:
        raise ValueError(f"{op}: {arg} must be 2-D, got shape {a.shape}")
    if cnp.PyArray_IS_C_CONTIGUOUS(arr):
        mat.trans = False
    elif cnp.PyArray_IS_F_CONTIGUOUS(arr):
        mat.trans = True
    else:
        raise ValueError(f"{op}: {arg} of shape {a.shape} must be C- or F-contiguous")
    mat.rows = arr.shape[0]
    mat.cols = arr.shape[1]
    if mat.rows > INT_MAX or mat.cols > INT_MAX:
        raise ValueError(f"{op}: {arg} of shape {a.shape} is too large for BLAS (int sizes)")
    mat.data = cnp.PyArray_DATA(arr)
    return mat


cdef cnp.ndarray _contiguous(object a, int t, tuple shape, str op, str arg, object first):
    """`a` checked to be a C-contiguous array of dtype number `t` and shape `shape`."""
    _same_dtype(t, a, op, arg, first)
    if a.shape != shape:
        raise ValueError(f"{op}: {arg} must have shape {shape}, got {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise ValueError(f"{op}: {arg} of shape {a.shape} must be C-contiguous")
    return <cnp.ndarray>a


cdef inline void _gemm1(bint ta, bint tb, int m, int n, int k, const floating *A, int lda,
                        const floating *B, int ldb, floating *C, int ldc) noexcept nogil:
    """One BLAS call: row-major C (m, n; row stride ldc) := op(A) op(B), as column-major
    C^T = op(B)^T op(A)^T (B first, each with its own flag and leading dimension)."""
    cdef char *flag_b = b"T" if tb else b"N"
    cdef char *flag_a = b"T" if ta else b"N"
    cdef floating one = 1
    cdef floating zero = 0
    if floating is float:
        sgemm(flag_b, flag_a, &n, &m, &k, &one, <float *>B, &ldb, <float *>A, &lda, &zero, C, &ldc)
    else:
        dgemm(flag_b, flag_a, &n, &m, &k, &one, <double *>B, &ldb, <double *>A, &lda, &zero, C, &ldc)


cdef int warm_threads = 1  # the team size whose threads have each made a BLAS call


cdef void _warm_team(int threads) noexcept nogil:
    """Let each of `threads` OpenMP threads make one small BLAS call, untimed. A thread's first call
    allocates its BLAS work buffers (and the team's first region starts the threads): 5-15 ms that
    would otherwise be taken for the cost of running on a team, making one thread look faster."""
    global warm_threads
    cdef int c
    cdef float *buf = <float *>calloc((2 + threads) * 256 * 256, sizeof(float))  # A, B, one C each
    if buf == NULL:
        return
    fg_blas_set_threads(1)
    for c in prange(threads, num_threads=threads, schedule="static"):
        _gemm1[float](False, False, 256, 256, 256, buf, 256, buf + 256 * 256, 256,
                      buf + (2 + c) * 256 * 256, 256)
    free(buf)
    warm_threads = threads


cdef inline int _chunk_width(int dim, double per_entry) noexcept nogil:
    """The width of the blocks a product is split into along a dimension of `dim` entries, each
    entry of which costs `per_entry` multiply-adds: about CHUNKS_TARGET blocks (twice the cores: each
    block repacks the other operand, so fewer blocks cost less on one thread), none under 64 wide or under
    BLAS_MIN_CHUNK multiply-adds, a multiple of 16. A function of the shape alone, never of the
    thread count, so every entry of the product is computed by the same BLAS call for any threads."""
    cdef int w = (dim + CHUNKS_TARGET - 1) // CHUNKS_TARGET
    cdef int least = <int>(BLAS_MIN_CHUNK / per_entry) + 1
    if w < least:
        w = least
    if w < 64:
        w = 64
    w = (w + 15) // 16 * 16
    return w if w < dim else dim


cdef inline void _gemm_block(int c, int width, int dim, bint by_columns, bint ta, bint tb, int m,
                             int n, int k, const floating *A, int lda, const floating *B, int ldb,
                             floating *C) noexcept nogil:
    """Block c of a split product: columns [c width, c width + width) of C (and of op(B)), or those
    rows of C (and of op(A)); offsets in Py_ssize_t (they pass INT_MAX for m * k > 2^31)."""
    cdef Py_ssize_t lo = <Py_ssize_t>c * width
    cdef int w = min(width, dim - <int>lo)
    if by_columns:
        _gemm1(ta, tb, m, w, k, A, lda, B + (lo * k if tb else lo), ldb, C + lo, n)
    else:
        _gemm1(ta, tb, w, n, k, A + (lo if ta else lo * k), lda, B, ldb, C + lo * n, n)


cdef void gemm(bint ta, bint tb, int m, int n, int k, const floating *A, const floating *B,
               floating *C) noexcept nogil:
    """Row-major C (m, n) := op(A) op(B), op(A) of shape (m, k), op(B) of shape (k, n); m, n, k > 0.

    op(X) is X or X^T as the flag says; A and B are row-major buffers. Small products are one BLAS
    call. Larger ones are split into fixed blocks of C's columns (or rows, when C is taller than
    wide), each one single-threaded BLAS call, run on 1 or n of our own threads as csrc/adapt.h
    measures: results are bit-identical for any thread count, and a busy core never makes a product
    wait (BLAS's own pool would split the work by thread count and spin for a busy core).
    """
    cdef int ldb = k if tb else n
    cdef int lda = m if ta else k
    if <double>m * n * k < BLAS_MIN_PARALLEL:  # BLAS keeps to one thread here by itself
        fg_gemm_enter()  # os.fork() waits for the calls in flight (csrc/forkgate.h)
        _gemm1(ta, tb, m, n, k, A, lda, B, ldb, C, n)
        fg_gemm_exit()
        return
    cdef bint by_columns = n >= m
    cdef int dim = n if by_columns else m
    cdef int width = _chunk_width(dim, <double>k * (m if by_columns else n))
    cdef int nchunks = (dim + width - 1) // width
    cdef int threads = 1
    cdef uint64_t key = 0
    cdef int64_t t0 = 0
    cdef int c
    if blas_threads > 1 and nchunks > 1:
        key = fg_adapt_key(4 * (floating is double) + 2 * ta + tb, m, n, k)
        threads = fg_adapt_threads(key, blas_threads)
        if threads > warm_threads:
            _warm_team(threads)
        t0 = fg_now_ns()
    fg_gemm_enter()
    fg_blas_set_threads(1)
    if threads == 1:
        for c in range(nchunks):
            _gemm_block(c, width, dim, by_columns, ta, tb, m, n, k, A, lda, B, ldb, C)
    else:
        for c in prange(nchunks, num_threads=threads, schedule="dynamic"):
            _gemm_block(c, width, dim, by_columns, ta, tb, m, n, k, A, lda, B, ldb, C)
    fg_blas_set_threads(blas_threads)  # what scipy.linalg's own callers were given
    fg_gemm_exit()
    if key:
        fg_adapt_record(key, threads, fg_now_ns() - t0)


cdef cnp.ndarray _product(Matrix a, bint ta, Matrix b, bint tb, int t, str op, object a_shape,
                          object b_shape):
    """op(a) @ op(b) as a new C-contiguous array (zeros when the inner size is 0)."""
    cdef Py_ssize_t m = a.cols if ta else a.rows
    cdef Py_ssize_t k = a.rows if ta else a.cols
    cdef Py_ssize_t kb = b.cols if tb else b.rows
    cdef Py_ssize_t n = b.rows if tb else b.cols
    if k != kb:
        raise ValueError(
            f"{op}: shapes {a_shape}{'.T' if ta else ''} and {b_shape}{'.T' if tb else ''} are not "
            f"aligned ({k} != {kb})")
    cdef cnp.npy_intp dims[2]
    dims[0] = m
    dims[1] = n
    if m == 0 or n == 0 or k == 0:
        return cnp.PyArray_ZEROS(2, dims, t, 0)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, dims, t, 0)
    cdef void *pc = cnp.PyArray_DATA(out)
    # an F-contiguous operand's buffer holds its transpose: flip its flag
    ta = ta != a.trans
    tb = tb != b.trans
    with nogil:
        if t == cnp.NPY_FLOAT32:
            gemm(ta, tb, <int>m, <int>n, <int>k, <const float *>a.data, <const float *>b.data,
                  <float *>pc)
        else:
            gemm(ta, tb, <int>m, <int>n, <int>k, <const double *>a.data, <const double *>b.data,
                  <double *>pc)
    return out


def matmul(a, b, bint trans_a=False, bint trans_b=False):
    """op(a) @ op(b) through sgemm/dgemm, op(X) = X.T where its flag is set, else X.

    a, b: 2-D float32 or float64 arrays of one dtype, C- or F-contiguous (F costs no copy).
    Returns a new C-contiguous (m, n) array.

    >>> matmul(np.ones((2, 3)), np.ones((2, 4)), trans_a=True).shape
    (3, 4)
    """
    cdef int t = _dtype(a, "matmul", "a")
    _same_dtype(t, b, "matmul", "b", a)
    return _product(_matrix(a, "matmul", "a"), trans_a, _matrix(b, "matmul", "b"), trans_b, t,
                    "matmul", a.shape, b.shape)


cdef int _activation_code(object activation, str op) except -1:
    code = ACTIVATIONS.get(activation) if isinstance(activation, (str, type(None))) else None
    if code is None:
        raise ValueError(
            f"{op}: unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
    return code


cdef double _param(int act, double negative_slope, double alpha):
    """The parameter of activation `act`: the keyword its row in activations.h names."""
    name = _PARAM[act]
    return negative_slope if name == "negative_slope" else alpha if name == "alpha" else 0.0


def affine_forward(x, W, b, activation=None, double negative_slope=0.01, double alpha=1.0):
    """y = act(x @ W + b): one sgemm/dgemm into z, then one pass adding b and applying act.

    x: (N, D), W: (D, M) (C- or F-contiguous), b: (M,) contiguous, one float dtype.
    activation: a key of ACTIVATIONS (None, "relu", "leaky_relu", "sigmoid", "tanh", "elu"), with
    the negative_slope of leaky_relu or the alpha of elu (any value, as fg.leaky_relu and fg.elu).
    Returns (y, saved): y a new C-contiguous (N, M) array and saved what affine_backward needs:
    y itself when act' reads the output (relu, sigmoid, tanh), z = x @ W + b when it reads the
    input (leaky_relu, elu: y is then a second array), None without an activation.

    >>> affine_forward(np.ones((2, 3)), np.ones((3, 4)), np.full(4, -5.0), "relu")[0]
    array([[0., 0., 0., 0.],
           [0., 0., 0., 0.]])
    """
    cdef int act = _activation_code(activation, "affine")
    cdef double param = _param(act, negative_slope, alpha)
    cdef int t = _dtype(x, "affine", "x")
    _same_dtype(t, W, "affine", "W", x)
    _same_dtype(t, b, "affine", "b", x)
    cdef Matrix xm = _matrix(x, "affine", "x")
    cdef Matrix wm = _matrix(W, "affine", "W")
    if xm.cols != wm.rows or b.ndim != 1 or b.shape[0] != wm.cols:
        raise ValueError(
            f"affine: expected x (N, D), W (D, M), b (M,), got x {x.shape}, W {W.shape}, b {b.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>b):
        raise ValueError(f"affine: b of shape {b.shape} must be contiguous")
    cdef cnp.ndarray z = _product(xm, False, wm, False, t, "affine", x.shape, W.shape)
    cdef cnp.ndarray y = z
    cdef bint from_input = _FROM_INPUT[act]
    if from_input:
        y = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(z), t, 0)
    cdef Py_ssize_t n = xm.rows, m = wm.cols
    cdef void *pz = cnp.PyArray_DATA(z)
    cdef void *py = cnp.PyArray_DATA(y) if from_input else NULL
    cdef void *pb = cnp.PyArray_DATA(<cnp.ndarray>b)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            bias_act_forward(<float *>pz, <const float *>pb, <float *>py, n, m, act, <float>param)
        else:
            bias_act_forward(<double *>pz, <const double *>pb, <double *>py, n, m, act, param)
    return y, (None if act == FG_ACT_NONE else z)


def affine_backward(dy, saved, x, W, activation=None, double negative_slope=0.01,
                    double alpha=1.0, bint need_db=True):
    """Gradients of y = act(x @ W + b): (dx, dW, db), each None where not asked for.

    One pass computes dz = dy * act'(z) from `saved` (what affine_forward returned beside y;
    skipped when activation is None: dz = dy) and, in the same pass, db = sum_i dz[i], summed
    row by row as NumPy's dz.sum(axis=0) does (NumPy itself for M == 1, where it sums pairwise),
    so that the layer's gradients equal those of x @ W + b followed by the gate bit for bit; then
    dx = dz @ W^T and dW = x^T @ dz are sgemm/dgemm calls with transpose flags (no copies).
    dy, saved: (N, M) C-contiguous (saved may be None when activation is None); x: (N, D) or None
    when dW is not needed; W: (D, M) or None when dx is not needed.
    """
    cdef int act = _activation_code(activation, "affine_backward")
    cdef double param = _param(act, negative_slope, alpha)
    cdef int t = _dtype(dy, "affine_backward", "dy")
    if dy.ndim != 2:
        raise ValueError(f"affine_backward: dy must be 2-D, got shape {dy.shape}")
    cdef tuple shape = dy.shape
    _contiguous(dy, t, shape, "affine_backward", "dy", dy)
    cdef Py_ssize_t n = shape[0], m = shape[1]
    cdef Matrix xm, wm
    if x is not None:
        _same_dtype(t, x, "affine_backward", "x", dy)
        xm = _matrix(x, "affine_backward", "x")
        if xm.rows != n:
            raise ValueError(f"affine_backward: x {x.shape} and dy {dy.shape} differ in N")
    if W is not None:
        _same_dtype(t, W, "affine_backward", "W", dy)
        wm = _matrix(W, "affine_backward", "W")
        if wm.cols != m:
            raise ValueError(f"affine_backward: W {W.shape} and dy {dy.shape} differ in M")
    if x is not None and W is not None and xm.cols != wm.rows:
        raise ValueError(f"affine_backward: x {x.shape} and W {W.shape} differ in D")
    cdef cnp.ndarray dz = <cnp.ndarray>dy  # activation None: dz is dy itself
    cdef cnp.ndarray db = None
    cdef void *pdz = NULL
    cdef void *pdb = NULL
    cdef void *ps = NULL
    cdef void *pdy = cnp.PyArray_DATA(dz)
    cdef bint sum_here = need_db and m != 1  # NumPy sums a single column pairwise: leave it that
    if sum_here:
        db = cnp.PyArray_EMPTY(1, &cnp.PyArray_DIMS(dz)[1], t, 0)
        pdb = cnp.PyArray_DATA(db)
    if act != FG_ACT_NONE:
        ps = cnp.PyArray_DATA(_contiguous(saved, t, shape, "affine_backward", "saved", dy))
        dz = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(dz), t, 0)
        pdz = cnp.PyArray_DATA(dz)
    if act != FG_ACT_NONE or sum_here:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                act_backward_colsum(<const float *>pdy, <const float *>ps, <float *>pdz,
                                    <float *>pdb, n, m, act, <float>param)
            else:
                act_backward_colsum(<const double *>pdy, <const double *>ps, <double *>pdz,
                                    <double *>pdb, n, m, act, param)
    if need_db and not sum_here:
        db = dz.sum(axis=0)
    cdef Matrix dzm = _matrix(dz, "affine_backward", "dz")
    dx = _product(dzm, False, wm, True, t, "affine_backward", shape, W.shape) \
        if W is not None else None
    dW = _product(xm, True, dzm, False, t, "affine_backward", x.shape, shape) \
        if x is not None else None
    return dx, dW, db


# ---------------------------------------------------------------------------------------------
# BLAS threads: chosen per call (csrc/adapt.h)

BLAS_THREADS_PER_CALL = bool(fg_blas_bind(<void *>sgemm))


def set_num_threads(int n):
    """Let products use up to `n` BLAS threads (each call uses 1 or n, as measured)."""
    global blas_threads
    blas_threads = max(n, 1)
    fg_blas_forget()  # threadpoolctl may have changed BLAS's own count


def adapt_counts():
    """(calls run on one thread, calls run on several) since the last `adapt_reset()`: products
    and kernels large enough to be split, as chosen by csrc/adapt.c."""
    cdef int64_t serial = 0, parallel = 0
    fg_adapt_counts(&serial, &parallel)
    return int(serial), int(parallel)


def adapt_reset():
    """Forget every timing (each call site measures one and n threads again)."""
    fg_adapt_reset()


def adapt_others():
    """The cores other processes used over the last 0.2 s (csrc/adapt.c): a team never gets more
    threads than the cores they leave free."""
    return fg_adapt_others()


def _adapt_force_others(double cores):
    """Test hook: take `cores` as the other processes' load (a negative value: measure again)."""
    fg_adapt_force_others(cores)


def _adapt_choose(int site, int64_t a, int64_t b, int64_t c, int n):
    """Test hook: the thread count the next call at (site, a, b, c) would use with setting n."""
    return fg_adapt_threads(fg_adapt_key(site, a, b, c), n)


def _adapt_record(int site, int64_t a, int64_t b, int64_t c, int threads, int64_t ns):
    """Test hook: record a call's time as csrc/adapt.c would."""
    fg_adapt_record(fg_adapt_key(site, a, b, c), threads, ns)


# --- os.fork() waits for BLAS calls in flight (csrc/forkgate.h); registered by fastgrad/threads.py


def _fork_prepare():
    """Before fork: stop new BLAS calls and wait (without the GIL) until none is running."""
    with nogil:
        fg_fork_prepare()


def _fork_parent():
    """After fork, in the parent: let BLAS calls run again."""
    fg_fork_parent()


def _fork_child():
    """After fork, in the child: its only thread is the forking one, so nothing is in flight."""
    fg_fork_child()


def _fork_gate_enabled():
    """Whether this build has the gate (not on Windows or compilers without GCC atomics)."""
    return bool(fg_fork_gate_enabled())


def _set_chunks(int n):
    """Split large products into about n blocks (default: twice the machine's cores, a constant of
    the machine, so results never depend on the thread setting)."""
    global CHUNKS_TARGET
    CHUNKS_TARGET = max(n, 1)


_set_chunks(2 * (__import__("os").cpu_count() or 1))
fg_adapt_others()  # the first window of the machine's load opens at import, so the first products know it
