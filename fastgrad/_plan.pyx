# cython: language_level=3
"""The program of a captured step (fastgrad/capture.py): an array of instructions run in C.

Each instruction names a kernel and the buffers it reads and writes; `Program.run()` walks the
array with the GIL released and calls each kernel through its C entry point, with no Python per
op. The kernels are the ones the eager ops call (the products of fastgrad._linalg, the affine
passes and the losses of fastgrad._kernels), and the elementwise instructions perform exactly the
operation NumPy performs for the eager op (one rounding per operation in the buffers' dtype;
NumPy's pairwise summation for full sums), so a replayed step computes what the eager step
computes, bit for bit.

Every buffer is checked once, when the program is built (C-contiguous, aligned, of the program's
dtype, large enough for what the instruction reads or writes, writeable where written); the
program keeps a reference to each, so none can go away while it exists.
"""
cimport cython
cimport numpy as cnp
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from cython cimport floating

from fastgrad._kernels cimport (act_backward_colsum, bias_act_forward, gate_backward, gate_forward,
                                maxout_backward_into, maxout_forward_into, softmax_ce, svm)
from fastgrad._linalg cimport gemm
from fastgrad._norm cimport batchnorm_forward_into, layernorm_forward_into, norm_backward_into
from fastgrad._optim cimport (adam_update, adamw_update, rmsprop_update, sgd_momentum_update,
                              sgd_update)

import numpy as np
from fastgrad._linalg import ACTIVATIONS

cnp.import_array()


cdef enum:
    GEMM = 0      # c (m, n) = op(a) op(b), inner size k; ta, tb the transpose flags
    BIAS_ACT = 1  # a = z (n, m) += b (m,), then act: in place (c NULL) or into c
    ACT_BWD = 2   # c = dz = a (dy) * act'(b (saved)), d = db column sums; c, d may be NULL
    SCE = 3       # softmax cross-entropy of a (n, m) scores, b labels: e[0] = loss, c = grad or NULL
    SVM = 4       # the same for the hinge loss with margin p
    BINARY = 5    # c = a op b, n elements; each operand full, a scalar, or a row of m (ma, mb)
    NEG = 6       # c = -a
    FILL = 7      # c[:] = a[0]
    SUM = 8       # c[0] = pairwise sum of a (n elements), as NumPy's add.reduce
    COLSUM = 9    # d (m,) = column sums of a (n, m), row by row from +0 (NumPy's sum(axis=0))
    COPY = 10     # c = a
    MAXOUT = 11   # c (n, m) = max over runs of k columns of a (n, m k), b (n, m) the intp argmax
    MAXOUT_BWD = 12  # c (n, m k) = a (n, m) routed where b (intp) points, zeros elsewhere
    SUMSQ = 13    # c[0] = pairwise sum of a[i] * a[i], as NumPy's (a * a).sum()
    SCALED = 14   # c = t (k 1) or t + t (k 2, 3) with t = b[0] * a, plus d: after, or before (ta):
                  # (d + t) + t for two terms (k 2), d + (t + t) for one doubled term (k 3)
    OPTIM = 15    # optimizer rule `op` on w = a, dw = b, state c, d; e = its row of hyperparameters
    LAYERNORM = 16      # c = y (n, m) of a = x with b = gamma, f = beta, eps p; d, e = mean, invstd (n,)
    LAYERNORM_BWD = 17  # c = dx (or NULL), g = dgamma, h = dbeta from a = dy, b = x, d, e, f = gamma;
                        # i = 2 m doubles of scratch
    GATE = 18     # c = gate `op` (its activation code, GATES) of a (n elements), parameter p
    GATE_BWD = 19  # c = a (dy) times the gate's derivative read from b (its saved y or x)
    BATCHNORM = 20      # as LAYERNORM over columns: d, e (m,); g, h the running mean and variance
                        # (updated with momentum q; NULL: none); i = m doubles of scratch
    BATCHNORM_BWD = 21  # as LAYERNORM_BWD with d, e (m,)
    DROPOUT = 22  # d = mask (b[i] >= p: scale q, else 0; b float64 draws), c = a * d

cdef enum:
    FULL = 0
    SCALAR = 1
    ROW = 2

