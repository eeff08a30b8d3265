"""One training step of fg.nn.MLP + fg.optim against its peers, its GEMM floor and the FLOP bound.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step.py            # 1 and 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step.py --quick    # few, short rounds
    python bench/step.py --busy          # beside one competing busy process (a Python spin loop)
    python bench/step.py --only mnist    # the shapes whose name contains this text

The issue "A captured training step" (issue 11): the step is a ReLU MLP, softmax cross-entropy plus
`model.l2(REG)`, float32, on the shapes digits 64-100-10 (batch 32), mnist 784-256-128-10 (batch 128)
and cifar 3072-512-256-10 (batch 256); `--reg 0` leaves the penalty out (the issue's first table was
measured without it; on the eager step it costs about 1.8x on digits, 1.3x on mnist). Columns, each
one whole step per call:

- fastgrad eager SGD / Adam: `fg.nn.MLP` + `fg.optim`, the step written as in the README;
- fastgrad captured SGD / Adam: the same function under `fastgrad.capture` ("n/a" while fastgrad has
  no `capture`); the first call records, the timed calls replay (`step.last_reason` is printed if a
  call ran eagerly);
- NumPy SGD / Adam: the step written out by hand (`cases.numpy_loss_grads`), in-place updates;
- PyTorch SGD / Adam: eager autograd and `torch.optim` (when torch is importable);
- JAX jit SGD / Adam: `jax.value_and_grad` and the update in `jax.numpy`, the whole step jitted with
  the parameters and optimizer state donated; each step blocks on its loss (when jax is importable);
- GEMM floor: the step's matrix products alone (forward X @ W per layer; backward X^T @ dZ per layer
  and dZ @ W^T for every layer but the first) through scipy's OpenBLAS `sgemm` -- the BLAS fastgrad
  calls -- into preallocated outputs, each row-major product computed as its column-major transpose;
- FLOP bound (not timed): 2 x the step's multiply-adds over the peak sgemm rate, measured here on a
  large square product with the same thread count (the best of a few runs).

Method. Each thread count runs in its own subprocess (`--threads N`, internal), because XLA reads its
thread flags when jax is imported: fastgrad.set_num_threads(N), threadpoolctl (NumPy's and SciPy's
OpenBLAS, OpenMP), torch.set_num_threads(N), XLA_FLAGS (intra_op_parallelism_threads=N). Every
contender starts from the same weights and cycles through the same four mini-batches; before timing,
the losses of its first three steps and its parameters after them are compared with the NumPy
reference (a contender that disagrees is reported WRONG and not timed). Then warm-up, a calibrated
number of steps per batch, and interleaved rounds in a shuffled order (the first round dropped, a
short rest before each batch when multi-threaded so that the previous pool's workers stop spinning);
times are medians over the rounds, a ratio a / b the median of same-round ratios.

Per-step allocations (fastgrad and NumPy), after the timing: tracemalloc started just before one
steady-state step and read just after it gives the blocks (and bytes) allocated during the step that
are still alive at its end, and the step's peak of traced bytes (which includes what it allocated
and freed again); minor page faults are the `resource.getrusage` ru_minflt delta over many steps.
NumPy array data allocations are counted exactly by a counting NumPy memory handler. Small Python
objects that CPython keeps on its free lists stay traced, so a few "blocks alive after" of tens of
bytes are objects the step made (e.g. tuples), not a leak; any of them makes the peak non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402  (bench/cases.py, next to this script)
import report  # noqa: E402

import fastgrad as fg  # noqa: E402
from fastgrad import _linalg as fg_linalg  # noqa: E402

torch = cases.torch
DTYPE = np.float32
SHAPES = [("digits", (64, 100, 10), 32), ("mnist", (784, 256, 128, 10), 128),
          ("cifar", (3072, 512, 256, 10), 256)]
LR = {"SGD": 1e-2, "Adam": 1e-3}
BETAS, EPS = (0.9, 0.999), 1e-8  # fg.optim.Adam's and torch.optim.Adam's defaults
REG = 1e-3
BATCHES = 4  # mini-batches each contender cycles through
CHECK_STEPS = 3
COLUMNS = ["fastgrad eager SGD", "fastgrad eager Adam", "fastgrad captured SGD", "fastgrad captured Adam",
           "NumPy SGD", "NumPy Adam", "PyTorch SGD", "PyTorch Adam", "JAX jit SGD", "JAX jit Adam",
           "GEMM floor"]
ALLOC_COLUMNS = COLUMNS[:5]
TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass
class Contender:
    run: Callable[[], object]  # one step; returns its loss in the contender's own type
    loss: Callable[[object], float] = float
    params: Callable[[], list] = list
    step: object = None  # the captured step (for last_reason)
    status: str = ""  # "" when it runs; else what to print instead of a time ("n/a", "WRONG", "error")
    eager_reason: str = ""  # a captured step's last_reason after the timed calls, if it ran eagerly
    notes: list = field(default_factory=list)


def _cycle(items):
    return itertools.cycle(items).__next__


def problem(sizes, batch):
    """The shared inputs: BATCHES (X, y) mini-batches and the initial weights W1, b1, W2, b2, ..."""
    rng = cases._rng(9)
    batches = [(rng.standard_normal((batch, sizes[0])).astype(DTYPE),
                rng.integers(0, sizes[-1], size=batch).astype(np.intp)) for _ in range(BATCHES)]
    return batches, cases.init_mlp(sizes)


# ---------------------------------------------------------------------------------------------
# the contenders


def fastgrad_contender(sizes, start, batches, opt_name, captured):
    if captured and not hasattr(fg, "capture"):
        return Contender(None, status="n/a")
    model = fg.nn.MLP(sizes, activation="relu", seed=0, dtype=DTYPE)
    params = model.parameters()  # W1, b1, W2, b2, ...: the order of cases.init_mlp
    for p, w in zip(params, start):
        p.data[...] = w
    opt = (fg.optim.SGD(params, lr=LR["SGD"]) if opt_name == "SGD"
           else fg.optim.Adam(params, lr=LR["Adam"], betas=BETAS, eps=EPS))

    def train_step(X, y):
        opt.zero_grad()
        loss = fg.softmax_cross_entropy(model(X), y)
        if REG:  # read at each call (--reg 0: no penalty, as in bench/cases.py's training step)
            loss = loss + model.l2(REG)
        loss.backward()
        opt.step()
        return loss

    step = fg.capture(train_step) if captured else train_step
    nxt = _cycle([(fg.tensor(X), y) for X, y in batches])
    return Contender(lambda: step(*nxt()), lambda loss: float(loss.item()),
                     lambda: [p.data for p in params], step if captured else None)


def numpy_contender(sizes, start, batches, opt_name):
    params = [w.copy() for w in start]
    nxt = _cycle(batches)
    lr = LR[opt_name]
    if opt_name == "SGD":
        def run():
            loss, grads = cases.numpy_loss_grads(params, *nxt(), reg=REG)
            for p, g in zip(params, grads):
                p -= lr * g
            return loss
    else:
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        t = [0]

        def run():  # CS231n's adam, with PyTorch's denominator sqrt(v) / sqrt(1 - beta2**t) + eps
            loss, grads = cases.numpy_loss_grads(params, *nxt(), reg=REG)
            t[0] += 1
            b1, b2 = BETAS
            step_size, root = lr / (1 - b1 ** t[0]), math.sqrt(1 - b2 ** t[0])
            for p, g, mi, vi in zip(params, grads, m, v):
                mi *= b1
                mi += (1 - b1) * g
                vi *= b2
                vi += (1 - b2) * (g * g)
                p -= step_size * mi / (np.sqrt(vi) / root + EPS)
            return loss
    return Contender(run, float, lambda: params)


def torch_contender(sizes, start, batches, opt_name):
    if torch is None:
        return Contender(None, status="n/a")
    F = cases.F
    params = [torch.tensor(w, requires_grad=True) for w in start]
    opt = (torch.optim.SGD(params, lr=LR["SGD"]) if opt_name == "SGD"
           else torch.optim.Adam(params, lr=LR["Adam"], betas=BETAS, eps=EPS))
    nxt = _cycle([(torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))) for X, y in batches])

    def run():
        X, y = nxt()
        opt.zero_grad()
        h = X
        for i in range(0, len(params) - 2, 2):
            h = torch.relu(torch.addmm(params[i + 1], h, params[i]))
        loss = F.cross_entropy(torch.addmm(params[-1], h, params[-2]), y)
        if REG:
            loss = loss + 0.5 * REG * sum((W * W).sum() for W in params[0::2])
        loss.backward()
        opt.step()
        return loss

    return Contender(run, lambda loss: float(loss.item()), lambda: [p.detach().numpy() for p in params])


def jax_contender(sizes, start, batches, opt_name):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return Contender(None, status="n/a")
    lr = LR[opt_name]

    def loss_fn(params, X, y):
        h = X
        for i in range(0, len(params) - 2, 2):
            h = jax.nn.relu(h @ params[i] + params[i + 1])
        log_probs = jax.nn.log_softmax(h @ params[-2] + params[-1])
        data = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
        return data + 0.5 * REG * sum(jnp.sum(W * W) for W in params[0::2]) if REG else data

    nxt = _cycle([(jnp.asarray(X), jnp.asarray(y.astype(np.int32))) for X, y in batches])
    params = [jnp.array(w, copy=True) for w in start]  # copies: the donated buffers are not `start`
    if opt_name == "SGD":
        def sgd(params, X, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
            return loss, [p - lr * g for p, g in zip(params, grads)]

        step = jax.jit(sgd, donate_argnums=0)
        state = [params]

        def run():
            loss, state[0] = step(state[0], *nxt())
            return loss.block_until_ready()
    else:
        def adam(params, m, v, t, X, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
            b1, b2 = BETAS
            t = t + 1
            m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
            v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
            step_size, root = lr / (1 - b1 ** t), jnp.sqrt(1 - b2 ** t)
            params = [p - step_size * mi / (jnp.sqrt(vi) / root + EPS) for p, mi, vi in zip(params, m, v)]
            return loss, params, m, v, t

        step = jax.jit(adam, donate_argnums=(0, 1, 2, 3))
        zeros = [jnp.zeros_like(p) for p in params]
        state = [params, zeros, [jnp.zeros_like(p) for p in params], jnp.zeros((), jnp.float32)]

        def run():
            loss, *rest = step(*state, *nxt())
            state[:] = rest
            return loss.block_until_ready()
    return Contender(run, float, lambda: [np.asarray(p) for p in state[0]])


def gemm(A, B, C, trans_a=False, trans_b=False):
    """C = op(A) @ op(B), all row-major, into C: the column-major C^T = op(B)^T op(A)^T, no copies."""
    return blas.sgemm(1.0, B.T, A.T, 0.0, C.T, trans_b, trans_a, 1)


def gemm_floor_contender(sizes, batches):
    """The step's products: H_k = H_{k-1} W_k; dW_k = H_{k-1}^T dZ_k; dH_{k-1} = dZ_k W_k^T (k > 1)."""
    rng = cases._rng(10)
    batch = batches[0][0].shape[0]
    layers = range(len(sizes) - 1)
    W = [(rng.standard_normal((sizes[k], sizes[k + 1])) / np.sqrt(sizes[k])).astype(DTYPE) for k in layers]
    H = [np.empty((batch, sizes[k + 1]), DTYPE) for k in layers]
    dZ = [rng.standard_normal((batch, sizes[k + 1])).astype(DTYPE) for k in layers]
    dW = [np.empty_like(w) for w in W]
    dH = [np.empty((batch, sizes[k]), DTYPE) for k in layers]
    nxt = _cycle([X for X, _ in batches])

    def run():
        inputs = [nxt(), *H[:-1]]
        for k in layers:
            gemm(inputs[k], W[k], H[k])
        for k in reversed(layers):
            gemm(inputs[k], dZ[k], dW[k], trans_a=True)
            if k:
                gemm(dZ[k], W[k], dH[k], trans_b=True)
        return inputs[0]

    def check():  # the outputs are the preallocated buffers and hold the products
        X = run()
        inputs = [X, *H[:-1]]
        for k in layers:
            for got, want, name in [(H[k], inputs[k] @ W[k], "H"), (dW[k], inputs[k].T @ dZ[k], "dW"),
                                    *([(dH[k], dZ[k] @ W[k].T, "dH")] if k else [])]:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                           err_msg=f"GEMM floor: {name}{k + 1} is not the product")
        out = gemm(X, W[0], H[0])
        assert np.shares_memory(out, H[0]), "GEMM floor: sgemm did not write into the preallocated output"

    return Contender(run, status=""), check


