"""First-order optimizers (SGD, RMSProp, Adam, AdamW) and learning-rate schedulers, as in CS231n's
optim.py and with PyTorch's interface: parameter groups, weight decay, state_dict.

Each optimizer holds the parameter tensors and, per parameter, its state, allocated once (in the
constructor or `add_param_group`). `step()` updates every parameter's `data` in place from its
`grad` in one C pass per parameter (fastgrad._optim: the same roundings, bit for bit, as the NumPy
`out=` sequence each rule's formula spells out), so a training loop allocates nothing in the
optimizer and the tensors (and anything else holding their buffers) see the new values.
Parameters whose grad is None are left alone (and their step count does not advance).

Parameter groups: pass a list of dicts, each with 'params' and any hyperparameter to override for
that group (the rest come from the constructor's arguments); `optimizer.param_groups` is that list,
and a scheduler (or you) may change a group's 'lr' between steps. `opt.lr` reads the first group's
lr; setting it sets every group's.

>>> opt = Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)      # doctest: +SKIP
>>> sched = StepLR(opt, step_size=10, gamma=0.5)                    # doctest: +SKIP
>>> for epoch in range(epochs):
...     for X, y in batches:
...         opt.zero_grad()
...         loss = fg.softmax_cross_entropy(model(X), y)
...         loss.backward()
...         opt.step()
...     sched.step()
"""
from __future__ import annotations

import math
import sys

import numpy as np

from . import _optim
from .autograd import _recording, mark_modified
from .flat import zero_grads
from .tensor import Tensor

