"""Tensor factories as in PyTorch: zeros, ones, full, empty, eye, arange, randn, rand and the *_like.

Each makes a leaf tensor of `dtype` (float32 unless asked; float32 or float64) that requires grad
when `requires_grad=True`. Sizes are given as PyTorch does: `zeros(2, 3)`, `zeros((2, 3))` or
`zeros([2, 3])`. Random draws come from fastgrad's generator (`fastgrad.manual_seed`) unless a
`generator=` is given (a numpy Generator or an int seed).
"""
from __future__ import annotations

import numbers

import numpy as np

from .autograd import _recording
from .random import as_numpy_generator
from .tensor import Tensor, resolve_dtype

__all__ = [
    "zeros", "ones", "full", "empty", "eye", "arange", "randn", "rand",
    "zeros_like", "ones_like", "full_like", "empty_like", "randn_like", "rand_like",
]


def _shape(size, op: str) -> tuple:
    """`(2, 3)` from `(2, 3)`, `((2, 3),)` or `([2, 3],)`; ValueError for negative sizes."""
    if len(size) == 1 and not isinstance(size[0], numbers.Integral):
        size = size[0]
    try:
        shape = tuple(size)
    except TypeError:
        raise TypeError(f"{op}: size must be ints or one sequence of ints, got {size!r}") from None
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{op}: size must be ints, got {size!r}")
        if n < 0:
            raise ValueError(f"{op}: negative size in {shape}")
    return tuple(int(n) for n in shape)


def _leaf(data: np.ndarray, requires_grad: bool) -> Tensor:
    return Tensor._wrap(data, bool(requires_grad))  # every caller passes a fresh C-contiguous array


def zeros(*size, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of zeros of the given size.

    >>> zeros(2, 3).shape
    (2, 3)
    """
    return _leaf(np.zeros(_shape(size, "zeros"), resolve_dtype(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of ones of the given size.

    >>> ones((2,))
    tensor([1., 1.])
    """
    return _leaf(np.ones(_shape(size, "ones"), resolve_dtype(dtype)), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of the given size (an int or a sequence) with every entry `fill_value`.

    >>> full((2, 2), 7.0)
    tensor([[7., 7.],
            [7., 7.]])
    """
    if not isinstance(fill_value, numbers.Real):
        raise TypeError(f"full: fill_value must be a real number, got {type(fill_value).__name__}")
    shape = _shape((size,), "full")
    return _leaf(np.full(shape, fill_value, resolve_dtype(dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of the given size whose entries are not initialised (arbitrary values).

    >>> empty(3, 0).shape
    (3, 0)
    """
    return _leaf(np.empty(_shape(size, "empty"), resolve_dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False) -> Tensor:
    """The n x m (default n x n) matrix with ones on the diagonal and zeros elsewhere.

    >>> eye(2)
    tensor([[1., 0.],
            [0., 1.]])
    """
    n, m = _shape((n, n if m is None else m), "eye")
    return _leaf(np.eye(n, m, dtype=resolve_dtype(dtype)), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False) -> Tensor:
    """The values start, start + step, ... below `end` (`arange(n)` is 0, 1, ..., n - 1).

    Always a float tensor (fastgrad tensors hold floats); the count is NumPy's, ceil((end - start) / step).

    >>> arange(4), arange(1, 2, 0.5)
    (tensor([0., 1., 2., 3.]), tensor([1. , 1.5]))
    """
    if end is None:
        start, end = 0, start
    for name, v in (("start", start), ("end", end), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"arange: {name} must be a real number, got {type(v).__name__}")
    if step == 0:
        raise ValueError("arange: step must not be 0")
    return _leaf(np.arange(start, end, step, dtype=np.float64).astype(resolve_dtype(dtype)), requires_grad)


def _generator(generator) -> np.random.Generator:
    if _recording.active is not None:
        _recording.active.random("a random factory (randn, rand, ...)")
    return as_numpy_generator(generator)


def randn(*size, dtype=None, requires_grad=False, generator=None) -> Tensor:
    """Independent draws from the standard normal distribution N(0, 1).

    >>> _ = manual_seed(0); randn(2, 3).shape
    (2, 3)
    """
    dt = resolve_dtype(dtype)
    return _leaf(_generator(generator).standard_normal(_shape(size, "randn"), dtype=dt), requires_grad)


def rand(*size, dtype=None, requires_grad=False, generator=None) -> Tensor:
    """Independent draws from the uniform distribution on [0, 1).

    >>> rand(2).shape
    (2,)
    """
    dt = resolve_dtype(dtype)
    return _leaf(_generator(generator).random(_shape(size, "rand"), dtype=dt), requires_grad)


def _like(op: str, t, dtype):
    if not isinstance(t, (Tensor, np.ndarray)):
        raise TypeError(f"{op}: expected a tensor or an array, got {type(t).__name__}")
    data = t.data if isinstance(t, Tensor) else t
    if dtype is None and data.dtype in (np.float32, np.float64):
        dtype = data.dtype
    return data.shape, dtype


def zeros_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Zeros of t's shape and dtype (or `dtype`).

    >>> zeros_like(ones(2, dtype="float64")).dtype
    dtype('float64')
    """
    shape, dtype = _like("zeros_like", t, dtype)
    return zeros(shape, dtype=dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Ones of t's shape and dtype (or `dtype`).

    >>> ones_like(zeros(2, 2)).shape
    (2, 2)
    """
    shape, dtype = _like("ones_like", t, dtype)
    return ones(shape, dtype=dtype, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """`fill_value` everywhere, in t's shape and dtype (or `dtype`).

    >>> full_like(zeros(2), 3.0)
    tensor([3., 3.])
    """
    shape, dtype = _like("full_like", t, dtype)
    return full(shape, fill_value, dtype=dtype, requires_grad=requires_grad)


def empty_like(t, dtype=None, requires_grad=False) -> Tensor:
    """An uninitialised tensor of t's shape and dtype (or `dtype`).

    >>> empty_like(zeros(2, 3)).shape
    (2, 3)
    """
    shape, dtype = _like("empty_like", t, dtype)
    return empty(shape, dtype=dtype, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False, generator=None) -> Tensor:
    """Standard normal draws in t's shape and dtype (or `dtype`).

    >>> randn_like(zeros(4)).shape
    (4,)
    """
    shape, dtype = _like("randn_like", t, dtype)
    return randn(shape, dtype=dtype, requires_grad=requires_grad, generator=generator)


def rand_like(t, dtype=None, requires_grad=False, generator=None) -> Tensor:
    """Uniform [0, 1) draws in t's shape and dtype (or `dtype`).

    >>> rand_like(zeros(4)).shape
    (4,)
    """
    shape, dtype = _like("rand_like", t, dtype)
    return rand(shape, dtype=dtype, requires_grad=requires_grad, generator=generator)
