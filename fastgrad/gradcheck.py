"""Numerical gradient checking: analytic gradients against central differences in float64."""
from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0) -> bool:
    """Check the gradients of `fn(*inputs)` against central differences; True, or raise.

    Every input that requires grad is copied to float64; the output y of fn is reduced to the
    scalar <y, v> with a fixed random v, and for every element x_i of every such input
    (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) is compared with the analytic gradient:
    |analytic - numeric| <= atol + rtol * |numeric| must hold everywhere.

    fn must build its result from its arguments only (constants it creates are float32 unless it
    asks otherwise, and would not mix with the float64 copies).

    >>> x = tensor([1.0, 2.0], requires_grad=True)
    >>> gradcheck(lambda x: (x * x).sum(), [x])
    True
    """
    inputs = list(inputs)
    args = [
        Tensor(t.data, dtype=np.float64, requires_grad=t.requires_grad, name=t.name)
        if isinstance(t, Tensor)
        else t
        for t in inputs
    ]
    checked = [i for i, t in enumerate(args) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")

    out = fn(*args)
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(v)

    def f() -> float:
        with no_grad():  # the perturbed evaluations need no graph
            return float(np.sum(fn(*args).data * v))

    for i in checked:
        x = args[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad
        numeric = np.zeros_like(x.data)
        flat = x.data.reshape(-1)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            plus = f()
            flat[k] = orig - eps
            minus = f()
            flat[k] = orig
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        bad = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if bad.size and bad.max() > 0:
            k = np.unravel_index(np.argmax(bad), bad.shape)
            name = f" '{x.name}'" if x.name else ""
            a, n = float(analytic[k]), float(numeric[k])
            raise GradcheckError(
                f"gradcheck: input {i}{name} of shape {x.shape}: worst element at index "
                f"{tuple(map(int, k))}: analytic gradient {a:.8g} but numeric {n:.8g} "
                f"(|difference| {abs(a - n):.3g} > atol + rtol * |numeric| = {atol + rtol * abs(n):.3g}; "
                f"{int((bad > 0).sum())} of {bad.size} elements fail)"
            )
    return True