__all__ = [
    "Optimizer", "SGD", "RMSProp", "RMSprop", "Adam", "AdamW",
    "LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR",
]


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
    """Base class: parameter groups, per-parameter state, step(), state_dict().

    Subclasses give `defaults` (hyperparameter -> value), `_check_group(group)` (validates and
    normalises a group's hyperparameters), `_new_state(p)` (the per-parameter state arrays,
    allocated once) and `_update(i, w, dw, buf, group, state)`; buf is a scratch array like w
    (None when the class sets `_needs_scratch = False`, as the built-in rules, whose C passes need none).
    """

    #: names of the per-parameter state entries that are arrays (saved by state_dict)
    _state_keys: tuple = ()
    #: whether `_update` gets a scratch buffer like the parameter
    _needs_scratch = True

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.params: list[Tensor] = []  # every parameter, in group order
        self.state: list[dict] = []  # per parameter: its state arrays and "step"
        self._scratch: list = []
        self._group_of: list[int] = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or of dicts, not a Tensor")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group: {'params': [...], hyperparameter: value, ...}; missing ones take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)} in a parameter group")
        if not params and not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        seen = {id(p) for p in self.params}
        for j, p in enumerate(params):
            i = len(self.params) + j
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} of shape {p.shape} does not require grad")
            if p._node is not None:
                raise ValueError(f"{type(self).__name__}: parameter {i} is not a leaf tensor")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: parameter {i} appears in more than one place")
            seen.add(id(p))
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check_group(full)
        full["params"] = params
        index = len(self.param_groups)
        self.param_groups.append(full)
        for p in params:
            self.params.append(p)
            self.state.append({"step": 0, **self._new_state(p, full)})
            self._scratch.append(np.empty_like(p.data) if self._needs_scratch else None)
            self._group_of.append(index)

    # --- the lr of the first group, for code written against one group ------------------------
    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        value = _check("lr", value, 0.0)
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient: set it to None (zero it in place where it lives in a
        flat buffer, `nn.Module.flatten_parameters`), or to zeros with set_to_none=False."""
        if set_to_none:
            zero_grads(self.params)
            return
        if _recording.active is not None:
            _recording.active.zero(self.params)
        for p in self.params:
            if p.grad is not None:
                p.grad[...] = 0

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        recorder = _recording.active
        if recorder is not None:  # fastgrad.capture is recording a step
            recorder.step_begin(self)
            try:
                self._step()
            finally:
                recorder.step_end(self)
        else:
            self._step()

    def _step(self) -> None:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    if g.shape != p.data.shape or g.dtype != p.data.dtype:
                        raise ValueError(
                            f"{type(self).__name__}: parameter {i} has shape {p.shape} ({p.dtype}) but its "
                            f"grad has shape {g.shape} ({g.dtype})"
                        )
                    if not (g.flags.c_contiguous and g.flags.aligned):
                        g = np.array(g, order="C")  # e.g. a transposed view left by backward
                    state = self.state[i]
                    state["step"] += 1
                    self._update(i, p.data, g, self._scratch[i], group, state)
                    mark_modified(p)  # an in-place change, as in PyTorch: a stale graph's backward raises
                i += 1

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{'state': {index: {name: array or step count}}, 'param_groups': [{hyperparameters,
        'params': [indices]}]}, as PyTorch; arrays are copies."""
        state = {
            i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
            for i, s in enumerate(self.state)
        }
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state_dict of an optimizer of the same type over parameters of the same shapes.

        Everything is checked before anything changes (ValueError naming the mismatch); arrays are
        copied into the existing buffers, so step() still allocates nothing.
        """
        name = type(self).__name__
        try:
            groups, state = state_dict["param_groups"], state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'") from None
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)
        ):
            raise ValueError(
                f"{name}.load_state_dict: the saved groups have sizes {[len(g['params']) for g in groups]} but "
                f"this optimizer's have {[len(g['params']) for g in self.param_groups]}"
            )
        new_groups = []
        for g, mine in zip(groups, self.param_groups):
            full = {**{k: v for k, v in mine.items() if k != "params"}, **{k: v for k, v in g.items() if k != "params"}}
            unknown = set(full) - set(self.defaults) - {"initial_lr"}
            if unknown:
                raise ValueError(f"{name}.load_state_dict: unknown hyperparameters {sorted(unknown)}")
            self._check_group(full, loading=True)
            new_groups.append(full)
        for i, p in enumerate(self.params):
            saved = state.get(i, state.get(str(i)))
            if saved is None:
                raise ValueError(f"{name}.load_state_dict: no state for parameter {i}")
            for k in self._state_keys:
                mine = self.state[i].get(k)
                if mine is None:
                    continue
                a = saved.get(k)
                if a is None or np.shape(a) != mine.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: parameter {i}: state '{k}' has shape "
                        f"{None if a is None else np.shape(a)}, expected {mine.shape}"
                    )
        for group, full in zip(self.param_groups, new_groups):
            params = group["params"]
            group.clear()
            group.update(full)
            group["params"] = params
        for i in range(len(self.params)):
            saved = state.get(i, state.get(str(i)))
            for k in self._state_keys:
                if self.state[i].get(k) is not None:
                    np.copyto(self.state[i][k], saved[k], casting="unsafe")
            self.state[i]["step"] = int(saved.get("step", 0))

    def _check_group(self, group: dict, loading: bool = False) -> None:
        # a schedule may have brought the lr to 0 (cosine): a saved state may hold it
        group["lr"] = _check("lr", group["lr"], 0.0, low_open=not loading)
        group["weight_decay"] = _check("weight_decay", group.get("weight_decay", 0.0), 0.0, low_open=False)

    def _new_state(self, p: Tensor, group: dict) -> dict:
        return {}

    def _update(self, i, w, dw, buf, group, state) -> None:
        raise NotImplementedError

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            lines += [f"    {key}: {value}" for key, value in group.items() if key != "params"]
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    With g = dw + weight_decay * w and velocity v (starting at 0):
        v <- momentum * v + g ;  w <- w - lr * v          (momentum > 0)
        w <- w - lr * g                                    (momentum == 0)
    This is PyTorch's SGD; with a constant lr it is CS231n's sgd_momentum (v_cs231n = -lr * v).
    """

    _state_keys = ("momentum_buffer",)
    _needs_scratch = False

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _check_group(self, group, loading=False):
        super()._check_group(group, loading)
        group["momentum"] = _check("momentum", group["momentum"], 0.0, 1.0, low_open=False)

    def _new_state(self, p, group):
        return {"momentum_buffer": np.zeros_like(p.data) if group["momentum"] else None}

    @property
    def velocity(self):
        """The momentum buffers v, one per parameter (None without momentum)."""
        return [s["momentum_buffer"] for s in self.state]

    def _update(self, i, w, dw, buf, group, state):
        # NumPy, op by op: g = dw + wd * w (if wd); v *= momentum; v += g; w -= lr * v (or g)
        momentum = group["momentum"]
        if momentum:
            v = state["momentum_buffer"]
            if v is None:  # momentum turned on after construction (a group changed)
                v = state["momentum_buffer"] = np.zeros_like(w)
            _optim.sgd_momentum(w, dw, v, group["lr"], momentum, group["weight_decay"])
        else:
            _optim.sgd(w, dw, group["lr"], group["weight_decay"])