KINDS = {"gemm": GEMM, "bias_act": BIAS_ACT, "act_bwd": ACT_BWD, "sce": SCE, "svm": SVM,
         "binary": BINARY, "neg": NEG, "fill": FILL, "sum": SUM, "colsum": COLSUM, "copy": COPY,
         "maxout": MAXOUT, "maxout_bwd": MAXOUT_BWD, "sumsq": SUMSQ, "scaled": SCALED,
         "optim": OPTIM, "layernorm": LAYERNORM, "layernorm_bwd": LAYERNORM_BWD,
         "gate": GATE, "gate_bwd": GATE_BWD, "batchnorm": BATCHNORM, "batchnorm_bwd": BATCHNORM_BWD,
         "dropout": DROPOUT}
GATES = {name: code for name, code in ACTIVATIONS.items() if name is not None}
# the optimizer rules of fastgrad._optim (OPTIM's op); each reads its row (lr, three
# hyperparameters, weight decay, step) of OptimizerRows.hyper, filled before every run
RULES = {"sgd": 0, "sgd_momentum": 1, "rmsprop": 2, "adam": 3, "adamw": 4}
BINARY_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3}
MODES = {"full": FULL, "scalar": SCALAR, "row": ROW}


cdef struct Instr:
    int kind
    int ta, tb, act, op, ma, mb
    Py_ssize_t m, n, k
    double p, q
    void *a
    void *b
    void *c
    void *d
    void *e
    void *f
    void *g
    void *h
    void *i


cdef floating _pairwise(const floating *a, Py_ssize_t n) noexcept nogil:
    """NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src, pairwise_sum): blocks of
    at most 128 summed by 8 accumulators, halves (rounded to a multiple of 8) summed recursively."""
    cdef floating r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef Py_ssize_t i, n2
    if n < 8:
        res = 0
        for i in range(n):
            res = res + a[i]
        return res
    if n <= 128:
        r0 = a[0]; r1 = a[1]; r2 = a[2]; r3 = a[3]
        r4 = a[4]; r5 = a[5]; r6 = a[6]; r7 = a[7]
        i = 8
        while i < n - (n % 8):
            r0 = r0 + a[i]; r1 = r1 + a[i + 1]; r2 = r2 + a[i + 2]; r3 = r3 + a[i + 3]
            r4 = r4 + a[i + 4]; r5 = r5 + a[i + 5]; r6 = r6 + a[i + 6]; r7 = r7 + a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res = res + a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, n2) + _pairwise(a + n2, n - n2)


cdef floating _pairwise_sq(const floating *a, Py_ssize_t n) noexcept nogil:
    """_pairwise of the squares a[i] * a[i] (each rounded, as the array a * a would hold them)."""
    cdef floating r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef Py_ssize_t i, n2
    if n < 8:
        res = 0
        for i in range(n):
            res = res + a[i] * a[i]
        return res
    if n <= 128:
        r0 = a[0] * a[0]; r1 = a[1] * a[1]; r2 = a[2] * a[2]; r3 = a[3] * a[3]
        r4 = a[4] * a[4]; r5 = a[5] * a[5]; r6 = a[6] * a[6]; r7 = a[7] * a[7]
        i = 8
        while i < n - (n % 8):
            r0 = r0 + a[i] * a[i]; r1 = r1 + a[i + 1] * a[i + 1]
            r2 = r2 + a[i + 2] * a[i + 2]; r3 = r3 + a[i + 3] * a[i + 3]
            r4 = r4 + a[i + 4] * a[i + 4]; r5 = r5 + a[i + 5] * a[i + 5]
            r6 = r6 + a[i + 6] * a[i + 6]; r7 = r7 + a[i + 7] * a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res = res + a[i] * a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sq(a, n2) + _pairwise_sq(a + n2, n - n2)


cdef void _scaled(const Instr *s, floating *dummy) noexcept nogil:
    cdef const floating *a = <const floating *>s.a
    cdef const floating *d = <const floating *>s.d
    cdef floating *c = <floating *>s.c
    cdef floating f = (<const floating *>s.b)[0]
    cdef floating t
    cdef Py_ssize_t i, n = s.n
    # one loop per case, no branch inside (so that each vectorizes)
    if d == NULL and s.k >= 2:
        for i in range(n):
            t = f * a[i]
            c[i] = t + t
    elif d == NULL:
        for i in range(n):
            c[i] = f * a[i]
    elif s.ta and s.k == 3:  # one doubled term after the addend: d + (t + t)
        for i in range(n):
            t = f * a[i]
            c[i] = d[i] + (t + t)
    elif s.ta and s.k == 2:  # the addend came first: (d + t) + t
        for i in range(n):
            t = f * a[i]
            c[i] = (d[i] + t) + t
    elif s.ta:
        for i in range(n):
            c[i] = d[i] + f * a[i]
    elif s.k >= 2:  # (t + t) + d
        for i in range(n):
            t = f * a[i]
            c[i] = (t + t) + d[i]
    else:
        for i in range(n):
            c[i] = f * a[i] + d[i]


