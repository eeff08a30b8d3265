"""The op table: one row per primitive, its forward and its backward rule side by side.

A row's forward takes the input arrays (C-contiguous, one dtype) and keyword attributes and returns
``(output, saved)``; its backward rule takes the upstream gradient ``g`` (C-contiguous, the output's
shape) followed by ``*saved`` and returns one gradient per input (or None), each of that input's shape.
A returned gradient is either a fresh array or ``g`` itself (or a view of it), never a saved buffer or
an input's data: the tape takes fresh arrays over as its own and accumulates into them in place.
Rules save as little as they can: the output when it is enough (relu, sigmoid, tanh, exp), shapes
instead of arrays when only the shape matters (add, sum).

Rows whose forward takes ``needs`` are told which inputs require a gradient, so that they skip work
(and saved buffers) for the others, e.g. the input batch of the first layer of a network.

Anything composed of these rows (a softmax written as exp / sum, an L2 penalty) needs no row of its
own: its gradient follows from theirs.
"""
from __future__ import annotations

import operator
import sys

import numpy as np

from . import _kernels as K
from . import _linalg as L
from . import _norm as N
from . import _plan as P

TABLE: dict[str, "Op"] = {}


class Op:
    """A row of the op table. `backward` is None until a rule is attached with `@op.defbackward`."""

    __slots__ = ("name", "forward", "backward", "takes_needs")

    def __init__(self, name, forward, takes_needs=False):
        self.name = name
        self.forward = forward
        self.backward = None
        self.takes_needs = takes_needs

    def defbackward(self, rule):
        self.backward = rule
        return rule

    def __repr__(self):
        return f"<op {self.name}>"


def primitive(name, takes_needs=False):
    """Register the decorated forward as the row `name` of the op table."""

    def register(forward):
        if name in TABLE:  # e.g. two branches that each added a row of this name, merged
            raise RuntimeError(f"op table: a row named {name!r} is already registered")
        op = Op(name, forward, takes_needs)
        TABLE[name] = op
        return op

    return register


# ---------------------------------------------------------------------------------------------
# helpers


def broadcast_shape(op: str, a: tuple, b: tuple) -> tuple:
    """The NumPy broadcast of shapes a and b, or a ValueError naming the op and both shapes."""
    if a == b:  # the common case, without NumPy's general (and slow) machinery
        return a
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        raise ValueError(f"{op}: shapes {a} and {b} cannot be broadcast together") from None


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `g` over the axes that broadcasting added or stretched, so it has `shape` again."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    return g.sum(axis=axes).reshape(shape)


def normalize_axis(axis, ndim: int, op: str) -> tuple:
    """`axis` (None, int or tuple of ints) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:  # a 0-d tensor has no axis at all, as in NumPy
            raise ValueError(f"{op}: axis {a} is out of range for a {ndim}-d tensor")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def _expand(g: np.ndarray, shape: tuple, axes: tuple, keepdims: bool) -> np.ndarray:
    """Broadcast a reduction's gradient `g` back over the reduced `axes` of `shape`."""
    if not keepdims:
        g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return np.broadcast_to(g, shape)


# ---------------------------------------------------------------------------------------------
# arithmetic: add distributes, mul swaps and scales


@primitive("add")
def add(a, b):
    broadcast_shape("add", a.shape, b.shape)
    return a + b, (a.shape, b.shape)


@add.defbackward
def add_backward(g, a_shape, b_shape):
    return unbroadcast(g, a_shape), unbroadcast(g, b_shape)


@primitive("sub")
def sub(a, b):
    broadcast_shape("sub", a.shape, b.shape)
    return a - b, (a.shape, b.shape)


@sub.defbackward
def sub_backward(g, a_shape, b_shape):
    return unbroadcast(g, a_shape), unbroadcast(-g, b_shape)


@primitive("mul")
def mul(a, b):
    broadcast_shape("mul", a.shape, b.shape)
    return a * b, (a, b)


