# cython: language_level=3
"""The tape in Cython: `Node`, `apply` (run an op, record its node) and `run_backward` (the walk).

The same logic as the Python tape it replaces (fastgrad/autograd.py and tensor.py keep the Python
text of both, used with FASTGRAD_PURE_TAPE=1, and docs/ARCHITECTURE.md describes them): the
ownership rule, the version-counter check, retain_graph, keep_grads, the debug record and every
error message are unchanged; what changes is the cost of each step for small tensors (typed
locals, no keyword dicts on the operator path, NumPy scalars wrapped through the C API, no
re-validation of arguments already checked here).

The module keeps no state of its own beyond the objects `bind()` hands it (the Tensor class, the
grad-mode and debug switches, the in-place record and the shared sequence counter), so the Python
and the Cython tape read and write the same switches.
"""
cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_REFCNT, Py_XDECREF
from cpython.list cimport PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.string cimport memcpy
from cython cimport floating
from fastgrad._kernels cimport gate_backward, gate_forward

import numpy as np
from heapq import heappop, heappush
from types import MemberDescriptorType

cnp.import_array()

cdef extern from *:
    bint _unlikely "unlikely"(bint)  # Cython's __builtin_expect(!!(x), 0): the cold branch out of the way

cdef extern from "<fenv.h>" nogil:
    int FE_DIVBYZERO, FE_OVERFLOW, FE_INVALID
    int feclearexcept(int excepts)
    int fetestexcept(int excepts)

cdef extern from "activations.h" nogil:
    enum: FG_ACT_RELU, FG_ACT_SIGMOID, FG_ACT_TANH

cdef extern from "numpy/arrayobject.h":
    # a NumPy scalar (np.float32(...)) as a 0-d array of its own dtype; the C behind np.array(s)
    object PyArray_FromScalar(object scalar, void *outcode)

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:  # a __slots__ field's descriptor: where the field lives
        PyMemberDef *d_member
    object PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems)

cdef object ndarray = np.ndarray
cdef object _np_add = np.add
cdef object _np_array = np.array
cdef object _MemberDescriptor = MemberDescriptorType

# bound by autograd.py at import (bind()): shared with the Python tape
cdef type Tensor = None
cdef type Constant = None  # autograd.Constant: the one class both tapes use for the labels
cdef object _state = None
cdef list _grad_off = [0]  # autograd._grad_off: how many threads are inside no_grad()
cdef object _debug = None
cdef object _inplace = None
cdef object _sequence = None
cdef object _DebugRecord = None
cdef object _check_versions = None
cdef object _version_counter = None
cdef object _py_coerce = None
cdef object _op_add = None, _op_sub = None, _op_mul = None, _op_div = None, _op_neg = None
cdef object _op_exp = None, _op_log = None
cdef object _op_relu = None, _op_sigmoid = None, _op_tanh = None
cdef object _py_backward = None
cdef dict _own_rules = {}  # op -> (forward, backward) as the op table defined them
cdef object _recorder = None  # fastgrad.capture's recorder while it records a step


def set_recorder(recorder):
    """Report every op to `recorder.op(op, inputs, attrs, result)` (None: stop); backward() then
    takes the Python path, which reports itself (see fastgrad/capture.py)."""
    global _recorder
    _recorder = recorder


cdef inline bint _forward_unchanged(object op):
    """Whether `op` still has the op table's own forward (the C paths compute exactly the op table's
    forward and rules; a forward or rule replaced at run time, e.g. by a test planting a bug, runs as
    it is)."""
    rules = _own_rules.get(op)
    return rules is not None and (<tuple>rules)[0] is _op_field(op, _FORWARD, "forward")


cdef inline bint _rule_unchanged(object op, object rule):
    """Whether `rule` (op.backward, read by the caller) is still the op table's own rule of `op`."""
    rules = _own_rules.get(op)
    return rules is not None and (<tuple>rules)[1] is rule


def bind(tensor_cls, state, debug, inplace, sequence, debug_record, check_versions, version_counter,
         coerce, ops, backward, grad_off, constant_cls):
    """Hand the tape the objects it shares with autograd.py and tensor.py (called once at import)."""
    global Tensor, Constant, _state, _debug, _inplace, _sequence, _DebugRecord, _check_versions, _version_counter
    global _grad_off, _py_coerce, _op_add, _op_sub, _op_mul, _op_div, _op_neg, _op_exp, _op_log, _py_backward
    global _op_relu, _op_sigmoid, _op_tanh
    _grad_off = grad_off
    _py_coerce = coerce
    _py_backward = backward
    _op_exp, _op_log = ops.exp, ops.log
    _op_relu, _op_sigmoid, _op_tanh = ops.relu, ops.sigmoid, ops.tanh
    _op_add, _op_sub, _op_mul, _op_div, _op_neg = ops.add, ops.sub, ops.mul, ops.div, ops.neg
    for op in (ops.add, ops.sub, ops.mul, ops.div, ops.neg, ops.exp, ops.log, ops.relu, ops.sigmoid,
               ops.tanh):
        _own_rules[op] = (op.forward, op.backward)
    global _DATA, _GRAD, _REQUIRES_GRAD, _NODE, _VC, _NAME, _FORWARD, _BACKWARD, _TAKES_NEEDS, _Op
    _DATA, _GRAD, _REQUIRES_GRAD, _NODE, _VC, _NAME = _slot_offsets(
        tensor_cls, ("data", "grad", "requires_grad", "_node", "_vc", "name"))
    if tensor_cls.__new__ is not object.__new__:
        raise TypeError("Tensor defines __new__: the tape makes tensors as object.__new__ does")
    _Op = type(ops.add)
    _FORWARD, _BACKWARD, _TAKES_NEEDS = _slot_offsets(_Op, ("forward", "backward", "takes_needs"))
    Tensor = tensor_cls
    Constant = constant_cls
    _state = state
    _debug = debug
    _inplace = inplace
    _sequence = sequence
    _DebugRecord = debug_record
    _check_versions = check_versions
    _version_counter = version_counter


