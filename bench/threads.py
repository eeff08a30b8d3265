"""Do fastgrad's default threads ever hurt? Every report case, with and without a competing process.

    python bench/threads.py             # every case of bench/report.py, plus the training CLI
    python bench/threads.py --quick     # fewer, shorter rounds

For each case, fastgrad's contender (and JAX's jitted step for the training steps, when jax is
installed) is timed in passes, each interleaved round by round in one process:

1. Quiet, before the competitor ever runs: "1 thread" (fg.set_num_threads(1)) against "default"
   (OMP_NUM_THREADS, else every core). What a second thread gains on a free machine.
2. With a competitor that comes and goes, four conditions per round:

    1 thread        fg.set_num_threads(1)
    default         fastgrad's default thread count
    1 thread, busy  as "1 thread" while another process spins on a core
    default, busy   as "default" while another process spins on a core

   The competing process is started once and paused (SIGSTOP) in the quiet rounds, so busy and quiet
   rounds alternate every few tens of milliseconds without start-up costs: the hardest case for
   fastgrad's load estimate (csrc/adapt.c), which lags by up to 0.2 s. The order inside each pair
   alternates between rounds, and every condition runs the same number of calls per round
   (calibrated once on one thread, quiet), so no condition is timed on a cold single call.
3. The onset, for the training steps: each round runs the step for 0.6 s with the competitor
   paused, then resumes it and times about 0.2 s of steps at once (one thread vs default): the
   time in which the load estimate still says "free", as for a user whose other job has just
   started.

The issue's target is the "busy: default / 1 thread" column: default threads under load at most
1.2x the one-thread time under the same load. "stalls" counts the team calls that waited for a
core taken since the last estimate (two close together stop every team for a while). Last,
`python -m fastgrad.train` (the README's run) is timed the same four ways, as a whole process.
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
from fastgrad import _kernels, _linalg  # noqa: E402

CONDITIONS = ("1 thread", "default", "1 thread, busy", "default, busy")


def _die_with_parent():
    """In the competitor: be killed when this script dies (a paused orphan would stay forever)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class Competitor:
    """One process spinning on a core, paused and resumed with signals."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_die_with_parent)
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


def stalls():
    return _linalg.adapt_stalls() + _kernels.adapt_stalls()


def measure_quiet(fn, rounds, number, default_threads):
    """Seconds per call on one thread and on the default threads, no competitor running."""
    times = {"1 thread": [], "default": []}
    for r in range(rounds):
        for cond in ("1 thread", "default") if r % 2 == 0 else ("default", "1 thread"):
            fg.set_num_threads(1 if cond == "1 thread" else default_threads)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[cond].append((time.perf_counter() - t0) / number)
    return times


def measure_conditions(fn, rounds, number, competitor, default_threads):
    """Seconds per call in each of CONDITIONS, and the stalls seen in the busy rounds."""
    times = {c: [] for c in CONDITIONS}
    for cond in CONDITIONS:  # warm each condition once
        set_condition(cond, competitor, default_threads)
        fn()
    competitor.pause()
    before = stalls()
    for r in range(rounds):
        quiet, busy = CONDITIONS[:2], CONDITIONS[2:]
        if r % 2:  # which of a pair runs first alternates: the first busy one meets the stale estimate
            quiet, busy = quiet[::-1], busy[::-1]
        for cond in quiet + busy:
            set_condition(cond, competitor, default_threads)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[cond].append((time.perf_counter() - t0) / number)
        competitor.pause()
    return times, stalls() - before


def measure_onset(fn, rounds, number, competitor, default_threads):
    """Seconds per call over `number` calls right after the competitor starts, on one thread and
    on the default threads: each round first runs the calls for 0.6 s with the competitor paused
    (so the load estimate says the cores are free and the call sites have chosen their teams),
    then resumes it and times the calls at once -- a user whose other job has just started."""
    times = {"1 thread": [], "default": []}
    for r in range(rounds):
        for cond in ("1 thread", "default") if r % 2 == 0 else ("default", "1 thread"):
            fg.set_num_threads(1 if cond == "1 thread" else default_threads)
            competitor.pause()
            end = time.perf_counter() + 0.6
            while time.perf_counter() < end:
                fn()
            competitor.proc.send_signal(signal.SIGCONT)  # no settling: the onset is what is timed
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


def ratio(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def row(name, quiet, times, n_stalls):
    med = {c: statistics.median(v) for c, v in times.items()}
    cells = [name, f"{ratio(quiet, 'default', '1 thread'):.2f}",
             *(report.fmt_time(med[c]) for c in CONDITIONS),
             f"{ratio(times, 'default', '1 thread'):.2f}", f"{ratio(times, 'default, busy', '1 thread, busy'):.2f}",
             str(n_stalls)]
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the training command")
    parser.add_argument("--only", default="", help="only the cases whose name contains this text")
    parser.add_argument("--stale-estimate", action="store_true",
                        help="take the other processes' load as 0 throughout (fastgrad's estimate always "
                        "says the cores are free): the worst case of an estimate that lags, where only "
                        "the stall check (csrc/adapt.c) keeps teams off a busy core")
    args = parser.parse_args(argv)
    if args.stale_estimate:
        for module in (_kernels, _linalg):
            module._adapt_force_others(0.0)
    rounds, target = (5, 0.01) if args.quick else (9, 0.04)
    default_threads = fg.get_num_threads()
    print("## default threads with and without a competing busy process (float32)\n")
    print("\n".join(report.machine_lines(default_threads)))
    fns = []  # (row name, fn): fastgrad's contenders, and JAX's step beside each training step
    for case in report.all_cases() + [cases.training_case((64, 100, 10), 32)]:  # + the digits step
        if args.only not in case.name:
            continue
        case.check()
        for label, fn in contenders_of(case).items():
            fns.append((f"{case.name} ({label})", fn))
        if case.group == "one training step":
            sizes = tuple(int(s) for s in case.name.split()[2].split("-"))
            batch = int(case.name.rsplit(" ", 1)[1])
            jax_fn = jax_step_case(sizes, batch)
            if jax_fn is not None:
                fns.append((f"{case.name} (jax jit; threads set for fastgrad only)", jax_fn))
    quiet = {}
    numbers = {}
    for name, fn in fns:  # pass 1: no competitor has run yet
        fg.set_num_threads(1)
        fn()
        numbers[name] = report.calibrate(fn, target)
        fg.set_num_threads(default_threads)
        fn()
        quiet[name] = measure_quiet(fn, rounds, numbers[name], default_threads)
        print(f"  measured {name} (quiet)", file=sys.stderr)
    competitor = Competitor()
    try:
        print(f"- {rounds} interleaved rounds per condition of ~{target * 1e3:.0f} ms (the same calls in "
              "every condition); medians; ratios are medians of same-round ratios; \"no competitor\": "
              "a pass before the competitor first ran"
              + ("; load estimate forced to 0 (--stale-estimate)" if args.stale_estimate else "") + "\n")
        head = ["case", "no competitor: default / 1 thread", *CONDITIONS, "default / 1 thread",
                "busy: default / 1 thread", "stalls"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, fn in fns:  # pass 2: the competitor comes and goes
            times, n_stalls = measure_conditions(fn, rounds, numbers[name], competitor, default_threads)
            lines.append(row(name, quiet[name], times, n_stalls))
            print(f"  measured {name}", file=sys.stderr)
        print("\n".join(lines))
        steps = [(name, fn) for name, fn in fns if name.startswith("SGD step")]
        if steps:
            print("\nRight after the competitor starts (each round: 0.6 s quiet, then the competitor "
                  "resumes and ~0.2 s of calls are timed at once; time per call, medians of same-round ratios)\n")
            print("| onset: case | 1 thread | default | default / 1 thread | stalls |")
            print("|---|---|---|---|---|")
        for name, fn in steps:
            number = max(1, int(numbers[name] * 0.2 / target))  # about 0.2 s on one thread, quiet
            before = stalls()
            times = measure_onset(fn, rounds, number, competitor, default_threads)
            med = {c: statistics.median(v) for c, v in times.items()}
            print(f"| onset: {name} | {report.fmt_time(med['1 thread'])} | {report.fmt_time(med['default'])} | "
                  f"{ratio(times, 'default', '1 thread'):.2f} | {stalls() - before} |")
            print(f"  measured {name} (onset)", file=sys.stderr)
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
