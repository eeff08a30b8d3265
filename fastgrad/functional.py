"""The functional API: `fastgrad.relu(x)`, `fastgrad.affine(x, W, b)`, the losses, ...

Each function accepts tensors, arrays or numbers (made tensors as `tensor` infers their dtype, or of
the dtype of the tensor they are combined with) and applies one row of the op table.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import ops
from .autograd import Constant, _recording
from .random import default_generator
from .tensor import Tensor, apply, coerce, to_array


def tensor(data, dtype=None, requires_grad=False, name=None) -> Tensor:
    """A new leaf tensor holding a copy of `data`.

    dtype None infers it as PyTorch does: a float32 or float64 NumPy array keeps its dtype; Python
    numbers, lists, ints and bools (and int arrays) take the default dtype (float32, see
    `set_default_dtype`).

    >>> x = tensor([[1, 2], [3, 4]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """
    return Tensor(data, dtype=dtype, requires_grad=requires_grad, name=name)


def from_numpy(a: np.ndarray) -> Tensor:
    """A tensor that shares `a`'s memory (no copy), as torch.from_numpy.

    `a` must be a C-contiguous float32 or float64 ndarray (TypeError / ValueError otherwise). Writes
    to `a` show in the tensor and in-place tensor ops show in `a`; changes made through `a` itself are
    not seen by the version counter, so do not modify it while a graph that saved it awaits backward.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy expects a NumPy ndarray, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"from_numpy: fastgrad tensors are float32 or float64, not {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"from_numpy: the array of shape {a.shape} is not C-contiguous (a transposed or strided "
            "view?); pass np.ascontiguousarray(a), which copies"
        )
    return Tensor._wrap(a.view(np.ndarray) if type(a) is not np.ndarray else a)


def as_tensor(x, dtype=None) -> Tensor:
    """`x` itself if it is a Tensor, else a new constant tensor (dtype inferred as by `tensor`).

    >>> as_tensor([1, 2])
    tensor([1., 2.])
    """
    return x if isinstance(x, Tensor) else Tensor._wrap(to_array(x, dtype))


def _pair(a, b):
    if isinstance(a, Tensor):
        return a, coerce(b, a)
    if isinstance(b, Tensor):
        return coerce(a, b), b
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):  # a number takes b's dtype
        b = as_tensor(b)
        return coerce(a, b), b
    a = as_tensor(a)
    return a, coerce(b, a)


def maximum(a, b) -> Tensor:
    """Elementwise max(a, b), broadcasting; the gradient goes to `a` where a >= b (ties: `a`).

    >>> maximum(tensor([1.0, 5.0]), 2.0)
    tensor([2., 5.])
    """
    return apply(ops.maximum, *_pair(a, b))


def exp(x) -> Tensor:
    """e**x elementwise; d/dx = e**x (saved output).

    >>> exp(tensor([0.0]))
    tensor([1.])
    """
    return apply(ops.exp, as_tensor(x))


def log(x) -> Tensor:
    """Natural log elementwise; d/dx = 1/x.

    >>> log(tensor([1.0]))
    tensor([0.])
    """
    return apply(ops.log, as_tensor(x))


def relu(x) -> Tensor:
    """max(0, x) elementwise; the gradient is 0 where x <= 0 (ReLU'(0) = 0).

    >>> relu(tensor([-1.0, 3.0]))
    tensor([0., 3.])
    """
    return apply(ops.relu, as_tensor(x))


def sigmoid(x) -> Tensor:
    """sigma(x) = 1 / (1 + e**-x), one gate with local gradient sigma(1 - sigma); never overflows.

    >>> sigmoid(tensor([0.0, -1000.0]))
    tensor([0.5, 0. ])
    """
    return apply(ops.sigmoid, as_tensor(x))


def tanh(x) -> Tensor:
    """tanh(x) elementwise; d/dx = 1 - tanh(x)**2.

    >>> tanh(tensor([0.0]))
    tensor([0.])
    """
    return apply(ops.tanh, as_tensor(x))


def leaky_relu(x, negative_slope=0.01) -> Tensor:
    """x where x > 0, else negative_slope * x; the gradient at 0 is negative_slope.

    >>> leaky_relu(tensor([-2.0, 3.0]), 0.5)
    tensor([-1.,  3.])
    """
    return apply(ops.leaky_relu, as_tensor(x), negative_slope=float(negative_slope))


def elu(x, alpha=1.0) -> Tensor:
    """x where x > 0, else alpha * (e**x - 1); the gradient at 0 is alpha.

    >>> elu(tensor([0.0, 2.0]))
    tensor([0., 2.])
    """
    return apply(ops.elu, as_tensor(x), alpha=float(alpha))


def maxout(z, pieces) -> Tensor:
    """Maxout units: z of shape (N, H * pieces) -> (N, H), the max of each run of `pieces` columns.

    `pieces` must be a positive integer (2.5 raises TypeError). The gradient is routed to the
    first maximal column of each group (the first NaN, if the group holds one).

    >>> maxout(tensor([[1.0, 4.0, 3.0, 2.0]]), 2)
    tensor([[4., 3.]])
    """
    return apply(ops.maxout, as_tensor(z), pieces=pieces)


def affine(x, W, b, activation=None, negative_slope=0.01, alpha=1.0) -> Tensor:
    """A fully connected layer y = act(x @ W + b), x (N, D), W (D, M), b (M,) -> y (N, M).

    One sgemm/dgemm computes x @ W into y, and one pass over y adds b and applies the activation:
    None, "relu", "leaky_relu" (slope `negative_slope`), "sigmoid", "tanh" or "elu" (`alpha`).
    Backward: dz = dy * act'(z), from the saved y (or z, for leaky_relu and elu); dx = dz W^T,
    dW = x^T dz, db = sum_i dz[i]. Equal to e.g. `fg.relu(x @ W + b)` bit for bit, forward and
    backward, with fewer intermediate arrays.

    >>> x = tensor([[1.0, -2.0]]); W = tensor([[1.0, 0.0], [0.0, 1.0]]); b = tensor([0.5, 0.5])
    >>> affine(x, W, b, activation="relu")
    tensor([[1.5, 0. ]])
    """
    x = as_tensor(x) if not isinstance(W, Tensor) else coerce(x, W)
    return apply(ops.affine, x, coerce(W, x), coerce(b, x), activation=activation,
                 negative_slope=float(negative_slope), alpha=float(alpha))


def _labels(labels, op: str) -> np.ndarray:
    labels = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    if labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels)):
        huge = np.flatnonzero(~(np.abs(labels) < 2.0**53))  # inf: no cast to int for it
        if huge.size:
            k = huge[0]
            raise ValueError(f"{op}: label {labels.flat[k]} at position {k} is out of range")
        labels = labels.astype(np.intp)
    return np.ascontiguousarray(labels)


