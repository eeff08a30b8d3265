"""The tape: nodes recorded as ops run, and the reverse walk that applies the chain rule.

Every differentiable op that runs while gradients are enabled creates a `Node` holding its row of the
op table, its input tensors, what the forward saved for backward, and a sequence number. Only the
output tensor points at its node, so a graph that is never backpropagated is freed with its tensors.

`backward` visits the nodes that receive a gradient from the root (iteratively, through a heap: a
100k-node chain is fine) in descending sequence order, which is a reverse topological order because an
op's inputs always exist before it runs. Each node's upstream gradient is complete when it is visited:
every consumer of its output was created after it, and every node on a path from the root to such a
consumer has a larger sequence number still, so it was visited first.
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from heapq import heappop, heappush

import numpy as np

_sequence = itertools.count()


class _GradMode(threading.local):
    enabled = True  # each thread starts with gradients on (a class default: no failed lookup)


_state = _GradMode()


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
    try:
        yield
    finally:
        _state.enabled = previous


class Node:
    """One recorded op application: op row, input tensors, saved buffers, sequence number.

    `grad` holds this node's output gradient after a backward with `keep_grads=True` (for drawing).
    """

    __slots__ = ("op", "inputs", "saved", "seq", "released", "grad")

    def __init__(self, op, inputs, saved):
        self.op = op
        self.inputs = inputs
        self.saved = saved
        self.seq = next(_sequence)
        self.released = False
        self.grad = None

    def __repr__(self):
        return f"<Node {self.op.name} #{self.seq}>"


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
        if keep_grads:
            node.grad = g
            g_owned = False  # node.grad keeps g: it must never be accumulated into
        rule = node.op.backward
        if rule is None:
            raise NotImplementedError(f"op '{node.op.name}' has no backward rule")
        saved = node.saved
        grads = rule(g, *saved)
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
                slot[0] = np.add(slot[0], gi, order="C")
                slot[1] = True
    for t, (gi, owned) in pending.items():  # only leaves are left
        _accumulate_leaf(t, gi, owned)


def _accumulate_leaf(t, gi: np.ndarray, owned: bool) -> None:
    if t.grad is None:
        if not owned:  # borrowed: .grad gets its own C-contiguous copy
            gi = np.array(gi, dtype=t.dtype, order="C")
        t.grad = gi
    else:
        t.grad += gi
