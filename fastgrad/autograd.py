"""The tape: nodes recorded as ops run, and the reverse walk that applies the chain rule.

Every differentiable op that runs while gradients are enabled creates a `Node` holding its row of the
op table, its inputs (tensors, and `Constant`s for integer labels: inputs that take no gradient),
what the forward saved for backward, and a sequence number. Only the output tensor points at its
node, so a graph that is never backpropagated is freed with its tensors.

`backward` visits the nodes that receive a gradient from the root (iteratively, through a heap: a
100k-node chain is fine) in descending sequence order, which is a reverse topological order because an
op's inputs always exist before it runs. Each node's upstream gradient is complete when it is visited:
every consumer of its output was created after it, and every node on a path from the root to such a
consumer has a larger sequence number still, so it was visited first.
"""
from __future__ import annotations

import itertools
import os
import threading
from contextlib import contextmanager
from heapq import heappop, heappush

import numpy as np

_sequence = itertools.count()


class _GradMode(threading.local):
    enabled = True  # each thread starts with gradients on (a class default: no failed lookup)


_state = _GradMode()
# how many threads are inside no_grad() right now; while none is, every thread records, and the
# compiled tape reads this list instead of the (slower) thread-local flag. Too high is harmless.
_grad_off = [0]
_grad_off_lock = threading.Lock()