def _label_input(scores: Tensor, labels, op: str) -> Constant:
    """The labels as the loss row's second input: checked against the scores, an intp array
    (the argument itself when it is one, so that a captured step finds its input buffer), held by
    a `Constant`, an input that takes no gradient (Tensors are float only)."""
    return Constant(ops.check_labels(op, scores.data, _labels(labels, op)), "labels")


def sumsq(x) -> Tensor:
    """The sum of the squares of every entry of x, a 0-d tensor; its gradient is 2 x.

    Equal to (x * x).sum() bit for bit, in one pass and without the array of squares (the L2
    penalty of fastgrad.nn models).

    >>> sumsq(tensor([1.0, -2.0, 3.0])).item()
    14.0
    """
    return apply(ops.sumsq, as_tensor(x))


def softmax_cross_entropy(scores, labels) -> Tensor:
    """Mean softmax (cross-entropy) loss of class scores (N, C) against integer labels (N,).

    loss = -(1/N) sum_i log softmax(scores_i)[labels_i]; the gradient (softmax - onehot) / N.

    >>> round(softmax_cross_entropy(tensor([[0.0, 0.0]]), [0]).item(), 4)  # log 2
    0.6931
    """
    scores = as_tensor(scores)
    return apply(ops.softmax_cross_entropy, scores, _label_input(scores, labels, "softmax_cross_entropy"))


def svm_loss(scores, labels, delta=1.0) -> Tensor:
    """Mean multiclass hinge loss: sum over j != y of max(0, s_j - s_y + delta), per example.

    >>> svm_loss(tensor([[1.0, 1.5]]), [0]).item()  # max(0, 1.5 - 1 + 1)
    1.5
    """
    scores = as_tensor(scores)
    return apply(ops.svm_loss, scores, _label_input(scores, labels, "svm_loss"), delta=float(delta))


