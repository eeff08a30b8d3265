"""`fastgrad.nn.init`: fill a parameter in place, as torch.nn.init does.

Every function writes into `tensor.data` under no_grad and returns the tensor. Fans follow
fastgrad's weight layout (in_features, out_features), the transpose of PyTorch's: for a 2-D
weight fan_in = shape[0] and fan_out = shape[1] (further dims multiply both, as a receptive
field). Draws come from `generator` (a fastgrad.Generator, a numpy Generator or an int seed),
else from fastgrad's global generator (fastgrad.manual_seed).

>>> import fastgrad as fg
>>> W = fg.tensor(np.empty((100, 10)), requires_grad=True)
>>> _ = kaiming_normal_(W, nonlinearity="relu", generator=0)   # std sqrt(2 / 100)
"""
from __future__ import annotations

import math

import numpy as np

from .autograd import no_grad
from .generator import as_numpy_generator
from .tensor import Tensor

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]


def _check(tensor, fn: str) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init.{fn}: expected a fastgrad Tensor, got {type(tensor).__name__}")
    return tensor


def _fans(tensor: Tensor, fn: str) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(
            f"nn.init.{fn}: fan in and fan out cannot be computed for a tensor with fewer than 2 dims "
            f"(shape {tensor.shape})"
        )
    field = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[0] * field, tensor.shape[1] * field


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain of an activation (PyTorch's table): linear/sigmoid 1, tanh 5/3,
    relu sqrt(2), leaky_relu sqrt(2 / (1 + slope**2)) (slope param, default 0.01), selu 3/4."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fill(tensor: Tensor, values) -> Tensor:
    with no_grad():
        np.copyto(tensor.data, values, casting="unsafe")
    return tensor


def uniform_(tensor, a=0.0, b=1.0, generator=None) -> Tensor:
    """Fill with draws from U(a, b)."""
    t = _check(tensor, "uniform_")
    if not b >= a:
        raise ValueError(f"nn.init.uniform_: need a <= b, got a={a}, b={b}")
    return _fill(t, as_numpy_generator(generator).uniform(a, b, size=t.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None) -> Tensor:
    """Fill with draws from N(mean, std**2)."""
    t = _check(tensor, "normal_")
    if not std >= 0:
        raise ValueError(f"nn.init.normal_: std must be >= 0, got {std}")
    return _fill(t, as_numpy_generator(generator).normal(mean, std, size=t.shape))


def constant_(tensor, val) -> Tensor:
    """Fill with `val`."""
    return _fill(_check(tensor, "constant_"), val)


def zeros_(tensor) -> Tensor:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor) -> Tensor:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None) -> Tensor:
    """Glorot: U(-a, a) with a = gain sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_check(tensor, "xavier_uniform_"), "xavier_uniform_")
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor, gain=1.0, generator=None) -> Tensor:
    """Glorot: N(0, std**2) with std = gain sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_check(tensor, "xavier_normal_"), "xavier_normal_")
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity, fn) -> float:
    fan_in, fan_out = _fans(_check(tensor, fn), fn)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"nn.init.{fn}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None) -> Tensor:
    """He: U(-bound, bound) with bound = gain sqrt(3 / fan) (PyTorch's defaults: a=0, fan_in,
    leaky_relu, so gain sqrt(2))."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None) -> Tensor:
    """He: N(0, std**2) with std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_"), generator)
