"""Data-parallel scaling on one machine: steps/s of the cifar training step, and its communication share.

    python bench/distributed.py                    # 3 interleaved rounds of 30 timed steps per layout
    python bench/distributed.py --steps 10 --rounds 1 --json bench/distributed.json

Layouts (processes x threads per process): 1x1, 1x2 (one process, BLAS and kernels on two threads)
and 2x1 (two MPI ranks of one thread, fastgrad.distributed). The model is the cifar MLP
3072-512-256-10 (relu), softmax loss, SGD, float32, global batch 256 of synthetic data (a 2x1 rank
computes 128 rows); each layout runs under mpiexec with fastgrad.launch's flags, after 5 untimed
steps. Per step it reports the median wall time over the timed steps (max over ranks), the time in
the gradient Allreduce (waiting for the slower rank included), and the rest ("compute"). Rounds
interleave the layouts; the table shows medians over rounds and the load average before and after.
`bench/projection.py` turns the JSON into the cost-model projection of docs/DISTRIBUTED.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYOUTS = [(1, 1), (1, 2), (2, 1)]
SIZES = [3072, 512, 256, 10]
BATCH = 256


def worker(steps: int, threads: int) -> None:
    """One rank of one layout: time `steps` data-parallel steps and print a JSON line on rank 0."""
    import numpy as np

    import fastgrad as fg
    from fastgrad import distributed as dist

    fg.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    model = fg.nn.MLP(SIZES, seed=0)
    dp = dist.DataParallel(model)
    opt = fg.optim.SGD(model.parameters(), lr=1e-3)

    def loss_fn(a, b):
        return fg.softmax_cross_entropy(model(a), b)

    times, comms = [], []
    for step in range(steps + 5):
        dp.comm.Barrier()  # every step starts together, so a step's time is the slowest rank's
        before = dp.comm_seconds
        t = time.perf_counter()
        opt.zero_grad()
        dp.loss_and_gradients(loss_fn, X, y)
        opt.step()
        elapsed = time.perf_counter() - t
        if step >= 5:
            times.append(elapsed)
            comms.append(dp.comm_seconds - before)
    # the step of the slowest rank, and that rank's communication time
    stats = dp.comm.gather((statistics.median(times), statistics.median(comms)), root=0)
    if dp.rank == 0:
        step_s, comm_s = max(stats)
        print("RESULT " + json.dumps({"step_s": step_s, "comm_s": comm_s}), flush=True)


def run_layout(procs: int, threads: int, steps: int) -> dict:
    from fastgrad import launch

    env = launch.mpi_env(threads=threads)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = launch.mpiexec_command(procs, [sys.executable, __file__, "--worker", str(steps), str(threads)])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise SystemExit(f"layout {procs}x{threads} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    load_before = os.getloadavg()
    results = {f"{n}x{t}": [] for n, t in LAYOUTS}
    for _ in range(args.rounds):
        for n, t in LAYOUTS:
            results[f"{n}x{t}"].append(run_layout(n, t, args.steps))
    load_after = os.getloadavg()
    summary = {}
    for key, runs in results.items():
        step = statistics.median(r["step_s"] for r in runs)
        comm = statistics.median(r["comm_s"] for r in runs)
        summary[key] = {"step_s": step, "comm_s": comm, "compute_s": step - comm, "steps_per_s": 1 / step}
    base = summary["1x1"]["step_s"]
    print(f"cifar MLP {SIZES}, global batch {BATCH}, SGD float32; {args.rounds} rounds x {args.steps} steps; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, {os.cpu_count()} cores\n")
    print("| processes x threads | step (ms) | steps/s | speed-up vs 1x1 | in Allreduce |")
    print("|---|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['step_s'] * 1e3:.2f} | {s['steps_per_s']:.1f} | {base / s['step_s']:.2f}x | "
              f"{s['comm_s'] / s['step_s']:.1%} |")
    if args.json:
        payload = {"sizes": SIZES, "batch": BATCH, "params": sum(a * b + b for a, b in zip(SIZES, SIZES[1:])),
                   "load": [load_before[0], load_after[0]], "layouts": summary, "rounds": results}
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
