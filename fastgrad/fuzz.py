"""Whole-graph differential fuzzing: random programs over the op table, against two oracles.

Per-op tests and gradcheck see one op at a time; bugs in how the tape routes and accumulates
gradients (two inputs handed one buffer, a rule that writes into a saved array) appear only in whole
graphs. This module draws small random DAG programs from every row of `fastgrad.ops.TABLE`, runs
them through the public API in float32 and float64, and holds the output and every leaf's `.grad`
against two oracles that never touch the engine:

(a) central differences, in float64, of the whole program's scalar along one random direction per
    leaf (and one over all leaves at once), evaluating the program forward through `reference.py`;
(b) the same program evaluated through `reference.py` with its own reverse-mode accumulation
    written here: gradients of a value used twice are summed out of place (no buffer is ever
    reused), so it is obviously right.

Besides values it checks what the tape promises: gradients have their leaf's shape and dtype; a leaf
that no output depends on keeps `.grad is None`; no `.grad` shares memory with another `.grad` or
with any tensor's `.data`; backward changes no tensor's data; two backward passes (two graphs, or
one graph with `retain_graph=True`) give twice the gradient; `keep_grads=True` keeps every inner
gradient right.

A program is a list of instructions `Instr(out, op, args, attrs)` over named values (leaves x0,
x1, ...; results v0, v1, ...), plus the outputs whose weighted sums make the scalar loss. It is
plain data (`to_dict`/`from_dict` are JSON), is run by compiling the very Python source that
`to_python` prints, and is shrunk on failure. Inputs are drawn away from kinks and ties (relu at
0, max ties, hinge margins, log/div/pow near 0), and a candidate op whose inputs land near one is
redrawn, so that the finite differences are valid.

    python -m fastgrad.fuzz --graphs 2000 --seed 0 [--dtype float32|float64|both] [--ops add,relu]

runs graphs 0 .. N-1 of seed S (graph i draws from `numpy.random.default_rng([S, i])`; replay one
with `--start i --graphs 1`), prints a summary line, and on failure the failing graphs and the first
one shrunk to a minimal runnable Python program; the exit status is 1 then, 2 for a mistake on the
command line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import reference

REF = reference.REFERENCE

DTYPES = ("float32", "float64")
MARGIN = 0.02  # every kink or tie is at least this far from the values that reach it
VMAX = 1e3  # no value (intermediate or output) is larger than this
MAX_SIZE = 24  # no value has more elements
FD_EPS = 1e-6

# fastgrad against the oracles: |got - want| <= rtol * (|want| + max|want| of that array) + atol * scale,
# where scale is the largest magnitude over all of the program's gradients (for sums that cancel)
TOL = {
    "float64": dict(rtol=1e-9, atol=1e-11),
    "float32": dict(rtol=2e-3, atol=1e-5),
}
FD_TOL = dict(rtol=1e-5, atol=1e-8)  # a directional difference against <grad, direction>


# ---------------------------------------------------------------------------------------------
# programs


@dataclass
class Instr:
    """`out = op(*args, **attrs)`: args name earlier values; attrs are JSON values."""

    out: str
    op: str
    args: list
    attrs: dict = field(default_factory=dict)


@dataclass
class Program:
    """Leaves (name -> float64 values, exact in float32), instructions, outputs, and a mode.

    The scalar loss is the sum over `outputs` of `(value * weight).sum()` (or `value.sum()` when
    the weight is None). Leaves named in `frozen` are constants (requires_grad=False).
    mode: "once" (one forward and backward), "twice" (the program run twice on the same leaves:
    gradients accumulate), "retain" (one graph, backward twice with retain_graph=True), "keep"
    (backward with keep_grads=True: inner gradients checked too), "gradient" (one output, which
    is the root: `out.backward(gradient=w0)` with w0 a NumPy array the engine must not keep or change).
    """

    leaves: dict
    instrs: list
    outputs: list  # [(name, weight array or None)]
    mode: str = "once"
    frozen: list = field(default_factory=list)  # leaves that do not require grad

    def to_dict(self) -> dict:
        arr = lambda a: None if a is None else {"shape": list(a.shape), "data": a.ravel().tolist()}
        return {
            "leaves": {k: arr(v) for k, v in self.leaves.items()},
            "instrs": [[i.out, i.op, list(i.args), i.attrs] for i in self.instrs],
            "outputs": [[n, arr(w)] for n, w in self.outputs],
            "mode": self.mode,
            "frozen": list(self.frozen),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Program":
        arr = lambda a: None if a is None else np.array(a["data"], dtype=np.float64).reshape(a["shape"])
        return cls(
            leaves={k: arr(v) for k, v in d["leaves"].items()},
            instrs=[Instr(o, op, list(a), dict(at)) for o, op, a, at in d["instrs"]],
            outputs=[(n, arr(w)) for n, w in d["outputs"]],
            mode=d.get("mode", "once"),
            frozen=list(d.get("frozen", [])),
        )

    def copy(self) -> "Program":
        return Program(dict(self.leaves), [Instr(i.out, i.op, list(i.args), dict(i.attrs)) for i in self.instrs],
                       list(self.outputs), self.mode, list(self.frozen))

    def wants_grad(self, name) -> bool:
        return name in self.leaves and name not in self.frozen

    def ops(self) -> set:
        return {i.op for i in self.instrs}


def f32(a) -> np.ndarray:
    """Values rounded to float32 and held as float64: the same inputs for both dtypes."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the ops: how each row is called through the public API, evaluated by reference.py, and drawn


def _call(name, arrays, **kw):
    """reference.py forward of `name`: (output, backward(g) -> one gradient per array)."""
    fwd, bwd = REF[name]
    out, cache = fwd(*arrays, **kw)
    return np.asarray(out), (lambda g: bwd(g, cache))


def _index(tokens):
    """An index from its JSON tokens: ["s", start, stop, step], ["i", k], ["a", [k, ...]], ["n"], ["e"]."""
    parts = []
    for t in tokens:
        kind = t[0]
        parts.append(
            slice(t[1], t[2], t[3]) if kind == "s" else t[1] if kind == "i"
            else np.array(t[1], dtype=np.intp) if kind == "a" else None if kind == "n" else Ellipsis
        )
    return parts[0] if len(parts) == 1 else tuple(parts)


def _index_src(tokens) -> str:
    def one(t):
        kind = t[0]
        if kind == "s":
            return ":".join("" if v is None else str(v) for v in t[1:3]) + ("" if t[3] is None else f":{t[3]}")
        return str(t[1]) if kind in "ia" else "None" if kind == "n" else "..."

    return ", ".join(one(t) for t in tokens)  # an integer array is written as a list: x[[0, 0, 2]]


def _labels_src(attrs) -> str:
    labels, form = attrs["labels"], attrs.get("form", "list")
    return {"list": str(labels), "ndarray": f"np.array({labels})", "tensor": f"fg.tensor({labels})"}[form]


class Spec:
    """One fuzzable op: `gen(g)` proposes (args, attrs) or None; `ref(arrays, attrs)` evaluates it
    through reference.py; `src(args, attrs)` is the public-API expression; `safe` rejects inputs
    near a kink; `table` is the op-table row it exercises."""

    def __init__(self, table, gen, ref, src, safe=None):
        self.table, self.gen, self.ref, self.src, self.safe = table, gen, ref, src, safe


SPECS: dict[str, Spec] = {}


# -- value checks used by the specs -------------------------------------------------------------


def _away(x, at=0.0):
    return bool(np.all(np.abs(np.asarray(x) - at) > MARGIN))


def _gap(rows):
    """Every row's largest entry beats its second largest by more than MARGIN (no tie)."""
    if rows.shape[-1] < 2:
        return True
    part = np.sort(rows, axis=-1)
    return bool(np.all(part[..., -1] - part[..., -2] > MARGIN))


def _reduce_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


# -- the generator's state -------------------------------------------------------------------------