# ---------------------------------------------------------------------------------------------
# the PyTorch surface: fg.abs/sqrt/clamp/pow, cat/stack/where, and torch.nn.functional's
# softmax, log_softmax, cross_entropy, dropout (`import fastgrad.functional as F`)


def abs(x) -> Tensor:  # noqa: A001 (PyTorch's name)
    """|x| elementwise; d/dx = sign(x), 0 at x = 0.

    >>> abs(tensor([-1.5, 2.0]))
    tensor([1.5, 2. ])
    """
    return apply(ops.abs_, as_tensor(x))


def sqrt(x) -> Tensor:
    """sqrt(x) elementwise (nan for x < 0); d/dx = 1 / (2 sqrt(x)).

    >>> sqrt(tensor([1.0, 4.0]))
    tensor([1., 2.])
    """
    return apply(ops.sqrt, as_tensor(x))


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002
    """x clipped to [min, max] (numbers or None); gradient 1 where min <= x <= max, else 0.

    >>> clamp(tensor([-1.0, 0.5, 2.0]), 0.0, 1.0)
    tensor([0. , 0.5, 1. ])
    """
    return as_tensor(x).clamp(min, max)


clip = clamp


def pow(x, exponent) -> Tensor:  # noqa: A001
    """x ** exponent for a number or tensor base and a number or tensor exponent, broadcasting.

    With a tensor exponent t, d/dx = t x**(t-1) and d/dt = x**t ln x (0 where x = 0, t >= 0).

    >>> pow(2.0, tensor([1.0, 3.0]))
    tensor([2., 8.])
    """
    if isinstance(x, Tensor):
        return x**exponent
    if isinstance(exponent, Tensor):
        return exponent.__rpow__(x)
    return as_tensor(x) ** exponent


def _tensors(op: str, tensors) -> list:
    """A list of tensors of one dtype from a sequence of tensors/arrays/numbers."""
    if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: expected at least one tensor")
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    if like is None:
        like = as_tensor(tensors[0])
    return [coerce(t, like) for t in tensors]


def cat(tensors, dim=0) -> Tensor:
    """The tensors joined along the existing axis `dim` (their other sizes equal).

    The gradient is split back along `dim` into each input's part.

    >>> cat([tensor([[1.0, 2.0]]), tensor([[3.0, 4.0]])], dim=0)
    tensor([[1., 2.],
            [3., 4.]])
    """
    return apply(ops.cat, *_tensors("cat", tensors), dim=dim)


concat = concatenate = cat


def stack(tensors, dim=0) -> Tensor:
    """The tensors (all of one shape) joined along a new axis `dim` (in [-ndim-1, ndim]).

    >>> stack([tensor([1.0, 2.0]), tensor([3.0, 4.0])], dim=1)
    tensor([[1., 3.],
            [2., 4.]])
    """
    ts = _tensors("stack", tensors)
    shapes = {t.shape for t in ts}
    if len(shapes) != 1:
        raise ValueError(f"stack: expected tensors of one shape, got {[t.shape for t in ts]}")
    return apply(ops.cat, *[t.unsqueeze(dim) for t in ts], dim=dim)


def _condition(cond) -> np.ndarray:
    if isinstance(cond, Tensor):  # fastgrad tensors hold floats: nonzero means True
        return cond.data != 0
    c = np.asarray(cond)
    if c.dtype != np.bool_:
        raise TypeError(f"where: the condition must be a bool array (e.g. x.data > 0), got {c.dtype}")
    return c


def where(cond, a, b) -> Tensor:
    """a where cond is True, else b, broadcasting all three; the gradient goes to a where cond,
    else to b. cond: a bool array (or a tensor, whose nonzero entries count as True).

    >>> x = tensor([-1.0, 2.0])
    >>> where(x.data > 0, x, 0.0)
    tensor([0., 2.])
    """
    return apply(ops.where, *_pair(a, b), cond=_condition(cond))


def softmax(x, dim) -> Tensor:
    """softmax(x)_i = e**(x_i - max x) / sum_j e**(x_j - max x) along `dim` (an int).

    Backward: dx = y (g - sum(g y)) with y the saved output.

    >>> softmax(tensor([[1.0, 1.0, 1.0, 1.0]]), dim=1)
    tensor([[0.25, 0.25, 0.25, 0.25]])
    """
    return apply(ops.softmax, as_tensor(x), dim=dim)