cdef void _optim(const Instr *s, floating *dummy) noexcept nogil:
    cdef const double *h = <const double *>s.e  # lr, p1, p2, p3, weight decay, step
    cdef floating *w = <floating *>s.a
    cdef const floating *dw = <const floating *>s.b
    cdef Py_ssize_t n = s.n, t = <Py_ssize_t>h[5]
    if s.op == 0:
        sgd_update(w, dw, n, h[0], h[4])
    elif s.op == 1:
        sgd_momentum_update(w, dw, <floating *>s.c, n, h[0], h[1], h[4])
    elif s.op == 2:
        rmsprop_update(w, dw, <floating *>s.c, n, h[0], h[1], h[2], h[4])
    elif s.op == 3:
        adam_update(w, dw, <floating *>s.c, <floating *>s.d, n, h[0], h[1], h[2], h[3], h[4], t)
    else:
        adamw_update(w, dw, <floating *>s.c, <floating *>s.d, n, h[0], h[1], h[2], h[3], h[4], t)


cdef void _dropout(const Instr *s, floating *dummy) noexcept nogil:
    """functional.dropout and ops.dropout: keep = draws >= p (doubles), mask = keep ? (floating)(1 /
    (1 - p)) : 0, y = x * mask."""
    cdef const floating *x = <const floating *>s.a
    cdef const double *draws = <const double *>s.b
    cdef floating *y = <floating *>s.c
    cdef floating *mask = <floating *>s.d
    cdef floating scale = <floating>s.q
    cdef double p = s.p
    cdef Py_ssize_t i
    for i in range(s.n):
        mask[i] = scale if draws[i] >= p else 0
        y[i] = x[i] * mask[i]


cdef inline floating _op(int op, floating x, floating y) noexcept nogil:
    if op == 0:
        return x + y
    if op == 1:
        return x - y
    if op == 2:
        return x * y
    return x / y