@mul.defbackward
def mul_backward(g, a, b):
    return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


@primitive("div")
def div(a, b):
    broadcast_shape("div", a.shape, b.shape)
    return a / b, (a, b)


@div.defbackward
def div_backward(g, a, b):
    ga = g / b
    return unbroadcast(ga, a.shape), unbroadcast(-ga * a / b, b.shape)


@primitive("neg")
def neg(x):
    return -x, ()


@neg.defbackward
def neg_backward(g):
    return (-g,)


@primitive("pow")
def pow_(x, exponent):
    return x**exponent, (x, exponent)


@pow_.defbackward
def pow_backward(g, x, exponent):
    if exponent == 0:  # d/dx x**0 = 0 everywhere, also at x = 0 where x**-1 is inf
        return (np.zeros_like(g),)
    return (g * (exponent * x ** (exponent - 1)),)


# ---------------------------------------------------------------------------------------------
# elementwise gates


@primitive("exp")
def exp(x):
    y = np.exp(x)
    return y, (y,)


@exp.defbackward
def exp_backward(g, y):
    return (g * y,)


@primitive("log")
def log(x):
    return np.log(x), (x,)


@log.defbackward
def log_backward(g, x):
    return (g / x,)


@primitive("maximum")
def maximum(a, b):
    """Elementwise max; the gradient goes to the operand whose value the output is: `a` where
    a >= b (ties to the first argument) or a is NaN, `b` where b > a or b alone is NaN.

    Operands of one shape run in C and save nothing new (the inputs decide the routing);
    broadcasting operands take the NumPy path and save the mask.
    """
    if a.shape == b.shape:
        return K.maximum_forward(a, b), (a, b)
    broadcast_shape("maximum", a.shape, b.shape)
    a_wins = a >= b
    np.logical_or(a_wins, a != a, out=a_wins)  # NaN in a: a is the output (np.maximum keeps it)
    return np.maximum(a, b), (a_wins, a.shape, b.shape)


@maximum.defbackward
def maximum_backward(g, *saved):
    if len(saved) == 2:  # same shapes: (a, b)
        return K.maximum_backward(g, *saved)
    a_wins, a_shape, b_shape = saved
    ga = np.where(a_wins, g, 0).astype(g.dtype, copy=False)
    return unbroadcast(ga, a_shape), unbroadcast(g - ga, b_shape)


@primitive("relu")
def relu(x):
    y = K.relu_forward(x)
    return y, (y,)


@relu.defbackward
def relu_backward(g, y):
    return (K.relu_backward(g, y),)


@primitive("leaky_relu")
def leaky_relu(x, negative_slope):
    # saves the input (alive anyway as the node's input), which decides the slope for any sign
    return K.leaky_relu_forward(x, negative_slope), (x, negative_slope)


@leaky_relu.defbackward
def leaky_relu_backward(g, x, negative_slope):
    return (K.leaky_relu_backward(g, x, negative_slope),)


@primitive("elu")
def elu(x, alpha):
    # backward recomputes alpha e^x from the input: y + alpha would lose it to cancellation
    return K.elu_forward(x, alpha), (x, alpha)


@elu.defbackward
def elu_backward(g, x, alpha):
    return (K.elu_backward(g, x, alpha),)


@primitive("sigmoid")
def sigmoid(x):
    y = K.sigmoid_forward(x)
    return y, (y,)


@sigmoid.defbackward
def sigmoid_backward(g, y):
    return (K.sigmoid_backward(g, y),)


@primitive("tanh")
def tanh(x):
    y = K.tanh_forward(x)
    return y, (y,)


@tanh.defbackward
def tanh_backward(g, y):
    return (K.tanh_backward(g, y),)


# ---------------------------------------------------------------------------------------------
# the PyTorch surface: casts, abs, sqrt, clamp, pow with a tensor exponent, cat, where,
# softmax, log_softmax, dropout (NumPy: each is one or two vectorized passes)


