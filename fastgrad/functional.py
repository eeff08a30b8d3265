"""The functional API: `fastgrad.relu(x)`, `fastgrad.affine(x, W, b)`, the losses, ...

Each function accepts tensors, arrays or numbers (made float32 tensors, or the dtype of the tensor
they are combined with) and applies one row of the op table.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .tensor import Tensor, apply, coerce, to_array


def tensor(data, dtype=None, requires_grad=False, name=None) -> Tensor:
    """A new leaf tensor holding a copy of `data`, float32 unless `dtype` is "float64".

    >>> x = tensor([[1, 2], [3, 4]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """
    return Tensor(data, dtype=dtype, requires_grad=requires_grad, name=name)


def as_tensor(x, dtype=None) -> Tensor:
    """`x` itself if it is a Tensor, else a new float32 (or `dtype`) constant tensor."""
    return x if isinstance(x, Tensor) else Tensor._wrap(to_array(x, dtype))


def _pair(a, b):
    if isinstance(a, Tensor):
        return a, coerce(b, a)
    if isinstance(b, Tensor):
        return coerce(a, b), b
    return as_tensor(a), as_tensor(b)


def maximum(a, b) -> Tensor:
    """Elementwise max(a, b), broadcasting; the gradient goes to `a` where a >= b (ties: `a`)."""
    return apply(ops.maximum, *_pair(a, b))


def exp(x) -> Tensor:
    """e**x elementwise; d/dx = e**x (saved output)."""
    return apply(ops.exp, as_tensor(x))


def log(x) -> Tensor:
    """Natural log elementwise; d/dx = 1/x."""
    return apply(ops.log, as_tensor(x))


def relu(x) -> Tensor:
    """max(0, x) elementwise; the gradient is 0 where x <= 0 (ReLU'(0) = 0)."""
    return apply(ops.relu, as_tensor(x))


def sigmoid(x) -> Tensor:
    """sigma(x) = 1 / (1 + e**-x), one gate with local gradient sigma(1 - sigma); never overflows."""
    return apply(ops.sigmoid, as_tensor(x))


def tanh(x) -> Tensor:
    """tanh(x) elementwise; d/dx = 1 - tanh(x)**2."""
    return apply(ops.tanh, as_tensor(x))


def leaky_relu(x, negative_slope=0.01) -> Tensor:
    """x where x > 0, else negative_slope * x; the gradient at 0 is negative_slope."""
    return apply(ops.leaky_relu, as_tensor(x), negative_slope=float(negative_slope))


def elu(x, alpha=1.0) -> Tensor:
    """x where x > 0, else alpha * (e**x - 1); the gradient at 0 is alpha."""
    return apply(ops.elu, as_tensor(x), alpha=float(alpha))


def maxout(z, pieces) -> Tensor:
    """Maxout units: z of shape (N, H * pieces) -> (N, H), the max of each run of `pieces` columns.

    The gradient is routed to the first maximal column of each group.
    """
    return apply(ops.maxout, as_tensor(z), pieces=int(pieces))


def affine(x, W, b, activation=None, negative_slope=0.01, alpha=1.0) -> Tensor:
    """A fully connected layer y = act(x @ W + b), x (N, D), W (D, M), b (M,) -> y (N, M).

    One sgemm/dgemm computes x @ W into y, and one pass over y adds b and applies the activation:
    None, "relu", "leaky_relu" (slope `negative_slope` >= 0), "sigmoid", "tanh" or "elu" (`alpha` >= 0).
    Backward: dz = dy * act'(z), from the saved y; dx = dz W^T, dW = x^T dz, db = sum_i dz[i].
    Equal to e.g. `fg.relu(x @ W + b)`, with no intermediate tensors.

    >>> x = tensor([[1.0, -2.0]]); W = tensor([[1.0, 0.0], [0.0, 1.0]]); b = tensor([0.5, 0.5])
    >>> affine(x, W, b, activation="relu")
    tensor([[1.5, 0. ]])
    """
    x = as_tensor(x) if not isinstance(W, Tensor) else coerce(x, W)
    return apply(ops.affine, x, coerce(W, x), coerce(b, x), activation=activation,
                 negative_slope=float(negative_slope), alpha=float(alpha))


def _labels(labels) -> np.ndarray:
    labels = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    if labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels)):
        labels = labels.astype(np.intp)
    return np.ascontiguousarray(labels)


def softmax_cross_entropy(scores, labels) -> Tensor:
    """Mean softmax (cross-entropy) loss of class scores (N, C) against integer labels (N,)."""
    return apply(ops.softmax_cross_entropy, as_tensor(scores), labels=_labels(labels))


def svm_loss(scores, labels, delta=1.0) -> Tensor:
    """Mean multiclass hinge loss: sum over j != y of max(0, s_j - s_y + delta), per example."""
    return apply(ops.svm_loss, as_tensor(scores), labels=_labels(labels), delta=float(delta))


# ---------------------------------------------------------------------------------------------
# normalisation and dropout (PyTorch's torch.nn.functional signatures)


def _uniform(generator, shape, dtype) -> np.ndarray:
    """Uniform draws in [0, 1): from `generator` if it has a random(shape, dtype=) method (a
    fastgrad.Generator, a numpy Generator), else from fastgrad's default generator."""
    from .generator import as_numpy_generator

    if generator is not None and not isinstance(generator, int) and hasattr(generator, "random"):
        return np.asarray(generator.random(shape, dtype=dtype))
    return as_numpy_generator(generator).random(shape, dtype=dtype)


def dropout(x, p=0.5, training=True, generator=None) -> Tensor:
    """Inverted dropout (CS231n): each entry is kept with probability 1 - p and scaled by 1 / (1 - p),
    so the expected output is x; identity when `training` is False or p == 0.

    The mask comes from `generator` (a fastgrad.Generator, a numpy Generator, or an int seed), else
    from fastgrad.default_generator (see fastgrad.manual_seed).

    >>> y = dropout(tensor([1.0, 2.0, 3.0, 4.0]), p=0.5, generator=0)   # entries 0 or 2x
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    u = _uniform(generator, x.shape, x.dtype)
    return apply(ops.dropout, x, p=float(p), u=u)


def _affine_params(x: Tensor, weight, bias, shape):
    """gamma and beta as tensors of x's dtype; ones/zeros constants when not given."""
    gamma = coerce(weight, x) if weight is not None else Tensor._wrap(np.ones(shape, dtype=x.dtype))
    beta = coerce(bias, x) if bias is not None else Tensor._wrap(np.zeros(shape, dtype=x.dtype))
    return gamma, beta


def _buffer(a):
    return a.data if isinstance(a, Tensor) else a


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5) -> Tensor:
    """Batch normalisation of x (N, D) per feature: y = weight * xhat + bias (CS231n batchnorm).

    training: xhat uses the batch mean and biased variance, and running_mean/running_var (D,)
    (arrays or tensors, or None) are updated in place with `momentum` (the variance unbiased), as
    in PyTorch. Otherwise xhat uses running_mean and running_var. weight/bias: gamma, beta (D,).
    """
    x = as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"batch_norm: expected x of shape (N, D), got {x.shape}")
    gamma, beta = _affine_params(x, weight, bias, (x.shape[1],))
    return apply(ops.batchnorm, x, gamma, beta, eps=float(eps), training=bool(training),
                 running_mean=_buffer(running_mean), running_var=_buffer(running_var),
                 momentum=float(momentum))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    """Layer normalisation over the trailing dims `normalized_shape` of x (each example by its own
    mean and variance): y = weight * xhat + bias, weight/bias of shape normalized_shape."""
    x = as_tensor(x)
    shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    gamma, beta = _affine_params(x, weight, bias, shape)
    return apply(ops.layernorm, x, gamma, beta, eps=float(eps))
