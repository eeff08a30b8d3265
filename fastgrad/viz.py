"""Drawings of the computational graph: CS231n's circuit pictures, value above and gradient below.

`to_dot(t)` returns Graphviz DOT text (plain text, no dependency) for the graph that produced tensor
`t`: one node per recorded op, one per leaf, edges in data-flow order (input -> op). Each node shows
its forward value and, when they were kept, its gradient d(root)/d(node output):

    x = fg.tensor(-2.0, requires_grad=True, name="x")
    ...
    f = (x + y) * z
    f.backward(keep_grads=True)     # keep the inner nodes' gradients for the drawing
    fg.viz.draw(f, "f.svg")         # needs Graphviz's `dot`; otherwise writes f.dot and says so

Inner gradients exist only after `backward(keep_grads=True)`, so ordinary training pays nothing for
drawing. Without them the drawing shows values only and its title says so. The gradients drawn are
those of the latest `backward(keep_grads=True)` through the root (leaf `.grad`s accumulate over calls).

A tensor's `name` (set with `fg.tensor(..., name="x")`, or `t.name = "q"` on an op's output) is
shown in its node. Nodes are visited iteratively, so a 100k-node graph is drawn without recursion.
"""
from __future__ import annotations

import html
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .autograd import graph_nodes

__all__ = ["to_dot", "draw", "format_array", "node_outputs"]

VALUE_COLOR = "#1a7f37"  # green, as the lecture's forward values
GRAD_COLOR = "#c62828"  # red, as the lecture's gradients
_FULL_SIZE = 6  # arrays with at most this many entries are printed in full


def _number(v) -> str:
    """A compact number: 4 significant digits, no trailing zeros, no negative zero."""
    v = float(v)
    return "0" if v == 0 else f"{v:.4g}"


def format_array(a) -> str:
    """A short text for a value or gradient: the number for a scalar, the entries of a small array,
    else its shape with min/mean/max.

    >>> format_array(np.float32(-12.0)), format_array([0.22, 0.26]), format_array(np.ones((3, 4)))
    ('-12', '[0.22, 0.26]', '(3, 4) min 1 mean 1 max 1')
    """
    a = np.asarray(a)
    if a.ndim == 0:
        return _number(a)
    if a.size == 0:
        return f"{a.shape} empty"
    if a.size <= _FULL_SIZE:

        def nested(x):
            return "[" + ", ".join(nested(r) if np.ndim(r) else _number(r) for r in x) + "]"

        return nested(a)
    with np.errstate(all="ignore"):  # inf/nan entries summarise as inf/nan without warnings
        stats = (a.min(), a.astype(np.float64).mean(), a.max())
    return f"{a.shape} min {_number(stats[0])} mean {_number(stats[1])} max {_number(stats[2])}"


def node_outputs(root, nodes=None) -> dict:
    """{id(node): output tensor} for every node of the graph behind `root`.

    Nodes do not hold their output (that would make a cycle): the root's node outputs `root`, and
    every other node's output is an input of some later node. `nodes`: the graph's nodes, if known.
    """
    if root.grad_fn is None:
        return {}
    output = {id(root.grad_fn): root}
    for node in graph_nodes(root.grad_fn) if nodes is None else nodes:
        for t in node.inputs:
            if t.grad_fn is not None:
                output[id(t.grad_fn)] = t
    return output


def _collect(root):
    """The graph behind `root` in data-flow order.

    Returns (items, edges): items are (key, kind, title, value, grad) with kind "op", "leaf" or
    "const"; edges are (from_key, to_key) pairs, each op's inputs in argument order, ops in creation
    order. An op's output tensor is the root or an input of a later op (nodes do not hold outputs).
    """
    if root.grad_fn is None:
        return [(id(root), *_leaf_facts(root))], []
    nodes = graph_nodes(root.grad_fn)[::-1]  # ascending sequence: the order the ops ran
    output = node_outputs(root, nodes)
    items, edges, seen = [], [], set()
    for node in nodes:
        for t in node.inputs:
            if t.grad_fn is None and id(t) not in seen:
                seen.add(id(t))
                items.append((id(t), *_leaf_facts(t)))
            edges.append((id(t) if t.grad_fn is None else id(t.grad_fn), id(node)))
        out = output[id(node)]
        title = node.op.name if out.name is None else f"{out.name} = {node.op.name}"
        items.append((id(node), "op", title, out.data, node.grad))
    return items, edges


def _leaf_facts(t):
    if t.requires_grad:
        return "leaf", (t.name if t.name is not None else "leaf"), t.data, t.grad
    return "const", (t.name if t.name is not None else "const"), t.data, None


