"""Print fastgrad's benchmark table: medians and ratios against the NumPy reference, as markdown.

    python bench/report.py              # the full table (a few minutes on 2 cores)
    python bench/report.py --quick      # fewer, shorter rounds
    python bench/report.py --threads 1  # pin every pool to one thread

Method: every thread pool (both OpenBLAS builds, OpenMP, fastgrad's kernels, torch) is pinned to
--threads (default: fastgrad's default, OMP_NUM_THREADS if set, else all cores); each case first
checks that its contenders' results agree, warms them up and calibrates a repeat count, then times
them interleaved (one batch of calls per contender per round, in a shuffled order, after a short
rest when multi-threaded so that the previous pool's workers stop spinning), and reports medians
over the rounds. A ratio is the median over the rounds of a contender's time over the case
baseline's time in the same round.

OpenBLAS tuning variables (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, ...) are left as the environment
has them; to measure without them, unset them in the shell, e.g.
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/report.py`.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time

import numpy as np
import scipy
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402  (bench/cases.py, next to this script)

import fastgrad as fg  # noqa: E402


def pin_threads(n: int):
    """Pin every pool to n threads; returns the threadpoolctl limiter (keep it alive)."""
    fg.set_num_threads(n)
    if cases.torch is not None:
        cases.torch.set_num_threads(n)
    return threadpool_limits(limits=n)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int) -> list[str]:
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores "
        f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable); "
        f"threads pinned to {threads}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"fastgrad {fg.__version__}"
        + (f", torch {cases.torch.__version__}" if cases.torch is not None else ", torch not installed"),
    ]
    if hasattr(os, "getloadavg"):  # other work on the machine skews every number below
        lines.append("- load average before the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    lines.append(f"- fastgrad kernel threads: {fg.get_num_threads()}")
    for pool in threadpool_info():
        kind = " ".join(str(x) for x in (pool["internal_api"], pool.get("version"), pool.get("architecture")) if x)
        lines.append(f"- {pool['user_api']}: {kind}, {pool['num_threads']} threads "
                     f"({os.path.basename(pool['filepath'])})")
    return lines


# ---------------------------------------------------------------------------------------------
# timing


def calibrate(fn, target: float) -> int:
    """Calls per timed batch so that a batch takes about `target` seconds."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= target or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * target / max(elapsed, 1e-9)))


def measure(case: cases.Case, rounds: int, target: float, pause: float) -> dict[str, list[float]]:
    """Seconds per call of every contender in each round, timed interleaved in a shuffled order.

    `pause` seconds of sleep before each batch let the worker threads of the previous contender's
    pool (OpenBLAS, OpenMP, torch) stop spinning, so that they do not steal the cores from the next.
    """
    case.check()
    labels = list(case.contenders)
    for fn in case.contenders.values():  # warm up caches, allocators, lazy imports
        fn()
    numbers = {}
    for label in labels:
        time.sleep(pause)
        numbers[label] = calibrate(case.contenders[label], target)
    times = {label: [] for label in labels}
    order = random.Random(0)  # a fresh order each round: no contender always runs after the same one
    for _ in range(rounds):
        for label in order.sample(labels, len(labels)):
            fn, number = case.contenders[label], numbers[label]
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[label].append((time.perf_counter() - t0) / number)
    return times


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def table(group: str, rows: list[tuple[cases.Case, dict]]) -> list[str]:
    """One markdown table for a group of cases sharing their contenders and baseline.

    Times are medians over the rounds; a ratio a / b is the median over the rounds of a's time over
    b's time in the same round (paired, so that load changes between rounds cancel out).
    """
    first = rows[0][0]
    labels = list(first.contenders)
    base = first.baseline
    ratios = [(label, base) for label in labels if label != base]
    if base != "reference" and "reference" in labels:
        ratios.insert(1, ("fastgrad", "reference"))
    head = ["case", *labels, *(f"{a} / {b}" for a, b in ratios)]
    out = [f"### {group}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, times in rows:
        cells = [case.name, *(fmt_time(statistics.median(times[label])) for label in labels)]
        cells += [f"{statistics.median(x / y for x, y in zip(times[a], times[b])):.2f}" for a, b in ratios]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def all_cases() -> list[cases.Case]:
    out = [cases.activation_case(name, "1M") for name in cases.ACTIVATIONS]
    out += [cases.maximum_case("1M"), cases.max_case("1M"), cases.maxout_case("1M")]
    for n, c in [(256, 10), (4096, 1000)]:
        out += [cases.softmax_ce_case(n, c), cases.svm_case(n, c)]
    out += [cases.affine_relu_forward_case(size) for size in ("mnist", "cifar")]
    out += [cases.affine_case(size, "relu") for size in ("mnist", "cifar")]
    out += [cases.neuron_case()]
    out += [cases.training_case((784, 256, 128, 10), 128), cases.training_case((3072, 512, 256, 10), 256)]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--threads", type=int, default=fg.get_num_threads(),
                        help="threads for every pool (default: fastgrad's, i.e. OMP_NUM_THREADS or all cores)")
    parser.add_argument("--pause", type=float, default=None,
                        help="seconds of rest before each timed batch (default 0.12 with threads > 1, "
                        "to let other pools' spinning workers sleep; 0 with one thread)")
    args = parser.parse_args(argv)
    rounds, target = (5, 0.01) if args.quick else (11, 0.05)
    pause = args.pause if args.pause is not None else (0.12 if args.threads > 1 else 0.0)

    limiter = pin_threads(args.threads)  # noqa: F841  (the limits last while it lives)
    print("## fastgrad benchmarks (float32)\n")
    print("\n".join(machine_lines(args.threads)))
    print(f"- {rounds} interleaved rounds of ~{target * 1e3:.0f} ms per contender, {pause:g} s rest before "
          "each; times are medians, ratios medians of same-round ratios\n")
    groups: dict[str, list] = {}
    for case in all_cases():
        groups.setdefault(case.group, []).append((case, measure(case, rounds, target, pause)))
        print(f"  measured {case.name}", file=sys.stderr)
    for group, rows in groups.items():
        print("\n".join(table(group, rows)))


if __name__ == "__main__":
    main()
