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
from cpython.tuple cimport PyTuple_GET_SIZE

import numpy as np
from heapq import heappop, heappush

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # a NumPy scalar (np.float32(...)) as a 0-d array of its own dtype; the C behind np.array(s)
    object PyArray_FromScalar(object scalar, void *outcode)

cdef object ndarray = np.ndarray
cdef object _np_add = np.add
cdef object _np_array = np.array

# bound by autograd.py at import (bind()): shared with the Python tape
cdef object Tensor = None
cdef object _state = None
cdef object _debug = None
cdef object _inplace = None
cdef object _sequence = None
cdef object _DebugRecord = None
cdef object _check_versions = None
cdef object _version_counter = None


def bind(tensor_cls, state, debug, inplace, sequence, debug_record, check_versions, version_counter):
    """Hand the tape the objects it shares with autograd.py and tensor.py (called once at import)."""
    global Tensor, _state, _debug, _inplace, _sequence, _DebugRecord, _check_versions, _version_counter
    Tensor = tensor_cls
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

    PyTorch's accessors read the graph without the fields: `name()` is the op's name,
    `next_functions` is a tuple with one `(node, 0)` pair per input, node None for a leaf or a
    constant (`Tensor.grad_fn` is the node of an op output, None for a leaf).
    """

    cdef public object op
    cdef public tuple inputs
    cdef public object saved
    cdef public long long seq
    cdef public bint released
    cdef public object grad
    cdef public object out_data
    cdef public object out_vc

    def __init__(self, op, inputs, saved, out_data=None, out_vc=None):
        self.op = op
        self.inputs = tuple(inputs)
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

    def __repr__(self):
        return f"<Node {self.op.name} #{self.seq}>"


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
    t = Tensor.__new__(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = requires_grad
    t._node = None
    t.name = None
    t._vc = None
    return t


def apply(op, *inputs, **attrs):
    """Run `op` forward on the inputs' data and, when a gradient is wanted, record its node."""
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
    if n == 0:
        raise TypeError(f"{op.name}: apply needs at least one input tensor")
    cdef list arrays = [None] * n
    dtype = None
    for i in range(n):
        t = inputs[i]
        data = t.data
        dt = data.dtype
        if dtype is None:
            dtype = dt
        elif dt is not dtype and dt != dtype:
            raise TypeError(f"{op.name}: inputs mix {dtype} and {dt}; convert one explicitly")
        arrays[i] = data
        if t.requires_grad:
            requires_grad = True
    requires_grad = requires_grad and _state.enabled
    if op.takes_needs:
        if attrs is None:
            attrs = {}
        attrs["needs"] = tuple([requires_grad and t.requires_grad for t in inputs])
    if attrs:
        out, saved = op.forward(*arrays, **attrs)
    elif n == 1:
        out, saved = op.forward(arrays[0])
    elif n == 2:
        out, saved = op.forward(arrays[0], arrays[1])
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
            if _memory_owner(t.data) is owner:
                result._vc = _version_counter(t)
                break
    if requires_grad:
        result._node = _new_node(op, inputs, saved, out, result._vc)
    return result


cdef set _held(tuple node_inputs, object saved, object g, bint g_owned):
    """ids of the memory owners that someone besides the engine holds while a rule's result is taken."""
    cdef set held = {id(_memory_owner(t.data)) for t in node_inputs}
    for s in saved:
        if type(s) is ndarray:
            held.add(id(_memory_owner(s)))
    if not g_owned:
        held.add(id(_memory_owner(g)))
    return held


def run_backward(root, gradient, bint retain_graph, bint keep_grads):
    """Backpropagate `gradient` from tensor `root` into the `.grad` of every leaf that requires grad.

    See autograd.run_backward (the Python text of this walk) and docs/ARCHITECTURE.md, "Backward
    and buffer ownership": the same rule, the same order, the same errors.
    """
    cdef Node node, parent_node, root_node = root._node
    cdef dict pending = {root_node: [gradient, False]}  # the caller may hold the root gradient
    cdef list heap = [(-root_node.seq, root_node)]
    cdef bint debug = _debug.enabled
    cdef bint g_owned
    cdef long long last_inplace = _inplace.last
    cdef list taken, slot, other
    cdef set held, shared
    cdef tuple inputs
    cdef Py_ssize_t i, n
    record = None
    if debug:
        record = _DebugRecord(root)
    while heap:
        node = <Node>(heappop(heap)[1])
        slot = <list>pending.pop(node)
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
        rule = op.backward
        if rule is None:
            raise NotImplementedError(f"op '{op.name}' has no backward rule")
        saved = node.saved
        if debug:
            g_before = record.before(node, g)
        grads = rule(g, *saved)
        if debug:
            record.after(node, g, g_before, grads)
        if not retain_graph:
            node.saved = None
            node.released = True
        inputs = node.inputs
        n = PyTuple_GET_SIZE(inputs)
        if len(grads) != n:
            raise RuntimeError(
                f"the backward rule of op '{op.name}' returned {len(grads)} gradients for "
                f"{n} inputs"
            )
        # first pass: check each gradient, find its memory owner, count the owners
        taken = []  # [input, gradient, owner id or None when it cannot be owned anyway]
        held = None  # what others hold, computed only when some gradient could be owned
        shared = None  # owners returned for more than one input
        for i in range(n):
            gi = grads[i]
            t = inputs[i]
            if gi is None or not t.requires_grad:
                continue
            data = t.data
            if gi.shape != data.shape or gi.dtype != data.dtype:
                raise RuntimeError(
                    f"the backward rule of op '{op.name}' returned a {gi.dtype} gradient of shape "
                    f"{gi.shape} for an input of shape {data.shape} and dtype {data.dtype}"
                )
            # read-only buffers (np.broadcast_to from sum/mean, NumPy scalars) are never owned
            if gi is g:  # passed through (add, sub): only an exclusively held g can pass on
                owner = id(_memory_owner(g)) if g_owned else None
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
                    for other in taken:
                        if other[2] == owner:
                            other[2] = None
                            if shared is None:
                                shared = set()
                            shared.add(owner)
                            owner = None
                            break
            taken.append([t, gi, owner])
        # second pass: hand each gradient to its input's pending slot
        for other in taken:
            t = other[0]
            gi = other[1]
            parent = t._node
            key = t if parent is None else parent  # a tensor key hashes by identity
            found = pending.get(key)
            if found is None:
                pending[key] = [gi, other[2] is not None]
                if parent is not None:
                    parent_node = <Node>parent
                    heappush(heap, (-parent_node.seq, parent_node))
            else:
                slot = <list>found
                if slot[1]:
                    slot[0] += gi
                else:  # a borrowed buffer: add into a new one (C order: views may be F-ordered)
                    slot[0] = _np_add(slot[0], gi, order="C")
                    slot[1] = True
    for t, slot in pending.items():  # only leaves are left
        _accumulate_leaf(t, slot[0], slot[1])
    if debug:
        record.check()


cdef _accumulate_leaf(t, gi, bint owned):
    if t.grad is None:
        if not owned:  # borrowed: .grad gets its own C-contiguous copy
            gi = _np_array(gi, dtype=t.data.dtype, order="C")
        t.grad = gi
    else:
        t.grad += gi