@cython.final
cdef class Node:
    """One recorded op application: op row, input tensors, saved buffers, sequence number.

    `grad` holds this node's output gradient after a backward with `keep_grads=True` (for drawing).
    `out_data` and `out_vc` are the output's data and version counter (see `mark_modified`); the
    data stays alive with the output tensor anyway, so holding it costs no memory.

    `inputs` holds the input tensors in argument order, and an autograd.Constant where an argument
    is integer data (the losses' labels), which takes no gradient.

    PyTorch's accessors read the graph without the fields: `name()` is the op's name,
    `next_functions` is a tuple with one `(node, 0)` pair per input, node None for a leaf, a
    constant or a Constant (`Tensor.grad_fn` is the node of an op output, None for a leaf).
    """

    cdef public object op
    cdef public tuple inputs
    cdef public object saved
    cdef public long long seq
    cdef public bint released
    # whether some input is a Constant: the walk then drops what the rule returns for it before it
    # reads the inputs' fields in place (a Constant has not the Tensor layout); False, as a new
    # object's fields are zeroed, for every node _apply makes. Beside `released`, in its padding.
    cdef readonly bint constant_inputs
    cdef public object grad
    cdef public object out_data
    cdef public object out_vc

    def __init__(self, op, inputs, saved, out_data=None, out_vc=None):
        self.op = op
        self.inputs = tuple(inputs)
        self.constant_inputs = any([type(t) is Constant for t in self.inputs])
        self.saved = saved
        self.seq = next(_sequence)
        self.released = False
        self.grad = None
        self.out_data = out_data
        self.out_vc = out_vc

    def name(self):
        """The op's name, e.g. 'mul' (PyTorch's grad_fn.name())."""
        return self.op.name

    @property
    def next_functions(self):
        """((node of input 0, 0), (node of input 1, 0), ...): None where an input is no op output."""
        return tuple([(t._node, 0) for t in self.inputs])

    def __call__(self, grad):
        """The gradients of the op's inputs for an upstream gradient `grad` of the output's shape,
        as PyTorch's `grad_fn(grad)`: the op's backward rule on what the forward saved (a tuple,
        None where an input gets none; fresh arrays). Needs the saved buffers: after a backward
        without retain_graph=True it raises RuntimeError."""
        if self.released:
            raise RuntimeError(
                f"op '{self.op.name}' #{self.seq}: its saved buffers were freed by backward(); "
                "pass retain_graph=True to keep them")
        grads = self.op.backward(np.ascontiguousarray(grad), *self.saved)
        return tuple([None if g is None else np.array(g) for g in grads])

    def __repr__(self):
        return f"<Node {self.op.name} #{self.seq}>"


# --- the fields of a Tensor, read and written in place --------------------------------------------
# tensor.Tensor keeps its fields in __slots__ (data, grad, requires_grad, _node, name, _vc): CPython
# stores each at a fixed offset in the instance, which its member descriptor records. bind() reads
# the offsets once; the tape then reads and stores the fields at them, as the descriptors do, without
# an attribute lookup per access (an unset field, NULL, goes to getattr for Python's AttributeError).
# Only instances of Tensor (or of subclasses, which keep the layout) are ever read this way.

cdef Py_ssize_t _DATA = 0, _GRAD = 0, _REQUIRES_GRAD = 0, _NODE = 0, _VC = 0, _NAME = 0
cdef Py_ssize_t _FORWARD = 0, _BACKWARD = 0, _TAKES_NEEDS = 0  # ops.Op's, the same way
cdef type _Op = None


cdef list _slot_offsets(type cls, tuple names):
    """The offsets of cls's __slots__ fields `names`, from their member descriptors."""
    offsets = []
    for name in names:
        d = cls.__dict__.get(name)
        if type(d) is not _MemberDescriptor:
            raise TypeError(f"{cls.__name__}.{name} is no __slots__ field (the tape reads it in place)")
        offsets.append((<PyMemberDescrObject *>d).d_member.offset)
    return offsets


cdef inline object _field(object t, Py_ssize_t offset, str name):
    cdef PyObject *v = (<PyObject **>((<char *><PyObject *>t) + offset))[0]
    if v == NULL:
        return getattr(t, name)  # raises AttributeError, as the descriptor does
    return <object>v


cdef inline void _set_field(object t, Py_ssize_t offset, object value):
    cdef PyObject **p = <PyObject **>((<char *><PyObject *>t) + offset)
    cdef PyObject *old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject *>value
    Py_XDECREF(old)


cdef inline object _op_field(object op, Py_ssize_t offset, str name):
    """op.<name> for a row of the op table (an ops.Op: its __slots__ read in place), else getattr."""
    if type(op) is _Op:
        return _field(op, offset, name)
    return getattr(op, name)


cdef inline object _data(object t):
    return _field(t, _DATA, "data")


cdef inline bint _requires_grad(object t) except -1:
    return bool(_field(t, _REQUIRES_GRAD, "requires_grad"))


cdef inline object _node_of(object t):
    return _field(t, _NODE, "_node")