def multiply_adds(sizes, batch):
    """Multiply-adds of the GEMM floor's products: 3 per weight per example, minus the first dX."""
    return batch * (3 * sum(d * m for d, m in zip(sizes[:-1], sizes[1:])) - sizes[0] * sizes[1])


def peak_gflops(n, repeats):
    """Best sgemm rate of an n x n x n product into a preallocated output, in GFLOP/s."""
    rng = cases._rng(11)
    A, B = rng.standard_normal((n, n)).astype(DTYPE), rng.standard_normal((n, n)).astype(DTYPE)
    C = np.empty((n, n), DTYPE)
    gemm(A, B, C)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        gemm(A, B, C)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------------------------------------
# checking and timing


def build(sizes, batch):
    batches, start = problem(sizes, batch)
    out = {}
    for opt in ("SGD", "Adam"):
        out[f"fastgrad eager {opt}"] = lambda opt=opt: fastgrad_contender(sizes, start, batches, opt, False)
        out[f"fastgrad captured {opt}"] = lambda opt=opt: fastgrad_contender(sizes, start, batches, opt, True)
        out[f"NumPy {opt}"] = lambda opt=opt: numpy_contender(sizes, start, batches, opt)
        out[f"PyTorch {opt}"] = lambda opt=opt: torch_contender(sizes, start, batches, opt)
        out[f"JAX jit {opt}"] = lambda opt=opt: jax_contender(sizes, start, batches, opt)
    contenders = {}
    for label in COLUMNS[:-1]:
        try:
            contenders[label] = out[label]()
        except Exception as exc:  # e.g. a capture that cannot be built: report it, time the rest
            contenders[label] = Contender(None, status="error", notes=[f"{type(exc).__name__}: {exc}"])
    floor, floor_check = gemm_floor_contender(sizes, batches)
    floor_check()
    contenders["GEMM floor"] = floor
    return contenders