def _label(kind, title, value, grad, with_grads: bool) -> str:
    """An HTML-like label: title, then the value (green) above the gradient (red)."""
    rows = [f"<B>{html.escape(title).replace(chr(10), '<BR/>')}</B>"]
    rows.append(f'<FONT COLOR="{VALUE_COLOR}">value {html.escape(format_array(value))}</FONT>')
    if with_grads and kind != "const":
        text = "none" if grad is None else format_array(grad)
        rows.append(f'<FONT COLOR="{GRAD_COLOR}">grad {html.escape(text)}</FONT>')
    cells = "".join(f"<TR><TD>{r}</TD></TR>" for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>>'


def _quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_STYLE = {
    "op": 'shape=box, style="rounded,filled", fillcolor="#f5f5f5"',
    "leaf": "shape=ellipse",
    "const": 'shape=ellipse, style=dashed, color="#888888"',
}


def to_dot(tensor, rankdir: str = "LR") -> str:
    """Graphviz DOT text of the graph that produced `tensor`.

    One node per op (its name, or "name = op" when its output tensor has a name), one per leaf
    (its name, else "leaf"; constants are dashed), edges input -> op in data-flow order. Each node
    shows its forward value and, after `tensor.backward(keep_grads=True)`, its gradient
    d tensor / d node: scalars as numbers, arrays of up to 6 entries in full, larger ones as
    shape and min/mean/max. Without kept gradients only values are shown, and the title says so.

    tensor: a fastgrad Tensor (the root, usually a scalar loss).
    rankdir: Graphviz layout direction, "LR" (the lecture's left-to-right circuits) or "TB".

    >>> x = fg.tensor(-2.0, requires_grad=True, name="x"); y = fg.tensor(5.0, requires_grad=True, name="y")
    >>> f = x * y; f.backward(keep_grads=True)
    >>> print(to_dot(f))       # digraph fastgrad { ... n0 -> n2; n1 -> n2; }
    """
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"to_dot: rankdir must be LR, TB, RL or BT, got {rankdir!r}")
    items, edges = _collect(tensor)
    if tensor.grad_fn is not None:
        with_grads = tensor.grad_fn.grad is not None
    else:
        with_grads = tensor.grad is not None
    root_title = tensor.name or (tensor.grad_fn.op.name if tensor.grad_fn is not None else "the leaf")
    if with_grads:
        title = f"green: forward value    red: gradient of {root_title} with respect to the node"
    else:
        title = "values only: no gradients kept (run backward(keep_grads=True) to draw them)"
    ids = {key: f"n{i}" for i, (key, *_) in enumerate(items)}
    lines = [
        "digraph fastgrad {",
        f"  rankdir={rankdir};",
        f"  graph [label={_quote(title)}, labelloc=t, fontname=Helvetica, fontsize=11];",
        "  node [fontname=Helvetica, fontsize=11];",
        '  edge [color="#555555", arrowsize=0.7];',
    ]
    root_key = id(tensor.grad_fn) if tensor.grad_fn is not None else id(tensor)
    for key, kind, node_title, value, grad in items:
        extra = ", penwidth=2" if key == root_key else ""
        label = _label(kind, node_title, value, grad, with_grads)
        lines.append(f"  {ids[key]} [label={label}, {_STYLE[kind]}{extra}];")
    lines.extend(f"  {ids[a]} -> {ids[b]};" for a, b in edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


_FORMATS = {".svg": "svg", ".png": "png"}


def draw(tensor, path, rankdir: str = "LR", timeout: float | None = 60) -> Path:
    """Draw the graph behind `tensor` into `path` (.svg or .png; .dot/.gv for the DOT text itself).

    Renders with Graphviz's `dot` program when it is on PATH. When it is not, writes the DOT text
    next to `path` with the suffix .dot, prints one line saying how to render it, and returns that
    path. Returns the path written.

    Graphviz's layout time grows faster than linearly (here a chain of 1,000 ops took it 2 s,
    4,000 ops 33 s, and 1,000 ops all reading one shared leaf over a minute): for big graphs write
    .dot, or raise `timeout` (seconds; None waits for ever). A render that exceeds it raises
    RuntimeError.

    >>> f.backward(keep_grads=True)
    >>> fg.viz.draw(f, "graph.svg")
    PosixPath('graph.svg')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS and suffix not in (".dot", ".gv"):
        raise ValueError(f"draw: cannot tell the format of {str(path)!r}: use .svg, .png, .dot or .gv")
    text = to_dot(tensor, rankdir)
    if suffix in (".dot", ".gv"):
        with atomic_write(path, "w") as f:
            f.write(text)
        return path
    dot = shutil.which("dot")
    if dot is None:
        dot_path = path.with_suffix(".dot")
        with atomic_write(dot_path, "w") as f:
            f.write(text)
        print(
            f"fastgrad.viz: Graphviz 'dot' not found, wrote {dot_path}; render it with "
            f"`dot -T{_FORMATS[suffix]} {dot_path} -o {path}` (Debian/Ubuntu: apt-get install graphviz)",
            file=sys.stderr,
        )
        return dot_path
    try:
        done = subprocess.run(
            [dot, f"-T{_FORMATS[suffix]}"],  # to stdout: the file is written atomically below
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"draw: Graphviz dot took more than {timeout} s to lay out the graph; draw it to a .dot "
            "file instead, or pass a larger timeout"
        ) from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"draw: Graphviz dot failed (exit {done.returncode}): {reason}")
    with atomic_write(path, "wb") as f:
        f.write(done.stdout)
    return path