cdef inline object _check_tensor(object t):
    """`t` itself when it is a Tensor; anything else fails as `t.data` would."""
    if isinstance(t, Tensor):
        return t
    t.data  # AttributeError: 'int' object has no attribute 'data', as the Python tape says
    raise TypeError(f"expected a fastgrad Tensor, got {type(t).__name__}")


cdef inline Node _new_node(object op, tuple inputs, object saved, object out_data, object out_vc):
    cdef Node node = Node.__new__(Node)
    node.op = op
    node.inputs = inputs
    node.saved = saved
    node.seq = next(_sequence)
    node.released = False
    node.grad = None
    node.out_data = out_data
    node.out_vc = out_vc
    return node


cdef inline object _memory_owner(object a):
    """The array whose buffer `a` lives in: `a` itself unless it is a view of another array."""
    base = a.base
    while isinstance(base, ndarray):
        a = base
        base = a.base
    return a


cdef inline object _wrap(object data, bint requires_grad):
    """Tensor._wrap: a tensor around `data` as it is (no copy, no checks)."""
    t = PyType_GenericAlloc(<PyTypeObject *>Tensor, 0)  # what Tensor.__new__(Tensor) does
    _set_field(t, _DATA, data)
    _set_field(t, _GRAD, None)
    _set_field(t, _REQUIRES_GRAD, True if requires_grad else False)
    _set_field(t, _NODE, None)
    _set_field(t, _NAME, None)
    _set_field(t, _VC, None)
    return t


# --- small same-shape arithmetic in C -----------------------------------------------------------
# NumPy spends ~0.5 us on one 0-d multiply (dispatch, a scalar result); for up to SMALL elements of
# one shape and dtype the tape computes + - * / and negation itself. IEEE arithmetic in the array's
# own precision (no -ffast-math; SSE on x86-64 has no excess precision), so the result is the value
# NumPy computes, bit for bit; anything else (broadcasting, other sizes, odd layouts) goes to NumPy.
# A division by zero, an overflow or an invalid operation (the floating-point flags, read after the
# loop; this module is built without -fno-trapping-math) also hands the op to NumPy, which computes
# it again and warns as np.errstate says: the same warnings as before.

DEF SMALL = 64
cdef enum:
    ADD, SUB, MUL, DIV, NEG, DIVGRAD


cdef inline bint _small_ok(object x, int *typenum, Py_ssize_t *size):
    """x is an aligned native C-contiguous float32/float64 ndarray of at most SMALL elements."""
    if type(x) is not ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE:
        return False
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a)):
        return False
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    if n > SMALL:
        return False
    typenum[0] = t
    size[0] = n
    return True


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int nd = cnp.PyArray_NDIM(a), i
    if nd != cnp.PyArray_NDIM(b):
        return False
    cdef cnp.npy_intp *da = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *db = cnp.PyArray_DIMS(b)
    for i in range(nd):
        if da[i] != db[i]:
            return False
    return True


cdef object _small(int code, object x, object y, object z, bint into_x=False):
    """code(x, y) elementwise into a new array of x's shape, or None when NumPy must do it.

    NEG: -x (y, z unused). DIVGRAD: ((-(x / y)) * z) / y, div's gradient for its divisor, in the
    order of ops.div_backward (x = g, y = b, z = a). into_x: write the result into x itself and
    return x (the walk passes a g it owns); computed into a buffer first, so that x is untouched
    when None is returned.
    """
    cdef int tx, ty, tz
    cdef Py_ssize_t nx, ny, nz, i
    cdef double buf[SMALL]
    cdef cnp.ndarray out
    cdef void *dst
    if not _small_ok(x, &tx, &nx):
        return None
    if into_x and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>x):
        into_x = False
    if code != NEG:
        if not _small_ok(y, &ty, &ny) or ty != tx or not _same_shape(<cnp.ndarray>x, <cnp.ndarray>y):
            return None
        if code == DIVGRAD and (not _small_ok(z, &tz, &nz) or tz != tx
                                or not _same_shape(<cnp.ndarray>x, <cnp.ndarray>z)):
            return None
    if into_x:
        out = <cnp.ndarray>x
        dst = buf
    else:
        out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>x), cnp.PyArray_DIMS(<cnp.ndarray>x), tx, 0)
        dst = cnp.PyArray_DATA(out)
    feclearexcept(FE_DIVBYZERO | FE_OVERFLOW | FE_INVALID)
    _small_loop(code, dst, x, y, z, tx, nx)
    if fetestexcept(FE_DIVBYZERO | FE_OVERFLOW | FE_INVALID):
        return None
    if into_x:
        memcpy(cnp.PyArray_DATA(out), buf, nx * (sizeof(float) if tx == cnp.NPY_FLOAT else sizeof(double)))
    return out


cdef inline void _small_loop(int code, void *dst, object x, object y, object z, int tx, Py_ssize_t nx):
    if tx == cnp.NPY_FLOAT:
        _small_typed(code, <float *>dst, x, y, z, nx)
    else:
        _small_typed(code, <double *>dst, x, y, z, nx)


cdef inline void _small_typed(int code, floating *out, object x, object y, object z, Py_ssize_t nx):
    cdef Py_ssize_t i
    cdef const floating *xs = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef const floating *ys
    cdef const floating *zs
    if code == NEG:
        for i in range(nx):
            out[i] = -xs[i]
        return
    ys = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>y)
    if code == ADD:
        for i in range(nx):
            out[i] = xs[i] + ys[i]
    elif code == SUB:
        for i in range(nx):
            out[i] = xs[i] - ys[i]
    elif code == MUL:
        for i in range(nx):
            out[i] = xs[i] * ys[i]
    elif code == DIV:
        for i in range(nx):
            out[i] = xs[i] / ys[i]
    else:
        zs = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>z)
        for i in range(nx):
            out[i] = ((-(xs[i] / ys[i])) * zs[i]) / ys[i]


