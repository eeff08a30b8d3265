"""Instructions per op of the tape, counted by callgrind: stable where wall time is not.

    python bench/tape_instructions.py           # needs valgrind on PATH; about a minute
    python bench/tape_instructions.py --run neuron 200    # the workload alone (what valgrind runs)

bench/overhead.py times the same workloads; on a shared, loaded machine its microseconds move by 2x
from run to run, while the instruction counts here move by well under 1%. Counted only inside the
timed loop (callgrind's --toggle-collect on the C function that drives it, itertools.starmap), after
50 warm-up calls, with the garbage collector off:

- neuron: the lecture's sigmoid neuron from separate 0-d float32 gates, forward+backward (as
  overhead.py's "fastgrad gates"), and micrograd's (when installed) for comparison;
- chain: one more `y = y * c` on 1-element tensors, forward+backward: (count at k=33 - count at
  k=1) / 32, the slope that overhead.py measures in microseconds.
"""
from __future__ import annotations

import collections
import gc
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workload(what: str):
    """A callable doing one forward+backward of `what` (neuron, micrograd, chain:K)."""
    sys.path.insert(0, ROOT)
    import fastgrad as fg

    fg.set_num_threads(1)
    if what == "neuron":
        leaves = [fg.tensor(v, requires_grad=True) for v in (2.0, -3.0, -3.0, -1.0, -2.0)]

        def run():
            w0, w1, w2, x0, x1 = leaves
            for t in leaves:
                t.grad = None
            f = 1 / (1 + fg.exp(-(w0 * x0 + w1 * x1 + w2)))
            f.backward()
        return run
    if what == "micrograd":
        from micrograd.engine import Value

        def mg_exp(v):
            out = Value(math.exp(v.data), (v,), "exp")

            def _backward():
                v.grad += out.data * out.grad
            out._backward = _backward
            return out

        def run():
            w0, w1, w2, x0, x1 = [Value(v) for v in (2.0, -3.0, -3.0, -1.0, -2.0)]
            f = 1 / (1 + mg_exp(-(w0 * x0 + w1 * x1 + w2)))
            f.backward()
        return run
    k = int(what.split(":")[1])
    x = fg.tensor([0.5], requires_grad=True)
    c = fg.tensor([0.99])

    def run():
        x.grad = None
        y = x
        for _ in range(k):
            y = y * c
        y.backward()
    return run


def count(what: str, n: int) -> int:
    """Instructions callgrind counts inside n calls of the workload."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--toggle-collect=starmap_next",
             f"--callgrind-out-file={os.path.join(tmp, 'cg.out')}",
             sys.executable, os.path.abspath(__file__), "--run", what, str(n)],
            capture_output=True, text=True, check=True)
    m = re.search(r"Collected\s*:\s*([0-9]+)", out.stderr)
    if m is None:
        raise RuntimeError(f"no callgrind summary in:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run = workload(sys.argv[2])
        gc.disable()
        for _ in range(50):
            run()
        collections.deque(itertools.starmap(run, itertools.repeat((), int(sys.argv[3]))), 0)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench/tape_instructions.py needs valgrind on PATH")
    print("instructions (callgrind) per call, counted inside the loop only")
    print(f"  neuron, fastgrad gates, fwd+bwd      {count('neuron', 200) / 200:10.0f}")
    try:
        import micrograd  # noqa: F401
        print(f"  neuron, micrograd, fwd+bwd           {count('micrograd', 200) / 200:10.0f}")
    except ImportError:
        pass
    per_op = (count("chain:33", 100) - count("chain:1", 100)) / (32 * 100)
    print(f"  one more y * c in a chain, fwd+bwd   {per_op:10.0f}")


if __name__ == "__main__":
    main()
