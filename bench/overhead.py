"""Per-op overhead of the tape: the lecture neuron, and the cost of one more op in a chain.

    python bench/overhead.py             # 41 interleaved rounds
    python bench/overhead.py --quick     # 11 rounds, fewer calls per round

Everything runs in one process on one thread (`fg.set_num_threads(1)`, torch too), with the
contenders interleaved round by round and each figure the median over rounds, so that the load of a
shared machine hits every contender alike; quote the ratios, and `uptime` with them. As timeit does,
the garbage collector is off inside each timed loop (and run between loops).

1. The sigmoid neuron of CS231n lecture 4 on 0-d values, f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))),
   forward and backward: fastgrad from separate gates (8 ops), fastgrad with the fused sigmoid (6 ops),
   micrograd's `Value` (when installed; its engine has no exp, so `mg_exp` adds one in its style), PyTorch (when importable), and NumPy by hand (the floor).
   Each contender's results are checked against NumPy's before anything is timed.
2. The cost of one more elementwise op: a chain y = x; y = y * c (k times) on 1-element tensors,
   forward and backward, for k = 1, 2, 4, 8, 16, 32; the slope of the median time against k
   (least squares) is the cost per op. fastgrad, micrograd and PyTorch; a unary chain (tanh) too.

Issue 10's targets: the gates neuron no slower than micrograd; one more op <= 1.5 us.
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

try:
    from micrograd.engine import Value
except ImportError:  # optional, like torch
    Value = None
try:
    import torch
except ImportError:
    torch = None

def mg_exp(v):
    """e**v as a micrograd gate, written as micrograd's own ops are (its engine has no exp/tanh)."""
    out = Value(math.exp(v.data), (v,), "exp")

    def _backward():
        v.grad += out.data * out.grad

    out._backward = _backward
    return out


def mg_tanh(v):
    """tanh(v) as a micrograd gate (as in micrograd's lecture version)."""
    t = math.tanh(v.data)
    out = Value(t, (v,), "tanh")

    def _backward():
        v.grad += (1 - t * t) * out.grad

    out._backward = _backward
    return out


NEURON = (2.0, -3.0, -3.0, -1.0, -2.0)  # w0, w1, w2, x0, x1 from the lecture
KS = (1, 2, 4, 8, 16, 32)


def neuron_contenders() -> dict:
    """label -> callable doing forward+backward once and returning (f, dw0, dw1, dw2, dx0, dx1)."""
    out = {}
    leaves = [fg.tensor(v, requires_grad=True) for v in NEURON]

    def fg_gates():
        w0, w1, w2, x0, x1 = leaves
        for t in leaves:
            t.grad = None
        f = 1 / (1 + fg.exp(-(w0 * x0 + w1 * x1 + w2)))
        f.backward()
        return (f.data, *(t.grad for t in leaves))

    def fg_fused():
        w0, w1, w2, x0, x1 = leaves
        for t in leaves:
            t.grad = None
        f = fg.sigmoid(w0 * x0 + w1 * x1 + w2)
        f.backward()
        return (f.data, *(t.grad for t in leaves))

    out["fastgrad gates"] = fg_gates
    out["fastgrad fused sigmoid"] = fg_fused

    if Value is not None:
        def micrograd():
            w0, w1, w2, x0, x1 = vals = [Value(v) for v in NEURON]  # micrograd has no zero_grad
            f = 1 / (1 + mg_exp(-(w0 * x0 + w1 * x1 + w2)))
            f.backward()
            return (f.data, *(v.grad for v in vals))

        out["micrograd"] = micrograd

    if torch is not None:
        tleaves = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in NEURON]

        def torch_gates():
            w0, w1, w2, x0, x1 = tleaves
            for t in tleaves:
                t.grad = None
            f = 1 / (1 + torch.exp(-(w0 * x0 + w1 * x1 + w2)))
            f.backward()
            return (f.detach().numpy(), *(t.grad.numpy() for t in tleaves))

        out["torch gates"] = torch_gates

    a = [np.array(v, dtype=np.float32) for v in NEURON]

    def numpy_by_hand():
        w0, w1, w2, x0, x1 = a
        dot = w0 * x0 + w1 * x1 + w2
        f = 1.0 / (1 + np.exp(-dot))
        ddot = (1 - f) * f
        return f, x0 * ddot, x1 * ddot, ddot, w0 * ddot, w1 * ddot

    out["numpy by hand"] = numpy_by_hand
    return out