# The gates without parameters on small arrays: the C kernel the op's forward and rule call
# (fastgrad._kernels' entry points, the same bits), called from here without the op table's Python
# functions and the binding's checks (_small_ok checks what the binding would). The kernels raise no
# floating-point warnings, so nothing needs handing back to NumPy.

cdef inline int _gate_code(object op):
    """The activation code of relu, sigmoid and tanh, else -1 (the caller checks that the op's
    forward or rule is still the op table's own)."""
    cdef int act
    if op is _op_tanh:
        act = FG_ACT_TANH
    elif op is _op_sigmoid:
        act = FG_ACT_SIGMOID
    elif op is _op_relu:
        act = FG_ACT_RELU
    else:
        return -1
    return act


cdef object _small_gate(int act, object x):
    """y = act(x) as the op's forward computes it (a new array), or None when x is not small."""
    cdef int t
    cdef Py_ssize_t n
    if not _small_ok(x, &t, &n):
        return None
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>x),
                                           cnp.PyArray_DIMS(<cnp.ndarray>x), t, 0)
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *py = cnp.PyArray_DATA(y)
    if t == cnp.NPY_FLOAT:
        gate_forward(act, <const float *>px, <float *>py, n, 0)
    else:
        gate_forward(act, <const double *>px, <double *>py, n, 0)
    return y


cdef object _small_gate_grad(int act, object g, object y, bint into_g):
    """dx = act'(y) g as the op's rule computes it, or None unless g and the saved output y are small
    arrays of one shape and dtype. into_g: the result is written over g (computed into a buffer
    first: the kernels take no aliased arguments) and g returned."""
    cdef int tg, ty
    cdef Py_ssize_t ng, ny
    cdef double buf[SMALL]
    cdef cnp.ndarray out
    cdef void *dst
    if not _small_ok(g, &tg, &ng) or not _small_ok(y, &ty, &ny) or ty != tg:
        return None
    if not _same_shape(<cnp.ndarray>g, <cnp.ndarray>y):
        return None
    if into_g and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>g):
        into_g = False
    if into_g:
        dst = buf
    else:
        out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>g), cnp.PyArray_DIMS(<cnp.ndarray>g), tg, 0)
        dst = cnp.PyArray_DATA(out)
    cdef void *pg = cnp.PyArray_DATA(<cnp.ndarray>g)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
    if tg == cnp.NPY_FLOAT:
        gate_backward(act, <const float *>pg, <const float *>py, <float *>dst, ng, 0)
    else:
        gate_backward(act, <const double *>pg, <const double *>py, <double *>dst, ng, 0)
    if into_g:
        memcpy(pg, buf, ng * cnp.PyArray_ITEMSIZE(<cnp.ndarray>g))
        return g
    return out


cdef inline object _small_forward(object op, object a, object b):
    """(out, saved) of add/sub/mul/div on small same-shape arrays, as the op's forward returns; or None."""
    cdef int code
    if op is _op_mul:
        code = MUL
    elif op is _op_add:
        code = ADD
    elif op is _op_sub:
        code = SUB
    elif op is _op_div:
        code = DIV
    else:
        return None
    if not _forward_unchanged(op):
        return None
    out = _small(code, a, b, None)
    if out is None:
        return None
    if code == ADD or code == SUB:
        shape = a.shape  # b's too (the same shape)
        return out, (shape, shape)
    return out, (a, b)


cdef inline bint _shape_is(object g, object shape):
    """g is an ndarray of shape `shape` (a tuple of ints), compared without making g.shape."""
    if type(g) is not ndarray or type(shape) is not tuple:
        return False
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>g), i
    if nd != PyTuple_GET_SIZE(shape):
        return False
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>g)
    for i in range(nd):
        d = (<tuple>shape)[i]
        if type(d) is not int or dims[i] != <cnp.npy_intp>d:
            return False
    return True


cdef object _small_backward(object op, object rule, object g, object saved, tuple inputs, bint reuse_g):
    """The gradients the rule of add/sub/mul/div/neg returns, for small same-shape operands; or None.

    Same values as the rules in ops.py (which unbroadcast nothing when the shapes agree); a gradient
    for an input that requires none is None instead (the engine drops it either way). Every gradient
    it returns is an array it has just allocated, or `g` itself: passed through (add, sub), or, when
    `reuse_g` (the walk owns g exclusively and nothing compares it afterwards), overwritten with the
    last gradient it computes (after the others, which still read g).
    """
    cdef Py_ssize_t n = PyTuple_GET_SIZE(inputs)
    if not _rule_unchanged(op, rule):
        return None
    if op is _op_neg:
        gx = _small(NEG, g, None, None, reuse_g)
        return None if gx is None else (gx,)
    cdef int act = _gate_code(op)
    if act >= 0:  # relu, sigmoid, tanh: saved (y,)
        if type(saved) is not tuple or PyTuple_GET_SIZE(saved) != 1:
            return None
        gx = _small_gate_grad(act, g, saved[0], reuse_g)
        return None if gx is None else (gx,)
    if op is _op_exp or op is _op_log:  # exp: g * y (the saved output); log: g / x
        if type(saved) is not tuple or PyTuple_GET_SIZE(saved) != 1:
            return None
        gx = _small(MUL if op is _op_exp else DIV, g, saved[0], None, reuse_g)
        return None if gx is None else (gx,)
    if n != 2 or type(saved) is not tuple or PyTuple_GET_SIZE(saved) != 2:
        return None
    cdef bint need_a = _requires_grad(inputs[0])  # inputs are Tensors (checked by _apply)
    cdef bint need_b = _requires_grad(inputs[1])
    if op is _op_mul or op is _op_div:  # operands of one shape only: no unbroadcasting here
        a, b = saved
        if type(a) is not ndarray or type(b) is not ndarray or not _same_shape(a, b):
            return None
    if op is _op_mul:
        a, b = saved
        gb = _small(MUL, g, a, None, reuse_g and not need_a) if need_b else None
        if need_b and gb is None:
            return None
        ga = _small(MUL, g, b, None, reuse_g) if need_a else None
        if need_a and ga is None:
            return None
        return ga, gb
    if op is _op_add or op is _op_sub:
        a_shape, b_shape = saved
        if not _shape_is(g, a_shape) or (b_shape is not a_shape and not _shape_is(g, b_shape)):
            return None
        if op is _op_add:
            return g, g
        gb = _small(NEG, g, None, None) if need_b else None
        if need_b and gb is None:
            return None
        return g, gb
    if op is _op_div:
        a, b = saved
        gb = _small(DIVGRAD, g, b, a) if need_b else None
        if need_b and gb is None:
            return None
        ga = _small(DIV, g, b, None, reuse_g)
        if ga is None:
            return None
        return ga, gb
    return None