class RMSProp(Optimizer):
    """RMSProp (CS231n's rmsprop; eps outside the square root, as PyTorch's RMSprop with alpha = decay):
        g = dw + weight_decay * w
        cache <- decay * cache + (1 - decay) * g**2 ;  w <- w - lr * g / (sqrt(cache) + eps)
    """

    _state_keys = ("square_avg",)
    _needs_scratch = False

    def __init__(self, params, lr=1e-2, decay=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "decay": decay, "eps": eps, "weight_decay": weight_decay})

    def _check_group(self, group, loading=False):
        super()._check_group(group, loading)
        group["decay"] = _check("decay", group["decay"], 0.0, 1.0, low_open=False)
        group["eps"] = _check("eps", group["eps"], 0.0)

    def _new_state(self, p, group):
        return {"square_avg": np.zeros_like(p.data)}

    @property
    def cache(self):
        """The running averages of the squared gradients, one per parameter."""
        return [s["square_avg"] for s in self.state]

    def _update(self, i, w, dw, buf, group, state):
        # NumPy, op by op: g = dw + wd * w (if wd); cache *= decay; cache += (g * g) * (1.0 - decay);
        # w -= (g / (sqrt(cache) + eps)) * lr
        _optim.rmsprop(w, dw, state["square_avg"], group["lr"], group["decay"], group["eps"],
                       group["weight_decay"])


RMSprop = RMSProp  # PyTorch's spelling


class Adam(Optimizer):
    """Adam with bias correction (CS231n's adam, PyTorch's Adam). With g = dw + weight_decay * w
    (L2 decay, coupled as in PyTorch's Adam), at the parameter's step t = 1, 2, ...:
        m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g**2
        w <- w - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    """

    _state_keys = ("exp_avg", "exp_avg_sq")
    _needs_scratch = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def _check_group(self, group, loading=False):
        super()._check_group(group, loading)
        try:
            beta1, beta2 = group["betas"]
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {group['betas']!r}") from None
        group["betas"] = (_check("beta1", beta1, 0.0, 1.0, low_open=False),
                          _check("beta2", beta2, 0.0, 1.0, low_open=False))
        group["eps"] = _check("eps", group["eps"], 0.0)

    def _new_state(self, p, group):
        return {"exp_avg": np.zeros_like(p.data), "exp_avg_sq": np.zeros_like(p.data)}

    @property
    def m(self):
        """The first-moment estimates, one per parameter."""
        return [s["exp_avg"] for s in self.state]

    @property
    def v(self):
        """The second-moment estimates, one per parameter."""
        return [s["exp_avg_sq"] for s in self.state]

    @property
    def t(self) -> int:
        """The step count of the first parameter (all advance together when all have grads)."""
        return self.state[0]["step"]

    _pass = staticmethod(_optim.adam)

    def _update(self, i, w, dw, buf, group, state):
        # NumPy, op by op, at t = state["step"] (already advanced): g = dw + wd * w (if wd; AdamW
        # instead w *= 1.0 - lr * wd first, and g = dw); m *= beta1; m += g * (1.0 - beta1);
        # v *= beta2; v += (g * g) * (1.0 - beta2); w -= (m / (sqrt(v) / sqrt(1.0 - beta2**t) + eps))
        # * (lr / (1.0 - beta1**t)): the denominator as PyTorch's
        beta1, beta2 = group["betas"]
        self._pass(w, dw, state["exp_avg"], state["exp_avg_sq"], group["lr"], beta1, beta2, group["eps"],
                   group["weight_decay"], state["step"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW, default
    weight_decay=1e-2): w <- w (1 - lr weight_decay), then the Adam step on dw."""

    _pass = staticmethod(_optim.adamw)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------
# learning-rate schedulers (PyTorch's formulas, in their recursive "chainable" form)


class LRScheduler:
    """Base class: sets each group's lr from the epoch count. Call `step()` once per epoch, after
    the optimizer's steps. Construction records each group's 'initial_lr' and counts as epoch 0.
    `get_last_lr()` is the list of the groups' current lrs; `state_dict()` / `load_state_dict()`
    save and restore everything but the optimizer.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a fastgrad optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(f"{type(self).__name__}: param_groups[{i}] has no 'initial_lr' to resume from")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial = True
        self.step()
        self._initial = False

    def get_lr(self) -> list:
        """The groups' lrs for epoch `last_epoch`, from their current values."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set every group's lr."""
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = float(lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list:
        """The lr of every group as last set by this scheduler."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Every attribute but the optimizer (plain numbers and lists)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict of a scheduler of the same type."""
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown entries {sorted(unknown)}")
        self.__dict__.update({k: v for k, v in state.items() if k != "optimizer"})

    def _lrs(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size): multiplied by gamma every step_size epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check("gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch (multiplied by gamma every epoch)."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = _check("gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2 (SGDR without restarts),
    computed recursively from the current lr as PyTorch does (so a changed lr is followed)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if isinstance(T_max, bool) or not isinstance(T_max, (int, np.integer)) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _check("eta_min", eta_min, 0.0, low_open=False)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return self._lrs()
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2 for lr, base in zip(self._lrs(), self.base_lrs)]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._lrs()]


# torch.optim.lr_scheduler.StepLR is spelled fastgrad.optim.lr_scheduler.StepLR too
lr_scheduler = sys.modules[__name__]