@primitive("cast")
def cast(x, dtype):
    """x as float32 or float64, always a new array (Tensor.float/double/to/clone); g is cast back."""
    dt = np.dtype(dtype)
    if dt != np.float32 and dt != np.float64:
        raise TypeError(f"cast: fastgrad tensors are float32 or float64, not {dtype!r}")
    return x.astype(dt), (x.dtype,)


@cast.defbackward
def cast_backward(g, dtype):
    return (g.astype(dtype),)


@primitive("abs")
def abs_(x):
    """|x|; d/dx = sign(x), 0 at x = 0 (as PyTorch)."""
    return np.abs(x), (x,)


@abs_.defbackward
def abs_backward(g, x):
    return (g * np.sign(x),)


@primitive("sqrt")
def sqrt(x):
    """sqrt(x) (nan for x < 0, as PyTorch); d/dx = 1 / (2 sqrt(x)) from the saved output (inf at 0)."""
    with np.errstate(invalid="ignore"):
        y = np.sqrt(x)
    return y, (y,)


@sqrt.defbackward
def sqrt_backward(g, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (g / (y + y),)


@primitive("clamp")
def clamp(x, min=None, max=None):
    """x clipped to [min, max] (either bound may be None); the gradient passes where
    min <= x <= max (bounds included, as PyTorch) and is 0 elsewhere. Saves that mask."""
    if min is None and max is None:
        raise ValueError("clamp: give min, max or both")
    inside = np.ones(x.shape, dtype=bool)
    if min is not None:
        inside &= x >= min
    if max is not None:
        inside &= x <= max
    return np.clip(x, min, max), (inside,)


@clamp.defbackward
def clamp_backward(g, inside):
    return (g * inside,)


@primitive("pow_tensor", takes_needs=True)
def pow_tensor(a, b, needs=(True, True)):
    """a ** b elementwise for two tensors, broadcasting (x ** t, 2 ** t).

    da = g b a**(b-1) (0 where b = 0); db = g a**b ln a (0 where a = 0 and b >= 0, as PyTorch;
    nan for a < 0). The output is saved only when b needs a gradient.
    """
    broadcast_shape("pow", a.shape, b.shape)
    with np.errstate(all="ignore"):
        out = np.power(a, b)
    return out, (a, b, out if needs[1] else None, needs)


@pow_tensor.defbackward
def pow_tensor_backward(g, a, b, out, needs):
    ga = gb = None
    with np.errstate(all="ignore"):
        if needs[0]:
            ga = unbroadcast(np.where(b == 0, 0, g * b * np.power(a, b - 1)), a.shape)
        if needs[1]:
            gb = unbroadcast(np.where((a == 0) & (b >= 0), 0, g * out * np.log(a)), b.shape)
    return ga, gb


@primitive("cat")
def cat(*xs, dim=0):
    """Concatenation of the inputs along `dim` (their other sizes equal); backward splits g."""
    if not xs:
        raise ValueError("cat: expected at least one tensor")
    first = xs[0]
    if first.ndim == 0:
        raise ValueError("cat: 0-d tensors cannot be concatenated (stack them instead)")
    (axis,) = normalize_axis(dim, first.ndim, "cat")
    for x in xs:
        if x.ndim != first.ndim or x.shape[:axis] + x.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(
                f"cat: shapes {[t.shape for t in xs]} differ outside dim {dim}"
            )
    return np.concatenate(xs, axis=axis), (axis, [x.shape[axis] for x in xs])


@cat.defbackward
def cat_backward(g, axis, sizes):
    return tuple(np.split(g, np.cumsum(sizes)[:-1], axis=axis))  # views of g


@primitive("where")
def where(a, b, cond):
    """a where cond else b, broadcasting cond, a and b; the gradient goes to a where cond, else to b."""
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"where: condition {cond.shape}, a {a.shape} and b {b.shape} cannot be broadcast together"
        ) from None
    return np.where(cond, a, b), (cond, a.shape, b.shape)