# --- Tensor operators (tensor.py installs these as Tensor.__add__ ...) ------------------------------

cdef inline object _dtype_of(object data):
    """data.dtype (for an ndarray, its descriptor read from the struct: the same object)."""
    if type(data) is ndarray:
        return <object>cnp.PyArray_DESCR(<cnp.ndarray>data)
    return data.dtype


cdef inline object _coerce(object value, object like):
    """tensor.coerce: Tensors of like's dtype and Python floats/ints by the short path, else Python's."""
    cdef cnp.ndarray arr
    cdef int t
    cdef double v
    if type(like) is not Tensor:  # called with something else as self: the Python coerce decides
        return _py_coerce(value, like)
    if type(value) is Tensor:
        if _dtype_of(_data(value)) is _dtype_of(_data(like)):
            return value
        return _py_coerce(value, like)
    if type(value) is float or (type(value) is int and -9007199254740992 <= value <= 9007199254740992):
        v = value  # exact for these ints, so one rounding to float32 (as NumPy's)
        dt = _data(like)
        if type(dt) is not ndarray:
            return _py_coerce(value, like)
        t = cnp.PyArray_TYPE(<cnp.ndarray>dt)
        if t == cnp.NPY_FLOAT:
            arr = cnp.PyArray_EMPTY(0, NULL, t, 0)
            (<float *>cnp.PyArray_DATA(arr))[0] = <float>v
        elif t == cnp.NPY_DOUBLE:
            arr = cnp.PyArray_EMPTY(0, NULL, t, 0)
            (<double *>cnp.PyArray_DATA(arr))[0] = v
        else:
            return _py_coerce(value, like)
        return _wrap(arr, False)
    return _py_coerce(value, like)


def tensor_add(self, other):
    return _apply(_op_add, (self, _coerce(other, self)), None)


def tensor_radd(self, other):
    return _apply(_op_add, (_coerce(other, self), self), None)


def tensor_sub(self, other):
    return _apply(_op_sub, (self, _coerce(other, self)), None)


def tensor_rsub(self, other):
    return _apply(_op_sub, (_coerce(other, self), self), None)


def tensor_mul(self, other):
    return _apply(_op_mul, (self, _coerce(other, self)), None)


def tensor_rmul(self, other):
    return _apply(_op_mul, (_coerce(other, self), self), None)


def tensor_truediv(self, other):
    return _apply(_op_div, (self, _coerce(other, self)), None)


def tensor_rtruediv(self, other):
    return _apply(_op_div, (_coerce(other, self), self), None)


def tensor_neg(self):
    return _apply(_op_neg, (self,), None)


def tensor_exp(self):
    return _apply(_op_exp, (self,), None)


def tensor_log(self):
    return _apply(_op_log, (self,), None)


def tensor_relu(self):
    return _apply(_op_relu, (self,), None)


def tensor_sigmoid(self):
    return _apply(_op_sigmoid, (self,), None)


def tensor_tanh(self):
    return _apply(_op_tanh, (self,), None)


def tensor_backward(self, gradient=None, retain_graph=False, keep_grads=False):
    """Tensor.backward (its Python text in tensor.py); an omitted gradient's ones made in C."""
    cdef cnp.ndarray g
    cdef int t
    if not isinstance(self, Tensor) or gradient is not None or _recorder is not None:
        return _py_backward(self, gradient, retain_graph, keep_grads)
    data = _data(self)
    if not _requires_grad(self) or type(data) is not ndarray:
        return _py_backward(self, gradient, retain_graph, keep_grads)
    t = cnp.PyArray_TYPE(<cnp.ndarray>data)
    if cnp.PyArray_SIZE(<cnp.ndarray>data) != 1 or (t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE):
        return _py_backward(self, gradient, retain_graph, keep_grads)
    g = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>data), cnp.PyArray_DIMS(<cnp.ndarray>data), t, 0)
    if t == cnp.NPY_FLOAT:
        (<float *>cnp.PyArray_DATA(g))[0] = 1
    else:
        (<double *>cnp.PyArray_DATA(g))[0] = 1
    if _node_of(self) is None:
        grad = _field(self, _GRAD, "grad")
        _set_field(self, _GRAD, g if grad is None else grad + g)
    else:
        _run_backward(self, g, bool(retain_graph), bool(keep_grads))


