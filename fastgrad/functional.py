"""The functional API: `fastgrad.relu(x)`, `fastgrad.affine(x, W, b)`, the losses, ...

Each function accepts tensors, arrays or numbers (made tensors as `tensor` infers their dtype, or of
the dtype of the tensor they are combined with) and applies one row of the op table.
"""
from __future__ import annotations

import numpy as np

from . import ops
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
    """`x` itself if it is a Tensor, else a new constant tensor (dtype inferred as by `tensor`)."""
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