@where.defbackward
def where_backward(g, cond, a_shape, b_shape):
    return unbroadcast(np.where(cond, g, 0), a_shape), unbroadcast(np.where(cond, 0, g), b_shape)


def _softmax_axis(op: str, x: np.ndarray, dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    return normalize_axis(dim, x.ndim, op)[0]


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """x minus its max along `axis` (so exp never overflows); x itself when there is nothing to shift."""
    if x.size == 0:
        return x.copy()
    return x - x.max(axis=axis, keepdims=True)


@primitive("softmax")
def softmax(x, dim):
    """exp(x - max) / sum exp(x - max) along `dim`; saves y; dx = y (g - sum(g y))."""
    axis = _softmax_axis("softmax", x, dim)
    e = _shifted(x, axis)  # a fresh array: exponentiated and normalised in place
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e, (e, axis)


@softmax.defbackward
def softmax_backward(g, y, axis):
    gy = g * y
    gy -= y * gy.sum(axis=axis, keepdims=True)
    return (gy,)


@primitive("log_softmax")
def log_softmax(x, dim):
    """x - max - log sum exp(x - max) along `dim` (stable); saves y; dx = g - exp(y) sum(g)."""
    axis = _softmax_axis("log_softmax", x, dim)
    y = _shifted(x, axis)
    if y.size:  # an empty axis: no entries, and no log(0) warning from the empty sums
        y -= np.log(np.exp(y).sum(axis=axis, keepdims=True))
    return y, (y, axis)


@log_softmax.defbackward
def log_softmax_backward(g, y, axis):
    return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)


@primitive("dropout")
def dropout(x, keep, p):
    """Inverted dropout (CS231n): x * keep / (1 - p), keep a bool array of x's shape drawn by
    `functional.dropout`; saves the mask keep / (1 - p) (as x's dtype) and multiplies g by it."""
    if keep.shape != x.shape or keep.dtype != np.bool_:
        raise ValueError(f"dropout: keep must be a bool array of shape {x.shape}, got {keep.dtype} {keep.shape}")
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    mask = np.where(keep, 1.0 / (1.0 - p), 0.0).astype(x.dtype)
    return x * mask, (mask,)


@dropout.defbackward
def dropout_backward(g, mask):
    return (g * mask,)


# ---------------------------------------------------------------------------------------------
# linear algebra