def apply(op, *inputs, **attrs):
    """Run `op` forward on the inputs' data and, when a gradient is wanted, record its node.

    An input may be a Constant (the losses' labels): `_apply_constants` runs such a call, found
    here so that `_apply`, which the operators call directly, stays as it is."""
    for t in inputs:
        if type(t) is Constant:
            return _apply_constants(op, inputs, attrs)
    return _apply(op, inputs, attrs)


cpdef object apply1(object op, object x):
    """`apply(op, x)` without attributes (the operator fast path: no tuple packing, no kwargs)."""
    return _apply(op, (x,), None)


cpdef object apply2(object op, object a, object b):
    """`apply(op, a, b)` without attributes."""
    return _apply(op, (a, b), None)


cdef object _apply(object op, tuple inputs, dict attrs):
    cdef Py_ssize_t n = PyTuple_GET_SIZE(inputs)
    cdef Py_ssize_t i
    cdef bint requires_grad = False
    cdef list arrays = None  # the inputs' data beyond two (a0, a1: the first two)
    cdef int act
    if n == 0:
        raise TypeError(f"{op.name}: apply needs at least one input tensor")
    t = _check_tensor(inputs[0])
    a0 = _data(t)
    dtype = _dtype_of(a0)
    requires_grad = _requires_grad(t)
    a1 = None
    if n >= 2:
        t = _check_tensor(inputs[1])
        a1 = _data(t)
        dt = _dtype_of(a1)
        if dt is not dtype and dt != dtype:
            raise TypeError(f"{op.name}: inputs mix {dtype} and {dt}; convert one explicitly")
        if _requires_grad(t):
            requires_grad = True
        if n > 2:
            arrays = [a0, a1]
            for i in range(2, n):
                t = _check_tensor(inputs[i])
                data = _data(t)
                dt = _dtype_of(data)
                if dt is not dtype and dt != dtype:
                    raise TypeError(f"{op.name}: inputs mix {dtype} and {dt}; convert one explicitly")
                arrays.append(data)
                if _requires_grad(t):
                    requires_grad = True
    # is_grad_enabled(); the thread-local flag is read only while some thread is inside no_grad()
    requires_grad = requires_grad and (_grad_off[0] == 0 or _state.enabled)
    if _op_field(op, _TAKES_NEEDS, "takes_needs"):
        if attrs is None:
            attrs = {}
        attrs["needs"] = tuple([requires_grad and x.requires_grad for x in inputs])
    if attrs:
        if arrays is None:
            arrays = [a0] if n == 1 else [a0, a1]
        out, saved = op.forward(*arrays, **attrs)
    elif n == 2 and (fast := _small_forward(op, a0, a1)) is not None:
        out, saved = fast
    elif n == 1 and op is _op_neg and _forward_unchanged(op) and (fast := _small(NEG, a0, None, None)) is not None:
        out, saved = fast, ()
    elif n == 1 and (act := _gate_code(op)) >= 0 and _forward_unchanged(op) and (fast := _small_gate(act, a0)) is not None:
        out, saved = fast, (fast,)
    elif n == 1:
        out, saved = op.forward(a0)
    elif n == 2:
        out, saved = op.forward(a0, a1)
    else:
        out, saved = op.forward(*arrays)
    if type(out) is not ndarray:  # NumPy returns scalars from 0-d arithmetic
        if isinstance(out, cnp.generic):
            out = PyArray_FromScalar(out, NULL)
        else:
            out = _np_array(out)
    result = _wrap(out, requires_grad)
    if cnp.PyArray_BASE(<cnp.ndarray>out) != NULL:  # a view of an input's data: one version counter
        owner = _memory_owner(out)
        for t in inputs:
            if _memory_owner(_data(t)) is owner:
                _set_field(result, _VC, _version_counter(t))
                break
    if requires_grad:
        _set_field(result, _NODE, _new_node(op, inputs, saved, out, _field(result, _VC, "_vc")))
    if _recorder is not None:
        _recorder.op(op, inputs, attrs, result)
    return result


cdef object _apply_constants(object op, tuple inputs, dict attrs):
    """`_apply` when some input is no Tensor: a `Constant` (the losses' labels: integer data that
    takes no gradient) passes its data to the forward, is exempt from the one-dtype rule and never
    requires grad; anything else raises as `_apply` did. tensor.apply is the Python text (the
    dtype of the first input is the one the others must have).

    Off the operator path, and kept apart from it: attributes are read by name and the result and
    its node made by copies of _wrap/_new_node, not by the inline helpers `_apply` uses — more
    calls of those made the C compiler stop inlining them there (measured: about +14 to +28
    instructions per op)."""
    cdef list arrays = []
    cdef bint requires_grad = False
    dtype = None
    for t in inputs:
        if type(t) is Constant:
            data = t.data
            if dtype is None:
                dtype = data.dtype
            arrays.append(data)
            continue
        if not isinstance(t, Tensor):  # fails as `t.data` would, as in _check_tensor
            t.data
            raise TypeError(f"expected a fastgrad Tensor, got {type(t).__name__}")
        data = t.data
        dt = data.dtype
        if dtype is None:
            dtype = dt
        elif dt is not dtype and dt != dtype:
            raise TypeError(f"{op.name}: inputs mix {dtype} and {dt}; convert one explicitly")
        arrays.append(data)
        if t.requires_grad:
            requires_grad = True
    requires_grad = requires_grad and (_grad_off[0] == 0 or _state.enabled)
    if op.takes_needs:
        if attrs is None:
            attrs = {}
        attrs["needs"] = tuple([requires_grad and x.requires_grad for x in inputs])
    if attrs:
        out, saved = op.forward(*arrays, **attrs)
    else:
        out, saved = op.forward(*arrays)
    if type(out) is not ndarray:  # NumPy returns scalars from 0-d arithmetic
        if isinstance(out, cnp.generic):
            out = PyArray_FromScalar(out, NULL)
        else:
            out = _np_array(out)
    result = _wrap_apart(out, requires_grad)
    if out.base is not None:  # a view of an input tensor's data: one version counter
        owner = out
        while isinstance(owner.base, ndarray):
            owner = owner.base
        for t in inputs:
            if type(t) is not Constant:
                base = t.data
                while isinstance(base.base, ndarray):
                    base = base.base
                if base is owner:
                    result._vc = _version_counter(t)
                    break
    if requires_grad:
        result._node = _constant_node(op, inputs, saved, out, result._vc)
    if _recorder is not None:
        _recorder.op(op, inputs, attrs, result)
    return result


