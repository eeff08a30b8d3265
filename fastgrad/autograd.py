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


def run_backward(root, gradient: np.ndarray, retain_graph: bool, keep_grads: bool) -> None:
    """Backpropagate `gradient` from tensor `root` into the `.grad` of every leaf that requires grad.

    Gradients add up where a value is used more than once. A buffer a backward rule hands back may be
    a view of its upstream gradient or of a sibling's; such borrowed buffers are copied before anyone
    accumulates into them or stores them, so no two gradients ever alias. Leaf gradients are gathered
    during the walk and written to `.grad` only when it has finished, so a backward that fails
    (a released graph, a missing rule) leaves every `.grad` as it was.
    """
    # pending[key] = [gradient, whether we own that buffer exclusively], where key is a node (the
    # gradient of its output; the node is also on the heap, keyed by its negated sequence number:
    # unique, no ties) or a leaf tensor (its gradient, stored in `.grad` once the walk is over)
    root_node = root._node
    pending = {root_node: [gradient, False]}
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
        rule = node.op.backward
        if rule is None:
            raise NotImplementedError(f"op '{node.op.name}' has no backward rule")
        grads = rule(g, *node.saved)
        if not retain_graph:
            node.saved = None
            node.released = True
        # ids of the owners of buffers already given to an input: a second holder must copy
        handed = set() if g_owned and not keep_grads else {id(_memory_owner(g))}  # node.grad keeps g
        for t, gi in zip(node.inputs, grads):
            if gi is None or not t.requires_grad:
                continue
            data = t.data
            if gi.shape != data.shape or gi.dtype != data.dtype:
                raise RuntimeError(
                    f"the backward rule of op '{node.op.name}' returned a {gi.dtype} gradient of shape "
                    f"{gi.shape} for an input of shape {data.shape} and dtype {data.dtype}"
                )
            owner = id(gi if gi.base is None else _memory_owner(gi))
            # read-only buffers (np.broadcast_to from sum/mean) can never be accumulated into
            owned = gi.flags.writeable and owner not in handed
            handed.add(owner)
            parent = t._node
            key = t if parent is None else parent  # a tensor key hashes by identity
            slot = pending.get(key)
            if slot is None:
                pending[key] = [gi, owned]
                if parent is not None:
                    heappush(heap, (-parent.seq, parent))
            elif slot[1]:
                slot[0] += gi
            else:  # a borrowed buffer: add into a new one
                slot[0] = slot[0] + gi
                slot[1] = True
    for t, (gi, owned) in pending.items():  # only leaves are left
        _accumulate_leaf(t, gi, owned)


def _accumulate_leaf(t, gi: np.ndarray, owned: bool) -> None:
    if t.grad is None:
        if not (owned and gi.flags.c_contiguous and gi.flags.writeable and gi.dtype == t.dtype):
            gi = np.array(gi, dtype=t.dtype, order="C")
        t.grad = gi
    else:
        t.grad += gi