def check(contenders, name):
    """The first CHECK_STEPS losses and the parameters after them, against NumPy's; returns notes."""
    losses, params = {}, {}
    for label, c in contenders.items():
        if c.status or label == "GEMM floor":
            continue
        try:
            losses[label] = [c.loss(c.run()) for _ in range(CHECK_STEPS)]
            params[label] = [np.asarray(p, np.float64) for p in c.params()]
        except Exception as exc:
            c.status, c.notes = "error", c.notes + [f"{type(exc).__name__}: {exc}"]
    first = losses["NumPy SGD"][0]
    worst = 0.0
    for label, got in losses.items():
        want = losses["NumPy Adam" if label.endswith("Adam") else "NumPy SGD"]
        ref_params = params["NumPy Adam" if label.endswith("Adam") else "NumPy SGD"]
        problems = [] if len(params[label]) == len(ref_params) else [f"{len(params[label])} parameters"]
        if not np.isclose(got[0], first, rtol=1e-5, atol=1e-6):  # same weights, same batch
            problems.append(f"first-step loss {got[0]:.7g}, NumPy's {first:.7g}")
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            problems.append(f"losses {got}, NumPy's {want}")
        for i, (p, q) in enumerate(zip(params[label], ref_params)):
            if not np.allclose(p, q, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(q).max()))):
                problems.append(f"parameter {i} differs by up to {np.abs(p - q).max():.3g}")
        if problems:
            contenders[label].status = "WRONG"
            contenders[label].notes += problems
        else:
            worst = max(worst, abs(got[0] - first) / abs(first))
    good = [label for label in losses if not contenders[label].status]
    return (f"{name}: {len(good)} of {len(losses)} checked columns agree with NumPy: first-step loss "
            f"{first:.6f} (largest relative difference {worst:.1e}), the {CHECK_STEPS} first losses "
            "(rtol 1e-4) and the parameters after them (rtol 1e-3)")