@primitive("matmul", takes_needs=True)
def matmul(a, b, needs=(True, True)):
    """2-D @ 2-D (through sgemm/dgemm), 2-D @ 1-D (the lecture's W·x), 1-D @ 2-D and 1-D @ 1-D."""
    if not (1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
        raise ValueError(f"matmul: operands must be 1-D or 2-D, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} are not aligned "
            f"({a.shape[-1]} != {b.shape[0]})"
        )
    out = L.matmul(a, b) if a.ndim == b.ndim == 2 else a @ b
    return out, (a if needs[1] else None, b if needs[0] else None, a.ndim, b.ndim)


@matmul.defbackward
def matmul_backward(g, a, b, a_ndim, b_ndim):
    ga = gb = None
    if b is not None:
        if b_ndim == 1:  # (n, k) @ (k,) or (k,) @ (k,)
            ga = np.multiply.outer(g, b) if a_ndim == 2 else g * b
        elif a_ndim == 2:  # (n, k) @ (k, m): ga = g b^T, a flag to BLAS, not a copy
            ga = L.matmul(g, b, trans_b=True)
        else:  # (k,) @ (k, m)
            ga = g @ b.T
    if a is not None:
        if a_ndim == 1:
            gb = np.multiply.outer(a, g) if b_ndim == 2 else g * a
        elif b_ndim == 2:  # gb = a^T g
            gb = L.matmul(a, g, trans_a=True)
        else:
            gb = a.T @ g
    return ga, gb


@primitive("affine", takes_needs=True)
def affine(x, W, b, activation=None, negative_slope=0.01, alpha=1.0, needs=(True, True, True)):
    """y = act(x @ W + b) with x (N, D), W (D, M), b (M,): one sgemm/dgemm, then one pass that adds
    b and applies the activation (a key of `_linalg.ACTIVATIONS`: None, relu, leaky_relu, sigmoid,
    tanh or elu, with the slope and alpha of fg.leaky_relu and fg.elu), computed by the same C
    functions as the separate gates, so the result equals act(x @ W + b) bit for bit. It saves
    what act' reads: y (relu, sigmoid, tanh), or z = x @ W + b (leaky_relu, elu).
    """
    if x.ndim != 2 or W.ndim != 2 or b.ndim != 1 or x.shape[1] != W.shape[0] or b.shape[0] != W.shape[1]:
        raise ValueError(
            f"affine: expected x (N, D), W (D, M), b (M,), got x {x.shape}, W {W.shape}, b {b.shape}"
        )
    y, saved = L.affine_forward(x, W, b, activation, negative_slope, alpha)
    return y, (saved, x if needs[1] else None, W if needs[0] else None, activation, negative_slope, alpha,
               needs[2])


@affine.defbackward
def affine_backward(g, saved, x, W, activation, negative_slope, alpha, needs_b):
    """dz = g act'(z) and db = sum_i dz in one pass; dx = dz W^T and dW = x^T dz through BLAS."""
    return L.affine_backward(g, saved, x, W, activation, negative_slope, alpha, needs_b)


# ---------------------------------------------------------------------------------------------
# reductions


@primitive("sum")
def sum_(x, axis=None, keepdims=False):
    axes = normalize_axis(axis, x.ndim, "sum")
    return np.sum(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims)


@sum_.defbackward
def sum_backward(g, shape, axes, keepdims):
    return (_expand(g, shape, axes, keepdims),)


@primitive("sumsq")
def sumsq(x):
    """sum of x**2 over every entry (a 0-d result): one C pass, summing the rounded squares
    pairwise as (x * x).sum() does, without the array of squares. Saves x."""
    return P.sum_of_squares(np.ascontiguousarray(x)), (x,)


@sumsq.defbackward
def sumsq_backward(g, x):
    """dx = 2 g x, as t + t with t = g * x (one array, one rounding more: (g x) + (g x))."""
    t = g * x
    t += t
    return (t,)


@primitive("mean")
def mean(x, axis=None, keepdims=False):
    axes = normalize_axis(axis, x.ndim, "mean")
    count = int(np.prod([x.shape[a] for a in axes]))
    if count == 0:
        raise ValueError(f"mean: cannot average over an empty axis of a tensor of shape {x.shape}")
    return np.mean(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims, count)


@mean.defbackward
def mean_backward(g, shape, axes, keepdims, count):
    return (_expand(g / count, shape, axes, keepdims),)


def _reduced_range(x: np.ndarray, axes: tuple):
    """x laid out so that the reduced `axes` are one consecutive range: (x', start, stop, perm).

    Consecutive axes (the last, the first, all of them) use x as it is; others are moved to the
    end by one transposing copy (perm, undone in backward); no axes at all reduce a unit axis.
    """
    if not axes:
        return x.reshape(x.shape + (1,)), x.ndim, x.ndim + 1, None
    if axes == tuple(range(axes[0], axes[-1] + 1)):
        return x, axes[0], axes[-1] + 1, None
    perm = [i for i in range(x.ndim) if i not in axes] + list(axes)
    return np.ascontiguousarray(x.transpose(perm)), x.ndim - len(axes), x.ndim, perm


@primitive("max")
def max_(x, axis=None, keepdims=False):
    """Max over `axis`; saves the index of the first maximal entry, where backward routes g.

    NaN wins, as in numpy.max: the output is NaN and the gradient goes to the first NaN."""
    axes = normalize_axis(axis, x.ndim, "max")
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: cannot reduce an empty axis of a tensor of shape {x.shape}")
    xr, start, stop, perm = _reduced_range(x, axes)
    out, idx = K.max_forward(xr, start, stop)
    if keepdims:
        out = out.reshape([1 if i in axes else n for i, n in enumerate(x.shape)])
    return out, (idx, xr.shape, start, stop, perm, x.shape)


@max_.defbackward
def max_backward(g, idx, layout, start, stop, perm, shape):
    gx = K.max_backward(g.reshape(idx.shape), idx, layout, start, stop)
    if perm is not None:
        gx = gx.transpose(np.argsort(perm))
    return (gx.reshape(shape),)


@primitive("maxout")
def maxout(z, pieces):
    """(N, H * pieces) -> (N, H): max over consecutive groups of `pieces` columns.

    A NaN wins its group (the output is NaN and the gradient goes to the first NaN)."""
    if isinstance(pieces, bool) or not isinstance(pieces, (int, np.integer)):
        raise TypeError(f"maxout: pieces must be a positive integer, got {pieces!r}")
    if not 1 <= pieces <= sys.maxsize:
        raise ValueError(f"maxout: pieces={pieces} must be a positive integer (z {z.shape})")
    pieces = int(pieces)
    if z.ndim != 2 or z.shape[1] % pieces:
        raise ValueError(
            f"maxout: expected z of shape (N, H * pieces) with pieces={pieces}, got {z.shape}"
        )
    out, idx = K.maxout_forward(z, pieces)
    return out, (idx, pieces)


@maxout.defbackward
def maxout_backward(g, idx, pieces):
    return (K.maxout_backward(g, idx, pieces),)


# ---------------------------------------------------------------------------------------------
# shape


@primitive("reshape")
def reshape(x, shape):
    try:
        return x.reshape(shape), (x.shape,)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {shape}") from None


@reshape.defbackward
def reshape_backward(g, shape):
    return (g.reshape(shape),)


@primitive("transpose")
def transpose(x, axes=None):
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)
    if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)) or any(
        not -x.ndim <= a < x.ndim for a in axes
    ):
        raise ValueError(f"transpose: axes {axes} are not a permutation for shape {x.shape}")
    axes = tuple(a % x.ndim for a in axes)  # argsort below needs non-negative axes
    return np.asarray(x.transpose(axes), order="C"), (np.argsort(axes),)