cdef void _binary(const Instr *s, floating *dummy) noexcept nogil:
    cdef const floating *a = <const floating *>s.a
    cdef const floating *b = <const floating *>s.b
    cdef floating *c = <floating *>s.c
    cdef Py_ssize_t i, j, r, n = s.n, m = s.m
    cdef floating x, y
    cdef int op = s.op
    if s.ma == FULL and s.mb == FULL:
        if op == 0:
            for i in range(n):
                c[i] = a[i] + b[i]
        elif op == 1:
            for i in range(n):
                c[i] = a[i] - b[i]
        elif op == 2:
            for i in range(n):
                c[i] = a[i] * b[i]
        else:
            for i in range(n):
                c[i] = a[i] / b[i]
    elif s.ma == FULL and s.mb == SCALAR:
        y = b[0]
        for i in range(n):
            c[i] = _op(op, a[i], y)
    elif s.ma == SCALAR and s.mb == FULL:
        x = a[0]
        for i in range(n):
            c[i] = _op(op, x, b[i])
    elif s.ma == SCALAR and s.mb == SCALAR:
        c[0] = _op(op, a[0], b[0])
    elif s.ma == FULL and s.mb == ROW:
        for r in range(n // m):
            i = r * m
            for j in range(m):
                c[i + j] = _op(op, a[i + j], b[j])
    else:  # ROW, FULL
        for r in range(n // m):
            i = r * m
            for j in range(m):
                c[i + j] = _op(op, a[j], b[i + j])


cdef void _exec(const Instr *s, floating *dummy) noexcept nogil:
    cdef Py_ssize_t i, n = s.n
    cdef floating v
    cdef floating *c = <floating *>s.c
    cdef const floating *a = <const floating *>s.a
    cdef int kind = s.kind
    if kind == GEMM:
        gemm(s.ta, s.tb, <int>s.m, <int>s.n, <int>s.k, a, <const floating *>s.b, c)
    elif kind == BIAS_ACT:
        bias_act_forward(<floating *>s.a, <const floating *>s.b, c, s.n, s.m, s.act, <floating>s.p)
    elif kind == ACT_BWD or kind == COLSUM:
        act_backward_colsum(a, <const floating *>s.b, c, <floating *>s.d, s.n, s.m, s.act, <floating>s.p)
    elif kind == SCE:
        (<floating *>s.e)[0] = <floating>softmax_ce(a, <const Py_ssize_t *>s.b, s.n, s.m, c, <double *>s.d)
    elif kind == SVM:
        (<floating *>s.e)[0] = <floating>svm(a, <const Py_ssize_t *>s.b, s.n, s.m, <floating>s.p, c,
                                     <double *>s.d)
    elif kind == BINARY:
        _binary(s, dummy)
    elif kind == NEG:
        for i in range(n):
            c[i] = -a[i]
    elif kind == FILL:
        v = a[0]
        for i in range(n):
            c[i] = v
    elif kind == SUM:  # NumPy adds the pairwise sum to an accumulator starting at +0
        v = 0
        c[0] = v + _pairwise(a, n)
    elif kind == COPY:
        memcpy(c, a, n * sizeof(floating))
    elif kind == SUMSQ:
        v = 0
        c[0] = v + _pairwise_sq(a, n)
    elif kind == SCALED:
        _scaled(s, dummy)
    elif kind == OPTIM:
        _optim(s, dummy)
    elif kind == GATE:
        gate_forward(s.op, a, c, n, <floating>s.p)
    elif kind == GATE_BWD:
        gate_backward(s.op, a, <const floating *>s.b, c, n, <floating>s.p)
    elif kind == DROPOUT:
        _dropout(s, dummy)
    elif kind == BATCHNORM:
        batchnorm_forward_into(a, <const floating *>s.b, <const floating *>s.f, s.n, s.m, s.p, c,
                               <floating *>s.d, <floating *>s.e, <floating *>s.g, <floating *>s.h, s.q,
                               <double *>s.i)
    elif kind == BATCHNORM_BWD or kind == LAYERNORM_BWD:
        norm_backward_into(kind == BATCHNORM_BWD, a, <const floating *>s.b, <const floating *>s.d,
                           <const floating *>s.e, <const floating *>s.f, s.n, s.m, c, <floating *>s.g,
                           <floating *>s.h, <double *>s.i)
    elif kind == LAYERNORM:
        layernorm_forward_into(a, <const floating *>s.b, <const floating *>s.f, s.n, s.m, s.p, c,
                               <floating *>s.d, <floating *>s.e)
    elif kind == MAXOUT:
        maxout_forward_into(a, s.n, s.m, s.k, c, <Py_ssize_t *>s.b)
    elif kind == MAXOUT_BWD:
        maxout_backward_into(a, <const Py_ssize_t *>s.b, s.n, s.m, s.k, c)


@cython.final
cdef class Program:
    """A list of instructions over buffers of one dtype, checked once, run in C by `run()`.

    instrs: a list of dicts, each with 'kind' (a key of KINDS) and the fields the kind uses:
    buffers a, b, c, d, e (ndarrays or None), sizes m, n, k, flags ta, tb, the activation code
    act and its parameter p, the binary op (a key of BINARY_OPS) and operand modes ma, mb.
    """

    cdef Instr *code
    cdef Py_ssize_t count
    cdef bint f64
    cdef list keep  # every buffer the instructions point into
    cdef readonly object dtype

    def __cinit__(self):
        self.code = NULL
        self.count = 0

    def __init__(self, list instrs, dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype != np.float32 and self.dtype != np.float64:
            raise TypeError(f"capture: a program runs float32 or float64 buffers, not {self.dtype}")
        self.f64 = self.dtype == np.float64
        self.keep = []
        self.code = <Instr *>calloc(max(len(instrs), 1), sizeof(Instr))
        if self.code == NULL:
            raise MemoryError()
        for spec in instrs:
            self._add(spec)

    def __dealloc__(self):
        free(self.code)

    def __len__(self):
        return self.count

    cdef void *_buffer(self, dict spec, str name, Py_ssize_t size, bint write, object dtype) except? NULL:
        a = spec.get(name)
        if a is None:
            if size < 0:  # optional
                return NULL
            raise ValueError(f"capture: instruction {spec['kind']} needs buffer {name}")
        if type(a) is not np.ndarray:
            raise TypeError(f"capture: buffer {name} of {spec['kind']} is a {type(a).__name__}")
        arr = <cnp.ndarray>a
        want = self.dtype if dtype is None else dtype
        if arr.dtype != want or not arr.dtype.isnative:
            raise TypeError(f"capture: buffer {name} of {spec['kind']} is {arr.dtype}, expected {want}")
        if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)):
            raise ValueError(f"capture: buffer {name} of {spec['kind']} is not C-contiguous and aligned")
        if write and not cnp.PyArray_ISWRITEABLE(arr):
            raise ValueError(f"capture: buffer {name} of {spec['kind']} is read-only")
        if arr.size < abs(size):
            raise ValueError(f"capture: buffer {name} of {spec['kind']} holds {arr.size} values, "
                             f"needs {abs(size)}")
        self.keep.append(arr)
        return cnp.PyArray_DATA(arr)

    cdef int _add(self, dict spec) except -1:
        cdef Instr *s = &self.code[self.count]
        kind = KINDS[spec["kind"]]
        s.kind = kind
        s.ta = spec.get("ta", 0)
        s.tb = spec.get("tb", 0)
        s.act = spec.get("act", 0)
        s.p = spec.get("p", 0.0)
        s.m = spec.get("m", 0)
        s.n = spec.get("n", 0)
        s.k = spec.get("k", 0)
        cdef Py_ssize_t m = s.m, n = s.n, k = s.k
        if m < 0 or n < 0 or k < 0:
            raise ValueError(f"capture: negative size in {spec['kind']}")
        intp = np.dtype(np.intp)
        if kind == GEMM:
            if not (0 < m < 2**31 and 0 < n < 2**31 and 0 < k < 2**31):
                raise ValueError(f"capture: product sizes {m}x{k}x{n} must be in [1, 2^31)")
            s.a = self._buffer(spec, "a", m * k, False, None)
            s.b = self._buffer(spec, "b", k * n, False, None)
            s.c = self._buffer(spec, "c", m * n, True, None)
        elif kind == BIAS_ACT:
            s.a = self._buffer(spec, "a", n * m, True, None)
            s.b = self._buffer(spec, "b", m, False, None)
            s.c = self._buffer(spec, "c", -n * m, True, None)
        elif kind == ACT_BWD or kind == COLSUM:
            s.a = self._buffer(spec, "a", n * m, False, None)
            s.b = self._buffer(spec, "b", -n * m, False, None)
            s.c = self._buffer(spec, "c", -n * m, True, None)
            s.d = self._buffer(spec, "d", -m, True, None)
            if kind == ACT_BWD and s.act != 0 and (s.b == NULL or s.c == NULL):
                raise ValueError("capture: act_bwd with an activation needs the saved buffer and dz")
            if kind == COLSUM:
                s.act = 0
                if s.d == NULL:
                    raise ValueError("capture: colsum needs d")
        elif kind == SCE or kind == SVM:
            if n < 1 or m < 1:
                raise ValueError("capture: a loss needs n, c >= 1")
            s.a = self._buffer(spec, "a", n * m, False, None)
            s.b = self._buffer(spec, "b", n, False, intp)
            s.c = self._buffer(spec, "c", -n * m, True, None)
            s.d = self._buffer(spec, "d", n, True, np.dtype(np.float64))
            s.e = self._buffer(spec, "e", 1, True, None)
        elif kind == BINARY:
            s.op = BINARY_OPS[spec["op"]]
            s.ma = MODES[spec.get("ma", "full")]
            s.mb = MODES[spec.get("mb", "full")]
            if (s.ma == ROW or s.mb == ROW) and (m < 1 or n % m):
                raise ValueError("capture: a row operand needs n a multiple of m >= 1")
            if s.ma == ROW and s.mb == ROW:
                raise ValueError("capture: at most one row operand")
            s.a = self._buffer(spec, "a", n if s.ma == FULL else (1 if s.ma == SCALAR else m), False, None)
            s.b = self._buffer(spec, "b", n if s.mb == FULL else (1 if s.mb == SCALAR else m), False, None)
            s.c = self._buffer(spec, "c", n if s.ma == FULL or s.mb == FULL else 1, True, None)
            if s.ma == SCALAR and s.mb == SCALAR and n != 1:
                raise ValueError("capture: a scalar-scalar op has n == 1")
        elif kind == NEG or kind == COPY:
            s.a = self._buffer(spec, "a", n, False, None)
            s.c = self._buffer(spec, "c", n, True, None)
        elif kind == FILL:
            s.a = self._buffer(spec, "a", 1, False, None)
            s.c = self._buffer(spec, "c", n, True, None)
        elif kind == SUM:
            s.a = self._buffer(spec, "a", n, False, None)
            s.c = self._buffer(spec, "c", 1, True, None)
        elif kind == SUMSQ:
            s.a = self._buffer(spec, "a", n, False, None)
            s.c = self._buffer(spec, "c", 1, True, None)
        elif kind == SCALED:
            if not 1 <= k <= 3:
                raise ValueError("capture: scaled takes k = 1, 2 or 3")
            s.a = self._buffer(spec, "a", n, False, None)
            s.b = self._buffer(spec, "b", 1, False, None)
            s.d = self._buffer(spec, "d", -n, False, None)
            s.c = self._buffer(spec, "c", n, True, None)
        elif kind == DROPOUT:
            s.q = spec["q"]
            s.a = self._buffer(spec, "a", n, False, None)
            s.b = self._buffer(spec, "b", n, False, np.dtype(np.float64))
            s.c = self._buffer(spec, "c", n, True, None)
            s.d = self._buffer(spec, "d", n, True, None)
        elif kind == GATE or kind == GATE_BWD:
            s.op = spec["op"]
            if s.op not in GATES.values():
                raise ValueError(f"capture: unknown gate {s.op}")
            s.a = self._buffer(spec, "a", n, False, None)
            if kind == GATE_BWD:
                s.b = self._buffer(spec, "b", n, False, None)
            s.c = self._buffer(spec, "c", n, True, None)
        elif kind in (LAYERNORM, LAYERNORM_BWD, BATCHNORM, BATCHNORM_BWD):
            if n < 1 or m < 1 or (kind == BATCHNORM and n < 2 and spec.get("g") is not None):
                raise ValueError("capture: a norm needs n, d >= 1 (n >= 2 with running statistics)")
            fwd = kind == LAYERNORM or kind == BATCHNORM
            stats = n if kind == LAYERNORM or kind == LAYERNORM_BWD else m
            s.q = spec.get("q", 0.0)
            s.a = self._buffer(spec, "a", n * m, False, None)
            s.b = self._buffer(spec, "b", m if fwd else n * m, False, None)
            s.c = self._buffer(spec, "c", n * m if fwd else -n * m, True, None)
            s.d = self._buffer(spec, "d", stats, fwd, None)
            s.e = self._buffer(spec, "e", stats, fwd, None)
            s.f = self._buffer(spec, "f", m, False, None)
            if kind == BATCHNORM:
                s.g = self._buffer(spec, "g", -m, True, None)
                s.h = self._buffer(spec, "h", -m, True, None)
                if (s.g == NULL) != (s.h == NULL):
                    raise ValueError("capture: batch norm takes both running statistics or neither")
                s.i = self._buffer(spec, "i", m, True, np.dtype(np.float64))
            elif not fwd:
                s.g = self._buffer(spec, "g", m, True, None)
                s.h = self._buffer(spec, "h", m, True, None)
                s.i = self._buffer(spec, "i", 2 * m, True, np.dtype(np.float64))
        elif kind == OPTIM:
            s.op = spec["op"]
            if not 0 <= s.op <= 4:
                raise ValueError(f"capture: unknown optimizer rule {s.op}")
            s.a = self._buffer(spec, "a", n, True, None)
            s.b = self._buffer(spec, "b", n, False, None)
            s.c = self._buffer(spec, "c", n if s.op > 0 else -n, True, None)
            s.d = self._buffer(spec, "d", n if s.op > 2 else -n, True, None)
            s.e = self._buffer(spec, "e", 6, True, np.dtype(np.float64))
        elif kind == MAXOUT or kind == MAXOUT_BWD:
            if k < 1:
                raise ValueError("capture: maxout needs k >= 1 pieces")
            fwd = kind == MAXOUT
            s.a = self._buffer(spec, "a", n * m * k if fwd else n * m, False, None)
            s.b = self._buffer(spec, "b", n * m, fwd, intp)
            s.c = self._buffer(spec, "c", n * m if fwd else n * m * k, True, None)
        self.count += 1
        return 0

    def run(self):
        """Run every instruction in order (the GIL released)."""
        cdef Py_ssize_t i
        cdef Instr *code = self.code
        cdef Py_ssize_t count = self.count
        with nogil:
            if self.f64:
                for i in range(count):
                    _exec(&code[i], <double *>NULL)
            else:
                for i in range(count):
                    _exec(&code[i], <float *>NULL)


def check_labels(cnp.ndarray labels, Py_ssize_t classes, str op):
    """ValueError naming the first label outside [0, classes) (labels: contiguous intp)."""
    cdef const Py_ssize_t *p = <const Py_ssize_t *>cnp.PyArray_DATA(labels)
    cdef Py_ssize_t i, n = labels.size, bad = -1
    with nogil:
        for i in range(n):
            if p[i] < 0 or p[i] >= classes:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"{op}: labels value {p[bad]} at position {bad} is out of range [0, {classes})")