def measure(contenders, rounds, target, pause, prepare=lambda: None):
    """Seconds per step of each running contender, per round. prepare() runs before every batch."""
    live = {label: c for label, c in contenders.items() if not c.status}
    for c in live.values():
        c.run()  # warm-up beyond the check
    numbers = {}
    for label, c in live.items():
        prepare()
        time.sleep(pause)
        numbers[label] = report.calibrate(c.run, target)
    times = {label: [] for label in live}
    order = random.Random(0)
    for r in range(rounds + 1):  # round 0 is a warm-up round, dropped
        for label in order.sample(list(live), len(live)):
            run, number = live[label].run, numbers[label]
            prepare()
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(number):
                run()
            if r:
                times[label].append((time.perf_counter() - t0) / number)
    return times


class _Allocator(ctypes.Structure):  # NumPy's PyDataMemAllocator (ndarraytypes.h), version 1
    _fields_ = [("ctx", ctypes.c_void_p),
                ("malloc", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)),
                ("calloc", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)),
                ("realloc", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)),
                ("free", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t))]


class _Handler(ctypes.Structure):  # PyDataMem_Handler
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8), ("allocator", _Allocator)]


class ArrayAllocations:
    """Counts the data allocations of NumPy arrays (every array that owns memory, also 0-d temporaries).

    A NumPy memory handler (NEP 49): a copy of NumPy's default handler whose malloc, calloc and
    realloc count and call the default's, its free the default's own C function (no Python runs when
    memory is freed), installed with PyDataMem_SetHandler (slot 304 of NumPy's C API table; the
    default handler is slot 306) for the duration of `counting()`. Arrays made meanwhile keep the
    handler and free through it later, so the instance must outlive them (one per process).
    """

    LARGE = 64 * 1024

    def __init__(self):
        api = ctypes.pythonapi
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        api.PyCapsule_New.restype = ctypes.py_object
        api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        table = ctypes.cast(api.PyCapsule_GetPointer(np._core._multiarray_umath._ARRAY_API, None),
                            ctypes.POINTER(ctypes.c_void_p))
        self._set = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])  # PyDataMem_SetHandler
        default_capsule = ctypes.cast(table[306], ctypes.POINTER(ctypes.py_object)).contents.value
        default = _Handler.from_address(api.PyCapsule_GetPointer(default_capsule, b"mem_handler"))
        self.reset()

        def note(size):
            self.count += 1
            self.nbytes += size
            if size >= self.LARGE:
                self.large += 1
                self.large_sizes.append(size)

        d = default.allocator
        kinds = dict(_Allocator._fields_)
        self._callbacks = [kinds["malloc"](lambda ctx, size: note(size) or d.malloc(ctx, size)),
                           kinds["calloc"](lambda ctx, n, size: note(n * size) or d.calloc(ctx, n, size)),
                           kinds["realloc"](lambda ctx, ptr, size: note(size) or d.realloc(ctx, ptr, size))]
        self._handler = _Handler.from_buffer_copy(default)
        self._handler.name = b"fastgrad-bench-counter"
        self._handler.allocator.malloc, self._handler.allocator.calloc, self._handler.allocator.realloc = \
            self._callbacks
        self._capsule = api.PyCapsule_New(ctypes.addressof(self._handler), b"mem_handler", None)
        with self.counting():  # check that it took
            probe = np.empty(3)
        if np._core.multiarray.get_handler_name(probe) != "fastgrad-bench-counter" or self.count != 1:
            raise RuntimeError("NumPy did not take the counting memory handler")
        self.reset()

    def reset(self):
        self.count = self.nbytes = self.large = 0
        self.large_sizes = []  # bytes of each allocation of LARGE or more, in order

    @contextlib.contextmanager
    def counting(self):
        old = self._set(self._capsule)
        try:
            yield self
        finally:
            self._set(old)


