"""The optimizer update as one C pass per parameter (fastgrad._optim) against the NumPy `out=`
sequences it replaced, on the MNIST MLP's parameters (784-256-128-10, float32).

    python bench/optim_pass.py            # 31 interleaved rounds
    python bench/optim_pass.py --quick    # 7 rounds

1. `opt.step()` alone (the gradients set once), for SGD, SGD with momentum, RMSProp and Adam, on
   the MNIST MLP's parameters and on the digits MLP's (64-100-10):
   fg.optim as it is now (C) and a subclass running the old NumPy `_update` (copied below), each on
   its own copy of the same parameters. Before timing, each pair is run three steps from the same
   start and compared bit for bit.
2. The eager MNIST training step (batch 128: zero_grad, forward, softmax loss, backward, step) with
   Adam and with SGD, C updates and NumPy updates; issue 11's target is Adam within 1.05x of SGD.
3. The same step replayed by `fg.capture` (when the package has it), Adam against SGD (the replay
   runs the optimizer's step(), so the C pass), checked against an eager twin first.

One process, one thread (fg.set_num_threads(1)), the contenders interleaved round by round, each
figure the median over rounds, the garbage collector off inside timed loops; the ratios are what to
quote, with the `uptime` load printed before and after.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastgrad as fg  # noqa: E402
from fastgrad import optim  # noqa: E402

SIZES = (784, 256, 128, 10)
DIGITS = (64, 100, 10)  # the small step, where the per-parameter Python cost shows
BATCH = 128


# --- the NumPy updates optim.py ran before the C pass (copied, with their scratch buffers) ----------
class _NumpyScratch:
    _needs_scratch = True

    def _wd_buffer(self, i, group):
        if not group["weight_decay"]:
            return None
        if not hasattr(self, "_wd"):
            self._wd = [np.empty_like(p.data) for p in self.params]
        return self._wd[i]

    @staticmethod
    def _decayed(w, dw, buf, weight_decay):
        if not weight_decay:
            return dw
        np.multiply(w, weight_decay, out=buf)
        buf += dw
        return buf


class NumpySGD(_NumpyScratch, optim.SGD):
    def _update(self, i, w, dw, buf, group, state):
        g = self._decayed(w, dw, self._wd_buffer(i, group), group["weight_decay"])
        momentum = group["momentum"]
        if momentum:
            v = state["momentum_buffer"]
            v *= momentum
            v += g
            g = v
        np.multiply(g, group["lr"], out=buf)
        w -= buf


class NumpyRMSProp(_NumpyScratch, optim.RMSProp):
    def _update(self, i, w, dw, buf, group, state):
        g = self._decayed(w, dw, self._wd_buffer(i, group), group["weight_decay"])
        decay = group["decay"]
        cache = state["square_avg"]
        cache *= decay
        np.multiply(g, g, out=buf)
        buf *= 1.0 - decay
        cache += buf
        np.sqrt(cache, out=buf)
        buf += group["eps"]
        np.divide(g, buf, out=buf)
        buf *= group["lr"]
        w -= buf


class NumpyAdam(_NumpyScratch, optim.Adam):
    def _update(self, i, w, dw, buf, group, state):
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        g = self._decayed(w, dw, self._wd_buffer(i, group), wd)
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        np.multiply(g, 1.0 - beta1, out=buf)
        m += buf
        v *= beta2
        np.multiply(g, g, out=buf)
        buf *= 1.0 - beta2
        v += buf
        np.sqrt(v, out=buf)
        buf /= math.sqrt(1.0 - beta2**t)
        buf += eps
        np.divide(m, buf, out=buf)
        buf *= lr / (1.0 - beta1**t)
        w -= buf


RULES = {  # name: (C class, NumPy class, keyword arguments)
    "SGD": (optim.SGD, NumpySGD, dict(lr=1e-2)),
    "SGD momentum": (optim.SGD, NumpySGD, dict(lr=1e-2, momentum=0.9)),
    "RMSProp": (optim.RMSProp, NumpyRMSProp, dict(lr=1e-3)),
    "Adam": (optim.Adam, NumpyAdam, dict(lr=1e-3)),
}


# --- timing ---------------------------------------------------------------------------------------
def timed(fn, number):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        gc.enable()


def interleaved(contenders: dict, rounds: int, number: int) -> dict:
    for fn in contenders.values():  # warm up
        timed(fn, max(1, number // 4))
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn, number))
    return {name: statistics.median(ts) for name, ts in times.items()}


def uptime() -> str:
    try:
        with open("/proc/loadavg") as f:
            return "load average " + " ".join(f.read().split()[:3])
    except OSError:
        return "load average unknown"


def bits_equal(a, b) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# --- 1. opt.step() alone ---------------------------------------------------------------------------
def mlp_params(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for d, m in zip(sizes[:-1], sizes[1:]):
        out += [(rng.standard_normal((d, m)) * np.sqrt(2.0 / d)).astype(np.float32),
                (rng.standard_normal(m) * 0.1).astype(np.float32)]
    return out


def step_contender(cls, kwargs, start, grads):
    params = [fg.tensor(a.copy(), requires_grad=True) for a in start]
    for p, g in zip(params, grads):
        p.grad = g
    opt = cls(params, **kwargs)
    return opt, params


def step_alone(sizes, rounds, number):
    start = mlp_params(sizes, 0)
    rng = np.random.default_rng(1)
    grads = [(rng.standard_normal(a.shape) * 1e-2).astype(np.float32) for a in start]
    contenders, pairs = {}, []
    for rule, (c_cls, np_cls, kwargs) in RULES.items():
        (c_opt, c_params), (n_opt, n_params) = (step_contender(c_cls, kwargs, start, grads),
                                                step_contender(np_cls, kwargs, start, grads))
        for _ in range(3):
            c_opt.step()
            n_opt.step()
        if not all(bits_equal(a.data, b.data) for a, b in zip(c_params, n_params)):
            raise SystemExit(f"{rule}: the C and NumPy updates differ after 3 steps")
        contenders[f"{rule} C"] = c_opt.step
        contenders[f"{rule} NumPy"] = n_opt.step
        pairs.append(rule)
    med = interleaved(contenders, rounds, number)
    n = sum(a.size for a in start)
    print(f"\n1. opt.step() on the {'-'.join(map(str, sizes))} MLP's {len(start)} parameters ({n} float32), "
          "bit-identical C vs NumPy checked")
    print(f"{'rule':<14} {'C (us)':>9} {'NumPy (us)':>11} {'NumPy / C':>10}")
    for rule in pairs:
        c, p = med[f"{rule} C"], med[f"{rule} NumPy"]
        print(f"{rule:<14} {c * 1e6:9.1f} {p * 1e6:11.1f} {p / c:10.2f}")
    return med


# --- 2. the training step ---------------------------------------------------------------------------
def training_contender(cls, kwargs, X, y):
    model = fg.nn.MLP(list(SIZES), seed=0, dtype="float32")
    opt = cls(model.parameters(), **kwargs)

    def step():
        opt.zero_grad()
        loss = fg.softmax_cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        return loss

    return step, model


def training(rounds, number):
    rng = np.random.default_rng(2)
    X = fg.tensor(rng.standard_normal((BATCH, SIZES[0])).astype(np.float32))
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.intp)
    contenders, models = {}, {}
    for rule in ("SGD", "Adam"):
        c_cls, np_cls, kwargs = RULES[rule]
        for kind, cls in (("C", c_cls), ("NumPy", np_cls)):
            contenders[f"{rule} {kind}"], models[f"{rule} {kind}"] = training_contender(cls, kwargs, X, y)
    for _ in range(2):  # the same losses and parameters, C against NumPy
        losses = {name: float(step().data) for name, step in contenders.items()}
    for rule in ("SGD", "Adam"):
        a, b = models[f"{rule} C"], models[f"{rule} NumPy"]
        if losses[f"{rule} C"] != losses[f"{rule} NumPy"] or not all(
                bits_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters())):
            raise SystemExit(f"training step with {rule}: the C and NumPy updates differ")
    med = interleaved(contenders, rounds, number)
    print(f"\n2. eager training step, MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, 1 thread")
    print(f"{'optimizer':<14} {'C (ms)':>8} {'NumPy (ms)':>11} {'NumPy / C':>10}")
    for rule in ("SGD", "Adam"):
        c, p = med[f"{rule} C"], med[f"{rule} NumPy"]
        print(f"{rule:<14} {c * 1e3:8.3f} {p * 1e3:11.3f} {p / c:10.2f}")
    print(f"Adam / SGD: {med['Adam C'] / med['SGD C']:.3f} with the C pass "
          f"(target <= 1.05), {med['Adam NumPy'] / med['SGD NumPy']:.3f} with the NumPy updates")
    return med


def captured(rounds, number):
    if not hasattr(fg, "capture"):
        print("\n3. fg.capture is not in this version: no replayed step")
        return None
    rng = np.random.default_rng(2)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.intp)
    contenders = {}
    for rule in ("SGD", "Adam"):
        c_cls, _, kwargs = RULES[rule]
        models = []
        for kind in ("replay", "eager"):
            model = fg.nn.MLP(list(SIZES), seed=0, dtype="float32")
            opt = c_cls(model.parameters(), **kwargs)

            def step(X, y, model=model, opt=opt):
                opt.zero_grad()
                loss = fg.softmax_cross_entropy(model(X), y)
                loss.backward()
                opt.step()
                return loss

            models.append(model)
            if kind == "replay":
                replay = fg.capture(step)
            else:
                eager = step
        for _ in range(3):
            a, b = float(replay(X, y).item()), float(eager(X, y).item())
            if a != b:
                raise SystemExit(f"captured step with {rule}: loss {a} differs from the eager {b}")
        if not all(bits_equal(p.data, q.data) for p, q in zip(models[0].parameters(), models[1].parameters())):
            raise SystemExit(f"captured step with {rule}: the parameters differ from the eager step's")
        contenders[rule] = lambda replay=replay: replay(X, y)
    med = interleaved(contenders, rounds, number)
    print(f"\n3. replayed training step (fg.capture), same MLP and batch, 1 thread")
    print(f"SGD {med['SGD'] * 1e3:.3f} ms, Adam {med['Adam'] * 1e3:.3f} ms, Adam / SGD: "
          f"{med['Adam'] / med['SGD']:.3f} (target <= 1.05)")
    return med


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="7 rounds instead of 31")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    rounds = args.rounds or (7 if args.quick else 31)
    fg.set_num_threads(1)
    print(f"fastgrad optimizer pass, {rounds} interleaved rounds, 1 thread; {uptime()}")
    step_alone(SIZES, rounds, number=50)
    step_alone(DIGITS, rounds, number=500)
    training(rounds, number=10)
    captured(rounds, number=10)
    print(f"\n{uptime()} at the end")


if __name__ == "__main__":
    main()