@transpose.defbackward
def transpose_backward(g, inverse):
    return (g.transpose(inverse),)


def _picks_once(index) -> bool:
    """Whether `index` names every entry at most once: no integer arrays (ints, slices, None,
    Ellipsis and boolean masks only), so that backward may assign instead of scatter-adding."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice, np.bool_))
               or (isinstance(p, np.ndarray) and p.dtype == np.bool_) for p in parts)


@primitive("getitem")
def getitem(x, index):
    """x[index] with NumPy's rules: ints, slices (any step), None, Ellipsis, integer arrays
    (repeats allowed) and boolean masks; a float index raises IndexError."""
    try:
        out = x[index]
    except (IndexError, ValueError) as e:  # ValueError: a slice step of 0
        raise type(e)(f"getitem: {e} (tensor of shape {x.shape})") from None
    # the index arrays are saved for backward: copies, so that changing the caller's array later
    # cannot change the gradient
    if isinstance(index, np.ndarray):
        index = index.copy()
    elif isinstance(index, tuple) and any(isinstance(p, np.ndarray) for p in index):
        index = tuple(p.copy() if isinstance(p, np.ndarray) else p for p in index)
    return np.asarray(out, order="C"), (x.shape, index)


@getitem.defbackward
def getitem_backward(g, shape, index):
    gx = np.zeros(shape, dtype=g.dtype)
    if _picks_once(index):
        gx[index] = g
    else:  # integer arrays may repeat an entry: scatter-add
        np.add.at(gx, index, g)
    return (gx,)


# ---------------------------------------------------------------------------------------------
# losses (mean over the batch)


def check_labels(op: str, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scores must be (N, C) with N > 0, labels N integers; returns them as intp.

    Labels that are not numbers raise TypeError; non-integers, a wrong shape or an empty batch
    ValueError.

    The kernels check the range [0, C) (a ValueError naming the op) before they run.
    """
    if labels.dtype.kind not in "biuf":  # None, strings, objects, complex numbers
        raise TypeError(f"{op}: labels must be integers, got dtype {labels.dtype}")
    if scores.ndim != 2:
        raise ValueError(f"{op}: scores must be 2-D (N, C), got shape {scores.shape}")
    n, c = scores.shape
    if labels.shape != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},) for scores {scores.shape}, got {labels.shape}")
    if n == 0:
        raise ValueError(f"{op}: empty batch (scores shape {scores.shape}); the mean loss is undefined")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{op}: labels must be integers, got dtype {labels.dtype}")
    if labels.dtype.kind == "u" and labels.max() >= c:  # would wrap around in intp
        raise ValueError(f"{op}: label {labels.max()} is out of range for {c} classes")
    return np.require(labels, dtype=np.intp, requirements="CA")  # C-contiguous, aligned, native