_COUNTER = []  # the ArrayAllocations of this process (its callbacks must outlive the arrays they made)


def array_counter():
    if not _COUNTER:
        try:
            _COUNTER.append(ArrayAllocations())
        except Exception as exc:  # another NumPy: report n/a rather than guess
            print(f"  (NumPy array allocations not counted: {type(exc).__name__}: {exc})", file=sys.stderr)
            _COUNTER.append(None)
    return _COUNTER[0]


def allocations(run, steps, fault_steps):
    """Per steady-state step: NumPy array allocations (count, of them >= 64 KiB, bytes; means) or
    None; tracemalloc blocks and bytes alive after the step, and its peak bytes (medians); minor faults."""
    run()
    run()
    arrays = None
    counter = array_counter()
    if counter is not None:
        counter.reset()
        with counter.counting():
            for _ in range(steps):
                run()
        arrays = (counter.count / steps, counter.large / steps, counter.nbytes / steps)
    blocks, alive, peaks = [], [], []
    for _ in range(steps):
        tracemalloc.start()
        run()
        _, peak = tracemalloc.get_traced_memory()
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        tracemalloc.stop()
        blocks.append(len(snap.traces))
        alive.append(sum(t.size for t in snap.traces))
        peaks.append(peak)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(fault_steps):
        run()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / fault_steps
    return arrays, statistics.median(blocks), statistics.median(alive), statistics.median(peaks), faults


