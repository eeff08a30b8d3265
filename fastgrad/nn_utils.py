"""`fastgrad.nn.utils`: gradient clipping, as torch.nn.utils."""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters, fn):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{fn}: parameter {i} is a {type(p).__name__}, not a Tensor")
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> Tensor:
    """Scale the gradients in place so that their joint norm is at most max_norm; return the norm
    before clipping (a 0-d tensor), as PyTorch: every grad is multiplied by
    min(1, max_norm / (total_norm + 1e-6)). norm_type: a p >= 1 or inf.

    >>> W = fastgrad.tensor([3.0, 4.0], requires_grad=True); W.grad = np.array([3.0, 4.0], np.float32)
    >>> clip_grad_norm_([W], 1.0).item(), W.grad            # doctest: +SKIP
    (5.0, array([0.6, 0.8], dtype=float32))
    """
    grads = _grads(parameters, "clip_grad_norm_")
    max_norm, p = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not (p >= 1 or math.isinf(p)):
        raise ValueError(f"clip_grad_norm_: norm_type must be >= 1 or inf, got {norm_type}")
    dtype = grads[0].dtype if grads else np.float32
    if not grads:
        return Tensor._wrap(np.array(0.0, dtype=dtype))
    if math.isinf(p):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif p == 2.0:
        total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g) ** p)) for g in grads) ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of the gradients is {total}")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor._wrap(np.array(total, dtype=dtype))


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient entry into [-clip_value, clip_value], in place."""
    c = float(clip_value)
    if not c >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for g in _grads(parameters, "clip_grad_value_"):
        np.clip(g, -c, c, out=g)
