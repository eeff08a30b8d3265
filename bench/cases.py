"""What the benchmarks time: the contenders of each case, shared by test_bench.py and report.py.

A `Case` holds zero-argument callables, one per contender, each doing the whole job once (e.g. a
kernel's forward and backward) and returning its results as arrays, so that the results can be
checked to agree before anything is timed. Inputs are made once, outside the timed region.

Contenders:
- "fastgrad": a row of the op table (`fastgrad.ops.TABLE`), forward then backward: the C/Cython and
  BLAS kernels without the Tensor wrapper (the Tensor overhead has its own case);
- "reference": the same primitive from `fastgrad.reference` (plain NumPy);
- "torch": PyTorch's forward and autograd backward, when torch is importable;
- for affine+ReLU, "sgemm": a bare `scipy.linalg.blas.sgemm` of the same shape (the same OpenBLAS
  that fastgrad calls), the floor that the fused layer is measured against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.linalg import blas

import fastgrad as fg
from fastgrad import ops
from fastgrad.reference import REFERENCE

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch column is optional
    torch = None

DTYPE = np.float32

# (label, shape) of the elementwise and routing inputs; affine/matmul use (N, D, M)
SIZES = {
    "64x100": (64, 100),
    "mnist": (128, 256),  # the hidden activations of the MNIST MLP layer 784 -> 256, batch 128
    "cifar": (256, 512),  # ... of the CIFAR-10 MLP layer 3072 -> 512, batch 256
    "1M": (1000, 1000),
}
LAYERS = {
    "64x100": (64, 100, 100),
    "mnist": (128, 784, 256),
    "cifar": (256, 3072, 512),
    "1M": (1000, 100, 1000),  # a 1M-element output: the fused bias/activation pass dominates
}
LOSS_SIZES = {"64x100": (64, 100), "mnist": (128, 10), "cifar": (256, 10), "1M": (1000, 1000)}

# the report's tables, one per group of cases
ACTIVATIONS_GROUP = "activations, forward+backward"
ROUTING = "max routing, forward+backward"
LOSSES = "losses, forward+backward"
LAYER = "affine layer, forward+backward"


@dataclass
class Case:
    """One benchmark: contenders (label -> callable returning arrays) and the label ratios refer to."""

    group: str
    name: str
    contenders: dict[str, Callable[[], tuple]]
    baseline: str = "reference"
    # label -> function mapping that contender's results onto the baseline's, for the check only
    adapt: dict[str, Callable[[tuple], tuple]] = field(default_factory=dict)
    rtol: float = 1e-4
    atol: float = 1e-5

    def check(self) -> None:
        """Run every contender once and assert that its results agree with the baseline's."""
        results = {}
        for label, fn in self.contenders.items():
            results[label] = _arrays(self.adapt.get(label, lambda r: r)(fn()))
        want = results[self.baseline]
        for label, got in results.items():
            assert len(got) == len(want), f"{self.name}: {label} returned {len(got)} results"
            for i, (g, w) in enumerate(zip(got, want)):
                scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
                np.testing.assert_allclose(
                    g, w, rtol=self.rtol, atol=self.atol * scale,
                    err_msg=f"{self.name}: result {i} of {label} disagrees with {self.baseline}",
                )


def _arrays(results) -> list:
    return [np.asarray(r.detach().numpy() if torch is not None and isinstance(r, torch.Tensor) else r,
                       dtype=np.float64) for r in results]


# ---------------------------------------------------------------------------------------------
# contenders for one primitive


def fastgrad_row(name, arrays, g, **attrs):
    """Forward and backward of op-table row `name` (every input needing a gradient)."""
    row = ops.TABLE[name]
    if row.takes_needs:
        attrs["needs"] = (True,) * len(arrays)

    def run():
        out, saved = row.forward(*arrays, **attrs)
        return (out, *row.backward(g, *saved)[:len(arrays)])  # the losses' labels (an attr here) get None

    return run


def reference_row(name, arrays, g, **attrs):
    """Forward and backward of `fastgrad.reference`'s `name`."""
    forward, backward = REFERENCE[name]

    def run():
        out, cache = forward(*arrays, **attrs)
        return (out, *backward(g, cache))

    return run


def torch_autograd(fn, arrays, g):
    """fn(*tensors) forward and autograd backward with upstream gradient g (fresh leaves per call)."""
    tg = torch.from_numpy(np.asarray(g))

    def run():
        leaves = [torch.from_numpy(a).requires_grad_() for a in arrays]
        out = fn(*leaves)
        out.backward(tg)
        return (out, *(t.grad for t in leaves))

    return run


