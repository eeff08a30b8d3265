"""Flat buffers: every parameter of a model in one contiguous array, every gradient in another.

`flatten(params)` (or `Module.flatten_parameters()`) copies the parameters into one 1-D array and
makes each tensor's `.data` a view into it; it allocates one zeroed 1-D gradient array and makes each
`.grad` a view into that. Afterwards the parameters are *pinned*: `zero_grad()` (of the module or of
an optimizer) zeroes their gradients in place instead of dropping them, and backward accumulates into
the existing `.grad` in place (autograd's rule for a leaf whose `.grad` is set), so the views stay
views and the whole gradient can be used as one buffer: one collective per step
(`fastgrad.distributed`), one fused optimizer pass, one checkpoint write.

Optimizers hold the tensors and read `.data`/`.grad` at each step, so one built before or after the
flattening keeps working (its state is per parameter and is not moved).

>>> model = fastgrad.nn.MLP([4, 8, 3], seed=0)                      # doctest: +SKIP
>>> flat = model.flatten_parameters()
>>> flat.data.shape, flat.grad.shape                                 # 4*8 + 8 + 8*3 + 3
((67,), (67,))
>>> np.shares_memory(model.W1.data, flat.data)
True
"""
from __future__ import annotations

import weakref

import numpy as np

from .autograd import _recording
from .tensor import Tensor

__all__ = ["FlatBuffers", "flatten", "zero_grads", "pinned_grad"]

# id(tensor) -> (weak reference to it, its gradient view in a flat buffer). Keyed by id, not by the
# tensor, so that no hashing or == of tensors is involved; the entry goes when the tensor does.
_pinned: "dict[int, tuple[weakref.ref, np.ndarray]]" = {}


def _pin(p: Tensor, view: np.ndarray) -> None:
    key = id(p)

    def forget(ref, key=key):
        if _pinned.get(key, (None,))[0] is ref:
            del _pinned[key]

    _pinned[key] = (weakref.ref(p, forget), view)


def pinned_grad(p: Tensor):
    """The gradient view of `p` in a flat buffer, or None if `p` is not in one."""
    entry = _pinned.get(id(p))
    return entry[1] if entry is not None and entry[0]() is p else None


class FlatBuffers:
    """The flat parameter and gradient buffers of a list of parameters.

    data: 1-D array holding every parameter, in order; grad: 1-D array of the same size holding
    every gradient. `views[i]` is the (offset, size, shape) of parameter i. `comm` is `grad` followed
    by `tail` extra slots (zero-length tail: the same memory as `grad`), so a caller can send a few
    scalars (a loss) in the same collective as the gradients.
    """

    def __init__(self, params, tail: int = 0):
        params = list(params)
        unique = list({id(p): p for p in params}.values())
        if not unique:
            raise ValueError("flatten: got no parameters")
        for i, p in enumerate(unique):
            if not isinstance(p, Tensor):
                raise TypeError(f"flatten: parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.requires_grad or p._node is not None:
                raise ValueError(f"flatten: parameter {i} of shape {p.shape} is not a leaf that requires grad")
        dtypes = sorted({str(p.dtype) for p in unique})
        if len(dtypes) > 1:
            raise TypeError(f"flatten: parameters of one flat buffer must share a dtype, got {dtypes}")
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise ValueError(f"flatten: tail must be an integer >= 0, got {tail!r}")
        dtype = unique[0].dtype
        total = sum(p.data.size for p in unique)
        self.params = unique
        self.dtype = dtype
        self.size = total
        self.data = np.empty(total, dtype)
        self.comm = np.zeros(total + tail, dtype)
        self.grad = self.comm[:total]
        self.tail = self.comm[total:]
        self.views = []
        self._data_views, self._grad_views = [], []
        offset = 0
        for p in unique:
            n = p.data.size
            d = self.data[offset:offset + n].reshape(p.shape)
            g = self.grad[offset:offset + n].reshape(p.shape)
            d[...] = p.data
            if p.grad is not None:
                g[...] = p.grad
            p.data, p.grad = d, g
            _pin(p, g)
            self.views.append((offset, n, p.shape))
            self._data_views.append(d)
            self._grad_views.append(g)
            offset += n

    def zero_grad(self) -> None:
        """Zero every gradient in place (one pass over the buffer) and re-point `.grad` at the views."""
        if _recording.active is not None:
            _recording.active.zero(self.params)
        self.grad.fill(0)
        for p, g in zip(self.params, self._grad_views):
            if p.grad is not g:
                p.grad = g

    def gather_grads(self) -> None:
        """Make sure every `.grad` is its view of `grad` (cheap identity checks in the usual case).

        A gradient that was replaced (`p.grad = None`, or a new array assigned) is copied back into
        its view (zeros for None), so `grad` always holds the gradient the optimizer will use.
        """
        for p, view in zip(self.params, self._grad_views):
            g = p.grad
            if g is view:
                continue
            if g is None:
                view.fill(0)
            else:
                np.copyto(view, g)
            p.grad = view

    def holds(self, params) -> bool:
        """True if `params` (duplicates aside) are this buffer's parameters, in order, and each
        `.data` is still its view."""
        unique = list({id(p): p for p in params}.values())
        return (len(unique) == len(self.params)
                and all(p is q and p.data is d for p, q, d in zip(unique, self.params, self._data_views)))

    def check(self) -> None:
        """RuntimeError unless every parameter's `.data` is still its view of `data`."""
        for i, (p, d) in enumerate(zip(self.params, self._data_views)):
            if p.data is not d:
                shape = d.shape
                raise RuntimeError(
                    f"flat buffers: parameter {i} (shape {shape}) no longer lives in the flat buffer "
                    "(its .data was replaced); update parameters in place or flatten again"
                )

    def __repr__(self):
        return f"FlatBuffers({len(self.params)} tensors, {self.size} {self.dtype} values)"


def flatten(params, tail: int = 0) -> FlatBuffers:
    """Move `params` (leaf tensors of one dtype) into one flat data and one flat gradient buffer."""
    return FlatBuffers(params, tail)


def zero_grads(params) -> None:
    """Forget the gradients of `params`: a pinned one (in a flat buffer) is zeroed in place, any
    other is set to None (the next backward stores a fresh array)."""
    if _recording.active is not None:
        params = list(params)
        _recording.active.zero(params)
    for p in params:
        view = pinned_grad(p)
        if view is None:
            p.grad = None
        else:
            view.fill(0)
            p.grad = view
