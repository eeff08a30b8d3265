"""CS231n lecture 4's three worked examples, walked through node by node: `python -m fastgrad.lecture`.

For each example the graph is built from primitive gates, backpropagated with
`backward(retain_graph=True, keep_grads=True)`, and every node is printed in the order backprop visits
it (descending creation order): its forward value, the upstream gradient d f / d(node output) arriving
from later nodes, and for each input the local gradient d(node output) / d(input) and the product

    downstream = local * upstream        (for arrays: sum_k upstream[k] * J[k, ...], J the Jacobian)

which is the gradient that input receives along that edge (an input used twice receives the sum).
The local gradient is the op's own backward rule applied to one-hot upstream gradients, so the
printout shows exactly what fastgrad computes. Each graph is also drawn into --out with `fastgrad.viz`.

    python -m fastgrad.lecture                    # prints, and draws into lecture_graphs/
    python -m fastgrad.lecture --out docs --format png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import functional as F
from .autograd import graph_nodes
from .viz import draw, format_array, node_outputs


def _leaf(value, name, dtype="float64"):
    return F.tensor(value, dtype=dtype, requires_grad=True, name=name)


def add_mul():
    """f = (x + y) z at x = -2, y = 5, z = -4: the lecture's first circuit."""
    x, y, z = _leaf(-2.0, "x"), _leaf(5.0, "y"), _leaf(-4.0, "z")
    q = x + y
    q.name = "q"
    f = q * z
    f.name = "f"
    return f, [x, y, z]


def sigmoid_neuron():
    """f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))) at w = [2, -3, -3], x = [-1, -2], gate by gate."""
    w0, w1, w2 = _leaf(2.0, "w0"), _leaf(-3.0, "w1"), _leaf(-3.0, "w2")
    x0, x1 = _leaf(-1.0, "x0"), _leaf(-2.0, "x1")
    f = 1 / (1 + F.exp(-(w0 * x0 + w1 * x1 + w2)))
    f.name = "f"
    return f, [w0, w1, w2, x0, x1]


def matrix_norm():
    """f = ||W x||^2 = sum_i q_i^2 with q = W x, at W = [[0.1, 0.5], [-0.3, 0.8]], x = [0.2, 0.4]."""
    W, x = _leaf([[0.1, 0.5], [-0.3, 0.8]], "W"), _leaf([0.2, 0.4], "x")
    q = W @ x
    q.name = "q"
    f = (q * q).sum()
    f.name = "f"
    return f, [W, x]


EXAMPLES = [
    ("add_mul", "f = (x + y) z,  x = -2, y = 5, z = -4", add_mul),
    ("sigmoid_neuron", "f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))),  w = [2, -3, -3], x = [-1, -2]",
     sigmoid_neuron),
    ("matrix_norm", "f = ||W x||^2,  W = [[0.1, 0.5], [-0.3, 0.8]], x = [0.2, 0.4]", matrix_norm),
]


def local_jacobians(node, out_shape, dtype) -> list:
    """d(out) / d(input) for each input of `node`, shape out_shape + input.shape (None: no gradient).

    Row k is the node's backward rule applied to the one-hot upstream gradient e_k (`node(e_k)`,
    PyTorch's grad_fn(e_k)); needs the saved buffers (backward with retain_graph=True).
    """
    size = int(np.prod(out_shape))
    rows = []
    for k in range(size):
        e = np.zeros(size, dtype=dtype)
        e[k] = 1
        rows.append(list(node(e.reshape(out_shape))))
    jacobians = []
    for i, t in enumerate(node.inputs):
        if not t.requires_grad or rows[0][i] is None:
            jacobians.append(None)
        else:
            jacobians.append(np.stack([r[i] for r in rows]).reshape(out_shape + t.shape))
    return jacobians


def _full(a) -> str:
    """Every entry of a (small) array, 4 significant digits."""
    a = np.asarray(a)
    if a.ndim == 0:
        return format_array(a)
    return "[" + ", ".join(_full(r) for r in a) + "]"


def walkthrough(f, leaves) -> None:
    """Backpropagate from `f` and print every node in backprop order; then the leaves' gradients.

    f: the scalar output of a graph not yet backpropagated; leaves: the named leaves to report.

    >>> walkthrough(*add_mul())      # prints "f = mul: value -12, upstream 1", ..., "dz = 3"
    """
    f.backward(retain_graph=True, keep_grads=True)
    nodes = graph_nodes(f.grad_fn)  # descending creation order: the order backprop visits them
    outputs = node_outputs(f, nodes)
    names = {}
    for position, node in enumerate(reversed(nodes), 1):
        out = outputs[id(node)]
        names[id(node)] = out.name if out.name is not None else f"{node.op.name}#{position}"

    def name_of(t):
        if t.grad_fn is not None:
            return names[id(t.grad_fn)]
        return t.name if t.name is not None else f"const {_full(t.data)}"

    print(f"forward: f = {_full(f.data)}")
    print("backward, in the order backprop visits the nodes:")
    print("  (downstream = local * upstream; for arrays sum_k upstream[k] * local[k, ...], local the "
          "Jacobian)")
    for node in nodes:
        out = outputs[id(node)]
        upstream = node.grad
        print(f"  {names[id(node)]} = {node.op.name}: value {_full(out.data)}, upstream {_full(upstream)}")
        for t, jac in zip(node.inputs, local_jacobians(node, out.shape, out.dtype)):
            if jac is None:
                print(f"    to {name_of(t)}: constant, no gradient")
                continue
            downstream = np.tensordot(upstream, jac, axes=out.ndim)
            print(
                f"    to {name_of(t)}: local {_full(jac)} * upstream {_full(upstream)} "
                f"= downstream {_full(downstream)}"
            )
    print("gradients of f:")
    for t in leaves:
        print(f"  d{t.name} = {_full(t.grad)}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None) -> int:
    parser = _Parser(
        prog="python -m fastgrad.lecture",
        description="Walk through CS231n lecture 4's backprop examples node by node and draw their graphs.",
    )
    parser.add_argument(
        "--out", default="lecture_graphs", help="folder for the drawings (default: %(default)s)"
    )
    parser.add_argument("--format", default="svg", choices=["svg", "png", "dot"], help="drawing format")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {str(out)!r} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"cannot use --out {str(out)!r}: {e.strerror or e}")
    for i, (key, title, build) in enumerate(EXAMPLES, 1):
        print(f"\nExample {i}: {title}")
        f, leaves = build()
        walkthrough(f, leaves)
        try:
            written = draw(f, out / f"graph_{key}.{args.format}")
        except (OSError, RuntimeError) as e:
            print(f"python -m fastgrad.lecture: error: cannot draw {key}: {e}", file=sys.stderr)
            return 1
        print(f"graph: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