def primitive_case(group, name, arrays, g, torch_fn=None, label="", **attrs):
    contenders = {
        "fastgrad": fastgrad_row(name, arrays, g, **attrs),
        "reference": reference_row(name, arrays, g, **attrs),
    }
    if torch is not None and torch_fn is not None:
        contenders["torch"] = torch_autograd(torch_fn, arrays, g)
    return Case(group, f"{name} {label}".strip(), contenders)


# ---------------------------------------------------------------------------------------------
# the cases


def _rng(seed=0):
    return np.random.default_rng(seed)


def _normal(rng, shape):
    return rng.standard_normal(shape).astype(DTYPE)


ACTIVATIONS = {  # op-table name -> (attrs, torch function)
    "relu": ({}, lambda x: torch.relu(x)),
    "leaky_relu": ({"negative_slope": 0.01}, lambda x: F.leaky_relu(x, 0.01)),
    "elu": ({"alpha": 1.0}, lambda x: F.elu(x, 1.0)),
    "sigmoid": ({}, lambda x: torch.sigmoid(x)),
    "tanh": ({}, lambda x: torch.tanh(x)),
}


def activation_case(name, size, group=ACTIVATIONS_GROUP):
    rng = _rng(1)
    shape = SIZES[size]
    attrs, torch_fn = ACTIVATIONS[name]
    return primitive_case(group, name, (_normal(rng, shape),), _normal(rng, shape), torch_fn,
                          label=size, **attrs)


def maximum_case(size):
    rng = _rng(2)
    shape = SIZES[size]
    return primitive_case(ROUTING, "maximum", (_normal(rng, shape), _normal(rng, shape)),
                          _normal(rng, shape), lambda a, b: torch.maximum(a, b), label=size)


def max_case(size):
    rng = _rng(3)
    n, c = SIZES[size]
    return primitive_case(ROUTING, "max", (_normal(rng, (n, c)),), _normal(rng, (n,)),
                          lambda x: x.max(dim=1).values, label=f"axis=1 {size}", axis=1)