# Both losses compute the gradient of the mean loss in the same C pass as the loss (when the
# scores need one) and save it; backward only scales it by the upstream scalar g (not at all when
# g is 1, the usual case).


# The labels are the rows' second input: an intp array that functional.py has checked
# (`check_labels`) and hands to `apply` as an `autograd.Constant`, an input that takes no gradient
# (the rules return None for it). The binding checks them again (dtype, shape, range) before C runs.


@primitive("softmax_cross_entropy", takes_needs=True)
def softmax_cross_entropy(scores, labels, needs=(True, False)):
    """-mean_i log softmax(scores_i)[labels_i], through a stable log-sum-exp.

    Saved: d loss / d scores = (softmax(scores) - onehot(labels)) / N.
    """
    loss, grad = K.softmax_cross_entropy(scores, labels, needs[0])
    return np.asarray(loss, dtype=scores.dtype), (grad,)


@softmax_cross_entropy.defbackward
def softmax_cross_entropy_backward(g, grad):
    return _scaled_by(grad, g), None  # the labels take no gradient


@primitive("svm_loss", takes_needs=True)
def svm_loss(scores, labels, delta=1.0, needs=(True, False)):
    """mean_i sum_{j != y_i} max(0, s_ij - s_iy_i + delta): CS231n's multiclass hinge loss.

    Saved: d loss / d scores = ([margin > 0] - onehot(labels) * count(margins > 0)) / N.
    """
    loss, grad = K.svm_loss(scores, labels, delta, needs[0])
    return np.asarray(loss, dtype=scores.dtype), (grad,)


@svm_loss.defbackward
def svm_loss_backward(g, grad):
    return _scaled_by(grad, g), None  # the labels take no gradient


def _scaled_by(grad, g):
    """grad * g; grad itself (no new array) when g is the 0-d 1 that loss.backward() seeds, as
    x * 1 == x bit for bit (NaN and -0 included). The engine copies it before adding into it."""
    if g.ndim == 0 and g == 1:
        return grad
    return grad * g


# ---------------------------------------------------------------------------------------------
# normalisation (C kernels in csrc/norm.c, bound in _norm.pyx)


