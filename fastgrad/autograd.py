"""The tape: nodes recorded as ops run, and the reverse walk that applies the chain rule.

Every differentiable op that runs while gradients are enabled creates a `Node` holding its row of the
op table, its input tensors, what the forward saved for backward, and a sequence number. Only the
output tensor points at its node, so a graph that is never backpropagated is freed with its tensors.

`backward` collects the nodes reachable from the root (iteratively: a 100k-node chain is fine), and
visits them in descending sequence order, which is a reverse topological order because an op's inputs
always exist before it runs. Each node's upstream gradient is complete when it is visited, since every
consumer of its output was created (and so is visited) after it.
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager

import numpy as np

_sequence = itertools.count()
_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether ops record nodes on this thread (False inside `no_grad()`)."""
    return getattr(_state, "enabled", True)


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
    seen = {id(root_node)}
    stack = [root_node]
    nodes = []
    while stack:
        node = stack.pop()
        nodes.append(node)
        for t in node.inputs:
            parent = t._node
            if parent is not None and id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    nodes.sort(key=lambda n: n.seq, reverse=True)
    return nodes


def _shares(a: np.ndarray, others) -> bool:
    return any(o is not None and np.may_share_memory(a, o) for o in others)


def run_backward(root, gradient: np.ndarray, retain_graph: bool, keep_grads: bool) -> None:
    """Backpropagate `gradient` from tensor `root` into the `.grad` of every leaf that requires grad.

    Gradients add up where a value is used more than once. A buffer a backward rule hands back may be
    a view of its upstream gradient or of a sibling's; such borrowed buffers are copied before anyone
    accumulates into them or stores them, so no two gradients ever alias. Leaf gradients are gathered
    during the walk and written to `.grad` only when it has finished, so a backward that fails
    (a released graph, a missing rule) leaves every `.grad` as it was.
    """
    # pending[id(node)] = [gradient of node's output, whether we own that buffer exclusively];
    # leaf_grads[id(leaf)] likewise for leaves, whose tensors are kept in `leaves`
    pending = {id(root._node): [gradient, False]}
    leaf_grads, leaves = {}, {}
    for node in graph_nodes(root._node):
        entry = pending.pop(id(node), None)
        if entry is None:  # no path from this node to the root carried a gradient
            continue
        if node.released:
            raise RuntimeError(
                f"backward through the graph a second time (at op '{node.op.name}'): its saved "
                "buffers were freed by the first backward(); pass retain_graph=True to the first "
                "call to backpropagate twice"
            )
        g, g_owned = entry
        if type(g) is not np.ndarray or not g.flags.c_contiguous:  # rules take contiguous arrays
            g, g_owned = np.asarray(g, order="C"), True
        if keep_grads:
            node.grad = g
        rule = node.op.backward
        if rule is None:
            raise NotImplementedError(f"op '{node.op.name}' has no backward rule")
        grads = rule(g, *node.saved)
        if not retain_graph:
            node.saved = None
            node.released = True
        handed = []  # buffers already given to an input: a second holder must copy
        if not g_owned or keep_grads:  # node.grad keeps g: nobody may write into it
            handed.append(g)
        for t, gi in zip(node.inputs, grads):
            if gi is None or not t.requires_grad:
                continue
            if gi.shape != t.data.shape or gi.dtype != t.data.dtype:
                raise RuntimeError(
                    f"the backward rule of op '{node.op.name}' returned a {gi.dtype} gradient of shape "
                    f"{gi.shape} for an input of shape {t.data.shape} and dtype {t.data.dtype}"
                )
            # read-only buffers (np.broadcast_to from sum/mean) can never be accumulated into
            owned = gi.flags.writeable and not _shares(gi, handed)
            handed.append(gi)
            if t._node is None:
                leaves[id(t)] = t
                _add_to(leaf_grads, id(t), gi, owned)
            else:
                _add_to(pending, id(t._node), gi, owned)
    for key, (gi, owned) in leaf_grads.items():
        _accumulate_leaf(leaves[key], gi, owned)


def _add_to(slots: dict, key, gi, owned: bool) -> None:
    """slots[key] = [buffer, owned] += gi, copying a borrowed buffer before writing into it."""
    slot = slots.get(key)
    if slot is None:
        slots[key] = [gi, owned]
    elif slot[1]:
        slot[0] += gi
    else:
        slot[0] = slot[0] + gi
        slot[1] = True


def _accumulate_leaf(t, gi: np.ndarray, owned: bool) -> None:
    if t.grad is None:
        if not (owned and gi.flags.c_contiguous and gi.flags.writeable and gi.dtype == t.dtype):
            gi = np.array(gi, dtype=t.dtype, order="C")
        t.grad = gi
    else:
        t.grad += gi
