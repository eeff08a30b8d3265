"""Programs that tests/test_distributed.py runs under mpiexec (one per scenario; argv[1] names it).

Run as `python tests/mpi/worker.py SCENARIO OUT...`; rank 0 writes its results to OUT (atomically).
"""
import dataclasses
import os
import signal
import sys
import time

import numpy as np

import fastgrad as fg
from fastgrad import data as D
from fastgrad import distributed as dist
from fastgrad import train

#: (name, fit keyword arguments, dtype, rows of digits used) — shared with the test (its oracle
#: runs the same configurations in one process without MPI)
CONFIGS = [
    ("adam-b32", dict(optimizer="adam", lr=1e-3, epochs=2, batch_size=32, reg=1e-3), "float32", None),
    ("momentum-b2", dict(optimizer="momentum", lr=1e-2, epochs=1, batch_size=2, reg=1e-3), "float32", 41),
    ("rmsprop-svm-b33", dict(optimizer="rmsprop", lr=1e-3, epochs=1, batch_size=33, loss="svm"), "float64", None),
    ("sgd-b7-decay", dict(optimizer="sgd", lr=0.1, epochs=2, batch_size=7, lr_decay=0.5), "float32", 100),
]


def config_run(name, kwargs, dtype, rows, distributed):
    """Train the config's MLP; returns (per-step losses, {param name: array}, val accuracies)."""
    splits = D.load("digits", seed=0)
    if rows is not None:
        splits = dataclasses.replace(splits, X_train=splits.X_train[:rows], y_train=splits.y_train[:rows])
    model = fg.nn.MLP([64, 32, 10], activation="tanh", seed=1, dtype=dtype)
    h = train.fit(model, splits, seed=3, distributed=distributed, **kwargs)
    return np.array(h.loss), {k: v for k, v in model.state_dict().items()}, np.array(h.val_acc)


def manual_run(distributed):
    """A hand-written loop (Horovod style): each rank back-propagates the mean loss of its equal
    share of a 12-row batch, DataParallel.average_gradients, Adam. Returns the parameters."""
    X, y = D.digits()
    X = X.astype(np.float32)
    model = fg.nn.MLP([64, 16, 10], seed=5)
    dp = distributed(model) if distributed else None
    opt = fg.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(4):
        Xb, yb = X[12 * step:12 * step + 12], y[12 * step:12 * step + 12]
        if dp is not None:
            part = dp.shard(12)
            Xb, yb = Xb[part], yb[part]
        opt.zero_grad()
        fg.softmax_cross_entropy(model(Xb), yb).backward()
        if dp is not None:
            dp.average_gradients()
        opt.step()
    return model.state_dict()


def save(path, arrays):
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def trajectory(out):
    results = {}
    for name, kwargs, dtype, rows in CONFIGS:
        losses, params, val = config_run(name, kwargs, dtype, rows, True)
        results[f"{name}/loss"] = losses
        results[f"{name}/val_acc"] = val
        for k, v in params.items():
            results[f"{name}/{k}"] = v
    for k, v in manual_run(dist.DataParallel).items():
        results[f"manual/{k}"] = v
    # rank r builds its model from seed r: DataParallel must hand every rank rank 0's parameters
    model = fg.nn.MLP([64, 32, 10], seed=dist.rank())
    dist.DataParallel(model)
    oracle = fg.nn.MLP([64, 32, 10], seed=0)
    worst = max(float(np.max(np.abs(p.data - q.data))) for p, q in zip(model.parameters(), oracle.parameters()))
    results["broadcast_max_diff"] = np.array(dist.world().allreduce(worst, op=dist.MPI.MAX))
    if dist.is_root():
        save(out, results)


def _loop(fault):
    """A plain library training loop with a fault injected on rank 1 at step 3."""
    model = fg.nn.MLP([64, 32, 10], seed=0)
    dp = dist.DataParallel(model)
    opt = fg.optim.SGD(model.parameters(), lr=0.1)
    X, y = D.digits()
    X = X.astype(np.float32)
    for step in range(100000):  # long enough that only the fault can end it
        Xb, yb = X[:64], y[:64].copy()
        if step == 3 and dp.rank == 1:
            if fault == "label":
                yb[dp.shard(len(yb))] = 99  # out of range: softmax_cross_entropy raises ValueError on this rank
            elif fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        dp.loss_and_gradients(lambda a, b: fg.softmax_cross_entropy(model(a), b), Xb, yb)
        opt.step()
        time.sleep(0.002)


def cli(patch, argv):
    """python -m fastgrad.train with one rank's data or writes broken."""
    r = dist.rank()
    if patch == "labels" and r == 1:  # rank 1 reads different (corrupt) labels
        load = D.load

        def bad_load(*a, **k):
            s = load(*a, **k)
            s.y_train[5] = 99
            return s
        D.load = bad_load
    elif patch == "missing" and r == 1:  # rank 1 cannot read the data
        def missing(*a, **k):
            raise D.DataError("no such file: /data/on/rank1")
        D.load = missing
    elif patch == "write" and r == 0:  # rank 0's disk is full in the middle of the final save
        def full(f, **arrays):
            f.write(b"half a checkpo")
            raise OSError(28, "No space left on device")
        np.savez = full  # what nn.save writes with, inside its atomic_write
    return train.main(argv)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "trajectory":
        trajectory(sys.argv[2])
    elif scenario in ("label", "kill"):
        _loop(scenario)
    elif scenario == "cli":
        sys.exit(cli(sys.argv[2], sys.argv[3:]))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