cdef void _store(object t, Py_ssize_t offset, object value):
    """_set_field, apart (see _apply_constants)."""
    cdef PyObject **p = <PyObject **>((<char *><PyObject *>t) + offset)
    cdef PyObject *old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject *>value
    Py_XDECREF(old)


cdef object _wrap_apart(object data, bint requires_grad):
    """_wrap, apart (see _apply_constants)."""
    t = PyType_GenericAlloc(<PyTypeObject *>Tensor, 0)
    _store(t, _DATA, data)
    _store(t, _GRAD, None)
    _store(t, _REQUIRES_GRAD, True if requires_grad else False)
    _store(t, _NODE, None)
    _store(t, _NAME, None)
    _store(t, _VC, None)
    return t


cdef Node _constant_node(object op, tuple inputs, object saved, object out_data, object out_vc):
    """_new_node, apart (see _apply_constants), for a node with a Constant input."""
    cdef Node node = Node.__new__(Node)
    node.op = op
    node.inputs = inputs
    node.constant_inputs = True
    node.saved = saved
    node.seq = next(_sequence)
    node.released = False
    node.grad = None
    node.out_data = out_data
    node.out_vc = out_vc
    return node


cdef object _no_constant_grads(tuple inputs, object grads):
    """`grads` with None for every Constant input: `grads` itself when it has None there already
    (the op table's rules), else a new tuple (kept out of the walk's body, off its path)."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(inputs)
    for i in range(n):
        if type(inputs[i]) is Constant and grads[i] is not None:
            return tuple([None if type(inputs[k]) is Constant else grads[k] for k in range(n)])
    return grads


cdef set _held(tuple node_inputs, object saved, object g, bint g_owned):
    """ids of the memory owners that someone besides the engine holds while a rule's result is taken."""
    cdef set held = {id(_memory_owner(t.data)) for t in node_inputs}
    for s in saved:
        if type(s) is ndarray:
            held.add(id(_memory_owner(s)))
    if not g_owned:
        held.add(id(_memory_owner(g)))
    return held


cdef inline bint _same_dtype(cnp.ndarray a, cnp.ndarray b):
    """a.dtype == b.dtype, read from the structs."""
    cdef cnp.PyArray_Descr *da = cnp.PyArray_DESCR(a)
    cdef cnp.PyArray_Descr *db = cnp.PyArray_DESCR(b)
    return da == db or cnp.PyArray_EquivTypes(<cnp.dtype>da, <cnp.dtype>db)


def run_backward(root, gradient, bint retain_graph, bint keep_grads):
    """Backpropagate `gradient` from tensor `root` into the `.grad` of every leaf that requires grad.

    See autograd.run_backward (the Python text of this walk) and docs/ARCHITECTURE.md, "Backward
    and buffer ownership": the same rule, the same order, the same errors.
    """
    _run_backward(_check_tensor(root), gradient, retain_graph, keep_grads)


