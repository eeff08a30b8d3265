"""Layers and networks: Module, Linear, the activations, Maxout, Sequential and MLP.

Batches are row-major as in CS231n: an input x has shape (N, D), a Linear layer's weight has shape
(D, M) and its bias (M,), and the layer computes x @ W + b of shape (N, M).

>>> import numpy as np, fastgrad as fg
>>> model = fg.nn.MLP([64, 100, 10], activation="relu", seed=0)
>>> [name for name, _ in model.named_parameters()]
['W1', 'b1', 'W2', 'b2']
>>> scores = model(np.zeros((5, 64)))           # (5, 10)
>>> loss = fg.softmax_cross_entropy(scores, [0, 1, 2, 3, 4]) + model.l2(1e-3)
>>> loss.backward()                              # fills W1.grad, b1.grad, ...
"""
from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import flat as _flat
from . import functional as F
from . import nn_init as init
from . import nn_utils as utils
from .autograd import _recording, no_grad
from .generator import Generator
from .random import default_generator
from .tensor import Tensor, resolve_dtype, to_array

# torch.nn.functional's place: fg.nn.functional and `import fastgrad.nn.functional as F` are
# fastgrad.functional itself (nn is a module, so the import system is told about the alias)
functional = F
sys.modules[__name__ + ".functional"] = F


__all__ = [
    "Module", "Linear", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "Maxout", "Sequential", "MLP",
    "ACTIVATIONS", "affine_activation", "init_weight", "save", "load",
    "Dropout", "BatchNorm1d", "LayerNorm", "CrossEntropyLoss", "MSELoss", "Identity", "Flatten",
    "load_torch_state_dict", "init", "utils", "functional",
]


