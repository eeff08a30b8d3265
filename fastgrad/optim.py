"""First-order optimizers: SGD (momentum, weight decay), RMSProp and Adam, as in CS231n's optim.py.

Each optimizer holds the parameter tensors and, per parameter, its state and one scratch buffer, all
allocated once in the constructor. `step()` updates every parameter's `data` in place from its `grad`
using NumPy `out=` arithmetic only, so a training loop allocates nothing in the optimizer and the
tensors (and anything else holding their buffers) see the new values. Parameters whose grad is None
are left alone.

>>> opt = Adam(model.parameters(), lr=1e-3)          # doctest: +SKIP
>>> for X, y in batches:
...     opt.zero_grad()
...     loss = fg.softmax_cross_entropy(model(X), y)
...     loss.backward()
...     opt.step()
"""
from __future__ import annotations

import math

import numpy as np

from .autograd import mark_modified
from .flat import zero_grads
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "RMSProp", "Adam"]


def _check(name: str, value, low: float, high: float = math.inf, low_open=True, high_open=True) -> float:
    """`value` as a float inside the interval, or a ValueError naming the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok or math.isnan(v):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return v


class Optimizer:
    """Base class: holds the parameter list; subclasses implement `_update(i, p, g)`."""

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} of shape {p.shape} does not require grad")
            if p._node is not None:
                raise ValueError(f"{type(self).__name__}: parameter {i} is not a leaf tensor")
        self._scratch = [np.empty_like(p.data) for p in self.params]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient: set it to None, or zero it in place where it lives in
        a flat buffer (`nn.Module.flatten_parameters`)."""
        zero_grads(self.params)

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        self._begin_step()
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if g.shape != p.data.shape or g.dtype != p.data.dtype:
                raise ValueError(
                    f"{type(self).__name__}: parameter {i} has shape {p.shape} ({p.dtype}) but its grad "
                    f"has shape {g.shape} ({g.dtype})"
                )
            self._update(i, p.data, g, self._scratch[i])
            mark_modified(p)  # an in-place change, as in PyTorch: a stale graph's backward raises

    def _begin_step(self) -> None:
        pass

    def _update(self, i: int, w: np.ndarray, dw: np.ndarray, buf: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    With g = dw + weight_decay * w and velocity v (starting at 0):
        v <- momentum * v + g ;  w <- w - lr * v          (momentum > 0)
        w <- w - lr * g                                    (momentum == 0)
    This is PyTorch's SGD; with a constant lr it is CS231n's sgd_momentum (v_cs231n = -lr * v).
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr = _check("lr", lr, 0.0)
        self.momentum = _check("momentum", momentum, 0.0, 1.0, low_open=False)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0, low_open=False)
        self.velocity = [np.zeros_like(p.data) for p in self.params] if self.momentum else None

    def _update(self, i, w, dw, buf):
        g = dw
        if self.weight_decay:
            np.multiply(w, self.weight_decay, out=buf)
            buf += dw
            g = buf
        if self.momentum:
            v = self.velocity[i]
            v *= self.momentum
            v += g
            g = v
        np.multiply(g, self.lr, out=buf)
        w -= buf


class RMSProp(Optimizer):
    """RMSProp (CS231n's rmsprop; eps outside the square root, as PyTorch's RMSprop):
        cache <- decay * cache + (1 - decay) * dw**2 ;  w <- w - lr * dw / (sqrt(cache) + eps)
    """

    def __init__(self, params, lr=1e-2, decay=0.99, eps=1e-8):
        super().__init__(params)
        self.lr = _check("lr", lr, 0.0)
        self.decay = _check("decay", decay, 0.0, 1.0, low_open=False)
        self.eps = _check("eps", eps, 0.0)
        self.cache = [np.zeros_like(p.data) for p in self.params]

    def _update(self, i, w, dw, buf):
        cache = self.cache[i]
        cache *= self.decay
        np.multiply(dw, dw, out=buf)
        buf *= 1.0 - self.decay
        cache += buf
        np.sqrt(cache, out=buf)
        buf += self.eps
        np.divide(dw, buf, out=buf)
        buf *= self.lr
        w -= buf


class Adam(Optimizer):
    """Adam with bias correction (CS231n's adam, PyTorch's Adam). At step t = 1, 2, ...:
        m <- beta1 m + (1 - beta1) dw ;  v <- beta2 v + (1 - beta2) dw**2
        w <- w - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params)
        self.lr = _check("lr", lr, 0.0)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.beta1 = _check("beta1", beta1, 0.0, 1.0, low_open=False)
        self.beta2 = _check("beta2", beta2, 0.0, 1.0, low_open=False)
        self.eps = _check("eps", eps, 0.0)
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def _begin_step(self):
        self.t += 1
        self._step_size = self.lr / (1.0 - self.beta1**self.t)
        self._inv_root_bc2 = 1.0 / math.sqrt(1.0 - self.beta2**self.t)

    def _update(self, i, w, dw, buf):
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        np.multiply(dw, 1.0 - self.beta1, out=buf)
        m += buf
        v *= self.beta2
        np.multiply(dw, dw, out=buf)
        buf *= 1.0 - self.beta2
        v += buf
        np.sqrt(v, out=buf)  # sqrt(v / (1 - beta2**t)) = sqrt(v) / sqrt(1 - beta2**t)
        buf *= self._inv_root_bc2
        buf += self.eps
        np.divide(m, buf, out=buf)
        buf *= self._step_size
        w -= buf