class Gen:
    """A program under construction, with the float64 value of every name (from reference.py)."""

    def __init__(self, rng):
        self.rng = rng
        self.values = {}  # name -> array, committed leaves and results
        self.leaves = {}
        self.instrs = []
        self.order = []  # names in creation order
        self.pending = {}  # leaves made by the proposal being tried
        self.used = set()  # names some instruction takes

    # value draws, exact in float32
    def draw(self, shape, kind="any"):
        r = self.rng
        if kind == "pos":
            v = r.uniform(0.5, 2.0, shape)
        else:
            lo = 0.5 if kind == "away" else 0.1
            v = r.choice([-1.0, 1.0], size=shape) * r.uniform(lo, 2.0, shape)
        return f32(v)

    def leaf(self, shape, kind="any") -> str:
        name = f"x{len(self.leaves) + len(self.pending)}"
        self.pending[name] = self.draw(tuple(shape), kind)
        return name

    def value(self, name):
        return self.pending[name] if name in self.pending else self.values[name]

    def shape(self, name):
        return self.value(name).shape

    def pick(self, ok=lambda v: True, exclude=None):
        """A committed name whose value passes `ok`, biased towards recent ones; None if none does."""
        names = [n for n in self.order if n != exclude and ok(self.values[n])]
        if not names:
            return None
        u = self.rng.random()
        if u < 0.5:  # a result nothing uses yet: keeps the graph connected
            fresh = [n for n in names if n not in self.used and n not in self.leaves]
            names = fresh or names
        elif u < 0.7:
            names = names[-3:]
        return names[int(self.rng.integers(len(names)))]

    def pick_or_leaf(self, ok, shape, kind="any", p_new=0.3):
        name = None if self.rng.random() < p_new else self.pick(ok)
        return self.leaf(shape() if callable(shape) else shape, kind) if name is None else name

    def rand_shape(self, ndim=None):
        r = self.rng
        if ndim is None:
            ndim = int(r.choice([0, 1, 2, 3], p=[0.05, 0.2, 0.55, 0.2]))
        if ndim == 0:
            return ()
        if ndim == 1:
            return (int(r.integers(1, 6)),)
        if ndim == 2:
            return (int(r.integers(1, 5)), int(r.integers(1, 6)))
        a, b = int(r.integers(1, 4)), int(r.integers(1, 4))
        return (a, b, int(r.integers(1, min(4, MAX_SIZE // (a * b)) + 1)))

    def cols(self, rows):
        """A second dimension for a new (rows, m) leaf: at most 5, at most 20 elements in all."""
        return int(self.rng.integers(1, max(1, min(5, 20 // rows)) + 1))


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _partner_shape(rng, s):
    """A shape that broadcasts with `s` (same, scalar, row, column, or stretching both ways)."""
    kind = rng.integers(5)
    if kind == 0:
        return s
    if kind == 1:
        return ()
    if kind == 2:  # a suffix: the row of a matrix
        return s[int(rng.integers(0, len(s) + 1)):]
    out = []
    for n in s:
        r = rng.random()
        if n == 1 and r < 0.6:
            out.append(int(rng.integers(2, 5)))  # stretch the other way
        elif r < 0.4:
            out.append(1)  # a column, or a broadcast axis
        else:
            out.append(n)
    if out and rng.random() < 0.3:
        out = out[int(rng.integers(1, len(out) + 1)):]
    if kind == 4 and len(out) < 3:
        out = [int(rng.integers(1, 4))] + out  # a leading axis s lacks
    return tuple(out)


def _broadcast_ok(a, b):
    try:
        shape = np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return len(shape) <= 3 and _size(shape) <= MAX_SIZE


# -- arithmetic and maximum -------------------------------------------------------------------------

CONSTS = (2.0, 0.5, -1.5, 3.0, 1.0, -0.25)
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _binary_gen(name):
    def gen(g):
        r = g.rng
        a = g.pick()
        if a is None:
            a = g.leaf(g.rand_shape(), "away" if name == "div" else "any")
        u = r.random()
        if u < 0.15:
            return [a, a], {}  # x * x, x + x, maximum(x, x), x / x
        if u < 0.3 and name != "maximum":
            return [a], {"const": float(r.choice(CONSTS)), "side": str(r.choice(["l", "r"]))}
        sa = g.shape(a)
        b = None
        if r.random() < 0.5:
            b = g.pick(lambda v: _broadcast_ok(sa, v.shape), exclude=a)
        if b is None:
            sb = _partner_shape(r, sa)
            if not _broadcast_ok(sa, sb):
                sb = sa
            b = g.leaf(sb, "away" if name == "div" else "any")
        return ([a, b] if r.random() < 0.5 else [b, a]), {}

    return gen


def _binary_ref(name):
    def ref(arrays, attrs):
        if "const" not in attrs:
            return _call(name, arrays)
        c = np.array(attrs["const"])
        if attrs["side"] == "r":
            out, back = _call(name, (arrays[0], c))
            return out, (lambda g: back(g)[:1])
        out, back = _call(name, (c, arrays[0]))
        return out, (lambda g: back(g)[1:])

    return ref


def _binary_src(name):
    def src(args, attrs):
        if name == "maximum":
            return f"fg.maximum({args[0]}, {args[1]})"
        sym = SYMBOL[name]
        if "const" in attrs:
            c = repr(attrs["const"])
            return f"{args[0]} {sym} {c}" if attrs["side"] == "r" else f"{c} {sym} {args[0]}"
        return f"{args[0]} {sym} {args[1]}"

    return src


def _div_safe(arrays, attrs):
    if "const" in attrs:
        return attrs["side"] == "r" or bool(np.all(np.abs(arrays[0]) >= 0.25))
    return bool(np.all(np.abs(arrays[1]) >= 0.25))


def _maximum_safe(arrays, attrs):
    a, b = arrays
    return a is b or _away(np.subtract(a, b))


for _name in ("add", "sub", "mul", "div", "maximum"):
    SPECS[_name] = Spec(
        _name, _binary_gen(_name), _binary_ref(_name), _binary_src(_name),
        _div_safe if _name == "div" else _maximum_safe if _name == "maximum" else None,
    )


# -- elementwise gates ------------------------------------------------------------------------------

FORMS = ("method", "func")


def _unary_gen(kind="any", ok=lambda v: True, attrs=lambda r: {}, forms=False):
    def gen(g):
        a = g.pick_or_leaf(ok, g.rand_shape, kind, p_new=0.15)
        at = attrs(g.rng)
        if forms:
            at["form"] = str(g.rng.choice(FORMS))
        return [a], at

    return gen


def _unary_src(name):
    def src(args, attrs):
        if name == "neg":
            return f"-{args[0]}"
        if name == "pow":
            return f"{args[0]} ** {attrs['exponent']!r}"
        if name == "leaky_relu":
            return f"fg.leaky_relu({args[0]}, negative_slope={attrs['negative_slope']!r})"
        if name == "elu":
            return f"fg.elu({args[0]}, alpha={attrs['alpha']!r})"
        if attrs.get("form") == "func":
            return f"fg.{name}({args[0]})"
        return f"{args[0]}.{name}()"

    return src


def _unary_ref(name):
    def ref(arrays, attrs):
        kw = {k: v for k, v in attrs.items() if k != "form"}
        return _call(name, arrays, **kw)

    return ref


EXPONENTS = (2, 3, 0.5, -1, 1.5, 0, 1, -2, 2.5)


def _pow_attrs(r):
    return {"exponent": EXPONENTS[int(r.integers(len(EXPONENTS)))]}


def _pow_safe(arrays, attrs):
    x, e = arrays[0], attrs["exponent"]
    if isinstance(e, float) and not e.is_integer():
        return bool(np.all(x > 0.1))
    return e > 0 or bool(np.all(np.abs(x) >= 0.3))


_GATES = {
    # name: (kind of a new leaf, ok for a picked input, attrs, method/function forms, safe)
    "neg": ("any", lambda v: True, lambda r: {}, False, None),
    "pow": ("any", lambda v: True, _pow_attrs, False, _pow_safe),
    "exp": ("any", lambda v: v.size == 0 or v.max() < 4, lambda r: {}, True, lambda a, at: bool(np.all(a[0] < 5))),
    "log": ("pos", lambda v: v.size == 0 or v.min() > 0.1, lambda r: {}, True, lambda a, at: bool(np.all(a[0] > 0.1))),
    "relu": ("any", lambda v: True, lambda r: {}, True, lambda a, at: _away(a[0])),
    "leaky_relu": ("any", lambda v: True, lambda r: {"negative_slope": float(r.choice([0.01, 0.1, 0.3, 0.0, -0.2]))},
                   False, lambda a, at: _away(a[0])),
    "elu": ("any", lambda v: True, lambda r: {"alpha": float(r.choice([1.0, 0.5, 2.0, 0.0]))}, False,
            lambda a, at: _away(a[0])),
    "sigmoid": ("any", lambda v: True, lambda r: {}, True, None),
    "tanh": ("any", lambda v: True, lambda r: {}, True, None),
}
for _name, (_kind, _ok, _attrs, _forms, _safe) in _GATES.items():
    SPECS[_name] = Spec(_name, _unary_gen(_kind, _ok, _attrs, _forms), _unary_ref(_name), _unary_src(_name), _safe)


# -- reductions -----------------------------------------------------------------------------------


def _axis_attr(r, ndim):
    """None, an int (maybe negative), a tuple (any order, maybe negative) or () (reduces nothing)."""
    if ndim == 0:
        return None
    u = r.random()
    if u < 0.25:
        return None
    if u < 0.6:
        return int(r.integers(-ndim, ndim))
    if u < 0.9:
        k = int(r.integers(1, ndim + 1))
        axes = r.permutation(ndim)[:k]
        return [int(a) - ndim if r.random() < 0.3 else int(a) for a in axes]
    return []


def _reduction_gen(g):
    a = g.pick_or_leaf(lambda v: True, g.rand_shape, p_new=0.1)
    return [a], {"axis": _axis_attr(g.rng, len(g.shape(a))), "keepdims": bool(g.rng.random() < 0.4)}


def _reduction_ref(name):
    def ref(arrays, attrs):
        axis = attrs["axis"]
        return _call(name, arrays, axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=attrs["keepdims"])

    return ref


def _reduction_src(name):
    def src(args, attrs):
        axis = attrs["axis"]
        axis = repr(tuple(axis)) if isinstance(axis, list) else repr(axis)
        return f"{args[0]}.{name}(axis={axis}, keepdims={attrs['keepdims']})"

    return src


def _max_safe(arrays, attrs):
    x = arrays[0]
    if x.ndim == 0:
        return True
    axes = _reduce_axes(attrs["axis"], x.ndim)
    if not axes:
        return True
    kept = [i for i in range(x.ndim) if i not in axes]
    rows = np.moveaxis(x, axes, range(len(kept), x.ndim)).reshape(-1, _size([x.shape[i] for i in axes]))
    return _gap(rows)


for _name in ("sum", "mean", "max"):
    SPECS[_name] = Spec(_name, _reduction_gen, _reduction_ref(_name), _reduction_src(_name),
                        _max_safe if _name == "max" else None)


# -- linear algebra ---------------------------------------------------------------------------------


def _matmul_gen(g):
    r = g.rng
    nda, ndb = [(2, 2), (2, 1), (1, 2), (1, 1)][int(r.integers(4))]
    a = g.pick_or_leaf(lambda v: v.ndim == nda, lambda: g.rand_shape(nda))
    k = g.shape(a)[-1]
    ok = lambda v: v.ndim == ndb and v.shape[0] == k
    if ok(g.value(a)) and r.random() < 0.3:
        b = a  # x @ x for a square x, v @ v for a vector
    else:
        b = g.pick_or_leaf(ok, lambda: (k,) if ndb == 1 else (k, g.cols(k)))
    return [a, b], {}


def _affine_gen(g):
    r = g.rng
    x = g.pick_or_leaf(lambda v: v.ndim == 2, lambda: g.rand_shape(2))
    n, d = g.shape(x)
    if n == d and r.random() < 0.2:
        W = x  # affine(x, x, b): one leaf in two argument positions
    else:
        W = g.pick_or_leaf(lambda v: v.ndim == 2 and v.shape[0] == d, lambda: (d, g.cols(d)))
    m = g.shape(W)[1]
    b = g.pick_or_leaf(lambda v: v.shape == (m,), (m,))
    act = [None, "relu", "leaky_relu", "sigmoid", "tanh", "elu"][int(r.integers(6))]
    attrs = {"activation": act}
    if act == "leaky_relu":
        attrs["negative_slope"] = float(r.choice([0.01, 0.1, 0.3]))
    if act == "elu":
        attrs["alpha"] = float(r.choice([1.0, 0.5, 1.5]))
    return [x, W, b], attrs


def _affine_ref(arrays, attrs):
    x, W, b = arrays
    if not (x.ndim == W.ndim == 2 and b.ndim == 1 and x.shape[1] == W.shape[0] and b.shape[0] == W.shape[1]):
        raise ValueError(f"affine: x {x.shape}, W {W.shape}, b {b.shape}")  # reference.py would broadcast b
    return _call("affine", arrays, activation=attrs["activation"],
                 negative_slope=attrs.get("negative_slope", 0.01), alpha=attrs.get("alpha", 1.0))


def _affine_src(args, attrs):
    extra = ""
    if attrs["activation"] is not None:
        extra = f", activation={attrs['activation']!r}"
    for k in ("negative_slope", "alpha"):
        if k in attrs:
            extra += f", {k}={attrs[k]!r}"
    return f"fg.affine({args[0]}, {args[1]}, {args[2]}{extra})"


def _affine_safe(arrays, attrs):
    if attrs["activation"] in ("relu", "leaky_relu", "elu"):
        x, W, b = arrays
        return _away(x @ W + b)
    return True


def _matmul_ref(arrays, attrs):
    if not all(1 <= a.ndim <= 2 for a in arrays):  # np.matmul would also take stacks of matrices
        raise ValueError(f"matmul: shapes {arrays[0].shape} and {arrays[1].shape}")
    return _call("matmul", arrays)


SPECS["matmul"] = Spec("matmul", _matmul_gen, _matmul_ref,
                       lambda args, attrs: f"{args[0]} @ {args[1]}")
SPECS["affine"] = Spec("affine", _affine_gen, _affine_ref, _affine_src, _affine_safe)


# -- routing: maxout --------------------------------------------------------------------------------


def _maxout_gen(g):
    r = g.rng
    p = int(r.choice([2, 3, 1, 4], p=[0.5, 0.25, 0.1, 0.15]))
    z = g.pick_or_leaf(lambda v: v.ndim == 2 and v.shape[1] % p == 0,
                       lambda: (int(r.integers(1, 4)), p * int(r.integers(1, max(2, 8 // p + 1)))))
    return [z], {"pieces": p}


def _maxout_safe(arrays, attrs):
    z, p = arrays[0], attrs["pieces"]
    return _gap(z.reshape(z.shape[0], -1, p))


SPECS["maxout"] = Spec("maxout", _maxout_gen, lambda arrays, attrs: _call("maxout", arrays, pieces=attrs["pieces"]),
                       lambda args, attrs: f"fg.maxout({args[0]}, {attrs['pieces']})", _maxout_safe)


# -- shape ----------------------------------------------------------------------------------------


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _reshape_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.size > 0, g.rand_shape, p_new=0.1)
    n = g.value(a).size
    ndim = int(r.integers(0 if n == 1 else 1, 4))
    shape, left = [], n
    for _ in range(ndim - 1):
        d = int(r.choice(_divisors(left)))
        shape.append(d)
        left //= d
    if ndim:
        shape.append(left)
        r.shuffle(shape)
        if r.random() < 0.3:
            shape[int(r.integers(ndim))] = -1
    return [a], {"shape": shape, "form": str(r.choice(["tuple", "args"]))}


def _reshape_src(args, attrs):
    shape = attrs["shape"]
    if attrs.get("form") == "args" and shape:
        return f"{args[0]}.reshape({', '.join(map(str, shape))})"
    return f"{args[0]}.reshape({tuple(shape)!r})"


def _transpose_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.ndim >= 2, lambda: g.rand_shape(int(r.choice([2, 3]))), p_new=0.1)
    nd = len(g.shape(a))
    if r.random() < 0.3:
        return [a], {"axes": None, "form": str(r.choice(["T", "transpose"]))}
    if r.random() < 0.35:  # x.transpose(d0, d1): PyTorch's meaning, the two axes swapped
        d0, d1 = (int(d) - nd if r.random() < 0.3 else int(d) for d in r.choice(nd, 2, replace=False))
        perm = list(range(nd))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return [a], {"axes": perm, "form": "swap", "dims": [d0, d1]}
    perm = [int(p) - nd if r.random() < 0.3 else int(p) for p in r.permutation(nd)]
    # NumPy's transpose(*axes) reads two ints as a swap (above), so two axes are a tuple or permute
    forms = ["tuple", "permute"] + (["args"] if nd != 2 else [])
    return [a], {"axes": perm, "form": str(r.choice(forms))}


def _transpose_ref(arrays, attrs):
    axes = attrs["axes"]
    return _call("transpose", arrays, axes=None if axes is None else tuple(axes))


def _transpose_src(args, attrs):
    axes, form = attrs["axes"], attrs.get("form")
    if axes is None:
        return f"{args[0]}.T" if form == "T" else f"{args[0]}.transpose()"
    if form == "swap":
        return f"{args[0]}.transpose({attrs['dims'][0]}, {attrs['dims'][1]})"
    if form == "permute":
        return f"{args[0]}.permute({', '.join(map(str, axes))})"
    if form == "args" and len(axes) != 2:  # two ints swap two axes, as in PyTorch (Tensor.transpose)
        return f"{args[0]}.transpose({', '.join(map(str, axes))})"
    return f"{args[0]}.transpose({tuple(axes)!r})"


def _slice_token(r, n):
    step = int(r.choice([1, 1, 2, -1, -1, -2, 3]))
    pick = lambda: None if r.random() < 0.4 else int(r.integers(-n, n + 1))
    return ["s", pick(), pick(), None if step == 1 and r.random() < 0.5 else step]


def _getitem_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.ndim >= 1, lambda: g.rand_shape(int(r.choice([1, 2, 3]))), p_new=0.1)
    shape = g.shape(a)
    for _ in range(20):
        tokens, arrays = [], 0
        dims = list(range(len(shape)))
        if len(shape) > 1 and r.random() < 0.15:
            tokens.append(["e"])  # x[..., k]: index the trailing axes
            dims = dims[int(r.integers(1, len(shape))):]
        else:
            dims = dims[: int(r.integers(1, len(shape) + 1))]
        for d in dims:
            n = shape[d]
            u = r.random()
            if u < 0.15:
                tokens.append(["s", None, None, None])
            elif u < 0.55:
                tokens.append(_slice_token(r, n))
            elif u < 0.7:
                tokens.append(["i", int(r.integers(-n, n))])
            elif arrays < 2:
                length = int(r.integers(1, 5)) if arrays == 0 else length
                tokens.append(["a", [int(k) for k in r.integers(-n, n, length)]])  # repeats likely
                arrays += 1
            else:
                tokens.append(["s", None, None, -1])
        if r.random() < 0.08:
            tokens.insert(int(r.integers(len(tokens) + 1)), ["n"])
        try:
            out = g.value(a)[_index(tokens)]
        except IndexError:
            continue
        if 0 < out.size <= MAX_SIZE and out.ndim <= 4:
            return [a], {"index": tokens}
    return None


SPECS["reshape"] = Spec("reshape", _reshape_gen, lambda arrays, attrs: _call("reshape", arrays, shape=tuple(attrs["shape"])),
                        _reshape_src)
SPECS["transpose"] = Spec("transpose", _transpose_gen, _transpose_ref, _transpose_src)
SPECS["getitem"] = Spec("getitem", _getitem_gen, lambda arrays, attrs: _call("getitem", arrays, index=_index(attrs["index"])),
                        lambda args, attrs: f"{args[0]}[{_index_src(attrs['index'])}]")


# -- losses ---------------------------------------------------------------------------------------


def _loss_gen(name):
    def gen(g):
        r = g.rng
        s = g.pick_or_leaf(lambda v: v.ndim == 2 and v.shape[0] >= 1 and v.shape[1] >= 1,
                           lambda: (int(r.integers(1, 5)), int(r.integers(2, 6))))
        n, c = g.shape(s)
        attrs = {"labels": [int(k) for k in r.integers(0, c, n)], "form": str(r.choice(["list", "ndarray", "tensor"]))}
        if name == "svm_loss":
            attrs["delta"] = float(r.choice([1.0, 0.5, 2.0]))
        return [s], attrs

    return gen


def _loss_ref(name):
    def ref(arrays, attrs):
        kw = {"delta": attrs["delta"]} if name == "svm_loss" else {}
        labels = np.array(attrs["labels"], dtype=np.intp)
        scores = arrays[0]
        # reference.py would broadcast labels of another length against the rows, not fail
        if scores.ndim != 2 or labels.shape != scores.shape[:1] or labels.min() < 0 or labels.max() >= scores.shape[1]:
            raise ValueError(f"{name}: labels {attrs['labels']} do not fit scores of shape {scores.shape}")
        return _call(name, arrays, labels=labels, **kw)

    return ref


def _loss_src(name):
    def src(args, attrs):
        extra = f", delta={attrs['delta']!r}" if name == "svm_loss" else ""
        return f"fg.{name}({args[0]}, {_labels_src(attrs)}{extra})"

    return src


def _svm_safe(arrays, attrs):
    s = arrays[0]
    y = np.array(attrs["labels"], dtype=np.intp)
    margins = s - s[np.arange(len(y)), y][:, None] + attrs["delta"]
    margins[np.arange(len(y)), y] = 1.0
    return _away(margins)


for _name in ("softmax_cross_entropy", "svm_loss"):
    SPECS[_name] = Spec(_name, _loss_gen(_name), _loss_ref(_name), _loss_src(_name),
                        _svm_safe if _name == "svm_loss" else None)

# -- the PyTorch surface: cast, abs, sqrt, clamp, pow_tensor, cat, where, softmax, log_softmax,
#    dropout -------------------------------------------------------------------------------------


def _cast_gen(g):
    a = g.pick_or_leaf(lambda v: True, g.rand_shape, p_new=0.15)
    return [a], {"form": str(g.rng.choice(["clone", "to", "round trip"]))}


def _cast_src(args, attrs):
    # every form ends in the graph's dtype (one graph holds one dtype) and makes a new tensor;
    # "round trip" goes through float64 and back: two real casts in a float32 graph (in float64
    # .double() returns x itself, and .float() would round, so it is not drawn)
    x, form = args[0], attrs["form"]
    return {"clone": f"{x}.clone()", "to": f"{x}.to({x}.dtype, copy=True)",
            "round trip": f"{x}.double().to({x}.dtype, copy=True)"}[form]


def _abs_safe(arrays, attrs):
    return _away(arrays[0])


def _clamp_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: True, g.rand_shape, p_new=0.15)
    lo, hi = sorted(float(b) for b in r.choice(CLAMP_BOUNDS, 2, replace=False))
    form = str(r.choice(["both", "min", "max", "keywords", "func"]))
    if form == "min":
        hi = None
    elif form == "max":
        lo = None
    return [a], {"min": lo, "max": hi, "form": form}


CLAMP_BOUNDS = (-1.5, -0.5, -0.25, 0.0, 0.25, 0.75, 1.0, 2.0)  # exact in float32


def _clamp_src(args, attrs):
    x, lo, hi, form = args[0], attrs["min"], attrs["max"], attrs["form"]
    if form == "min":
        return f"{x}.clamp(min={lo!r})"
    if form == "max":
        return f"{x}.clamp(max={hi!r})"
    if form == "keywords":
        return f"{x}.clamp(min={lo!r}, max={hi!r})"
    if form == "func":
        return f"fg.clamp({x}, {lo!r}, {hi!r})"
    return f"{x}.clamp({lo!r}, {hi!r})"


def _clamp_safe(arrays, attrs):
    return all(b is None or _away(arrays[0], b) for b in (attrs["min"], attrs["max"]))


def _pow_tensor_gen(g):
    r = g.rng
    u = r.random()
    if u < 0.25:  # a number base: 2.0 ** t
        t = g.pick_or_leaf(lambda v: v.size == 0 or np.abs(v).max() < 4, g.rand_shape)
        return [t], {"base": float(r.choice([2.0, 0.5, 3.0, 1.5]))}
    a = g.pick_or_leaf(lambda v: v.size == 0 or v.min() > 0.1, g.rand_shape, "pos")
    if u < 0.35:
        return [a, a], {}  # x ** x
    sa = g.shape(a)
    b = None
    if r.random() < 0.5:
        b = g.pick(lambda v: _broadcast_ok(sa, v.shape) and (v.size == 0 or np.abs(v).max() < 3), exclude=a)
    if b is None:
        sb = _partner_shape(r, sa)
        b = g.leaf(sb if _broadcast_ok(sa, sb) else sa)
    return [a, b], {}


def _pow_tensor_ref(arrays, attrs):
    if "base" in attrs:
        out, back = _call("pow_tensor", (np.array(attrs["base"]), arrays[0]))
        return out, (lambda g: back(g)[1:])
    return _call("pow_tensor", arrays)


def _pow_tensor_src(args, attrs):
    if "base" in attrs:
        return f"{attrs['base']!r} ** {args[0]}"
    return f"{args[0]} ** {args[1]}"


def _pow_tensor_safe(arrays, attrs):
    return "base" in attrs or bool(np.all(arrays[0] > 0.1))  # ln a in d/db; a**(b-1) near 0


def _cat_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.ndim >= 1, lambda: g.rand_shape(int(r.choice([1, 2, 3]))), p_new=0.15)
    shape = g.shape(a)
    nd = len(shape)
    axis = int(r.integers(nd))
    dim = axis - nd if r.random() < 0.3 else axis
    k = int(r.choice([1, 2, 3], p=[0.1, 0.6, 0.3]))
    args = [a]
    for _ in range(k - 1):
        if r.random() < 0.2:
            args.append(args[int(r.integers(len(args)))])  # one value twice: cat([x, x])
            continue
        ok = lambda v: v.ndim == nd and v.shape[:axis] + v.shape[axis + 1:] == shape[:axis] + shape[axis + 1:]
        b = g.pick(ok) if r.random() < 0.5 else None
        if b is None:
            s = list(shape)
            s[axis] = int(r.integers(1, 4))
            b = g.leaf(tuple(s))
        args.append(b)
    r.shuffle(args)
    return args, {"dim": dim, "form": str(r.choice(["positional", "keyword"]))}


def _cat_ref(arrays, attrs):
    shapes = [a.shape for a in arrays]
    nd = len(shapes[0])
    if nd == 0 or not -nd <= attrs["dim"] < nd:
        raise ValueError(f"cat: dim {attrs['dim']} for shapes {shapes}")  # reference.py would wrap it
    return _call("cat", arrays, dim=attrs["dim"])


def _cat_src(args, attrs):
    dim = f"dim={attrs['dim']}" if attrs.get("form") == "keyword" else str(attrs["dim"])
    return f"fg.cat([{', '.join(args)}], {dim})"


def _where_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: True, g.rand_shape, p_new=0.2)
    sa = g.shape(a)
    u = r.random()
    if u < 0.15:
        b, const = a, None  # where(c, x, x)
    elif u < 0.3:
        b, const = None, float(r.choice(CONSTS))
    else:
        const = None
        b = g.pick(lambda v: _broadcast_ok(sa, v.shape), exclude=a) if r.random() < 0.5 else None
        if b is None:
            sb = _partner_shape(r, sa)
            b = g.leaf(sb if _broadcast_ok(sa, sb) else sa)
    out = sa if b is None else np.broadcast_shapes(sa, g.shape(b))
    sc = _partner_shape(r, out) if r.random() < 0.4 else out
    if not _broadcast_ok(out, sc):
        sc = out
    cond = r.random(sc) < 0.5
    attrs = {"cond": {"shape": list(cond.shape), "data": [bool(c) for c in cond.ravel()]}}
    if b is None:
        attrs.update(const=const, side=str(r.choice(["a", "b"])))
        return [a], attrs
    return ([a, b] if r.random() < 0.5 else [b, a]), attrs


def _cond(attrs):
    c = attrs["cond"]
    return np.array(c["data"], dtype=bool).reshape(c["shape"])


def _where_ref(arrays, attrs):
    cond = _cond(attrs)
    if "const" in attrs:
        c = np.array(attrs["const"])
        pair = (arrays[0], c) if attrs["side"] == "a" else (c, arrays[0])
        out, back = _call("where", pair, cond=cond)
        return out, (lambda g: back(g)[:1] if attrs["side"] == "a" else back(g)[1:])
    return _call("where", arrays, cond=cond)


def _where_src(args, attrs):
    c = _cond(attrs)
    cond = f"np.array({c.tolist()!r})" if c.ndim else f"np.array({bool(c)!r})"
    if "const" in attrs:
        a, b = (args[0], repr(attrs["const"])) if attrs["side"] == "a" else (repr(attrs["const"]), args[0])
    else:
        a, b = args
    return f"fg.where({cond}, {a}, {b})"


def _softmax_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.ndim >= 1, lambda: g.rand_shape(int(r.choice([1, 2, 3]))), p_new=0.15)
    nd = len(g.shape(a))
    dim = int(r.integers(-nd, nd))
    return [a], {"dim": dim, "form": str(r.choice(["functional", "method"]))}


def _softmax_src(name):
    def src(args, attrs):
        if attrs.get("form") == "method":
            return f"{args[0]}.{name}({attrs['dim']})"
        return f"fg.functional.{name}({args[0]}, {attrs['dim']})"

    return src


def _softmax_ref(name):
    def ref(arrays, attrs):
        x, dim = arrays[0], attrs["dim"]
        if x.ndim == 0 or not -x.ndim <= dim < x.ndim:
            raise ValueError(f"{name}: dim {dim} for shape {x.shape}")  # reference.py would wrap it
        return _call(name, arrays, dim=dim)

    return ref


DROPOUT_P = (0.5, 0.25, 0.2, 0.75)


def _dropout_gen(g):
    r = g.rng
    a = g.pick_or_leaf(lambda v: v.size > 0, g.rand_shape, p_new=0.15)
    return [a], {"p": float(r.choice(DROPOUT_P)), "seed": int(r.integers(2**31))}


def _dropout_keep(attrs, shape):
    """The kept entries as F.dropout draws them: generator.random(shape) >= p (float64 draws, the
    same in both dtypes), from a generator made from the instruction's seed in the program."""
    return np.random.default_rng(attrs["seed"]).random(shape) >= attrs["p"]


def _dropout_ref(arrays, attrs):
    return _call("dropout", arrays, keep=_dropout_keep(attrs, arrays[0].shape), p=attrs["p"])


def _dropout_src(args, attrs):
    return (f"fg.functional.dropout({args[0]}, {attrs['p']!r}, "
            f"generator=np.random.default_rng({attrs['seed']}))")


SPECS["sumsq"] = Spec("sumsq", _unary_gen(), _unary_ref("sumsq"),
                      lambda args, attrs: f"fg.functional.sumsq({args[0]})")
SPECS["cast"] = Spec("cast", _cast_gen, lambda arrays, attrs: _call("cast", arrays, dtype="float64"), _cast_src)
SPECS["abs"] = Spec("abs", _unary_gen(forms=True), _unary_ref("abs"), _unary_src("abs"), _abs_safe)
SPECS["sqrt"] = Spec("sqrt", _unary_gen("pos", lambda v: v.size == 0 or v.min() > 0.1, forms=True), _unary_ref("sqrt"),
                     _unary_src("sqrt"), lambda a, at: bool(np.all(a[0] > 0.1)))
SPECS["clamp"] = Spec("clamp", _clamp_gen, lambda arrays, attrs: _call("clamp", arrays, min=attrs["min"], max=attrs["max"]),
                      _clamp_src, _clamp_safe)
SPECS["pow_tensor"] = Spec("pow_tensor", _pow_tensor_gen, _pow_tensor_ref, _pow_tensor_src, _pow_tensor_safe)
SPECS["cat"] = Spec("cat", _cat_gen, _cat_ref, _cat_src)
SPECS["where"] = Spec("where", _where_gen, _where_ref, _where_src)
for _name in ("softmax", "log_softmax"):
    SPECS[_name] = Spec(_name, _softmax_gen, _softmax_ref(_name), _softmax_src(_name))
SPECS["dropout"] = Spec("dropout", _dropout_gen, _dropout_ref, _dropout_src)


# -- normalisation: batch norm (training) and layer norm ----------------------------------------------


def _norm_gen(name):
    def gen(g):
        r = g.rng
        if name == "batchnorm":
            ok = lambda v: v.ndim == 2 and v.shape[0] >= 2
            x = g.pick_or_leaf(ok, lambda: (int(r.integers(2, 6)), int(r.integers(1, 5))))
            norm = g.shape(x)[1:]
        else:
            ok = lambda v: v.ndim in (2, 3) and v.shape[0] >= 2 and v.shape[-1] >= 2
            middle = lambda: (int(r.integers(1, 3)),) if r.random() < 0.45 else ()  # (N, D) or (N, C, D)
            x = g.pick_or_leaf(ok, lambda: (int(r.integers(2, 5)),) + middle() + (int(r.integers(2, 5)),))
            s = g.shape(x)
            norm = s[-2:] if len(s) == 3 and r.random() < 0.4 else s[-1:]
        form = str(r.choice(["affine", "affine", "no affine"]))
        attrs = {"form": form, "normalized_shape": list(norm)}
        if name == "layernorm" and len(norm) == 1 and r.random() < 0.5:
            attrs["as_int"] = True  # layer_norm(x, D, ...) rather than (D,)
        if form == "no affine":
            return [x], attrs
        gamma = g.pick_or_leaf(lambda v: v.shape == norm, norm, p_new=0.7)
        beta = g.pick_or_leaf(lambda v: v.shape == norm, norm, p_new=0.7)
        return [x, gamma, beta], attrs

    return gen


def _norm_ref(name):
    def ref(arrays, attrs):
        norm = tuple(attrs["normalized_shape"])
        x = arrays[0]
        gamma, beta = arrays[1:] if len(arrays) == 3 else (np.ones(norm), np.zeros(norm))
        if (gamma.shape != norm or beta.shape != norm or x.ndim < len(norm) + 1 or x.shape[x.ndim - len(norm):] != norm
                or name == "batchnorm" and (x.ndim != 2 or x.shape[0] < 2)):
            raise ValueError(f"{name}: x {x.shape}, gamma {gamma.shape}, beta {beta.shape}")  # reference.py broadcasts
        kw = {"training": True} if name == "batchnorm" else {}
        out, back = _call(name, (x, gamma, beta), **kw)
        return out, (back if len(arrays) == 3 else lambda g: back(g)[:1])

    return ref


def _norm_src(name):
    def src(args, attrs):
        affine = ", " + ", ".join(args[1:]) if len(args) == 3 else ""
        if name == "batchnorm":
            return f"fg.functional.batch_norm({args[0]}, None, None{affine}, training=True)"
        norm = attrs["normalized_shape"]
        shape = str(norm[0]) if len(norm) == 1 and attrs.get("as_int") else repr(tuple(norm))
        return f"fg.functional.layer_norm({args[0]}, {shape}{affine})"

    return src


def _norm_safe(name):
    def safe(arrays, attrs):
        """The variance of every normalised group well above 0 (where 1/std is steep)."""
        x, k = arrays[0], len(attrs["normalized_shape"])
        axes = (0,) if name == "batchnorm" else tuple(range(x.ndim - k, x.ndim))
        return bool(np.all(x.var(axis=axes) > 0.05))

    return safe


for _name in ("batchnorm", "layernorm"):
    SPECS[_name] = Spec(_name, _norm_gen(_name), _norm_ref(_name), _norm_src(_name), _norm_safe(_name))


NOT_FUZZED: dict[str, str] = {}
"""Op-table rows the fuzzer does not draw, with the reason (a test requires every other row)."""

# how often each op is drawn (relative)
WEIGHTS = {name: 1.0 for name in SPECS}
WEIGHTS.update(add=2.0, mul=2.0, sub=1.5, getitem=1.5, sum=1.5)


# ---------------------------------------------------------------------------------------------
# reference evaluation (oracle b) and central differences (oracle a)


class Invalid(Exception):
    """The program is not a valid fuzz case (an error, a non-finite or huge value, a kink)."""


def _check_value(out):
    if not np.all(np.isfinite(out)) or (out.size and np.abs(out).max() > VMAX):
        raise Invalid("value out of range")


def ref_forward(p: Program, leaves=None, check_safe=True, keep_backs=False):
    """Evaluate `p` through reference.py in float64: (loss, values by name, backward fns by name)."""
    values = dict(p.leaves if leaves is None else leaves)
    backs = {}
    with np.errstate(all="raise", under="ignore"):
        try:
            for ins in p.instrs:
                sp = SPECS[ins.op]
                arrays = [values[a] for a in ins.args]
                if check_safe and sp.safe is not None and not sp.safe(arrays, ins.attrs):
                    raise Invalid(f"{ins.out} = {ins.op}: inputs near a kink")
                out, back = sp.ref(arrays, ins.attrs)
                out = np.asarray(out, dtype=np.float64)
                if check_safe:
                    _check_value(out)
                values[ins.out] = out
                if keep_backs:
                    backs[ins.out] = back
            loss = 0.0
            for name, w in p.outputs:
                loss += float(np.sum(values[name] * w) if w is not None else np.sum(values[name]))
        except Invalid:
            raise
        except (ValueError, IndexError, TypeError, FloatingPointError, KeyError) as e:
            raise Invalid(f"reference.py: {type(e).__name__}: {e}") from None
    if check_safe and not (math.isfinite(loss) and abs(loss) <= 10 * VMAX):
        raise Invalid("loss out of range")
    return loss, values, backs


def reachable(p: Program) -> set:
    """The names that some output depends on."""
    live = {n for n, _ in p.outputs}
    for ins in reversed(p.instrs):
        if ins.out in live:
            live.update(ins.args)
    return live


def ref_grads(p: Program):
    """Oracle (b): the loss, every value, and d loss / d value for every reachable name.

    Plain reverse mode over the instruction list: each gradient a backward returns is added to the
    gradient of its argument out of place (`total = total + part`), so no two names share a buffer.
    """
    loss, values, backs = ref_forward(p, keep_backs=True)
    grads = {}

    def add(name, part):
        part = np.asarray(part, dtype=np.float64)
        grads[name] = part if name not in grads else grads[name] + part

    for name, w in p.outputs:
        add(name, np.broadcast_to(w if w is not None else 1.0, values[name].shape))
    with np.errstate(all="raise", under="ignore"):
        try:
            for ins in reversed(p.instrs):
                if ins.out not in grads:
                    continue
                parts = backs[ins.out](np.array(grads[ins.out], order="C"))  # ascontiguousarray makes 0-d 1-d
                for a, part in zip(ins.args, parts):
                    if np.shape(part) != values[a].shape:
                        raise OracleMismatch(f"reference.py's backward of {ins.out} = {ins.op}(...) gave a "
                                             f"gradient of shape {np.shape(part)} for {a} of shape {values[a].shape}")
                    add(a, part)
        except FloatingPointError as e:
            raise Invalid(f"reference.py backward: {e}") from None
    return loss, values, grads


def _directions(p: Program):
    """One fixed random direction per leaf, from a generator seeded by the leaves' shapes."""
    rng = np.random.default_rng(len(p.leaves))
    return {k: rng.standard_normal(v.shape) for k, v in p.leaves.items() if p.wants_grad(k)}


def fd_derivatives(p: Program, dirs: dict):
    """Oracle (a): d loss along each leaf's direction (and all at once, key None), by central
    differences of the float64 reference forward."""
    out = {}
    for key in list(dirs) + [None]:
        plus, minus = dict(p.leaves), dict(p.leaves)
        for k, d in dirs.items():
            if key is None or k == key:
                plus[k] = p.leaves[k] + FD_EPS * d
                minus[k] = p.leaves[k] - FD_EPS * d
        fp = ref_forward(p, plus, check_safe=False)[0]
        fm = ref_forward(p, minus, check_safe=False)[0]
        out[key] = (fp - fm) / (2 * FD_EPS)
    return out


def _directional(grads: dict, dirs: dict, key):
    """<grad, direction> and the scale sum |grad * direction| for one leaf (or all: key None)."""
    dot = scale = 0.0
    for k, d in dirs.items():
        if (key is None or k == key) and grads.get(k) is not None:
            gd = grads[k] * d
            dot += float(gd.sum())
            scale += float(np.abs(gd).sum())
    return dot, scale


def _fd_ok(fd, dot, scale, loss):
    return abs(fd - dot) <= FD_TOL["rtol"] * scale + FD_TOL["atol"] * (1 + abs(loss))


@dataclass
class Oracle:
    loss: float
    values: dict
    grads: dict  # name -> float64 gradient, reachable names only
    live: set
    dirs: dict
    fd: dict


def oracle(p: Program) -> Oracle:
    """Both oracles for `p`; raises Invalid when `p` is no valid case, AssertionError (with the
    details) when reference.py's gradients disagree with the central differences."""
    live = reachable(p)
    if not any(p.wants_grad(k) for k in live):
        raise Invalid("no output depends on a leaf that requires grad")
    loss, values, grads = ref_grads(p)
    dirs = _directions(p)
    fd = fd_derivatives(p, dirs)
    for key in fd:
        dot, scale = _directional(grads, dirs, key)
        if not _fd_ok(fd[key], dot, scale, loss):
            which = "all leaves" if key is None else key
            raise OracleMismatch(
                f"reference.py and central differences disagree along a direction of {which}: "
                f"<grad, d> = {dot!r}, central difference {fd[key]!r}"
            )
    return Oracle(loss, values, grads, live, dirs, fd)


class OracleMismatch(AssertionError):
    """reference.py's gradient disagrees with central differences: a reference bug or a kink."""


# ---------------------------------------------------------------------------------------------
# the engine under test


def body_lines(p: Program) -> list:
    """The program as Python statements over tensors named as in `p` (fg, np in scope)."""
    lines = [f"{ins.out} = {SPECS[ins.op].src(ins.args, ins.attrs)}" for ins in p.instrs]
    if p.mode == "gradient":  # the output is the root; backward(gradient=w0) weights it
        return lines + [f"loss = {p.outputs[0][0]}"]
    terms = []
    for i, (name, w) in enumerate(p.outputs):
        if w is not None:
            terms.append(f"({name} * w{i}).sum()")
        else:
            terms.append(name if _is_loss(p, name) else f"{name}.sum()")  # a loss is the root itself
    lines.append("loss = " + " + ".join(terms))
    return lines


def _is_loss(p, name):
    for ins in p.instrs:
        if ins.out == name:
            return ins.op in ("softmax_cross_entropy", "svm_loss")
    return False


@lru_cache(maxsize=512)
def _compile(params: tuple, body: tuple):
    src = f"def _program(fg, np, {', '.join(params)}):\n"
    src += "".join(f"    {line}\n" for line in body)
    src += f"    return loss, {{{', '.join(repr(n) + ': ' + n for n in _results(body))}}}\n"
    ns = {}
    exec(compile(src, "<fuzz program>", "exec"), ns)
    return ns["_program"]


def _results(body):
    return [line.split(" = ", 1)[0] for line in body[:-1]]


@dataclass
class Failure:
    """What went wrong: kind is forward, grad, exception, alias, mutated, dtype, graph or oracle."""

    kind: str
    dtype: str
    detail: str
    exc_type: str | None = None

    def __str__(self):
        return f"{self.kind} ({self.dtype}): {self.detail}"


def _bound(want, tol, scale):
    """The elementwise tolerance for an oracle value `want` (scale: the program's largest)."""
    return tol["rtol"] * (np.abs(want) + (np.abs(want).max() if want.size else 0.0)) + tol["atol"] * scale


def _close(got, want, tol, scale):
    """Index of the worst violation and its size relative to the tolerance (<= 1 passes)."""
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    bound = _bound(want, tol, scale)
    with np.errstate(all="ignore"):
        excess = np.atleast_1d(np.abs(got - want) / np.maximum(bound, 1e-300))
    excess[np.isnan(excess)] = np.inf  # fastgrad gave nan (the oracle never does)
    if not excess.size:
        return None, 0.0
    i = int(np.argmax(excess))
    return np.unravel_index(i, want.shape) if want.ndim else (), float(excess.ravel()[i])


def _show(a):
    """A short one-line rendering of an array."""
    return " ".join(np.array2string(np.asarray(a), precision=6, separator=", ", threshold=30,
                                    max_line_width=10**6).split())


def _at(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def run_engine(p: Program, dtype: str, orc: Oracle) -> list:
    """Run `p` through fastgrad in `dtype` and compare it with the oracles: a list of Failures."""
    import fastgrad as fg

    tol = TOL[dtype]
    fails = []
    leaves = {k: fg.tensor(v, dtype=dtype, requires_grad=p.wants_grad(k)) for k, v in p.leaves.items()}
    weights = {f"w{i}": fg.tensor(w, dtype=dtype) for i, (_, w) in enumerate(p.outputs) if w is not None}
    if p.mode == "gradient":
        root_grad = np.array(p.outputs[0][1], dtype=dtype)  # the caller's array
        root_grad_before = root_grad.copy()
        weights = {}
    fn = _compile(tuple(list(leaves) + list(weights)), tuple(body_lines(p)))
    leaf_data = {k: t.data.copy() for k, t in leaves.items()}
    passes = 2 if p.mode == "twice" else 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            for _ in range(passes):
                loss, results = fn(fg, np, **leaves, **weights)
                snapshot = {k: t.data.copy() for k, t in results.items()}
                snapshot["loss"] = loss.data.copy()
                if p.mode == "retain":
                    loss.backward(retain_graph=True)
                    loss.backward()
                elif p.mode == "keep":
                    loss.backward(keep_grads=True)
                elif p.mode == "gradient":
                    loss.backward(gradient=root_grad)
                else:
                    loss.backward()
    except Exception as e:  # anything the engine raises on a valid program is a failure
        return [Failure("exception", dtype, f"{type(e).__name__}: {e}", type(e).__name__)]
    results["loss"] = loss
    times = 2 if p.mode in ("twice", "retain") else 1

    # forward: every value against reference.py
    vscale = max([float(np.abs(v).max()) for v in orc.values.values() if v.size] + [1.0])
    for name, t in results.items():
        if name == "loss" and p.mode == "gradient":
            continue  # the root is an output, checked under its own name
        want = orc.loss if name == "loss" else orc.values[name]
        if t.dtype != np.dtype(dtype) or t.shape != np.shape(want):
            fails.append(Failure("dtype", dtype, f"{name} is {t.dtype} {t.shape}, expected {dtype} {np.shape(want)}"))
            continue
        value = snapshot[name]  # as the forward left it (backward is checked below)
        idx, excess = _close(value, want, tol, vscale)
        if excess > 1:
            fails.append(Failure("forward", dtype, f"{name}{_at(idx)}: fastgrad {float(value[idx])!r}, "
                                 f"reference.py {float(np.asarray(want)[idx])!r} (value {_show(value)})"))
            return fails  # gradients of a wrong forward say nothing more

    # gradients: every leaf against oracle (b), elementwise, and oracle (a), along its direction
    gscale = max([float(np.abs(v).max()) for v in orc.grads.values() if v.size] + [1e-30])
    got_grads = {}
    for k, t in leaves.items():
        g = t.grad
        if k not in orc.live or not p.wants_grad(k):
            if g is not None:
                why = f"no output depends on {k}" if p.wants_grad(k) else f"{k} does not require grad"
                fails.append(Failure("grad", dtype, f"{k}.grad should stay None ({why}), got {_show(g)}"))
            continue
        if g is None:
            fails.append(Failure("grad", dtype, f"{k}.grad is None, expected {_show(times * orc.grads[k])}"))
            continue
        if not isinstance(g, np.ndarray) or g.dtype != np.dtype(dtype) or g.shape != t.shape:
            fails.append(Failure("dtype", dtype, f"{k}.grad is {type(g).__module__}.{type(g).__name__} "
                                 f"{getattr(g, 'dtype', '')} {getattr(g, 'shape', '')}, expected a "
                                 f"numpy.ndarray {dtype} {t.shape}"))
            continue
        got_grads[k] = g.astype(np.float64) / times
        idx, excess = _close(got_grads[k], orc.grads[k], tol, gscale)
        if excess > 1:
            fails.append(Failure("grad", dtype, f"{k}.grad{_at(idx)} = {float(times * got_grads[k][idx])!r}, "
                                 f"reference.py {float(times * orc.grads[k][idx])!r}; {k}.grad = {_show(g)}, "
                                 f"expected {_show(times * orc.grads[k])}"))
    if not fails:
        # |<got, d> - fd| <= sum |d| * (elementwise bound) + (the bound reference.py met): twice that
        slack = {k: np.abs(orc.dirs[k]) * _bound(orc.grads[k], tol, gscale) for k in got_grads}
        for key in orc.fd:
            dot, _ = _directional(got_grads, orc.dirs, key)
            want, scale = _directional(orc.grads, orc.dirs, key)
            lim = 2 * (sum(float(v.sum()) for k, v in slack.items() if key in (None, k))
                       + FD_TOL["rtol"] * scale + FD_TOL["atol"] * (1 + abs(orc.loss)))
            if abs(dot - orc.fd[key]) > lim:
                fails.append(Failure("grad", dtype, f"<grad, d> along a direction of {key or 'all leaves'}: "
                                     f"fastgrad {dot!r}, central difference {orc.fd[key]!r}"))

    # inner gradients kept by keep_grads=True
    if p.mode == "keep" and not fails:
        for name, t in results.items():
            node = t._node
            want = orc.grads.get(name) if name != "loss" else np.ones(())
            if node is None or want is None or node.grad is None:
                continue
            idx, excess = _close(node.grad, want, tol, gscale)
            if excess > 1:
                fails.append(Failure("grad", dtype, f"{name}._node.grad (keep_grads) {_show(node.grad)}, "
                                     f"expected {_show(want)}"))

    # a loss's labels are its node's second input: a Constant holding them as intp, no gradient
    for ins in p.instrs:
        node = results[ins.out]._node if ins.op in ("softmax_cross_entropy", "svm_loss") else None
        if node is None:
            continue
        y = node.inputs[1] if len(node.inputs) == 2 else None
        if (type(y) is not fg.autograd.Constant or y.data.dtype != np.intp or y.grad is not None
                or not np.array_equal(y.data, ins.attrs["labels"]) or node.next_functions[1] != (None, 0)):
            fails.append(Failure("graph", dtype, f"{ins.out}: op '{ins.op}' has inputs {node.inputs!r} and "
                                 f"next_functions {node.next_functions!r}; expected the labels "
                                 f"{ins.attrs['labels']} as an intp Constant with (None, 0)"))

    # nothing the tape touched may change, and no .grad may share memory with anything
    for k, t in leaves.items():
        if not np.array_equal(t.data, leaf_data[k]):
            fails.append(Failure("mutated", dtype, f"backward changed the data of leaf {k}"))
    for name, t in results.items():
        if not np.array_equal(t.data, snapshot[name]):
            fails.append(Failure("mutated", dtype, f"backward changed the forward value {name} "
                                 f"(now {_show(t.data)}, was {_show(snapshot[name])})"))
    holders = [(f"{k}.grad", t.grad) for k, t in leaves.items() if t.grad is not None]
    datas = [(f"{k}.data", t.data) for k, t in leaves.items()] + [(f"{k}.data", t.data) for k, t in results.items()]
    datas += [(f"{k}.data", t.data) for k, t in weights.items()]
    if p.mode == "gradient":
        datas.append(("the gradient passed to backward", root_grad))
        if not np.array_equal(root_grad, root_grad_before):
            fails.append(Failure("mutated", dtype, "backward changed the gradient array passed to it"))
    if p.mode == "keep":  # a kept inner gradient is never handed on as a buffer to accumulate into
        datas += [(f"{k}._node.grad", t._node.grad) for k, t in results.items()
                  if t._node is not None and t._node.grad is not None]
    for i, (na, a) in enumerate(holders):
        for nb, b in holders[i + 1:] + datas:
            if np.may_share_memory(a, b) and np.shares_memory(a, b):
                fails.append(Failure("alias", dtype, f"{na} shares memory with {nb}"))
    return fails


def check(p: Program, dtypes=DTYPES) -> list:
    """Every failure of `p` in the given dtypes (empty: it passed). Raises Invalid for no valid case."""
    try:
        orc = oracle(p)
    except OracleMismatch as e:
        return [Failure("oracle", "float64", str(e))]
    fails = []
    for dt in dtypes:
        fails += run_engine(p, dt, orc)
    return fails


# ---------------------------------------------------------------------------------------------
# drawing programs


def generate(rng, n_ops=None, ops=None, max_tries=200) -> Program:
    """A random valid program of `n_ops` instructions (2-12 by default) drawn from `ops` (all)."""
    names = sorted(ops or SPECS)
    w = np.array([WEIGHTS[n] for n in names])
    w /= w.sum()
    if n_ops is None:
        n_ops = int(rng.integers(2, 13))
    for _ in range(20):  # a whole program is rarely rejected (its loss out of range)
        g = Gen(rng)
        for _ in range(int(rng.integers(1, 3))):
            g.leaf(g.rand_shape())
        g.leaves.update(g.pending)
        g.values.update(g.pending)
        g.order.extend(g.pending)
        g.pending = {}
        tries = 0
        while len(g.instrs) < n_ops and tries < max_tries:
            tries += 1
            op = names[int(rng.choice(len(names), p=w))]
            sp = SPECS[op]
            g.pending = {}
            proposal = sp.gen(g)
            if proposal is None:
                continue
            args, attrs = proposal
            arrays = [g.value(a) for a in args]
            try:
                with np.errstate(all="raise", under="ignore"):
                    if sp.safe is not None and not sp.safe(arrays, attrs):
                        continue
                    out = np.asarray(sp.ref(arrays, attrs)[0], dtype=np.float64)
                    _check_value(out)
            except (Invalid, ValueError, IndexError, TypeError, FloatingPointError):
                continue
            if out.size > MAX_SIZE or out.size == 0:
                continue
            g.leaves.update(g.pending)
            g.values.update(g.pending)
            g.order.extend(g.pending)
            name = f"v{len(g.instrs)}"
            g.instrs.append(Instr(name, op, list(args), attrs))
            g.used.update(args)
            g.values[name] = out
            g.order.append(name)
        if not g.instrs:
            continue
        # outputs: the last result, the other results nothing uses (at most 3 in all), and
        # sometimes an inner result (its gradient then arrives along two paths)
        results = [i.out for i in g.instrs]
        unused = [n for n in results[:-1] if n not in g.used]
        outs = [results[-1]] + [unused[int(k)] for k in rng.permutation(len(unused))[:2]]
        if len(results) > 1 and rng.random() < 0.3:
            n = results[int(rng.integers(len(results) - 1))]
            if n not in outs:
                outs.append(n)
        outputs = []
        for n in outs:
            weight = f32(rng.uniform(-1.5, 1.5, g.values[n].shape)) if rng.random() < 0.7 else None
            outputs.append((n, weight))
        mode = str(rng.choice(["once", "twice", "retain", "keep", "gradient"], p=[0.55, 0.15, 0.12, 0.1, 0.08]))
        if mode == "gradient":
            n = outputs[0][0]
            outputs = [(n, f32(rng.uniform(-1.5, 1.5, g.values[n].shape)))]
        # some leaves are constants: ops (matmul, affine) then skip their gradients
        frozen = [k for k in g.leaves if rng.random() < 0.15]
        p = Program(g.leaves, g.instrs, outputs, mode, frozen)
        if not any(p.wants_grad(k) for k in reachable(p)):
            p.frozen = []
        try:
            ref_forward(p)
        except Invalid:
            continue
        return p
    raise RuntimeError("could not draw a valid program")  # pragma: no cover


def graph_rng(seed: int, index: int):
    """The generator of graph `index` of a run with `seed`: graphs can be replayed one by one."""
    return np.random.default_rng([seed, index])


def features(p: Program) -> set:
    """What `p` exercises: op rows and their variants (broadcasting, axes, matmul shapes, affine
    activations, index kinds), shared values, reused leaves, several outputs, the backward mode."""
    values = ref_forward(p, check_safe=False)[1]
    out = {f"mode:{p.mode}"}
    if p.frozen:
        out.add("leaf without grad")
    if len(p.outputs) > 1:
        out.add("several outputs")
    uses = {}
    for ins in p.instrs:
        shapes = [values[a].shape for a in ins.args]
        res = values[ins.out].shape
        out.add(f"op:{ins.op}")
        for a in ins.args:
            uses[a] = uses.get(a, 0) + 1
        if len(set(ins.args)) < len(ins.args):
            out.add("one value in two argument positions")
        if ins.op in SYMBOL or ins.op == "maximum":
            if "const" in ins.attrs:
                out.add(f"python number on the {'right' if ins.attrs['side'] == 'r' else 'left'}")
            elif shapes[0] == shapes[1]:
                out.add(f"{ins.op}:same shape")
            else:
                out.add(f"{ins.op}:broadcast")
                if () in shapes:
                    out.add("broadcast:scalar")
                if res != shapes[0] and res != shapes[1]:
                    out.add("broadcast:both ways")
                elif len(shapes[0]) != len(shapes[1]):
                    out.add("broadcast:row or lower rank")
                else:
                    out.add("broadcast:column or unit axis")
                if len(res) == 3:
                    out.add("broadcast:3-d")
        elif ins.op in ("sum", "mean", "max"):
            axis = ins.attrs["axis"]
            kind = ("none" if axis is None else "int" if isinstance(axis, int) else "tuple" if axis else "empty tuple")
            out.add(f"{ins.op}:axis {kind}")
            if isinstance(axis, int) and axis < 0 or isinstance(axis, list) and any(a < 0 for a in axis):
                out.add("reduction:negative axis")
            if ins.attrs["keepdims"]:
                out.add(f"{ins.op}:keepdims")
        elif ins.op == "matmul":
            out.add(f"matmul:{len(shapes[0])}-d @ {len(shapes[1])}-d")
        elif ins.op == "affine":
            out.add(f"affine:{ins.attrs['activation']}")
        if ins.op in ("matmul", "affine", "pow_tensor", "batchnorm", "layernorm") and any(a in p.frozen for a in ins.args):
            out.add(f"{ins.op}:an operand without grad")
        elif ins.op == "getitem":
            for t in ins.attrs["index"]:
                if t[0] == "s" and t[3] is not None and t[3] < 0:
                    out.add("getitem:negative step")
                if t[0] == "a" and len(set(t[1])) < len(t[1]):
                    out.add("getitem:integer array with repeats")
                if t[0] == "i" and t[1] < 0:
                    out.add("getitem:negative int")
                out.add({"s": "getitem:slice", "i": "getitem:int", "a": "getitem:integer array",
                         "n": "getitem:None", "e": "getitem:Ellipsis"}[t[0]])
        elif ins.op == "transpose":
            axes = ins.attrs["axes"]
            out.add("transpose:reversed" if axes is None else "transpose:swap" if ins.attrs.get("form") == "swap"
                    else "transpose:permutation")
        elif ins.op in ("softmax_cross_entropy", "svm_loss"):
            out.add(f"labels as {ins.attrs['form']}")
        elif ins.op == "cast":
            out.add(f"cast:{ins.attrs['form']}")
        elif ins.op == "clamp":
            lo, hi = ins.attrs["min"], ins.attrs["max"]
            out.add("clamp:both bounds" if lo is not None and hi is not None else "clamp:one bound")
            x = values[ins.args[0]]
            if lo is not None and np.any(x < lo) or hi is not None and np.any(x > hi):
                out.add("clamp:clipped entries")
        elif ins.op == "pow_tensor":
            out.add("pow_tensor:number base" if "base" in ins.attrs
                    else "pow_tensor:same shape" if shapes[0] == shapes[1] else "pow_tensor:broadcast")
        elif ins.op == "cat":
            out.add("cat:one input" if len(ins.args) == 1 else "cat:several inputs")
            if ins.attrs["dim"] < 0:
                out.add("cat:negative dim")
        elif ins.op == "where":
            if "const" in ins.attrs:
                out.add("where:python number")
            elif shapes[0] != shapes[1]:
                out.add("where:broadcast")
            if tuple(ins.attrs["cond"]["shape"]) != res:
                out.add("where:broadcast condition")
        elif ins.op in ("softmax", "log_softmax"):
            out.add(f"{ins.op}:{ins.attrs['form']}")
            if shapes[0][ins.attrs["dim"]] == 1:
                out.add("softmax:axis of size 1")
        elif ins.op in ("batchnorm", "layernorm"):
            out.add(f"{ins.op}:{ins.attrs['form']}")
            if ins.op == "layernorm" and len(shapes[0]) == 3:
                out.add(f"layernorm:3-d, {len(ins.attrs['normalized_shape'])} normalised dims")
    if any(n > 1 for a, n in uses.items() if a not in p.leaves):
        out.add("shared subexpression")
    if any(n > 1 for a, n in uses.items() if a in p.leaves):
        out.add("leaf reused")
    return out


# ---------------------------------------------------------------------------------------------
# shrinking


def prune(p: Program) -> Program:
    """Drop the instructions no output depends on and the leaves nothing uses; renumber nothing."""
    live = reachable(p)
    q = p.copy()
    q.instrs = [i for i in q.instrs if i.out in live]
    q.leaves = {k: v for k, v in q.leaves.items() if k in live}
    q.frozen = [k for k in q.frozen if k in q.leaves]
    return q


def _new_leaf_name(p):
    k = 0
    while f"x{k}" in p.leaves:
        k += 1
    return f"x{k}"


def _candidates(p: Program, values: dict):
    """Simpler variants of `p`, roughly the biggest simplifications first."""
    # fewer outputs
    if len(p.outputs) > 1:
        for i in range(len(p.outputs)):
            q = p.copy()
            del q.outputs[i]
            yield prune(q)
    # cut the graph above a value: it becomes a leaf holding the value it had
    for ins in p.instrs:
        q = p.copy()
        name = _new_leaf_name(q)
        q.leaves[name] = f32(values[ins.out])
        q.instrs = [i for i in q.instrs if i.out != ins.out]
        for i in q.instrs:
            i.args = [name if a == ins.out else a for a in i.args]
        q.outputs = [(name if n == ins.out else n, w) for n, w in q.outputs]
        q.outputs = [(n, w) for n, w in q.outputs if n not in q.leaves]
        if q.outputs:
            yield prune(q)
    # bypass an instruction: its users take one of its arguments of the same shape
    for ins in p.instrs:
        for a in dict.fromkeys(ins.args):
            if values[a].shape != values[ins.out].shape:
                continue
            q = p.copy()
            q.instrs = [i for i in q.instrs if i.out != ins.out]
            for i in q.instrs:
                i.args = [a if x == ins.out else x for x in i.args]
            q.outputs = [(a if n == ins.out else n, w) for n, w in q.outputs]
            if all(n not in q.leaves for n, _ in q.outputs) and q.outputs:
                yield prune(q)
    # one argument becomes its own leaf (undoes sharing: x * x -> x * x1)
    for k, ins in enumerate(p.instrs):
        for j, a in enumerate(ins.args):
            if a in p.leaves and ins.args.count(a) == 1 and sum(i.args.count(a) for i in p.instrs) == 1:
                continue
            q = p.copy()
            name = _new_leaf_name(q)
            q.leaves[name] = f32(values[a])
            q.instrs[k].args[j] = name
            yield prune(q)
    # simpler run: every leaf requires grad, one backward, plain sums
    if p.frozen:
        q = p.copy()
        q.frozen = []
        yield q
    if p.mode != "once":
        q = p.copy()
        q.mode = "once"
        yield q
    for i, (n, w) in enumerate(p.outputs):
        if w is not None and p.mode != "gradient":
            q = p.copy()
            q.outputs[i] = (n, None)
            yield q
    # smaller leaves: drop the last entry along one axis of a leaf, or of every leaf with that size
    for k, v in p.leaves.items():
        for axis, n in enumerate(v.shape):
            if n > 1:
                q = p.copy()
                q.leaves[k] = np.take(v, range(n - 1), axis=axis)
                yield q
    sizes = sorted({n for v in p.leaves.values() for n in v.shape if n > 1}, reverse=True)
    for n in sizes:
        q = p.copy()
        for k, v in q.leaves.items():
            for axis, m in enumerate(v.shape):
                if m == n:
                    v = np.take(v, range(n - 1), axis=axis)
            q.leaves[k] = v
        q.outputs = [(name, None if w is None else _shrink_like(w, n)) for name, w in q.outputs]
        yield q
    # shorter numbers
    for digits in (1, 2):
        q = p.copy()
        q.leaves = {k: f32(np.round(v, digits)) for k, v in q.leaves.items()}
        q.outputs = [(n, None if w is None else f32(np.round(w, digits))) for n, w in q.outputs]
        if any(not np.array_equal(a, b) for a, b in zip(q.leaves.values(), p.leaves.values())):
            yield q


def renumber(p: Program) -> Program:
    """Names in order of appearance: leaves x0, x1, ... (as first used), results v0, v1, ..."""
    leaf_names, res_names = {}, {}
    for ins in p.instrs:
        for a in ins.args:
            if a in p.leaves and a not in leaf_names:
                leaf_names[a] = f"x{len(leaf_names)}"
        res_names[ins.out] = f"v{len(res_names)}"
    for k in p.leaves:
        leaf_names.setdefault(k, f"x{len(leaf_names)}")
    new = {**leaf_names, **res_names}
    order = sorted(p.leaves, key=lambda k: int(leaf_names[k][1:]))
    return Program({leaf_names[k]: p.leaves[k] for k in order},
                   [Instr(new[i.out], i.op, [new[a] for a in i.args], dict(i.attrs)) for i in p.instrs],
                   [(new[n], w) for n, w in p.outputs], p.mode, [leaf_names[k] for k in p.frozen])


def _shrink_like(w, n):
    for axis, m in enumerate(w.shape):
        if m == n:
            w = np.take(w, range(n - 1), axis=axis)
    return w


def _fit_labels(q: Program):
    """Labels follow their scores when a leaf shrank: as many as rows, each below the class count."""
    values = dict(q.leaves)
    for ins in q.instrs:
        arrays = [values.get(a) for a in ins.args]
        if ins.op in ("softmax_cross_entropy", "svm_loss") and arrays[0] is not None and arrays[0].ndim == 2:
            n, c = arrays[0].shape
            labels = (ins.attrs["labels"] + [0] * n)[:n]
            ins.attrs = {**ins.attrs, "labels": [k % c for k in labels] if c else labels}
        try:
            with np.errstate(all="ignore"):
                values[ins.out] = np.asarray(SPECS[ins.op].ref(arrays, ins.attrs)[0])
        except Exception:  # the candidate is invalid anyway; ref_forward will say so
            return


def _fixup_weights(q: Program):
    """Weights take the shape of their output (after a leaf shrank): None if they cannot."""
    _fit_labels(q)
    try:
        _, values, _ = ref_forward(q)
    except Invalid:
        return None, None
    outs = []
    for n, w in q.outputs:
        if w is not None and w.shape != values[n].shape:
            w = f32(np.resize(w, values[n].shape)) if values[n].size else None
        outs.append((n, w))
    q.outputs = outs
    return q, values


def shrink(p: Program, fails, dtypes=DTYPES, budget=600):
    """Greedily simplify `p` while it still fails the same way; returns (program, its failures).

    A candidate counts when it is a valid case (reference.py runs it, no kink) and fails with the
    same kind (and exception type) in the same dtype as the first of `fails`.
    """
    first = fails[0]
    dts = [first.dtype] if first.dtype in dtypes else list(dtypes)
    same = lambda fs: [f for f in fs if f.kind == first.kind and f.exc_type == first.exc_type]
    values = ref_forward(p, check_safe=False)[1]
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for q in _candidates(p, values):
            tries += 1
            if tries > budget:
                break
            q, qvalues = _fixup_weights(q)
            if q is None:
                continue
            try:
                fs = same(check(q, dts))
            except Invalid:
                continue
            if fs:
                p, fails, values, progress = q, fs, qvalues, True
                break
    q = renumber(p)
    return q, same(check(q, dts)) or fails


# ---------------------------------------------------------------------------------------------
# printing


def _lit(a) -> str:
    """A float32-exact array as short literal text (np.float32 round-trips it)."""
    return np.array2string(np.asarray(a, dtype=np.float32), separator=", ", floatmode="unique",
                           threshold=10**6, max_line_width=100).replace("\n", "\n    ")


def to_python(p: Program, dtype: str, header: str = "", kind: str | None = None) -> str:
    """`p` as a runnable script that builds the graph, backpropagates and asserts every gradient
    against the float64 oracle (reference.py). For a failure of `kind` "alias" or "mutated" it
    also asserts that no .grad shares memory and that backward changed no data."""
    loss, _, grads = ref_grads(p)
    live = reachable(p)
    times = 2 if p.mode in ("twice", "retain") else 1
    lines = [f"# {line}" for line in header.splitlines()] + ["import numpy as np", "import fastgrad as fg", ""]
    lines.append(f"dtype = {dtype!r}")
    for k, v in p.leaves.items():
        lines.append(f"{k} = fg.tensor(np.float32({_lit(v)}), dtype=dtype, requires_grad={p.wants_grad(k)})")
    for i, (_, w) in enumerate(p.outputs):
        if w is not None and p.mode == "gradient":
            lines.append(f"w{i} = np.float32({_lit(w)}).astype(dtype)  # a NumPy array, for backward(gradient=)")
        elif w is not None:
            lines.append(f"w{i} = fg.tensor(np.float32({_lit(w)}), dtype=dtype)")
    body = body_lines(p)
    names = list(p.leaves) + [i.out for i in p.instrs]
    tensors = "tensors = {" + ", ".join(f"{n!r}: {n}" for n in names) + "}"
    snap = [tensors, "before = {k: t.data.copy() for k, t in tensors.items()}"] if kind in ("alias", "mutated") else []
    if snap and p.mode == "gradient":
        snap.append("w0_before = w0.copy()")
    if p.mode == "twice":
        lines.append("for _ in range(2):  # two graphs on the same leaves: gradients add up")
        lines += ["    " + line for line in body + snap] + ["    loss.backward()"]
    else:
        lines += body + snap
        if p.mode == "retain":
            lines += ["loss.backward(retain_graph=True)", "loss.backward()  # the same graph again"]
        elif p.mode == "keep":
            lines.append("loss.backward(keep_grads=True)")
        elif p.mode == "gradient":
            lines.append("loss.backward(gradient=w0)")
        else:
            lines.append("loss.backward()")
    tol = TOL[dtype]
    lines += ["", f"# expected: the float64 oracle{' (times 2: two backward passes)' if times == 2 else ''}",
              f"print('loss', {'(loss.data * w0).sum()' if p.mode == 'gradient' else 'loss.item()'}, 'expected', {loss!r})"]
    if snap:
        lines += [
            "for k, t in tensors.items():",
            "    assert np.array_equal(t.data, before[k]), f'backward changed {k}.data'",
            "    for j, u in tensors.items():",
            "        if t.grad is not None:",
            "            assert not np.shares_memory(t.grad, u.data), f'{k}.grad shares memory with {j}.data'",
            "            if j != k and u.grad is not None:",
            "                assert not np.shares_memory(t.grad, u.grad), f'{k}.grad shares memory with {j}.grad'",
        ]
        if p.mode == "keep":
            lines += [
                "kept = {k: t._node.grad for k, t in tensors.items() if t._node is not None and t._node.grad is not None}",
                "for k, t in tensors.items():",
                "    for j, kg in kept.items():",
                "        if t.grad is not None:",
                "            assert not np.shares_memory(t.grad, kg), f'{k}.grad shares memory with the kept gradient of {j}'",
            ]
        if p.mode == "gradient":
            lines += ["assert np.array_equal(w0, w0_before), 'backward changed its gradient argument'",
                      "assert not any(t.grad is not None and np.shares_memory(t.grad, w0) for t in tensors.values())"]
    for k in p.leaves:
        if k not in live or not p.wants_grad(k):
            lines.append(f"assert {k}.grad is None, {k}.grad")
            continue
        want = np.array2string(times * grads[k], separator=", ", floatmode="unique", threshold=10**6,
                               max_line_width=100).replace("\n", "\n    ")
        lines.append(f"print('{k}.grad', {k}.grad)")
        lines.append(f"np.testing.assert_allclose({k}.grad, np.array({want}), rtol={tol['rtol'] * 2!r}, "
                     f"atol={tol['rtol'] * 2 * times * float(np.abs(grads[k]).max() if grads[k].size else 0)!r}, "
                     f"err_msg='{k}.grad')")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# runs


@dataclass
class Report:
    graphs: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)  # (index, program, [Failure])
    ops: dict = field(default_factory=dict)  # how often each op was drawn


def run(graphs: int, seed: int = 0, dtypes=DTYPES, start: int = 0, ops=None, max_failures=None,
        progress=None, on_failure=None) -> Report:
    """Run graphs start .. start+graphs-1 of `seed`; failures are collected (not shrunk) and
    passed to `on_failure(index, program, failures)` as they happen."""
    rep = Report()
    t0 = time.perf_counter()
    for i in range(start, start + graphs):
        p = generate(graph_rng(seed, i), ops=ops)
        for ins in p.instrs:
            rep.ops[ins.op] = rep.ops.get(ins.op, 0) + 1
        try:
            fails = check(p, dtypes)
        except Invalid:  # the oracles cannot judge it (e.g. an overflow in central differences)
            rep.skipped += 1
            continue
        rep.graphs += 1
        if fails:
            rep.failures.append((i, p, fails))
            if on_failure is not None:
                on_failure(i, p, fails)
            if max_failures is not None and len(rep.failures) >= max_failures:
                break
        if progress is not None:
            progress(rep, time.perf_counter() - t0)
    rep.seconds = time.perf_counter() - t0
    return rep


class UsageError(Exception):
    """A mistake on the command line: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _ops_list(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown op {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(sorted(SPECS))}")
    return names


def build_parser():
    p = _Parser(prog="python -m fastgrad.fuzz",
                description="Whole-graph differential fuzzing of fastgrad against reference.py and "
                            "central differences.")
    p.add_argument("--graphs", type=_count, default=1000, help="how many random programs (default 1000)")
    p.add_argument("--seed", type=_count, default=0, help="run seed; graph i draws from default_rng([seed, i])")
    p.add_argument("--start", type=_count, default=0, help="index of the first graph (replay one: --start I --graphs 1)")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    p.add_argument("--ops", type=_ops_list, default=None, help="comma-separated ops to draw from (default: all)")
    p.add_argument("--max-failures", type=_count, default=10, help="stop after this many failing graphs (0: never)")
    p.add_argument("--no-shrink", action="store_true", help="print the first failing program as drawn")
    p.add_argument("--json", action="store_true", help="also print the shrunk program as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv=None) -> int:
    """`python -m fastgrad.fuzz`: 0 when every graph passed, 1 on a failure, 2 for a usage error."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"fastgrad.fuzz: error: {e}", file=sys.stderr)
        return 2
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    tty = sys.stderr.isatty() and not args.quiet
    last = [0.0]

    def progress(rep, elapsed):
        if tty and elapsed - last[0] > 0.5:
            last[0] = elapsed
            print(f"\r{rep.graphs}/{args.graphs} graphs, {len(rep.failures)} failing, {elapsed:.0f} s",
                  end="", file=sys.stderr, flush=True)

    def on_failure(i, p, fails):
        if tty:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        print(f"FAIL graph {i} (seed {args.seed}): {fails[0]}"
              + (f" (+{len(fails) - 1} more)" if len(fails) > 1 else ""), flush=True)

    try:
        rep = run(args.graphs, args.seed, dtypes, args.start, args.ops, args.max_failures or None, progress,
                  on_failure)
        if tty:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        print(f"fuzz: {rep.graphs} graphs ({'+'.join(dtypes)}), seed {args.seed}, start {args.start}: "
              f"{len(rep.failures)} failing, {rep.seconds:.1f} s")
        if rep.failures:
            i, p, fails = rep.failures[0]
            if not args.no_shrink:
                p, fails = shrink(p, fails, dtypes)
            head = (f"graph {i} of seed {args.seed}{' shrunk' if not args.no_shrink else ''}: {fails[0]}\n"
                    f"replay: python -m fastgrad.fuzz --seed {args.seed} --start {i} --graphs 1")
            print()
            print(to_python(p, fails[0].dtype if fails[0].dtype in dtypes else dtypes[0], head, fails[0].kind))
            if args.json:
                print(json.dumps(p.to_dict()))
            return 1
        return 0
    except KeyboardInterrupt:
        print("fastgrad.fuzz: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