def log_softmax(x, dim) -> Tensor:
    """log softmax(x) = x - max x - log sum e**(x - max x) along `dim`: never overflows.

    Backward: dx = g - softmax(x) sum(g), exact (from the saved output).

    >>> log_softmax(tensor([[0.0, 0.0]]), dim=1).exp()
    tensor([[0.5, 0.5]])
    """
    return apply(ops.log_softmax, as_tensor(x), dim=dim)


def cross_entropy(input, target, reduction="mean") -> Tensor:  # noqa: A002 (PyTorch's names)
    """The softmax cross-entropy loss of scores `input` (N, C) against class indices `target` (N,).

    loss_i = -log softmax(input_i)[target_i]; reduction "mean" (the default, the same op as
    `softmax_cross_entropy`), "sum" or "none" (the N losses). Class-probability targets,
    weights and label smoothing are not supported.

    >>> cross_entropy(tensor([[0.0, 0.0]]), [1]).item() == float(np.log(np.float32(2)))
    True
    """
    scores = as_tensor(input)
    labels = _labels(target, "cross_entropy")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if reduction == "mean":
        return softmax_cross_entropy(scores, labels)
    labels = ops.check_labels("cross_entropy", scores.data, labels)
    n, c = scores.shape
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"cross_entropy: labels must be in [0, {c}), got {labels.min()}..{labels.max()}")
    if reduction == "sum":
        return softmax_cross_entropy(scores, labels) * n
    return -log_softmax(scores, 1)[np.arange(n), labels]


def dropout(x, p=0.5, training=True, generator=None) -> Tensor:
    """Inverted dropout (CS231n): each entry kept with probability 1 - p and scaled by 1 / (1 - p),
    so that no rescaling is needed at test time; zeroed otherwise.

    p: the drop probability, in [0, 1). training=False or p = 0 return x itself.
    generator: a numpy Generator or a fastgrad.Generator to draw the mask from (default:
    fastgrad's, see `manual_seed`).
    The mask is drawn as `generator.random(x.shape) >= p` (float64 draws, so both dtypes drop the
    same entries) and saved; backward multiplies g by it.

    >>> y = dropout(tensor(np.ones((2, 4))), p=0.5, generator=np.random.default_rng(0))
    >>> sorted(set(y.data.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise ValueError(f"dropout: p must be a number in [0, 1), got {p!r}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    if generator is None:
        generator = default_generator()
    elif not isinstance(generator, np.random.Generator):
        # a fastgrad.Generator, or any object with random(shape) (replayed masks)
        from .generator import as_draws

        if isinstance(generator, numbers.Integral):  # a seed here would repeat one mask forever
            raise TypeError(f"dropout: generator must be a Generator, not {type(generator).__name__}")
        generator = as_draws(generator, "dropout")
    keep = np.asarray(generator.random(x.shape)) >= p
    if _recording.active is not None:  # fastgrad.capture: a replay draws again from `generator`
        _recording.active.drew(generator, x.shape, keep)
    return apply(ops.dropout, x, keep=keep, p=float(p))


# torch.max(x, 1), torch.sum(x, dim=0), ...: the Tensor methods as functions (PyTorch's spellings;
# these names shadow Python's builtins inside this module only, which calls none of them)


def max(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """`x.max(...)`: values for no axis or `axis=`; `(values, indices)` for PyTorch's int `dim`;
    `max(a, b)` with two tensors is `maximum(a, b)`. See `Tensor.max`.

    >>> _, predicted = max(tensor([[0.1, 0.9], [0.8, 0.2]]), 1); predicted
    array([1, 0])
    """
    return as_tensor(x).max(dim, keepdim, axis=axis, keepdims=keepdims)


def min(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """`x.min(...)`, with the conventions of `max`.

    >>> min(tensor([[0.1, 0.9], [0.8, 0.2]]), dim=0).values
    tensor([0.1, 0.2])
    """
    return as_tensor(x).min(dim, keepdim, axis=axis, keepdims=keepdims)


def minimum(a, b) -> Tensor:
    """Elementwise min(a, b), broadcasting, as `-maximum(-a, -b)`: the gradient goes to `a` where
    a <= b (ties: `a`).

    >>> minimum(tensor([1.0, 5.0]), 2.0)
    tensor([1., 2.])
    """
    a, b = _pair(a, b)
    return -apply(ops.maximum, -a, -b)


def sum(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """`x.sum(...)` (axis/dim, keepdims/keepdim).

    >>> sum(tensor([[1.0, 2.0], [3.0, 4.0]]), dim=0)
    tensor([4., 6.])
    """
    return as_tensor(x).sum(axis, keepdims, dim=dim, keepdim=keepdim)


def mean(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """`x.mean(...)` (axis/dim, keepdims/keepdim).

    >>> mean(tensor([[1.0, 2.0], [3.0, 4.0]]), dim=1)
    tensor([1.5, 3.5])
    """
    return as_tensor(x).mean(axis, keepdims, dim=dim, keepdim=keepdim)


def argmax(x, dim=None, keepdim=None, *, axis=None, keepdims=None) -> np.ndarray:
    """`x.argmax(...)`: a NumPy int64 array of the first maximum's position.

    >>> argmax(tensor([[0.1, 0.9], [0.8, 0.2]]), dim=1)
    array([1, 0])
    """
    return as_tensor(x).argmax(dim, keepdim, axis=axis, keepdims=keepdims)


def argmin(x, dim=None, keepdim=None, *, axis=None, keepdims=None) -> np.ndarray:
    """`x.argmin(...)`: a NumPy int64 array of the first minimum's position.

    >>> argmin(tensor([[0.1, 0.9], [0.8, 0.2]]), dim=1)
    array([0, 1])
    """
    return as_tensor(x).argmin(dim, keepdim, axis=axis, keepdims=keepdims)


def flatten(x, start_dim=0, end_dim=-1) -> Tensor:
    """`x.flatten(start_dim, end_dim)`.

    >>> flatten(tensor(np.zeros((2, 3, 4))), 1).shape
    (2, 12)
    """
    return as_tensor(x).flatten(start_dim, end_dim)


# ---------------------------------------------------------------------------------------------
# normalisation (PyTorch's torch.nn.functional signatures; the rows are in ops.py, C in csrc/norm.c)


def _affine_params(x: Tensor, weight, bias, shape):
    """gamma and beta as tensors of x's dtype; ones/zeros constants when not given."""
    gamma = coerce(weight, x) if weight is not None else Tensor._wrap(np.ones(shape, dtype=x.dtype))
    beta = coerce(bias, x) if bias is not None else Tensor._wrap(np.zeros(shape, dtype=x.dtype))
    return gamma, beta