def chain_contenders(op: str) -> dict:
    """label -> k -> callable: forward and backward of a k-op chain on a 1-element value."""
    out = {}

    def tensor_chain(x, c):
        """The chain over a library's tensors (fastgrad's and torch's spell it alike)."""
        def chain(k):
            def run():
                x.grad = None
                y = x
                if op == "mul":
                    for _ in range(k):
                        y = y * c
                else:
                    for _ in range(k):
                        y = y.tanh()
                y.backward()
                return x.grad
            return run
        return chain

    out["fastgrad"] = tensor_chain(fg.tensor([0.5], requires_grad=True), fg.tensor([0.99]))

    if Value is not None:
        def mg_chain(k):
            def run():
                xv = Value(0.5)
                y = xv
                if op == "mul":
                    for _ in range(k):
                        y = y * 0.99  # micrograd wraps the constant in a Value, as fastgrad's c
                else:
                    for _ in range(k):
                        y = mg_tanh(y)
                y.backward()
                return xv.grad
            return run

        out["micrograd"] = mg_chain

    if torch is not None:
        out["torch"] = tensor_chain(torch.tensor([0.5], requires_grad=True), torch.tensor([0.99]))
    return out


def check_neuron(contenders: dict) -> None:
    want = [np.asarray(v, dtype=np.float64) for v in contenders["numpy by hand"]()]
    for label, fn in contenders.items():
        got = [np.asarray(v, dtype=np.float64) for v in fn()]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"neuron: {label} disagrees")


def time_rounds(fns: dict, rounds: int, calls: int) -> dict:
    """label -> median over `rounds` of the time per call in microseconds (contenders interleaved)."""
    samples = {label: [] for label in fns}
    for fn in fns.values():  # warm up (first-call costs, caches)
        for _ in range(calls):
            fn()
    for r in range(rounds):
        order = list(fns.items())
        if r % 2:
            order.reverse()  # neither contender always runs right after the other
        for label, fn in order:
            gc.collect()  # as timeit: no collection inside the timed loop (micrograd makes cycles)
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[label].append((time.perf_counter() - t0) / calls * 1e6)
            finally:
                gc.enable()
    return {label: statistics.median(s) for label, s in samples.items()}


def slope(ks, times) -> tuple:
    """Least-squares (intercept, slope) of times against ks."""
    n = len(ks)
    mk, mt = sum(ks) / n, sum(times) / n
    b = sum((k - mk) * (t - mt) for k, t in zip(ks, times)) / sum((k - mk) ** 2 for k in ks)
    return mt - b * mk, b


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="11 rounds and fewer calls")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (11 if args.quick else 41)
    calls = 100 if args.quick else 400

    fg.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"fastgrad tape overhead, one thread, {rounds} interleaved rounds; load average {load:.2f}")
    results = {}

    neuron = neuron_contenders()
    check_neuron(neuron)
    med = time_rounds(neuron, rounds, calls)
    results["neuron"] = med
    base = med.get("micrograd")
    print("\nsigmoid neuron (0-d), forward+backward      us/call   / micrograd")
    for label, t in med.items():
        ratio = f"{t / base:9.2f}x" if base else ""
        print(f"  {label:40s} {t:8.2f} {ratio}")

    for op in ("mul", "tanh"):
        chains = chain_contenders(op)
        fns = {(label, k): make(k) for label, make in chains.items() for k in KS}
        med = time_rounds(fns, rounds, max(calls // 8, 20))
        print(f"\nchain of k '{op}' ops on 1-element values, fwd+bwd (us per call; slope = us per extra op)")
        print("  " + " " * 12 + "".join(f"{'k=' + str(k):>9s}" for k in KS) + "    slope  intercept")
        for label in chains:
            times = [med[(label, k)] for k in KS]
            a, b = slope(KS, times)
            results[f"chain {op} {label}"] = {"slope": b, "intercept": a, "times": times}
            print(f"  {label:12s}" + "".join(f"{t:9.1f}" for t in times) + f" {b:8.2f} {a:10.2f}")
    print_targets(results)
    return results


# the neuron from separate gates before issue 10 (39-55 us, one thread, the same machine)
NEURON_BEFORE_US = (39.0, 55.0)


def print_targets(results: dict) -> None:
    """Issue 10's targets for the tape, each met or missed by the measured amount."""
    print("\nissue 10's targets")
    gates = results["neuron"]["fastgrad gates"]
    mg = results["neuron"].get("micrograd")
    if mg:
        r = gates / mg
        print(f"  neuron (gates) / micrograd {r:.2f} (target <= 1): {'met' if r <= 1 else 'MISSED'}")
    lo, hi = NEURON_BEFORE_US
    print(f"  neuron {gates:.1f} us, {lo / gates:.1f}-{hi / gates:.1f}x faster than the {lo:.0f}-{hi:.0f} us "
          f"before issue 10 (target >= 3x): {'met' if lo / gates >= 3 else 'MISSED'}")
    for op in ("mul", "tanh"):
        b = results[f"chain {op} fastgrad"]["slope"]
        torch_b = results.get(f"chain {op} torch", {}).get("slope")
        vs = f"; PyTorch {torch_b:.2f} us" if torch_b else ""
        print(f"  one more '{op}' {b:.2f} us (target <= 1.5{vs}): {'met' if b <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