class Module:
    """Base class of layers and networks.

    Tensors with `requires_grad=True` and Modules assigned as attributes are registered, in assignment
    order, which fixes the order of `parameters()` and the keys of `state_dict()`. Buffers (state that
    is saved but not trained, like BatchNorm's running statistics) are registered with
    `register_buffer`. Subclasses define `forward`; calling a module calls `forward`.

    >>> class Affine(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.W = fastgrad.tensor(np.ones((3, 2)), requires_grad=True)
    ...     def forward(self, x):
    ...         return x @ self.W
    >>> [n for n, _ in Affine().named_parameters()]
    ['W']
    """

    def __init__(self):
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        children = self.__dict__.get("_children")
        if children is None:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        if name in self._buffers:  # assigning to a buffer replaces it (still a buffer)
            value = _as_buffer(name, value)
            self._buffers[name] = value
            object.__setattr__(self, name, value)
            return
        if (isinstance(value, Tensor) and value.requires_grad) or isinstance(value, Module):
            children[name] = value
        else:
            children.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._children.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register state that is not a parameter (no gradient, not optimized) but belongs to the
        module: saved in `state_dict()` (unless persistent=False) and loaded back by
        `load_state_dict`. tensor: a Tensor, an array (float arrays become Tensors; integer ones,
        like a step count, stay arrays) or None. Reachable as an attribute, like PyTorch's.

        >>> class Counter(Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_buffer("total", np.zeros(3))
        >>> list(Counter().state_dict())
        ['total']
        """
        if not isinstance(name, str) or not name.isidentifier() or "." in name:
            raise ValueError(f"register_buffer: the name must be an identifier, got {name!r}")
        if name in self._children:
            raise ValueError(f"register_buffer: {name!r} is already a parameter or submodule")
        value = _as_buffer(name, tensor)
        self._buffers[name] = value
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = ""):
        """Yield (name, buffer) for every buffer that is not None, submodules' as "child.name"."""
        for name, child in self._children.items():
            if isinstance(child, Module):
                yield from child.named_buffers(prefix + name + ".")
        for name, b in self._buffers.items():
            if b is not None:
                yield prefix + name, b

    def buffers(self) -> list:
        """The buffers, in the order of `named_buffers()`."""
        return [b for _, b in self.named_buffers()]

    def children(self) -> list["Module"]:
        """The direct submodules, in registration order."""
        return [c for c in self._children.values() if isinstance(c, Module)]

    def modules(self):
        """Yield this module and every submodule below it, depth first (as PyTorch)."""
        yield self
        for c in self.children():
            yield from c.modules()

    def apply(self, fn) -> "Module":
        """Call fn(module) on every submodule and then on self (as PyTorch); returns self."""
        for c in self.children():
            c.apply(fn)
        fn(self)
        return self

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- parameters --------------------------------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        """Yield (name, tensor) for every parameter, submodules' as "child.name", in a fixed order."""
        for name, child in self._children.items():
            if isinstance(child, Module):
                yield from child.named_parameters(prefix + name + ".")
            else:
                yield prefix + name, child

    def parameters(self) -> list[Tensor]:
        """The parameter tensors, in the order of `named_parameters()`."""
        return [p for _, p in self.named_parameters()]

    def weights(self) -> list[Tensor]:
        """The parameters that L2 regularisation applies to: those with 2 or more dims (not biases)."""
        return [p for p in self.parameters() if p.ndim >= 2]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient: set it to None (the next backward stores a fresh one),
        or, after `flatten_parameters()`, zero it in place (PyTorch's set_to_none=False)."""
        flat = self.__dict__.get("_flat")
        if flat is not None:
            flat.zero_grad()
        else:
            _flat.zero_grads(self.parameters())

    def flatten_parameters(self, tail: int = 0) -> "_flat.FlatBuffers":
        """Move every parameter into one contiguous buffer and every gradient into another.

        Each parameter's `.data` and `.grad` become views into `flat.data` and `flat.grad` (1-D, in
        `parameters()` order); from then on `zero_grad()` zeroes in place and backward accumulates
        into the views. Returns the `fastgrad.flat.FlatBuffers`; calling it again returns the same
        one while every parameter still lives in it. All parameters must share one dtype. tail:
        spare slots after the gradients in `flat.comm` (fastgrad.distributed sends the loss there).

        >>> flat = MLP([4, 8, 3], seed=0).flatten_parameters()
        >>> flat.data.shape
        (67,)
        """
        flat = self.__dict__.get("_flat")
        params = self.parameters()
        if flat is not None and flat.holds(params) and flat.tail.size == tail:
            return flat
        flat = _flat.flatten(params, tail)
        object.__setattr__(self, "_flat", flat)
        return flat

    def l2(self, reg: float) -> Tensor:
        """The L2 penalty 0.5 * reg * sum of W**2 over the weights (biases excluded), as in CS231n.

        Returns a 0-d tensor to add to the data loss; its gradient w.r.t. each weight W is reg * W.
        """
        if reg < 0:
            raise ValueError(f"l2: reg must be >= 0, got {reg}")
        weights = self.weights()
        if not weights:
            raise ValueError(f"l2: {type(self).__name__} has no weights to regularise")
        total = F.sumsq(weights[0])  # (W * W).sum() bit for bit, without the array of squares
        for W in weights[1:]:
            total = total + F.sumsq(W)
        return total * (0.5 * reg)

    # --- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode on this module and its submodules (returns self)."""
        object.__setattr__(self, "training", bool(mode))
        for child in self._children.values():
            if isinstance(child, Module):
                child.train(mode)
        return self

    def eval(self) -> "Module":
        """Set evaluation mode (same as train(False)); returns self."""
        return self.train(False)

    # --- state -------------------------------------------------------------------------------
    def _named_state(self, prefix: str = ""):
        """(name, tensor or array) of every parameter and persistent buffer: per module its own
        parameters and submodules in registration order, then its buffers (PyTorch's order)."""
        for name, child in self._children.items():
            if isinstance(child, Module):
                yield from child._named_state(prefix + name + ".")
            else:
                yield prefix + name, child
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                yield prefix + name, b

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """A copy of every parameter's and persistent buffer's data, keyed by its name.

        >>> list(MLP([4, 8, 3], norm="batch", seed=0).state_dict())[:6]
        ['W1', 'b1', 'gamma1', 'beta1', 'W2', 'b2']
        """
        return OrderedDict((name, _array(p).copy()) for name, p in self._named_state())

    def load_state_dict(self, state) -> None:
        """Copy arrays from `state` (name -> array) into the parameters and buffers, in place.

        Keys must match exactly and every shape must agree; otherwise ValueError names the missing,
        unexpected or mismatched entries and nothing is changed. Values are cast to each parameter's
        dtype. Optimizers holding the parameters keep working, since the buffers are reused.
        """
        params = OrderedDict((k, _StateSlot(v)) for k, v in self._named_state())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            raise ValueError(
                f"load_state_dict: {type(self).__name__} state mismatch: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        arrays = {}
        for name, p in params.items():
            a = np.asarray(state[name])
            if a.shape != p.shape:
                raise ValueError(
                    f"load_state_dict: '{name}' has shape {a.shape} in the state but {p.shape} in "
                    f"the {type(self).__name__}"
                )
            if not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"load_state_dict: '{name}' holds non-numeric data ({a.dtype})")
            arrays[name] = a
        for name, p in params.items():
            np.copyto(p.data, arrays[name], casting="unsafe")


class _StateSlot:
    """A parameter or buffer seen by load_state_dict: its array as `.data`, its shape."""

    __slots__ = ("data", "shape")

    def __init__(self, value):
        self.data = _array(value)
        self.shape = self.data.shape


def _array(value) -> np.ndarray:
    return value.data if isinstance(value, Tensor) else value


def _as_buffer(name: str, value):
    """A buffer value: None, a Tensor not requiring grad, or an integer ndarray."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise ValueError(f"buffer {name!r} may not require grad (make it a parameter instead)")
        return value
    a = np.asarray(value)
    if a.dtype.kind in "iub":
        return np.array(a, order="C")
    return Tensor(a, dtype=a.dtype if a.dtype in (np.float32, np.float64) else None)

    def __repr__(self):
        inner = [f"  ({n}): {repr(c).replace(chr(10), chr(10) + '  ')}"
                 for n, c in self._children.items() if isinstance(c, Module)]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (")" if not inner else "\n" + "\n".join(inner) + "\n)")

    def extra_repr(self) -> str:
        return ""


# ---------------------------------------------------------------------------------------------
# initialisation


def init_weight(fan_in: int, fan_out: int, init="he", rng=None, dtype=None) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix drawn from a zero-mean normal distribution.

    init: "he" (std sqrt(2 / fan_in), for ReLU-family units), "xavier" (Glorot: std
    sqrt(2 / (fan_in + fan_out)), for sigmoid/tanh units), or a number used as the std itself
    (CS231n's `weight_scale`). rng: a numpy Generator (default: fastgrad's generator, which
    `fastgrad.manual_seed` seeds).

    >>> init_weight(4, 3, "he", np.random.default_rng(0)).shape
    (4, 3)
    """
    if isinstance(init, str):
        if init == "he":
            std = math.sqrt(2.0 / fan_in)
        elif init == "xavier":
            std = math.sqrt(2.0 / (fan_in + fan_out))
        else:
            raise ValueError(f"unknown init {init!r}: use 'he', 'xavier' or a number (the std)")
    else:
        std = float(init)
        if not std >= 0:
            raise ValueError(f"init std must be >= 0, got {init}")
    rng = default_generator() if rng is None else rng
    return (rng.standard_normal((fan_in, fan_out)) * std).astype(resolve_dtype(dtype))


def _rng(rng, seed):
    if rng is not None and seed is not None:
        raise ValueError("give rng or seed, not both")
    if rng is not None:
        return rng
    return default_generator() if seed is None else np.random.default_rng(seed)


def _is_count(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1


def _check_features(layer: str, **sizes):
    for name, n in sizes.items():
        if not _is_count(n):
            raise ValueError(f"{layer}: {name} must be a positive integer, got {n!r}")


# ---------------------------------------------------------------------------------------------
# layers


class Linear(Module):
    """A fully connected layer: x (N, in_features) -> x @ weight + bias (N, out_features).

    weight has shape (in_features, out_features), bias (out_features,) and starts at zero.
    init: "he" (default), "xavier" or a std (see `init_weight`); rng/seed make it reproducible;
    dtype: float32 (default) or float64.

    >>> layer = Linear(3, 2, seed=0)
    >>> layer(np.ones((4, 3))).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, bias=True, init="he", rng=None, seed=None, dtype=None):
        super().__init__()
        _check_features("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        W = init_weight(in_features, out_features, init, _rng(rng, seed), dtype)
        self.weight = Tensor(W, dtype=W.dtype, requires_grad=True, name="weight")
        self.bias = Tensor(np.zeros(out_features), dtype=W.dtype, requires_grad=True, name="bias") if bias else None

    def forward(self, x):
        x = _input(x, self.weight)
        if self.bias is None:
            return x @ self.weight
        return F.affine(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Maxout(Module):
    """Maxout units (Goodfellow et al. 2013): x (N, in) -> (N, out), each the max of `pieces` affine maps.

    weight has shape (in_features, out_features * pieces), bias (out_features * pieces,); unit j takes
    the max over columns j*pieces ... j*pieces + pieces - 1 of x @ weight + bias.

    >>> Maxout(3, 2, pieces=2, seed=0)(np.ones((4, 3))).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, pieces=2, init="he", rng=None, seed=None, dtype=None):
        super().__init__()
        _check_features("Maxout", in_features=in_features, out_features=out_features, pieces=pieces)
        self.in_features, self.out_features, self.pieces = int(in_features), int(out_features), int(pieces)
        W = init_weight(in_features, out_features * pieces, init, _rng(rng, seed), dtype)
        self.weight = Tensor(W, dtype=W.dtype, requires_grad=True, name="weight")
        self.bias = Tensor(np.zeros(out_features * pieces), dtype=W.dtype, requires_grad=True, name="bias")

    def forward(self, x):
        return affine_activation(_input(x, self.weight), self.weight, self.bias, "maxout", pieces=self.pieces)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"


class ReLU(Module):
    """max(0, x) elementwise (ReLU'(0) = 0)."""

    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x) elementwise."""

    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """x where x > 0, else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Identity(Module):
    """Returns its input."""

    def forward(self, x):
        return x


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def forward(self, x):
        x = x if isinstance(x, Tensor) else F.as_tensor(x)
        return x.reshape(x.shape[0], -1)


class Dropout(Module):
    """Inverted dropout (CS231n, PyTorch): in training each entry is zeroed with probability p and
    the kept ones are scaled by 1 / (1 - p); in evaluation (`eval()`) it is the identity.

    generator: where the masks come from (a fastgrad.Generator, a numpy Generator, or an int seed);
    default fastgrad's global generator (fastgrad.random, reseeded by fastgrad.manual_seed).

    >>> drop = Dropout(0.5, generator=Generator().manual_seed(0))
    >>> drop.eval()(np.ones(3)).data
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.generator = Generator(generator) if isinstance(generator, (int, np.integer)) else generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm1d(Module):
    """Batch normalisation of (N, num_features) batches (CS231n's batchnorm, PyTorch's BatchNorm1d).

    Training: each feature is normalised by the batch mean and (biased) variance, then scaled by
    `weight` (gamma, ones) and shifted by `bias` (beta, zeros); the buffers running_mean (zeros)
    and running_var (ones) move towards the batch mean and unbiased variance by `momentum`
    (None: a cumulative average over num_batches_tracked). Evaluation: the running statistics
    are used instead. affine=False: no weight and bias. track_running_stats=False: batch
    statistics always, no buffers. The C kernels use CS231n's fast backward formula.

    >>> bn = BatchNorm1d(3)
    >>> [n for n, _ in bn.named_buffers()]
    ['running_mean', 'running_var', 'num_batches_tracked']
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=None):
        super().__init__()
        _check_features("BatchNorm1d", num_features=num_features)
        if not eps > 0:
            raise ValueError(f"BatchNorm1d: eps must be > 0, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm1d: momentum must be in [0, 1] or None, got {momentum}")
        dt = resolve_dtype(dtype)
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats, self._dtype = bool(affine), bool(track_running_stats), dt
        self.weight = Tensor(np.ones(num_features), dtype=dt, requires_grad=True, name="weight") if affine else None
        self.bias = Tensor(np.zeros(num_features), dtype=dt, requires_grad=True, name="bias") if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features), dtype=dt))
            self.register_buffer("running_var", Tensor(np.ones(num_features), dtype=dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        """running_mean <- 0, running_var <- 1, num_batches_tracked <- 0."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        x = _input_dtype(x, self._dtype)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}): expected input (N, {self.num_features}), got {x.shape}")
        batch_stats = self.training or not self.track_running_stats
        if batch_stats and x.shape[0] < 2 and self.training:
            raise ValueError(f"BatchNorm1d: expected more than 1 value per feature when training, got input {x.shape}")
        rm = rv = None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            rm, rv = self.running_mean, self.running_var
            if self.training:
                if _recording.active is not None:  # a replay could not count the batches
                    _recording.active.fail("BatchNorm1d counts its batches in a NumPy buffer "
                                           "(num_batches_tracked)")
                self.num_batches_tracked += 1
                if self.momentum is None:
                    momentum = 1.0 / int(self.num_batches_tracked)
        return F.batch_norm(x, rm if self.training or not batch_stats else None,
                            rv if self.training or not batch_stats else None,
                            self.weight, self.bias, batch_stats, momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016, CS231n's layernorm, PyTorch's LayerNorm): every example
    is normalised over its trailing dims `normalized_shape` by its own mean and variance, then
    scaled by `weight` (ones) and shifted by `bias` (zeros). The same in training and evaluation.

    >>> LayerNorm(4)(np.arange(8.0).reshape(2, 4)).shape
    (2, 4)
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or not all(_is_count(n) for n in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive integers, got {normalized_shape!r}")
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be > 0, got {eps}")
        dt = resolve_dtype(dtype)
        self.normalized_shape, self.eps, self._dtype = tuple(int(n) for n in shape), float(eps), dt
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Tensor(np.ones(shape), dtype=dt, requires_grad=True, name="weight") if elementwise_affine else None
        self.bias = Tensor(np.zeros(shape), dtype=dt, requires_grad=True, name="bias") if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(_input_dtype(x, self._dtype), self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class CrossEntropyLoss(Module):
    """The mean softmax cross-entropy of scores (N, C) against integer labels (N,), as
    torch.nn.CrossEntropyLoss with its defaults (fastgrad.softmax_cross_entropy)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction != "mean":
            raise ValueError(f"CrossEntropyLoss: only reduction='mean' is supported, got {reduction!r}")
        self.reduction = reduction

    def forward(self, scores, labels):
        return F.softmax_cross_entropy(scores, labels)


class MSELoss(Module):
    """Mean (or summed) squared error: mean((input - target)**2), as torch.nn.MSELoss."""

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"MSELoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, input, target):
        input = input if isinstance(input, Tensor) else F.as_tensor(input)
        if tuple(np.shape(_array(target))) != input.shape:
            raise ValueError(f"MSELoss: input has shape {input.shape} but target has shape {np.shape(_array(target))}")
        diff = input - target
        sq = diff * diff
        return sq.mean() if self.reduction == "mean" else sq.sum()


class Sequential(Module):
    """Layers applied in order; parameters are named "<index>.<name>".

    >>> net = Sequential(Linear(4, 8, seed=0), ReLU(), Linear(8, 3, seed=1))
    >>> [n for n, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]


# ---------------------------------------------------------------------------------------------
# the multilayer perceptron

#: activation name -> default weight init of the layers it follows
ACTIVATIONS = {
    "relu": "he",
    "leaky_relu": "he",
    "elu": "he",
    "maxout": "he",
    "sigmoid": "xavier",
    "tanh": "xavier",
}


def affine_activation(x, W, b, activation: str, pieces: int = 2) -> Tensor:
    """act(x @ W + b) for x (N, D), W (D, M), b (M,); "maxout" gives (N, M // pieces).

    The one place where a hidden layer's affine map meets its activation: every activation but
    maxout runs fused into the affine op (one BLAS product and one pass, saving only the output),
    with the default slope and alpha of F.leaky_relu and F.elu.
    """
    if activation == "maxout":
        return F.maxout(F.affine(x, W, b), pieces)
    return F.affine(x, W, b, activation=activation)


def _input(x, like: Tensor) -> Tensor:
    """A batch as a constant tensor of the parameters' dtype (arrays of another dtype are converted)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":  # no copy when it is already right
        data = np.require(x, dtype=like.dtype, requirements="CA")  # C order, aligned, native
        if data is not x and _recording.active is not None:  # fastgrad.capture follows the copy
            _recording.active.converted(x, data)
        return Tensor._wrap(data)
    return Tensor._wrap(to_array(x, like.dtype))  # lists, numbers; TypeError for strings, None, objects


def _input_dtype(x, dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return Tensor._wrap(np.ascontiguousarray(x, dtype=dtype))


_GATES = {
    "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "sigmoid": F.sigmoid, "tanh": F.tanh,
}
NORMS = (None, "batch", "layer")


class MLP(Module):
    """A fully connected network: sizes [D, H1, ..., C] gives len(sizes) - 1 affine layers.

    Every hidden layer computes h = act(h @ W + b); the last layer gives class scores (N, C) with no
    activation. Parameters are W1, b1, W2, b2, ... with Wk of shape (sizes[k-1], sizes[k]) (times
    `pieces` columns for maxout) and bk zeros. activation: one of `ACTIVATIONS` ("relu", "leaky_relu",
    "elu", "maxout", "sigmoid", "tanh"). init defaults to He for the ReLU family and maxout, Xavier
    for sigmoid/tanh, and He for the output layer in both cases; seed/rng make it reproducible.

    norm ("batch" or "layer") and dropout (a probability) make it CS231n's FullyConnectedNet:
    {affine - [batch/layer norm] - activation - [dropout]} x (L - 1) - affine. Each normalised layer
    k adds gammak (ones) and betak (zeros) right after bk, and batch norm the buffers running_meank
    and running_vark (eps, momentum as BatchNorm1d). Dropout masks come from `generator`
    (default fastgrad's global one, see fastgrad.manual_seed); `train()`/`eval()` switch dropout and the statistics.

    >>> net = MLP([2, 100, 3], activation="tanh", seed=0)
    >>> [(n, p.shape) for n, p in net.named_parameters()]
    [('W1', (2, 100)), ('b1', (100,)), ('W2', (100, 3)), ('b2', (3,))]
    >>> [n for n, _ in MLP([2, 5, 3], norm="batch", dropout=0.5, seed=0).named_parameters()]
    ['W1', 'b1', 'gamma1', 'beta1', 'W2', 'b2']
    """

    def __init__(self, sizes, activation="relu", pieces=2, init=None, rng=None, seed=None, dtype=None,
                 dropout=0.0, norm=None, eps=1e-5, momentum=0.1, generator=None):
        super().__init__()
        if norm == "none":
            norm = None
        if norm not in NORMS:
            raise ValueError(f"MLP: norm must be None, 'batch' or 'layer', got {norm!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) or not 0 <= dropout < 1:
            raise ValueError(f"MLP: dropout must be a probability in [0, 1), got {dropout!r}")
        self.norm, self.dropout, self.eps, self.momentum = norm, float(dropout), float(eps), float(momentum)
        self.generator = Generator(generator) if isinstance(generator, (int, np.integer)) else generator
        sizes = list(sizes)
        if len(sizes) < 2 or not all(_is_count(s) for s in sizes):
            raise ValueError(f"MLP: sizes must be at least two positive integers [D, ..., C], got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        _check_features("MLP", pieces=pieces)
        self.sizes, self.activation, self.pieces = [int(s) for s in sizes], activation, int(pieces)
        rng = _rng(rng, seed)
        for k in range(1, len(sizes)):
            last = k == len(sizes) - 1
            width = self.sizes[k] * (self.pieces if activation == "maxout" and not last else 1)
            how = init if init is not None else "he" if last else ACTIVATIONS[activation]
            W = init_weight(self.sizes[k - 1], width, how, rng, dtype)
            setattr(self, f"W{k}", Tensor(W, dtype=W.dtype, requires_grad=True, name=f"W{k}"))
            setattr(self, f"b{k}", Tensor(np.zeros(width), dtype=W.dtype, requires_grad=True, name=f"b{k}"))
            if norm is not None and not last:
                setattr(self, f"gamma{k}", Tensor(np.ones(width), dtype=W.dtype, requires_grad=True, name=f"gamma{k}"))
                setattr(self, f"beta{k}", Tensor(np.zeros(width), dtype=W.dtype, requires_grad=True, name=f"beta{k}"))
                if norm == "batch":
                    self.register_buffer(f"running_mean{k}", Tensor(np.zeros(width), dtype=W.dtype))
                    self.register_buffer(f"running_var{k}", Tensor(np.ones(width), dtype=W.dtype))

    @property
    def config(self) -> dict:
        """What `load` needs to rebuild this network: sizes, activation, pieces, dtype, norm, dropout."""
        return {"sizes": self.sizes, "activation": self.activation, "pieces": self.pieces,
                "dtype": str(self.W1.dtype), "norm": self.norm, "dropout": self.dropout,
                "eps": self.eps, "momentum": self.momentum}

    def forward(self, x):
        """Class scores (N, C) for a batch x (N, D)."""
        n = len(self.sizes) - 1
        h = _input(x, self.W1)
        for k in range(1, n):
            W, b = getattr(self, f"W{k}"), getattr(self, f"b{k}")
            if self.norm is None:
                h = affine_activation(h, W, b, self.activation, self.pieces)
            else:
                h = F.affine(h, W, b)
                gamma, beta = getattr(self, f"gamma{k}"), getattr(self, f"beta{k}")
                if self.norm == "batch":
                    if self.training and h.shape[0] < 2:
                        raise ValueError(f"MLP: batch norm needs more than 1 example when training, got {h.shape[0]}")
                    h = F.batch_norm(h, getattr(self, f"running_mean{k}"), getattr(self, f"running_var{k}"),
                                     gamma, beta, self.training, self.momentum, self.eps)
                else:
                    h = F.layer_norm(h, gamma.shape, gamma, beta, self.eps)
                h = F.maxout(h, self.pieces) if self.activation == "maxout" else _GATES[self.activation](h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training, self.generator)
        return F.affine(h, getattr(self, f"W{n}"), getattr(self, f"b{n}"))

    def extra_repr(self):
        extra = (f", norm={self.norm!r}" if self.norm else "") + (f", dropout={self.dropout}" if self.dropout else "")
        return f"{self.sizes}, activation={self.activation!r}{extra}"


# ---------------------------------------------------------------------------------------------
# files

_CONFIG_KEY = "__config__"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip


class LoadError(ValueError):
    """`load` found a file that is not a whole checkpoint written by `save` (damaged or foreign)."""


__all__ += ["LoadError"]


def save(model: Module, path) -> Path:
    """Write `model`'s parameters (and an MLP's config) to one .npz file; returns the path.

    The file is written atomically (a temporary file in the same folder, flushed, then renamed):
    an error or Ctrl-C while saving leaves any previous file at `path` as it was. The name is used
    as given (no ".npz" is appended).

    >>> save(MLP([4, 8, 3], seed=0), "model.npz")      # doctest: +SKIP
    """
    from ._io import atomic_write

    path = Path(path)
    state = model.state_dict()
    if _CONFIG_KEY in state:
        raise ValueError(f"save: a parameter may not be called {_CONFIG_KEY!r}")
    if isinstance(model, MLP):
        state[_CONFIG_KEY] = np.array(json.dumps(model.config))
    with atomic_write(path, "wb") as f:
        np.savez(f, **state)  # a file object, so NumPy adds no suffix
    return path


def _read_npz(path: Path) -> dict:
    """Every array of the .npz at `path`, or LoadError saying why it cannot be read."""
    with open(path, "rb") as f:
        if f.read(4) not in _ZIP_MAGIC:
            raise LoadError(f"load: {path} is not a checkpoint written by fastgrad.nn.save (not an .npz file)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except Exception as e:  # BadZipFile, zlib.error, EOFError, a bad .npy header, pickled objects, ...
            reason = str(e) or type(e).__name__
            if "allow_pickle" in reason:
                reason = "it holds Python objects (pickles), which fastgrad never loads"
            raise LoadError(f"load: {path} is damaged or not a fastgrad checkpoint: {reason}") from None


def _model_from_config(config, path: Path) -> "MLP":
    """The MLP that `config` (the saved JSON string) describes, or LoadError."""
    try:
        c = json.loads(str(config)) if config.ndim == 0 and config.dtype.kind == "U" else None
        if not isinstance(c, dict):
            raise ValueError("it is not a JSON object")
        return MLP(c["sizes"], activation=c["activation"], pieces=c["pieces"], dtype=c["dtype"], seed=0,
                   norm=c.get("norm"), dropout=c.get("dropout", 0.0), eps=c.get("eps", 1e-5),
                   momentum=c.get("momentum", 0.1))
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError) as e:
        reason = f"missing {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
        raise LoadError(f"load: {path} has a damaged MLP config ({reason})") from None


def load(path, model: Module | None = None) -> Module:
    """Read a .npz written by `save`: into `model` (checked by `load_state_dict`), or, without one,
    into a new MLP built from the saved config. Returns the model.

    Raises FileNotFoundError for a missing file and `LoadError` (a ValueError) naming the file and
    the problem for anything that is not a whole fastgrad checkpoint: truncated, empty or random
    bytes, an .npz without the config (when no model is given), with pickled objects, or with keys
    or shapes that do not fit the model. A failed load leaves `model` unchanged.

    >>> model = load("model.npz")                       # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no such file: {path}")
    if not path.is_file():
        raise LoadError(f"load: {path} is not a file")
    if model is not None and not isinstance(model, Module):
        raise TypeError(f"load: model must be a fastgrad.nn.Module, got {type(model).__name__}")
    state = _read_npz(path)
    config = state.pop(_CONFIG_KEY, None)
    if model is None:
        if config is None:
            raise LoadError(f"load: {path} holds no MLP config; pass the model to load into")
        model = _model_from_config(config, path)
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise LoadError(f"load: {path} does not fit the {type(model).__name__}: {e}") from None
    return model


# ---------------------------------------------------------------------------------------------
# PyTorch state dicts


def _to_numpy(value) -> np.ndarray:
    """A torch tensor (duck-typed: no torch import here), a fastgrad Tensor or an array as ndarray."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _named_modules(module: Module, prefix: str = ""):
    yield prefix.rstrip("."), module
    for name, child in module._children.items():
        if isinstance(child, Module):
            yield from _named_modules(child, prefix + name + ".")


def load_torch_state_dict(model: Module, state) -> Module:
    """Load a PyTorch state_dict (torch tensors or arrays, no torch import needed) into `model`.

    PyTorch's nn.Linear stores weight as (out, in); fastgrad's Linear and MLP as (in, out), as
    CS231n: every Linear weight is transposed on the way in.

    - `model` an MLP: `state` is that of an nn.Sequential of Linear layers with, between them,
      activations, Dropout, and BatchNorm1d or LayerNorm after each hidden Linear (the
      FullyConnectedNet layout): the k-th Linear gives Wk = weight.T and bk, a norm layer after it
      gammak, betak (and running_meank, running_vark); num_batches_tracked is dropped.
    - any other module (e.g. an fg.nn.Sequential built like the torch one): keys must match its
      state_dict; weights of Linear layers are transposed, num_batches_tracked is kept.

    Shapes are checked by `load_state_dict` (nothing changes on a mismatch). Returns `model`.

    >>> load_torch_state_dict(mlp, torch_model.state_dict())          # doctest: +SKIP
    """
    arrays = OrderedDict((k, _to_numpy(v)) for k, v in state.items())
    if not isinstance(model, MLP):
        linear = {name for name, m in _named_modules(model) if isinstance(m, (Linear, Maxout))}
        mapped = OrderedDict()
        for key, a in arrays.items():
            owner, _, leaf = key.rpartition(".")
            mapped[key] = a.T if owner in linear and leaf == "weight" and a.ndim == 2 else a
        model.load_state_dict(mapped)
        return model
    groups = OrderedDict()
    for key, a in arrays.items():
        owner, _, leaf = key.rpartition(".")
        groups.setdefault(owner, {})[leaf] = a
    mapped, k = OrderedDict(), 0
    for owner, g in groups.items():
        w = g.get("weight")
        if w is not None and w.ndim == 2:
            k += 1
            mapped[f"W{k}"] = w.T
            if "bias" in g:
                mapped[f"b{k}"] = g["bias"]
        elif "weight" in g or "running_mean" in g:
            if k == 0:
                raise ValueError(f"load_torch_state_dict: norm layer {owner!r} comes before any Linear layer")
            if "weight" in g:
                mapped[f"gamma{k}"] = g["weight"]
            if "bias" in g:
                mapped[f"beta{k}"] = g["bias"]
            if "running_mean" in g:
                mapped[f"running_mean{k}"] = g["running_mean"]
                mapped[f"running_var{k}"] = g["running_var"]
        else:
            raise ValueError(f"load_torch_state_dict: cannot place the entries {sorted(g)} of {owner!r} in an MLP")
    if k != len(model.sizes) - 1:
        raise ValueError(f"load_torch_state_dict: the state has {k} Linear layers but the MLP has {len(model.sizes) - 1}")
    model.load_state_dict(mapped)
    return model