def _buffer(a):
    return a.data if isinstance(a, Tensor) else a


def _norm_input(x, *like) -> Tensor:
    """x as a tensor; a plain array or number takes the dtype of the first tensor or float array among
    `like` (the layer's parameters or buffers), as `affine` gives an array input its weight's dtype."""
    if isinstance(x, Tensor):
        return x
    for a in like:
        a = _buffer(a)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return Tensor._wrap(to_array(x, a.dtype))
    return as_tensor(x)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5) -> Tensor:
    """Batch normalisation of x (N, D) per feature: y = weight * xhat + bias (CS231n batchnorm).

    training: xhat uses the batch mean and biased variance, and running_mean/running_var (D,)
    (arrays or tensors, or None) are updated in place with `momentum` (the variance unbiased), as
    in PyTorch. Otherwise xhat uses running_mean and running_var. weight/bias: gamma, beta (D,).
    """
    x = _norm_input(x, weight, running_mean)
    if x.ndim != 2:
        raise ValueError(f"batch_norm: expected x of shape (N, D), got {x.shape}")
    gamma, beta = _affine_params(x, weight, bias, (x.shape[1],))
    return apply(ops.batchnorm, x, gamma, beta, eps=float(eps), training=bool(training),
                 running_mean=_buffer(running_mean), running_var=_buffer(running_var),
                 momentum=float(momentum))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    """Layer normalisation over the trailing dims `normalized_shape` of x (each example by its own
    mean and variance): y = weight * xhat + bias, weight/bias of shape normalized_shape."""
    x = _norm_input(x, weight)
    shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    gamma, beta = _affine_params(x, weight, bias, shape)
    return apply(ops.layernorm, x, gamma, beta, eps=float(eps))
