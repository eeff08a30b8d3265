"""Do fastgrad's default threads ever hurt? Every report case, with and without a competing process.

    python bench/threads.py             # every case of bench/report.py, plus the training CLI
    python bench/threads.py --quick     # fewer, shorter rounds

For each case, fastgrad's contender (and JAX's jitted step for the training steps, when jax is
installed) is timed in four conditions, interleaved round by round in one process:

    1 thread        fg.set_num_threads(1)
    default         fastgrad's default thread count (OMP_NUM_THREADS, else every core)
    1 thread, busy  as "1 thread" while another process spins on a core
    default, busy   as "default" while another process spins on a core

The competing process is started once by this script and paused (SIGSTOP) in the quiet rounds, so
that the busy and quiet rounds alternate without start-up costs. The issue's target is the last
column: default threads under load at most 1.2x the one-thread time under the same load.
Then `python -m fastgrad.train` (the README's run) is timed the same four ways, as a whole process.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import report  # noqa: E402

import fastgrad as fg  # noqa: E402

CONDITIONS = ("1 thread", "default", "1 thread, busy", "default, busy")


class Competitor:
    """One process spinning on a core, paused and resumed with signals."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self.pause()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)  # let it get onto a core

    def close(self):
        self.proc.kill()
        self.proc.wait()


def jax_step_case(sizes, batch):
    """JAX's jitted SGD step of the same MLP (None when jax is not installed)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    rng = cases._rng(9)
    X = jnp.asarray(rng.standard_normal((batch, sizes[0])).astype(cases.DTYPE))
    y = jnp.asarray(rng.integers(0, sizes[-1], size=batch))
    params = [jnp.asarray(p) for p in cases.init_mlp(sizes)]

    def loss_fn(params):
        h = X
        for i in range(0, len(params) - 2, 2):
            h = jax.nn.relu(h @ params[i] + params[i + 1])
        scores = h @ params[-2] + params[-1]
        return -jnp.mean(jax.nn.log_softmax(scores)[jnp.arange(batch), y])

    @jax.jit
    def step(params):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        return loss, [p - cases.LR * g for p, g in zip(params, grads)]

    state = [params]

    def run():
        loss, state[0] = step(state[0])
        loss.block_until_ready()

    return run


def contenders_of(case):
    """The contenders this bench times: fastgrad's own (the op-table row or the step)."""
    return {label: fn for label, fn in case.contenders.items()
            if label in ("fastgrad", "fastgrad gates", "fastgrad nn")}


def measure_conditions(fn, rounds, target, competitor, default_threads):
    times = {c: [] for c in CONDITIONS}
    numbers = {}
    for cond in CONDITIONS:
        set_condition(cond, competitor, default_threads)
        fn()
        numbers[cond] = report.calibrate(fn, target)
    competitor.pause()
    for _ in range(rounds):
        for cond in CONDITIONS:
            set_condition(cond, competitor, default_threads)
            number = numbers[cond]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[cond].append((time.perf_counter() - t0) / number)
        competitor.pause()
    return times


def set_condition(cond, competitor, default_threads):
    fg.set_num_threads(1 if cond.startswith("1 thread") else default_threads)
    if cond.endswith("busy"):
        competitor.resume()
    else:
        competitor.pause()


def cli_times(rounds, competitor, default_threads):
    """Seconds of `python -m fastgrad.train` (whole process) in each condition."""
    out = {c: [] for c in CONDITIONS}
    with_tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fastgrad-bench-threads")
    for _ in range(rounds):
        for cond in CONDITIONS:
            threads = 1 if cond.startswith("1 thread") else default_threads
            if cond.endswith("busy"):
                competitor.resume()
            else:
                competitor.pause()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fastgrad.train", "--threads", str(threads),
                            "--out", with_tmp], check=True, capture_output=True)
            out[cond].append(time.perf_counter() - t0)
    competitor.pause()
    return out


def row(name, times):
    med = {c: statistics.median(v) for c, v in times.items()}
    ratio_busy = statistics.median(a / b for a, b in zip(times["default, busy"], times["1 thread, busy"]))
    ratio_quiet = statistics.median(a / b for a, b in zip(times["default"], times["1 thread"]))
    cells = [name, *(report.fmt_time(med[c]) for c in CONDITIONS), f"{ratio_quiet:.2f}", f"{ratio_busy:.2f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the training command")
    parser.add_argument("--only", default="", help="only the cases whose name contains this text")
    args = parser.parse_args(argv)
    rounds, target = (5, 0.01) if args.quick else (9, 0.04)
    default_threads = fg.get_num_threads()
    competitor = Competitor()
    try:
        print("## default threads with and without a competing busy process (float32)\n")
        print("\n".join(report.machine_lines(default_threads)))
        print(f"- {rounds} interleaved rounds per condition of ~{target * 1e3:.0f} ms; medians; "
              "ratios are medians of same-round ratios\n")
        head = ["case", *CONDITIONS, "default / 1 thread", "busy: default / 1 thread"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        all_cases = report.all_cases() + [cases.training_case((64, 100, 10), 32)]  # + the digits step
        for case in all_cases:
            if args.only not in case.name:
                continue
            case.check()
            for label, fn in contenders_of(case).items():
                times = measure_conditions(fn, rounds, target, competitor, default_threads)
                lines.append(row(f"{case.name} ({label})", times))
                print(f"  measured {case.name} ({label})", file=sys.stderr)
            if case.group == "one training step":
                sizes = tuple(int(s) for s in case.name.split()[2].split("-"))
                batch = int(case.name.rsplit(" ", 1)[1])
                jax_fn = jax_step_case(sizes, batch)
                if jax_fn is not None:
                    times = measure_conditions(jax_fn, rounds, target, competitor, default_threads)
                    lines.append(row(f"{case.name} (jax jit; threads set for fastgrad only)", times))
        print("\n".join(lines))
        if not args.no_cli:
            times = cli_times(3 if args.quick else 5, competitor, default_threads)
            print("\n`python -m fastgrad.train` (whole process, seconds)\n")
            print("| run | " + " | ".join(CONDITIONS) + " | default / 1 thread | busy: default / 1 thread |")
            print("|" + "---|" * (len(CONDITIONS) + 3))
            med = {c: statistics.median(v) for c, v in times.items()}
            rq = statistics.median(a / b for a, b in zip(times["default"], times["1 thread"]))
            rb = statistics.median(a / b for a, b in zip(times["default, busy"], times["1 thread, busy"]))
            print(f"| digits, 20 epochs | " + " | ".join(f"{med[c]:.2f} s" for c in CONDITIONS)
                  + f" | {rq:.2f} | {rb:.2f} |")
    finally:
        competitor.close()


if __name__ == "__main__":
    main()