def _stat(a, like: np.ndarray, op: str, what: str) -> np.ndarray:
    """A (D,) statistic as a contiguous array of `like`'s dtype (a copy only when it must be)."""
    a = np.ascontiguousarray(a, dtype=like.dtype)
    if a.shape != (like.shape[1],):
        raise ValueError(f"{op}: {what} has shape {a.shape}, expected ({like.shape[1]},) for x {like.shape}")
    return a


@primitive("batchnorm", takes_needs=True)
def batchnorm(x, gamma, beta, eps=1e-5, training=True, running_mean=None, running_var=None,
              momentum=0.1, needs=(True, True, True)):
    """Batch norm of x (N, D) per feature, y = gamma * xhat + beta (CS231n's batchnorm_forward).

    training: xhat from the batch mean and (biased) variance; running_mean/running_var (D,), when
    given, are updated in place (rm <- (1 - momentum) rm + momentum mean, the same for the
    unbiased variance), as PyTorch's BatchNorm1d does. Not training: xhat from running_mean and
    running_var, which are then required. Saves x (alive anyway), the mean and 1/std.
    """
    if x.ndim != 2 or gamma.shape != (x.shape[1],) or beta.shape != (x.shape[1],):
        raise ValueError(
            f"batchnorm: expected x (N, D), gamma (D,), beta (D,), got x {x.shape}, gamma {gamma.shape}, "
            f"beta {beta.shape}"
        )
    if training:
        y, mean, invstd = N.batchnorm_forward(x, gamma, beta, eps, running_mean, running_var, momentum)
        return y, (True, x, mean, invstd, gamma, needs[0])
    if running_mean is None or running_var is None:
        raise ValueError("batchnorm: evaluation (training=False) needs running_mean and running_var")
    mean = _stat(running_mean, x, "batchnorm", "running_mean")
    invstd = 1.0 / np.sqrt(_stat(running_var, x, "batchnorm", "running_var") + x.dtype.type(eps))
    xhat = (x - mean) * invstd
    return xhat * gamma + beta, (False, xhat, None, invstd, gamma, needs[0])


@batchnorm.defbackward
def batchnorm_backward(g, training, x, mean, invstd, gamma, needs_x):
    """Training: CS231n's fast formula dx = gamma invstd / N (N g - sum g - xhat sum g xhat).
    Evaluation (the statistics are constants): dx = g gamma invstd."""
    if training:
        return N.batchnorm_backward(g, x, mean, invstd, gamma, needs_x)
    xhat = x
    return (g * (gamma * invstd) if needs_x else None), (g * xhat).sum(axis=0), g.sum(axis=0)


@primitive("layernorm", takes_needs=True)
def layernorm(x, gamma, beta, eps=1e-5, needs=(True, True, True)):
    """Layer norm over the trailing dims of x that gamma's shape names (PyTorch's normalized_shape):
    each example is normalised by its own mean and variance, y = gamma * xhat + beta.
    """
    k = gamma.ndim
    if k == 0 or beta.shape != gamma.shape or x.shape[x.ndim - k:] != gamma.shape or x.ndim < k:
        raise ValueError(
            f"layernorm: expected x (..., *S), gamma S, beta S, got x {x.shape}, gamma {gamma.shape}, "
            f"beta {beta.shape}"
        )
    d = gamma.size
    x2 = x.reshape(-1, d)
    y, mean, invstd = N.layernorm_forward(x2, gamma.reshape(d), beta.reshape(d), eps)
    return y.reshape(x.shape), (x2, mean, invstd, gamma, needs[0])


@layernorm.defbackward
def layernorm_backward(g, x2, mean, invstd, gamma, needs_x):
    """dx = invstd / D (D dxhat - sum dxhat - xhat sum dxhat xhat), dxhat = g gamma, per row."""
    d = gamma.size
    dx, dgamma, dbeta = N.layernorm_backward(g.reshape(-1, d), x2, mean, invstd, gamma.reshape(d), needs_x)
    shape = g.shape
    return (dx.reshape(shape) if dx is not None else None), dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape)