cdef _run_backward(object root, object gradient, bint retain_graph, bint keep_grads):
    cdef Node node, parent_node, root_node = _node_of(root)
    # pending and the heap as in autograd.run_backward, but while one node alone waits for its turn
    # (always, in a chain) it waits in `top` with its [gradient, owned] slot in `top_slot`, off the
    # heap and out of the dict: popping the heap would return it next anyway
    cdef dict pending = {}
    cdef list heap = []
    cdef Node top = root_node
    cdef list top_slot = [gradient, False]  # the caller may hold the root gradient
    cdef bint debug = _debug.enabled
    cdef bint g_owned, fresh, bad
    cdef long long last_inplace = _inplace.last
    cdef list taken, slot
    cdef set held, shared
    cdef tuple inputs
    cdef Py_ssize_t i, j, n
    cdef bint owned
    record = None
    if debug:
        record = _DebugRecord(root)
    while True:
        if top is not None:
            node = top
            slot = top_slot
            top = None
            top_slot = None
        elif heap:
            node = <Node>(heappop(heap)[1])
            slot = <list>pending.pop(node)
        else:
            break
        g = slot[0]
        g_owned = slot[1]
        if node.released:
            raise RuntimeError(
                f"backward through the graph a second time (at op '{node.op.name}'): its saved "
                "buffers were freed by the first backward(); pass retain_graph=True to the first "
                "call to backpropagate twice"
            )
        if type(g) is not ndarray or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>g):  # rules take contiguous arrays
            g, g_owned = _np_array(g, order="C"), True  # NumPy scalars too (0-d arithmetic)
        if node.seq < last_inplace:  # something was modified in place after this node ran
            _check_versions(node)
        if keep_grads:
            node.grad = g
            g_owned = False  # node.grad keeps g: it must never be accumulated into
        op = node.op
        rule = _op_field(op, _BACKWARD, "backward")
        if rule is None:
            raise NotImplementedError(f"op '{op.name}' has no backward rule")
        saved = node.saved
        inputs = node.inputs
        if debug:
            g_before = record.before(node, g)
        grads = _small_backward(op, rule, g, saved, inputs, g_owned and not debug)
        fresh = grads is not None  # its gradients, but g, are arrays it has just made
        if not fresh:
            grads = rule(g, *saved)
        if debug:
            record.after(node, g, g_before, grads)
        if not retain_graph:
            node.saved = None
            node.released = True
        n = PyTuple_GET_SIZE(inputs)
        if len(grads) != n:
            raise RuntimeError(
                f"the backward rule of op '{op.name}' returned {len(grads)} gradients for "
                f"{n} inputs"
            )
        if _unlikely(node.constant_inputs):  # the labels take no gradient, whatever a rule returns for them
            grads = _no_constant_grads(inputs, grads)
        # first pass: check each gradient, find its memory owner, count the owners
        taken = []  # input, gradient, owner id (None when it cannot be owned anyway): 3 per input
        held = None  # what others hold, computed only when some gradient could be owned
        shared = None  # owners returned for more than one input
        for i in range(n):
            gi = grads[i]
            t = inputs[i]  # a Tensor (checked by _apply; a Constant's gradient is None by now)
            if gi is None or not _requires_grad(t):
                continue
            data = _data(t)
            if type(gi) is ndarray and type(data) is ndarray:
                bad = not _same_shape(gi, data) or not _same_dtype(gi, data)
            else:
                bad = gi.shape != data.shape or gi.dtype != data.dtype
            if bad:
                raise RuntimeError(
                    f"the backward rule of op '{op.name}' returned a {gi.dtype} gradient of shape "
                    f"{gi.shape} for an input of shape {data.shape} and dtype {data.dtype}"
                )
            # read-only buffers (np.broadcast_to from sum/mean, NumPy scalars) are never owned
            if gi is g:  # passed through (add, sub): only an exclusively held g can pass on
                owner = id(_memory_owner(g)) if g_owned else None
            elif fresh:  # made by the tape just now: nobody else can hold it
                owner = id(gi)
            elif (type(gi) is ndarray and cnp.PyArray_BASE(<cnp.ndarray>gi) == NULL and Py_REFCNT(gi) == 2
                  and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>gi) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>gi)):
                # its own memory, referenced only by `grads` and `gi`: no input, saved array, g or
                # other gradient holds it or a view of it (a view references its base), which is
                # what the sweep below would find, found without it (PyTorch's use count)
                owner = id(gi)
            elif type(gi) is ndarray and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>gi) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>gi):
                owner = id(gi if cnp.PyArray_BASE(<cnp.ndarray>gi) == NULL else _memory_owner(gi))
                if held is None:
                    held = _held(inputs, saved, g, g_owned)
                if owner in held:
                    owner = None
            else:
                owner = None
            if owner is not None and taken:  # two holders of one buffer: neither owns it
                if shared is not None and owner in shared:  # a third holder (or more)
                    owner = None
                else:
                    for j in range(2, PyList_GET_SIZE(taken), 3):
                        if taken[j] == owner:
                            taken[j] = None
                            if shared is None:
                                shared = set()
                            shared.add(owner)
                            owner = None
                            break
            taken.append(t)
            taken.append(gi)
            taken.append(owner)
        # second pass: hand each gradient to its input's pending slot
        for j in range(0, PyList_GET_SIZE(taken), 3):
            t = taken[j]
            gi = taken[j + 1]
            owned = taken[j + 2] is not None
            parent = _node_of(t)
            if parent is None:
                found = pending.get(t)  # a tensor key hashes by identity
            elif parent is top:
                found = top_slot
            else:
                found = pending.get(parent)
            if found is None:
                if parent is None:
                    pending[t] = [gi, owned]
                elif top is None and not heap:  # nothing else waits: parent waits alone, in top
                    top = <Node>parent
                    top_slot = [gi, owned]
                else:
                    if top is not None:  # a second node waits: both go on the heap
                        pending[top] = top_slot
                        heappush(heap, (-top.seq, top))
                        top = None
                        top_slot = None
                    parent_node = <Node>parent
                    pending[parent_node] = [gi, owned]
                    heappush(heap, (-parent_node.seq, parent_node))
            else:
                slot = <list>found
                if slot[1]:
                    slot[0] += gi
                else:  # a borrowed buffer: add into a new one (C order: views may be F-ordered)
                    total = _np_add(slot[0], gi, order="C")
                    # NumPy returns a scalar for 0-d operands: keep every gradient an ndarray
                    slot[0] = total if type(total) is ndarray else _np_array(total)
                    slot[1] = True
    for key, slot in pending.items():  # only leaves are left
        _accumulate_leaf(key, slot[0], slot[1])
    if debug:
        record.check()


cdef _accumulate_leaf(t, gi, bint owned):
    grad = _field(t, _GRAD, "grad")
    if grad is None:
        if not owned:  # borrowed: .grad gets its own C-contiguous copy
            gi = _np_array(gi, dtype=_dtype_of(_data(t)), order="C")
        _set_field(t, _GRAD, gi)
    else:
        grad += gi
        _set_field(t, _GRAD, grad)