class _Debug:
    """Process-wide debug switch: FASTGRAD_DEBUG=1 in the environment, or `set_debug(True)`."""

    enabled = os.environ.get("FASTGRAD_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


_debug = _Debug()


def set_debug(enabled: bool) -> None:
    """Turn the backward checks on or off (for every thread; the default comes from FASTGRAD_DEBUG).

    With debug on, every `backward()` also checks, and raises a RuntimeError naming the op or tensor:
    that no rule wrote into its upstream gradient or returned something other than an array; and, at
    the end, that no `.grad` shares memory with another `.grad`, with the data of any tensor of the
    graph, or with any buffer saved for backward. It costs a copy of every upstream gradient and an
    overlap sweep over the graph's buffers: for tests and debugging, not for training runs.
    """
    _debug.enabled = bool(enabled)


def is_debug() -> bool:
    """Whether the backward debug checks are on (see `set_debug`)."""
    return _debug.enabled


def is_grad_enabled() -> bool:
    """Whether ops record nodes on this thread (False inside `no_grad()`)."""
    return _state.enabled


@contextmanager
def no_grad():
    """Context manager: inside it nothing is recorded and outputs do not require grad.

    >>> with no_grad():
    ...     y = x * 2          # y.requires_grad is False
    """
    previous = is_grad_enabled()
    _state.enabled = False
    if previous:
        with _grad_off_lock:
            _grad_off[0] += 1
    try:
        yield
    finally:
        _state.enabled = previous
        if previous:
            with _grad_off_lock:
                _grad_off[0] -= 1


class Constant:
    """An input of an op that is no Tensor and takes no gradient: the integer labels of the losses.

    Tensors hold float32/float64 data only (docs/DESIGN.md), so integer class labels enter the
    graph as this stand-in: `data` is the C-contiguous intp array the row's forward reads (held as
    given, no copy), `name` what drawings call it. It answers what the tape reads of an input as a
    constant tensor does (`requires_grad` False; `grad`, `grad_fn`, `_node` and the version counter
    `_vc` None), so `next_functions` gives `(None, 0)` for it, as PyTorch does for a target that
    needs no gradient; the row's rule returns None for it and neither walk sends it a gradient.
    `apply` exempts it from the one-dtype rule of its inputs.
    """

    __slots__ = ("data", "name")
    requires_grad = False
    grad = None
    grad_fn = None
    is_leaf = True
    _node = None
    _vc = None

    def __init__(self, data: np.ndarray, name: str | None = None):
        if type(data) is not np.ndarray:
            raise TypeError(f"Constant: expected a NumPy array, got {type(data).__name__}")
        self.data = data
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def __repr__(self):
        return f"<Constant {self.name or ''} {self.data.dtype} {self.data.shape}>".replace("  ", " ")


class Node:
    """One recorded op application: op row, inputs, saved buffers, sequence number.

    `inputs` are the op's input tensors in argument order, and a `Constant` where an argument is
    integer data (the losses' labels).

    `grad` holds this node's output gradient after a backward with `keep_grads=True` (for drawing).
    `out_data` and `out_vc` are the output's data and version counter (see `mark_modified`); the
    data stays alive with the output tensor anyway, so holding it costs no memory.
    """

    __slots__ = ("op", "inputs", "saved", "seq", "released", "grad", "out_data", "out_vc")

    def __init__(self, op, inputs, saved, out_data=None, out_vc=None):
        self.op = op
        self.inputs = inputs
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
        """((node of input 0, 0), (node of input 1, 0), ...): None where an input is no op output
        (a leaf, a constant tensor, a `Constant` such as the labels)."""
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


# --- version counters: in-place modification of a saved tensor -------------------------------------
# A tensor's version counter is a list [version, sequence number of its last in-place change], shared
# by the tensors that share its data (detach(), view outputs such as reshape). It is created lazily
# (None until needed; a node learns its output's counter when it is created). `_inplace.last` is the sequence number of the
# latest in-place change anywhere: a node created after it can have seen no modification, so backward
# checks a node only when node.seq < _inplace.last (one comparison per node in a training loop).


class _Inplace:
    last = -1


class _Recording:
    """The recorder of `fastgrad.capture` while it records a step (None otherwise): the tapes
    report every op, backward(), zero_grad(), optimizer step and in-place change to it."""

    active = None


_recording = _Recording()


_inplace = _Inplace()


def version_counter(t) -> list:
    """`t`'s version counter, created if it has none yet (to share it with a view or a detached copy)."""
    vc = t._vc
    if vc is None:
        vc = t._vc = [0, -1]
        if t._node is not None:  # the node that made t watches its output through the same counter
            t._node.out_vc = vc
    return vc


def mark_modified(t) -> None:
    """Record that `t.data` was changed in place: bump its version (every in-place op calls this)."""
    if _recording.active is not None:
        _recording.active.modified(t)
    vc = t._vc
    if vc is None:
        vc = version_counter(t)
    vc[0] += 1
    vc[1] = _inplace.last = next(_sequence)


def _saves(node, data) -> bool:
    """Whether one of node's saved arrays shares its memory owner with `data`."""
    owner = _memory_owner(data)
    for s in node.saved:
        if type(s) is np.ndarray and _memory_owner(s) is owner:
            return True
    return False


def _check_versions(node) -> None:
    """RuntimeError when a buffer that `node` saved was modified in place after the node ran."""
    for i, t in enumerate(node.inputs):
        vc = t._vc
        if vc is not None and vc[1] > node.seq and _saves(node, t.data):
            _modified(node, f"input {i} of shape {t.shape}", vc[0])
    vc = node.out_vc
    if vc is not None and vc[1] > node.seq and node.out_data is not None and _saves(node, node.out_data):
        _modified(node, f"its output of shape {node.out_data.shape}", vc[0])


def _modified(node, what, version):
    raise RuntimeError(
        f"backward of op '{node.op.name}' #{node.seq} needs {what}, which it saved, but that tensor was "
        f"modified in place afterwards (it is now at version {version}); the gradient would be wrong. "
        "Modify a copy instead (x = x + 0 before the in-place update) or run the forward again"
    )


def graph_nodes(root_node: Node) -> list[Node]:
    """Every node reachable from `root_node`, in descending sequence order (the backward order)."""
    seen = {root_node}
    stack = [root_node]
    nodes = []
    while stack:
        node = stack.pop()
        nodes.append(node)
        for t in node.inputs:
            parent = t._node
            if parent is not None and parent not in seen:
                seen.add(parent)
                stack.append(parent)
    nodes.sort(key=lambda n: n.seq, reverse=True)
    return nodes


def _memory_owner(a):
    """The array whose buffer `a` lives in: `a` itself unless it is a view of another array.

    Two arrays that NumPy allocated can only overlap if they have the same owner, which is cheaper
    to ask than `np.may_share_memory` (and errs on the safe side for disjoint views).
    """
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _held(node_inputs, saved, g, g_owned: bool) -> set:
    """ids of the memory owners that someone besides the engine holds while a rule's result is taken.

    The inputs' data, the saved arrays, and the upstream gradient `g` unless the engine held it
    exclusively (then the node is done with it and it may pass on to one input).
    """
    held = {id(_memory_owner(t.data)) for t in node_inputs}
    for s in saved:
        if type(s) is np.ndarray:
            held.add(id(_memory_owner(s)))
    if not g_owned:
        held.add(id(_memory_owner(g)))
    return held


def run_backward(root, gradient: np.ndarray, retain_graph: bool, keep_grads: bool) -> None:
    """Backpropagate `gradient` from tensor `root` into the `.grad` of every leaf that requires grad.

    Gradients add up where a value is used more than once. The engine accumulates in place only into
    buffers it owns exclusively, and it decides that itself from what it can see, whatever the rules
    return (see `docs/ARCHITECTURE.md`, "Backward and buffer ownership"): a gradient a rule returns
    is *owned* when it is a writeable C-contiguous array whose memory owner (`.base` followed to the
    end) is held by no other returned gradient, by no input's data, by no saved array, and by no
    one holding the upstream gradient `g`. Anything else is *borrowed*: the first accumulation into
    it adds out of place into a new buffer (then owned), and a borrowed leaf gradient is copied when
    stored in `.grad`. Leaf gradients are gathered during the walk and written to `.grad` only when
    it has finished, so a backward that fails (a released graph, a missing rule) leaves every `.grad`
    as it was.
    """
    # pending[key] = [gradient, whether the engine owns that buffer exclusively], where key is a node
    # (the gradient of its output; the node is also on the heap, keyed by its negated sequence
    # number: unique, no ties) or a leaf tensor (its gradient, stored in `.grad` once the walk is over)
    root_node = root._node
    pending = {root_node: [gradient, False]}  # the caller may hold the root gradient
    heap = [(-root_node.seq, root_node)]
    debug = _debug.enabled
    if debug:
        record = _DebugRecord(root)
    last_inplace = _inplace.last
    while heap:
        node = heappop(heap)[1]
        g, g_owned = pending.pop(node)
        if node.released:
            raise RuntimeError(
                f"backward through the graph a second time (at op '{node.op.name}'): its saved "
                "buffers were freed by the first backward(); pass retain_graph=True to the first "
                "call to backpropagate twice"
            )
        if type(g) is not np.ndarray or not g.flags.c_contiguous:  # rules take contiguous arrays
            g, g_owned = np.array(g, order="C"), True  # NumPy scalars too (0-d arithmetic)
        if node.seq < last_inplace:  # something was modified in place after this node ran
            _check_versions(node)
        if keep_grads:
            node.grad = g
            g_owned = False  # node.grad keeps g: it must never be accumulated into
        rule = node.op.backward
        if rule is None:
            raise NotImplementedError(f"op '{node.op.name}' has no backward rule")
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
        if len(grads) != len(inputs):
            raise RuntimeError(
                f"the backward rule of op '{node.op.name}' returned {len(grads)} gradients for "
                f"{len(inputs)} inputs"
            )
        # first pass: check each gradient, find its memory owner, count the owners
        taken = []  # (input, gradient, owner id or None when it cannot be owned anyway)
        held = None  # what others hold, computed only when some gradient could be owned
        shared = set()  # owners returned for more than one input
        for t, gi in zip(inputs, grads):
            if gi is None or not t.requires_grad:
                continue
            data = t.data
            if gi.shape != data.shape or gi.dtype != data.dtype:
                raise RuntimeError(
                    f"the backward rule of op '{node.op.name}' returned a {gi.dtype} gradient of shape "
                    f"{gi.shape} for an input of shape {data.shape} and dtype {data.dtype}"
                )
            # read-only buffers (np.broadcast_to from sum/mean, NumPy scalars) are never owned
            if gi is g:  # passed through (add, sub): only an exclusively held g can pass on
                owner = id(_memory_owner(g)) if g_owned else None
            elif type(gi) is np.ndarray and gi.flags.writeable and gi.flags.c_contiguous:
                owner = id(gi if gi.base is None else _memory_owner(gi))
                if held is None:
                    held = _held(inputs, saved, g, g_owned)
                if owner in held:
                    owner = None
            else:
                owner = None
            if owner is not None and taken:  # two holders of one buffer: neither owns it
                if owner in shared:  # a third holder (or more)
                    owner = None
                else:
                    for other in taken:
                        if other[2] == owner:
                            other[2] = None
                            shared.add(owner)
                            owner = None
                            break
            taken.append([t, gi, owner])
        # second pass: hand each gradient to its input's pending slot
        for t, gi, owner in taken:
            parent = t._node
            key = t if parent is None else parent  # a tensor key hashes by identity
            slot = pending.get(key)
            if slot is None:
                pending[key] = [gi, owner is not None]
                if parent is not None:
                    heappush(heap, (-parent.seq, parent))
            elif slot[1]:
                slot[0] += gi
            else:  # a borrowed buffer: add into a new one (C order: views may be F-ordered)
                total = np.add(slot[0], gi, order="C")
                # NumPy returns a scalar for 0-d operands: keep every gradient an ndarray
                slot[0] = total if type(total) is np.ndarray else np.array(total)
                slot[1] = True
    for t, (gi, owned) in pending.items():  # only leaves are left
        _accumulate_leaf(t, gi, owned)
    if debug:
        record.check()


def _accumulate_leaf(t, gi: np.ndarray, owned: bool) -> None:
    if t.grad is None:
        if not owned:  # borrowed: .grad gets its own C-contiguous copy
            gi = np.array(gi, dtype=t.dtype, order="C")
        t.grad = gi
    else:
        t.grad += gi


# --- debug checks (set_debug / FASTGRAD_DEBUG) ------------------------------------------------------


def _describe(t) -> str:
    if type(t) is Constant:
        return f"the constant input {t.name!r} of shape {t.shape}"
    what = f"tensor {t.name!r}" if t.name else "a tensor"
    if t._node is not None:
        what += f" (output of op '{t._node.op.name}' #{t._node.seq})"
    elif t.requires_grad:
        what += " (a leaf)"
    return f"{what} of shape {t.shape}"


class _DebugRecord:
    """What one backward touched: the graph's tensors and saved buffers, checked for aliasing at the end."""

    def __init__(self, root):
        self.tensors = {id(root): root}
        self.saved = []  # (array, description)

    def before(self, node, g):
        for t in node.inputs:
            self.tensors[id(t)] = t
        for i, s in enumerate(node.saved):
            if type(s) is np.ndarray:
                self.saved.append((s, f"saved buffer {i} of op '{node.op.name}' #{node.seq}"))
        return g.copy()

    def after(self, node, g, g_before, grads):
        if not np.array_equal(g, g_before, equal_nan=True):
            raise RuntimeError(
                f"debug: the backward rule of op '{node.op.name}' #{node.seq} wrote into its upstream "
                "gradient g (rules must not modify their arguments)"
            )
        for i, gi in enumerate(grads):
            if gi is not None and not isinstance(gi, (np.ndarray, np.generic)):
                raise RuntimeError(
                    f"debug: the backward rule of op '{node.op.name}' #{node.seq} returned a "
                    f"{type(gi).__name__} as the gradient of input {i}, not a NumPy array"
                )

    def check(self):
        """No .grad may share memory with another .grad, any tensor's data, or a saved buffer."""
        from numpy.lib.array_utils import byte_bounds

        entries = []  # (low address, high address, is a .grad, array, description)
        for t in self.tensors.values():
            for arr, what in ((t.data, f"the data of {_describe(t)}"),
                              (t.grad, f"the .grad of {_describe(t)}")):
                if isinstance(arr, np.ndarray) and arr.size:
                    lo, hi = byte_bounds(arr)
                    entries.append((lo, hi, what.startswith("the .grad"), arr, what))
        for arr, what in self.saved:
            if arr.size:
                lo, hi = byte_bounds(arr)
                entries.append((lo, hi, False, arr, what))
        entries.sort(key=lambda e: e[0])
        active = []  # entries whose address range reaches the current one's start
        for e in entries:
            active = [a for a in active if a[1] > e[0]]
            for a in active:
                if (a[2] or e[2]) and np.shares_memory(a[3], e[3]):
                    first, second = (a, e) if a[2] else (e, a)
                    raise RuntimeError(f"debug: {first[4]} shares memory with {second[4]}")
            active.append(e)


# --- the tape in Cython (fastgrad/_tape.pyx) -------------------------------------------------------
# The Python Node and run_backward above are the text of the tape; _tape.pyx compiles the same
# logic (and tensor.py's apply) with the per-op costs cut. FASTGRAD_PURE_TAPE=1 keeps the Python one.
PURE_TAPE = os.environ.get("FASTGRAD_PURE_TAPE", "").strip().lower() not in ("", "0", "false", "no", "off")
if PURE_TAPE:
    _tape = None
else:
    from . import _tape

    Node = _tape.Node  # noqa: F811 (the compiled node replaces the Python one)
    run_backward = _tape.run_backward  # noqa: F811