# ---------------------------------------------------------------------------------------------
# one thread count (the child process)


def pin(threads):
    fg.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


class BlasThreads:
    """Puts every OpenBLAS back on n threads before a batch: fastgrad sets SciPy's OpenBLAS to 1 or n
    per product (csrc/adapt.c) and leaves it there, which the GEMM floor, calling the same library,
    would inherit; fastgrad is told to forget its cached count (as fg.set_num_threads does)."""

    def __init__(self, n):
        self.n = n
        self.libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]

    def __call__(self):
        for lib in self.libs:
            lib.set_num_threads(self.n)
        fg_linalg.set_num_threads(self.n)


def targets(name, threads):
    """The issue's targets for the replayed step: (vs JAX, vs GEMM floor, vs FLOP bound, Adam / SGD)."""
    one = threads == 1
    if name == "digits":
        return 0.3, 2.5, None, 1.05
    return (0.9 if one else 0.6 if name == "mnist" else 0.8), (1.05 if one else 1.15), (1.15 if one else 1.3), 1.05


def med_ratio(times, a, b):
    if a not in times or b not in times:
        return None
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def child(args) -> int:
    threads = args.threads
    limiter = pin(threads)  # noqa: F841  (the limits last while it lives)
    prepare = BlasThreads(threads)
    rounds, target = (3, 0.01) if args.quick else (11, 0.05)
    pause = 0.12 if threads > 1 else 0.0
    print(f"## {threads} thread{'s' if threads > 1 else ''}\n")
    print(f"- load before: {uptime()}")
    peak_n, peak_repeats = (1024, 3) if args.quick else (2048, 5)
    prepare()
    peak = peak_gflops(peak_n, peak_repeats)
    print(f"- step: loss = softmax cross-entropy" + (f" + model.l2({REG})" if REG else " (no L2 penalty)")
          + f"; SGD lr {LR['SGD']}, Adam lr {LR['Adam']}")
    print(f"- peak sgemm ({peak_n}^3, preallocated, best of {peak_repeats}): {peak:.1f} GFLOP/s; "
          f"{rounds} rounds of ~{target * 1e3:.0f} ms per column (+1 dropped), {pause:g} s rest before each")
    bad = False
    rows, notes, allocs = [], [], []
    for name, sizes, batch in SHAPES:
        if args.only not in name:
            continue
        label = f"{name} {'-'.join(map(str, sizes))}, batch {batch}"
        contenders = build(sizes, batch)
        notes.append(check(contenders, name))
        times = measure(contenders, rounds, target, pause, prepare)
        for col, c in contenders.items():
            reason = getattr(c.step, "last_reason", None)
            if reason:  # the timed calls did not all replay: the time is marked
                c.eager_reason = reason
                c.notes.append(f"the last timed call ran eagerly: {reason}")
            notes += [f"{name}, {col}: {n}" for n in c.notes]
            bad |= c.status in ("WRONG", "error")
        rows.append((name, label, contenders, times, multiply_adds(sizes, batch)))
        for col in ALLOC_COLUMNS:
            if contenders[col].status:
                allocs.append((label, col, None))
            else:
                allocs.append((label, col, allocations(contenders[col].run, 5 if args.quick else 9,
                                                       10 if args.quick else 50)))
        print(f"  measured {label} on {threads} thread(s)", file=sys.stderr)
    prepare()
    peak = max(peak, peak_gflops(peak_n, peak_repeats))  # the best seen before or after the rounds
    load = max(os.getloadavg()) if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load > (os.cpu_count() or 1) - threads + 1.5:  # this bench itself is about 1
        print(f"- **warning**: load average up to {load:.1f} on {os.cpu_count()} cores: other processes "
              f"took cores from the {threads}-thread pools; these timings include waiting for descheduled "
              "BLAS threads")
    print(f"- load after: {uptime()}; peak sgemm after the rounds {peak:.1f} GFLOP/s (the FLOP bound "
          "uses the best of the two)\n")
    rows = [(n, label, c, t, 2 * macs / (peak * 1e9)) for n, label, c, t, macs in rows]

    def cell(c, times, col):
        if c[col].status:
            return c[col].status
        return report.fmt_time(statistics.median(times[col])) + (" (eager!)" if c[col].eager_reason else "")

    print("### Time per step (median)\n")
    head = ["step", *COLUMNS, "FLOP bound"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for _, label, c, times, bound in rows:
        print("| " + " | ".join([label, *(cell(c, times, col) for col in COLUMNS), report.fmt_time(bound)]) + " |")

    print("\n### Each column / GEMM floor (median of same-round ratios)\n")
    head = ["step", *COLUMNS[:-1], "FLOP bound"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for _, label, c, times, bound in rows:
        cells = [c[col].status or fmt(med_ratio(times, col, "GEMM floor")) for col in COLUMNS[:-1]]
        print("| " + " | ".join([label, *cells, fmt(bound / statistics.median(times["GEMM floor"]))]) + " |")

    print("\n### The issue's targets for the replayed (captured) step; eager for comparison\n")
    head = ["step", "ratio", "target", "eager", "captured", "met"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, label, c, times, bound in rows:
        t_jax, t_floor, t_flop, t_adam = targets(name, threads)
        checks = []
        for opt in ("SGD", "Adam"):
            checks.append((f"{opt} / JAX jit {opt}", t_jax, lambda v, opt=opt: med_ratio(times, f"fastgrad {v} {opt}",
                                                                                        f"JAX jit {opt}")))
        for opt in ("SGD", "Adam"):
            checks.append((f"{opt} / GEMM floor", t_floor,
                           lambda v, opt=opt: med_ratio(times, f"fastgrad {v} {opt}", "GEMM floor")))
        for opt in ("SGD", "Adam"):
            checks.append((f"{opt} / FLOP bound", t_flop,
                           lambda v, opt=opt: (statistics.median(times[f"fastgrad {v} {opt}"]) / bound
                                               if f"fastgrad {v} {opt}" in times else None)))
        checks.append(("Adam / SGD", t_adam,
                       lambda v: med_ratio(times, f"fastgrad {v} Adam", f"fastgrad {v} SGD")))
        for what, goal, value in checks:
            eager, captured = value("eager"), value("captured")
            met = "n/a" if captured is None or goal is None else ("yes" if captured <= goal else "**no**")
            if any(c[f"fastgrad captured {opt}"].eager_reason for opt in ("SGD", "Adam")):
                met += " (a captured call ran eagerly)"
            print(f"| {name} | {what} | {'-' if goal is None else f'<= {goal}'} | {fmt(eager)} | "
                  f"{fmt(captured)} | {met} |")

    print("\n### Allocations per steady-state step\n")
    print("NumPy arrays: data allocations counted by a NumPy memory handler (0-d temporaries included); "
          "tracemalloc: the blocks allocated during one step and alive after it, and the step's peak of "
          "traced bytes; minor page faults: getrusage over many steps.\n")
    head = ["step", "column", "NumPy arrays", "of them >= 64 KiB", "KiB in arrays", "tracemalloc blocks alive after",
            "KiB alive after", "peak KiB", "minor faults"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, col, a in allocs:
        cells = ["n/a"] * 7
        if a is not None:
            arrays, blocks, alive, peak_bytes, faults = a
            cells = ([f"{arrays[0]:.1f}", f"{arrays[1]:.1f}", f"{arrays[2] / 1024:.1f}"] if arrays else ["n/a"] * 3)
            cells += [f"{blocks:g}", f"{alive / 1024:.1f}", f"{peak_bytes / 1024:.1f}", f"{faults:.2f}"]
        print("| " + " | ".join([label, col, *cells]) + " |")
    print("\nTarget for the captured step: no array, no block, no byte, no fault.\n")
    print("Checks and notes:\n")
    print("\n".join(f"- {n}" for n in notes) + "\n")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------
# the parent: machine, environment, one subprocess per thread count


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def header(args) -> list[str]:
    lines = ["# One training step (float32), issue 11's bench\n",
             f"- command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`",
             f"- CPU: {report.cpu_model()}, {os.cpu_count()} logical cores; {uptime()}",
             f"- Python {platform.python_version()}, numpy {np.__version__}, fastgrad {fg.__version__}, "
             f"fastgrad.capture: {'yes' if hasattr(fg, 'capture') else 'not yet (n/a columns)'}, "
             + (f"torch {torch.__version__}" if torch is not None else "torch not installed") + ", "
             + jax_version()]
    for pool in threadpool_info():
        kind = " ".join(str(x) for x in (pool["internal_api"], pool.get("version"), pool.get("architecture")) if x)
        lines.append(f"- {pool['user_api']}: {kind} ({os.path.basename(pool['filepath'])})")
    for var in TUNING_VARS:
        if var in os.environ:
            lines.append(f"- **warning**: {var}={os.environ[var]} is set: OpenBLAS's kernel choice or blocking "
                         f"is not the machine's default; run under `env -u {' -u '.join(TUNING_VARS)}`")
    if args.busy:
        lines.append("- **busy**: one competing process spins on a core for the whole run")
    return lines + [""]


def jax_version() -> str:
    try:
        from importlib.metadata import version
        return f"jax {version('jax')}"
    except Exception:
        return "jax not installed"


def child_env(threads):
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = (f"{flags} --xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} "
                        f"intra_op_parallelism_threads={threads}").strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def main(argv=None) -> int:
    global REG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few, short rounds (a smoke run)")
    parser.add_argument("--busy", action="store_true", help="run beside one competing busy process")
    parser.add_argument("--only", default="", help="only the shapes whose name contains this text")
    parser.add_argument("--reg", type=float, default=REG,
                        help=f"the L2 penalty's reg (default {REG}; 0 leaves the penalty out)")
    parser.add_argument("--thread-counts", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)  # internal: one count
    args = parser.parse_args(argv)
    REG = args.reg
    if args.threads is not None:
        if "jax" not in sys.modules:  # XLA reads its flags at import
            os.environ.update(child_env(args.threads))
        return child(args)
    print("\n".join(header(args)))
    sys.stdout.flush()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    status = 0
    try:
        for n in (int(x) for x in args.thread_counts.split(",")):
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(n), "--only", args.only,
                   "--reg", repr(args.reg)]
            out = subprocess.run(cmd + (["--quick"] if args.quick else []), env=child_env(n),
                                 stdout=subprocess.PIPE, text=True)
            print(out.stdout)
            sys.stdout.flush()
            status = status or out.returncode
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