def maxout_case(size, pieces=2):
    rng = _rng(4)
    n, c = SIZES[size]
    return primitive_case(ROUTING, "maxout", (_normal(rng, (n, c)),), _normal(rng, (n, c // pieces)),
                          lambda z: z.view(n, -1, pieces).max(dim=2).values,
                          label=f"pieces={pieces} {size}", pieces=pieces)


def _scores(n, c, seed):
    rng = _rng(seed)
    return _normal(rng, (n, c)), rng.integers(0, c, size=n).astype(np.intp)


def softmax_ce_case(n, c, label=None):
    s, y = _scores(n, c, 5)
    ty = torch.from_numpy(y) if torch is not None else None
    return primitive_case(LOSSES, "softmax_cross_entropy", (s,), np.asarray(1.0, DTYPE),
                          lambda t: F.cross_entropy(t, ty), label=label or f"{n}x{c}", labels=y)


def svm_case(n, c, label=None):
    s, y = _scores(n, c, 6)
    ty = torch.from_numpy(y) if torch is not None else None
    # torch's multi_margin_loss averages over the C classes as well: scale it back for the check
    return primitive_case(LOSSES, "svm_loss", (s,), np.asarray(1.0, DTYPE),
                          lambda t: F.multi_margin_loss(t, ty, margin=1.0) * c,
                          label=label or f"{n}x{c}", labels=y, delta=1.0)


def _layer(size, seed=7):
    rng = _rng(seed)
    n, d, m = LAYERS[size]
    return (_normal(rng, (n, d)), (_normal(rng, (d, m)) / np.sqrt(d)).astype(DTYPE),
            _normal(rng, (m,)), _normal(rng, (n, m)))


def affine_case(size, activation=None):
    x, W, b, g = _layer(size)
    torch_fn = None
    if torch is not None:
        act = torch.relu if activation == "relu" else (lambda z: z)
        torch_fn = lambda x, W, b: act(torch.addmm(b, x, W))  # noqa: E731
    attrs = {} if activation is None else {"activation": activation}
    case = primitive_case(LAYER, "affine", (x, W, b), g, torch_fn, **attrs)
    case.name = f"affine{'+' + activation if activation else ''} {size}"
    return case


def matmul_case(size):
    x, W, _, g = _layer(size)
    return primitive_case(LAYER, "matmul", (x, W), g, lambda a, b: a @ b, label=size)


def affine_relu_forward_case(size):
    """Forward only: the fused layer against a bare sgemm of the same shape, NumPy and torch."""
    x, W, b, _ = _layer(size)
    xt, Wt, bt = (fg.tensor(a) for a in (x, W, b))  # the public API, on tensors made once
    contenders = {
        "fastgrad": lambda: (fg.affine(xt, Wt, bt, activation="relu").data,),
        # C^T = W^T x^T in column-major: the transposes are views, so this is one plain sgemm
        "sgemm": lambda: (blas.sgemm(1.0, W.T, x.T).T,),
        "reference": lambda: (REFERENCE["relu"][0](REFERENCE["affine"][0](x, W, b)[0])[0],),
    }
    if torch is not None:
        tx, tW, tb = (torch.from_numpy(a) for a in (x, W, b))

        def torch_forward():
            with torch.no_grad():
                return (torch.relu(torch.addmm(tb, tx, tW)),)

        contenders["torch"] = torch_forward
    n, d, m = LAYERS[size]
    return Case("affine+ReLU forward against a bare sgemm", f"affine+relu forward {size} ({n}x{d} -> {m})",
                contenders, baseline="sgemm", adapt={"sgemm": lambda r: (np.maximum(r[0] + b, 0),)})


def kernel_cases() -> list[tuple[str, Callable[[], Case]]]:
    """(id, factory) of every kernel's forward+backward at every size: the pytest-benchmark matrix.

    Factories, so that the inputs of a case exist only while it runs.
    """
    out = []
    for size in SIZES:
        n, c = LOSS_SIZES[size]
        factories = [(f"{name}-{size}", lambda name=name, size=size: activation_case(name, size))
                     for name in ACTIVATIONS]
        factories += [
            (f"maximum-{size}", lambda size=size: maximum_case(size)),
            (f"max-{size}", lambda size=size: max_case(size)),
            (f"maxout-{size}", lambda size=size: maxout_case(size)),
            (f"softmax_ce-{n}x{c}", lambda n=n, c=c: softmax_ce_case(n, c)),
            (f"svm-{n}x{c}", lambda n=n, c=c: svm_case(n, c)),
            (f"affine-{size}", lambda size=size: affine_case(size)),
            (f"affine_relu-{size}", lambda size=size: affine_case(size, "relu")),
            (f"matmul-{size}", lambda size=size: matmul_case(size)),
        ]
        out += factories
    return out


# ---------------------------------------------------------------------------------------------
# Tensor overhead: the lecture's sigmoid neuron on 0-d tensors


NEURON = (2.0, -3.0, -3.0, -1.0, -2.0)  # w0, w1, w2, x0, x1 from the lecture


def neuron_case() -> Case:
    """f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))) forward and backward, as gates and fused."""
    leaves = [fg.tensor(v, requires_grad=True) for v in NEURON]
    w0, w1, w2, x0, x1 = leaves

    def gates():
        for t in leaves:
            t.grad = None
        f = 1 / (1 + fg.exp(-(w0 * x0 + w1 * x1 + w2)))
        f.backward()
        return (f.data, *(t.grad for t in leaves))

    def fused():
        for t in leaves:
            t.grad = None
        f = fg.sigmoid(w0 * x0 + w1 * x1 + w2)
        f.backward()
        return (f.data, *(t.grad for t in leaves))

    a = [np.array(v, dtype=DTYPE) for v in NEURON]

    def numpy_by_hand():
        # the lecture's staged code: forward, then the chain rule with sigma' = (1 - f) f
        w0, w1, w2, x0, x1 = a
        dot = w0 * x0 + w1 * x1 + w2
        f = 1.0 / (1 + np.exp(-dot))
        ddot = (1 - f) * f
        return f, x0 * ddot, x1 * ddot, ddot, w0 * ddot, w1 * ddot

    return Case("Tensor overhead", "sigmoid neuron (0-d tensors) fwd+bwd",
                {"fastgrad gates": gates, "fastgrad fused sigmoid": fused, "numpy by hand": numpy_by_hand},
                baseline="numpy by hand", rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# one SGD step of a ReLU MLP: the functional API, fg.nn + fg.optim, plain NumPy and torch


LR = 1e-2


def init_mlp(sizes, seed=8):
    rng = _rng(seed)
    params = []
    for d, m in zip(sizes[:-1], sizes[1:]):
        params += [(rng.standard_normal((d, m)) * np.sqrt(2.0 / d)).astype(DTYPE), np.zeros(m, DTYPE)]
    return params


def fastgrad_step(params, X, y):
    """Forward (affine+ReLU layers, a linear last layer, softmax loss), backward, in-place SGD."""
    h = X
    for i in range(0, len(params) - 2, 2):
        h = fg.affine(h, params[i], params[i + 1], activation="relu")
    loss = fg.softmax_cross_entropy(fg.affine(h, params[-2], params[-1]), y)
    loss.backward()
    for p in params:
        p.data -= LR * p.grad
        p.grad = None
    return loss.data


def numpy_loss_grads(params, X, y, reg=0.0):
    """Loss and gradients of the step in plain NumPy, written out by hand (CS231n style).

    reg: the L2 penalty 0.5 * reg * sum of W**2 over the weights (params[0::2]), as `Module.l2`.
    """
    n = X.shape[0]
    hs = [X]
    for i in range(0, len(params) - 2, 2):
        hs.append(np.maximum(hs[-1] @ params[i] + params[i + 1], 0))
    scores = hs[-1] @ params[-2] + params[-1]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), y].mean()
    dz = np.exp(log_probs)
    dz[np.arange(n), y] -= 1
    dz /= n
    grads = [None] * len(params)
    for i in range(len(params) - 2, -1, -2):
        h = hs[i // 2]
        grads[i], grads[i + 1] = h.T @ dz, dz.sum(axis=0)
        if i:
            dz = (dz @ params[i].T) * (h > 0)
    if reg:
        loss = loss + 0.5 * reg * sum(np.sum(W * W) for W in params[0::2])
        for i in range(0, len(params), 2):
            grads[i] += reg * params[i]
    return np.asarray(loss, DTYPE), grads


def numpy_step(params, X, y):
    """The same step in plain NumPy: `numpy_loss_grads`, then in-place SGD."""
    loss, grads = numpy_loss_grads(params, X, y)
    for p, g in zip(params, grads):
        p -= LR * g
    return loss


def torch_step(params, X, y):
    h = X
    for i in range(0, len(params) - 2, 2):
        h = torch.relu(torch.addmm(params[i + 1], h, params[i]))
    loss = F.cross_entropy(torch.addmm(params[-1], h, params[-2]), y)
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= LR * p.grad
            p.grad = None
    return loss.detach()


def nn_contender(sizes, start, X, y, captured=False):
    """The same step through fg.nn.MLP and fg.optim.SGD, from the same initial weights; captured:
    recorded once by fg.capture and replayed."""
    model = fg.nn.MLP(sizes, activation="relu", seed=0)
    params = model.parameters()  # W1, b1, W2, b2, ...: the order of init_mlp
    for p, w in zip(params, start):
        p.data[...] = w
    opt = fg.optim.SGD(params, lr=LR)
    Xt = fg.tensor(X)

    def step():
        opt.zero_grad()
        loss = fg.softmax_cross_entropy(model(Xt), y)
        loss.backward()
        opt.step()
        return loss

    step = fg.capture(step) if captured else step

    def run():
        return (step().data, *(p.data for p in params))

    return run


def training_case(sizes, batch) -> Case:
    """One step per call, each contender on its own copy of the same initial weights.

    The check runs first, so every contender's first step starts from the same weights and the loss
    and updated parameters can be compared; timed calls then keep training (a step costs the same).
    """
    rng = _rng(9)
    X = rng.standard_normal((batch, sizes[0])).astype(DTYPE)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.intp)
    start = init_mlp(sizes)

    def contender(params, step, X, y, unwrap):
        return lambda: (step(params, X, y), *(unwrap(p) for p in params))

    contenders = {
        "fastgrad": contender([fg.tensor(p, requires_grad=True) for p in start], fastgrad_step,
                              fg.tensor(X), y, lambda p: p.data),
        "fastgrad nn": nn_contender(sizes, start, X, y),
        "fastgrad captured": nn_contender(sizes, start, X, y, captured=True),
        "numpy": contender([p.copy() for p in start], numpy_step, X, y, lambda p: p),
    }
    if torch is not None:
        contenders["torch"] = contender([torch.tensor(p, requires_grad=True) for p in start],
                                        torch_step, torch.from_numpy(X), torch.from_numpy(y),
                                        lambda p: p.detach())
    arch = "-".join(map(str, sizes))
    return Case("one training step", f"SGD step {arch} MLP, batch {batch}", contenders, baseline="numpy",
                rtol=1e-4, atol=1e-5)