def pairwise_sum(cnp.ndarray a):
    """The pairwise sum of a contiguous float32/float64 array, as the SUM instruction computes it
    (a test hook: it must equal NumPy's a.sum() bit for bit)."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.dtype not in (np.float32, np.float64):
        raise ValueError("pairwise_sum: a C-contiguous float32 or float64 array")
    cdef float zf = 0
    cdef double zd = 0
    if a.dtype == np.float32:
        return np.float32(zf + _pairwise(<const float *>cnp.PyArray_DATA(a), a.size))
    return np.float64(zd + _pairwise(<const double *>cnp.PyArray_DATA(a), a.size))


@cython.final
cdef class OptimizerRows:
    """The hyperparameters of a plan's OPTIM instructions, one row (lr, three hyperparameters,
    weight decay, step) per parameter, refreshed from the optimizers before every run.

    rows: a list of (rule, group, state, [state arrays]) per parameter, in the order the eager
    `step()` updates them: `prepare()` advances each state's "step" as `step()` does and reads
    the group's values (a scheduler may have changed the lr). It returns False, changing nothing,
    when a group no longer has the rule the plan was built for (momentum switched on or off) or a
    state array was replaced: the caller then records again.
    """

    cdef list rows
    cdef readonly cnp.ndarray hyper

    def __init__(self, list rows):
        self.rows = rows
        self.hyper = np.zeros((max(len(rows), 1), 6), np.float64)

    def prepare(self):
        cdef double[:, ::1] h = self.hyper
        cdef Py_ssize_t r
        cdef int rule
        for r in range(len(self.rows)):
            rule, group, state, arrays = self.rows[r]
            if rule <= 1 and (group["momentum"] != 0) != (rule == 1):
                return False
            if rule == 1 and state["momentum_buffer"] is not arrays[0]:
                return False
            if rule == 2 and state["square_avg"] is not arrays[0]:
                return False
            if rule >= 3 and (state["exp_avg"] is not arrays[0] or state["exp_avg_sq"] is not arrays[1]):
                return False
        for r in range(len(self.rows)):
            rule, group, state, arrays = self.rows[r]
            state["step"] += 1
            h[r, 0] = group["lr"]
            h[r, 4] = group["weight_decay"]
            if rule == 1:
                h[r, 1] = group["momentum"]
            elif rule == 2:
                h[r, 1] = group["decay"]
                h[r, 2] = group["eps"]
            elif rule >= 3:
                beta1, beta2 = group["betas"]
                h[r, 1] = beta1
                h[r, 2] = beta2
                h[r, 3] = group["eps"]
                h[r, 5] = state["step"]
        return True


def sum_of_squares(cnp.ndarray a):
    """The sum of a[i] * a[i] over a C-contiguous float32/float64 array, each square rounded to
    the dtype and the squares summed pairwise as NumPy's (a * a).sum() (bit for bit), without
    the array of squares: the forward of the op table's `sumsq` row (fastgrad.nn's L2 penalty)."""
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"sumsq: expected float32 or float64, got {a.dtype}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and a.dtype.isnative):
        raise ValueError("sumsq: expected a C-contiguous, aligned, native-order array")
    cdef float zf = 0, rf
    cdef double zd = 0, rd
    cdef Py_ssize_t n = a.size
    if a.dtype == np.float32:
        with nogil:
            rf = zf + _pairwise_sq(<const float *>cnp.PyArray_DATA(a), n)
        return np.float32(rf)
    with nogil:
        rd = zd + _pairwise_sq(<const double *>cnp.PyArray_DATA(a), n)
    return np.float64(rd)
