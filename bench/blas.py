"""Which BLAS should run fastgrad's matrix products? The GEMM floor of three MLP steps per backend.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/blasvenv/bin/python bench/blas.py
    ... bench/blas.py --quick                 # fewer, shorter rounds
    ... bench/blas.py --threads 1             # one thread only
    ... bench/blas.py --backends scipy,mkl    # a subset (names: see BACKENDS)

Run it with a Python whose venv holds the candidate wheels (numpy, scipy, threadpoolctl and any of
scipy-openblas32, scipy-openblas64, mkl, blis; never fastgrad itself: the `fastgrad` row imports the
in-place build of this checkout). A backend whose wheel is missing is listed with the reason.

Backends, each called row-major as fastgrad/_linalg.pyx calls BLAS (C^T = op(B)^T op(A)^T, no copy):

    scipy         scipy.linalg.cython_blas's sgemm/dgemm (fastgrad's BLAS today), as a pointer
    numpy         NumPy's bundled OpenBLAS (ILP64), its scipy_sgemm_64_ called directly
    np.matmul     np.matmul(a, b, out=c) from Python (NumPy's OpenBLAS plus NumPy's call overhead)
    openblas32    the scipy-openblas32 wheel (LP64), scipy_sgemm_/scipy_dgemm_
    openblas64    the scipy-openblas64 wheel (ILP64), scipy_sgemm_64_/scipy_dgemm_64_
    mkl           the mkl wheel, sgemm_/dgemm_ of libmkl_rt (LP64, its default threading layer)
    blis          the blis wheel's bli_sgemm/bli_dgemm (row and column strides: row-major natively)
    fastgrad      fastgrad._linalg.matmul of this checkout: scipy's OpenBLAS, fastgrad's own block
                  split and thread choice for large products, a new output per call, from Python
    scipy-haswell `scipy` with OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512 (the AVX2 kernel)

What is timed: the matrix products of one training step of an MLP (forward X(N,D) @ W(D,M),
backward dW = X^T @ dZ and dX = dZ @ W^T, no dX for the first layer), into preallocated outputs, in
step order; a step's time is its GEMM floor. Steps: digits 64-100-10 batch 32, mnist 784-256-128-10
batch 128 (float32 and float64), cifar 3072-512-256-10 batch 256. The compiled backends are timed by
a small C loop (compiled here with `cc`, so Python's call overhead does not count; without a
compiler they are timed from ctypes). Also each backend's sgemm peak on a 2048^3 product.

How: every result is first checked against a float64 (float128 for float64) NumPy reference (max
|C - ref| / max |ref|); a backend that disagrees is not timed. With one thread all compiled backends
share one process and are interleaved step by step, round by round (fastgrad has its own process:
it loads libgomp beside MKL's libiomp5; so has scipy-haswell). With two threads each backend has its
own process (idle OpenBLAS and MKL thread pools spin for a while after a call, and would steal the
other's cores), and the processes take turns round by round, with a pause between turns for the
pools to go to sleep. A turn during which other processes used more than the cores the bench leaves
free (+0.15) is timed again (after a pause, up to --retries times); the header says how often. Times are
medians over rounds; ratios (to `scipy`, same thread count) are medians of the rounds' ratios.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for older OpenBLAS builds) slow the
OpenBLAS backends; this script warns when they are set and prints the kernel each backend runs
(threadpoolctl).
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

STEPS = [  # name, layer sizes, batch, dtype
    ("digits", (64, 100, 10), 32, "float32"),
    ("mnist", (784, 256, 128, 10), 128, "float32"),
    ("mnist f64", (784, 256, 128, 10), 128, "float64"),
    ("cifar", (3072, 512, 256, 10), 256, "float32"),
]
PEAK = 2048
INNER = 3  # timings of each step per backend per round (interleaved), of which the median counts
BACKENDS = ("scipy", "numpy", "np.matmul", "openblas32", "openblas64", "mkl", "blis", "fastgrad",
            "scipy-haswell")
# scipy-haswell: scipy's OpenBLAS made to run its Haswell (AVX2) kernel, as these variables (set on
# some machines for older OpenBLAS builds) make it do; in its own process (read once, at load)
HASWELL_ENV = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}
OWN_PROCESS = ("fastgrad", "scipy-haswell")
BASELINE = "scipy"
SITE = sysconfig.get_paths()["purelib"]

# kinds of compiled backends: how the C loop calls them
LP64, ILP64, BLIS = 0, 1, 2

C_SOURCE = r"""
#include <stdint.h>
#include <time.h>
typedef void (*f_lp)(const char *, const char *, const int *, const int *, const int *,
                     const void *, const void *, const int *, const void *, const int *,
                     const void *, void *, const int *);
typedef void (*f_ilp)(const char *, const char *, const int64_t *, const int64_t *,
                      const int64_t *, const void *, const void *, const int64_t *, const void *,
                      const int64_t *, const void *, void *, const int64_t *);
typedef void (*f_blis)(int, int, int64_t, int64_t, int64_t, const void *, const void *, int64_t,
                       int64_t, const void *, int64_t, int64_t, const void *, void *, int64_t,
                       int64_t);
static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}
/* Run `reps` times the products p = 0..np-1: row-major C_p (m, n) := op(A_p) op(B_p), dims[5p..]
   = ta, tb, m, n, k, ptrs[3p..] = A, B, C. Returns the elapsed nanoseconds. */
int64_t fg_bench_step(void *fn, int kind, int dbl, int np, const int64_t *dims, void *const *ptrs,
                      int64_t reps) {
    float one_f = 1, zero_f = 0;
    double one_d = 1, zero_d = 0;
    const void *one = dbl ? (const void *)&one_d : (const void *)&one_f;
    const void *zero = dbl ? (const void *)&zero_d : (const void *)&zero_f;
    int64_t t0 = now_ns();
    for (int64_t r = 0; r < reps; r++) {
        for (int p = 0; p < np; p++) {
            const int64_t *d = dims + 5 * p;
            int ta = (int)d[0], tb = (int)d[1];
            int64_t m = d[2], n = d[3], k = d[4];
            int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
            const void *A = ptrs[3 * p], *B = ptrs[3 * p + 1];
            void *C = ptrs[3 * p + 2];
            char fa = ta ? 'T' : 'N', fb = tb ? 'T' : 'N';
            if (kind == 0) {
                int M = (int)m, N = (int)n, K = (int)k, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
                ((f_lp)fn)(&fb, &fa, &N, &M, &K, one, B, &lb, A, &la, zero, C, &lc);
            } else if (kind == 1) {
                ((f_ilp)fn)(&fb, &fa, &n, &m, &k, one, B, &ldb, A, &lda, zero, C, &ldc);
            } else { /* BLIS: strides of the stored operands, trans_t NO = 0, TRANSPOSE = 8 */
                ((f_blis)fn)(ta ? 8 : 0, tb ? 8 : 0, m, n, k, one, A, lda, 1, B, ldb, 1, zero, C,
                             ldc, 1);
            }
        }
    }
    return now_ns() - t0;
}
"""


# ------------------------------------------------------------------------------------------------
# the steps' products


def step_products(sizes, batch):
    """[(name, ta, tb, m, n, k, a_shape, b_shape)] of one training step, in the order it runs."""
    fwd, bwd = [], []
    for layer, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        fwd.append((f"X{layer}@W{layer}", 0, 0, batch, d_out, d_in, (batch, d_in), (d_in, d_out)))
        dw = (f"X{layer}^T@dZ{layer}", 1, 0, d_in, d_out, batch, (batch, d_in), (batch, d_out))
        dx = (f"dZ{layer}@W{layer}^T", 0, 1, batch, d_in, d_out, (batch, d_out), (d_in, d_out))
        bwd[:0] = [dw] + ([dx] if layer else [])  # backward runs the last layer first
    return fwd + bwd


def flops(products):
    return sum(2.0 * m * n * k for _, _, _, m, n, k, _, _ in products)


class Case:
    """The operands, outputs and references of one step's products (same data in every process)."""

    def __init__(self, name, products, dtype, seed=0):
        rng = np.random.default_rng(seed)
        self.name, self.products, self.dtype = name, products, np.dtype(dtype)
        self.dbl = int(self.dtype == np.float64)
        self.ops = []
        for _, ta, tb, m, n, k, ashape, bshape in products:
            a = rng.standard_normal(ashape).astype(self.dtype)
            b = rng.standard_normal(bshape).astype(self.dtype)
            self.ops.append((a, b, np.empty((m, n), self.dtype)))
        self.dims = np.array([[ta, tb, m, n, k] for _, ta, tb, m, n, k, _, _ in products],
                             dtype=np.int64)
        self.ptrs = (ctypes.c_void_p * (3 * len(products)))(
            *[x.ctypes.data for op in self.ops for x in op])
        self.refs = None

    def reference(self):
        if self.refs is None:
            hi = np.float64 if self.dtype == np.float32 else np.longdouble
            self.refs = []
            for (_, ta, tb, *_), (a, b, _) in zip(self.products, self.ops):
                a, b = a.astype(hi), b.astype(hi)
                self.refs.append(np.matmul(a.T if ta else a, b.T if tb else b))
        return self.refs

    def error(self):
        """max over products of max |C - ref| / max |ref| for what the outputs now hold."""
        return max(float(np.max(np.abs(c - r)) / np.max(np.abs(r)))
                   for (_, _, c), r in zip(self.ops, self.reference()))


def peak_case(dtype="float32"):
    return Case(f"peak {PEAK}^3", [("A@B", 0, 0, PEAK, PEAK, PEAK, (PEAK, PEAK), (PEAK, PEAK))],
                dtype)


# ------------------------------------------------------------------------------------------------
# backends (loaded in a worker process)


def _cloop():
    """The C timing loop, compiled into a temporary folder; None without a C compiler."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    folder = tempfile.mkdtemp(prefix="fg-blas-bench-")
    src, lib = os.path.join(folder, "loop.c"), os.path.join(folder, "loop.so")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    try:
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", lib, src], check=True,
                       capture_output=True)
        loop = ctypes.CDLL(lib)
    except (subprocess.CalledProcessError, OSError):
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the loaded library stays mapped
    loop.fg_bench_step.restype = ctypes.c_int64
    loop.fg_bench_step.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return loop


class Compiled:
    """A BLAS reached through function pointers (sgemm, dgemm) of one calling convention."""

    def __init__(self, name, kind, fn_s, fn_d, set_threads, kernel, loop):
        self.name, self.kind, self.fn, self.set_threads = name, kind, (fn_s, fn_d), set_threads
        self.kernel, self.loop = kernel, loop
        self.max_threads = None  # any

    def run(self, case, reps):
        fn = self.fn[case.dbl]
        if self.loop is not None:
            return self.loop.fg_bench_step(fn, self.kind, case.dbl, len(case.products),
                                           case.dims.ctypes.data, case.ptrs, reps)
        return self._run_ctypes(fn, case, reps)

    def _run_ctypes(self, fn, case, reps):  # no compiler: the same calls from Python
        it = ctypes.c_int64 if self.kind != LP64 else ctypes.c_int
        ft = ctypes.c_double if case.dbl else ctypes.c_float
        one, zero = ft(1), ft(0)
        f = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(fn)
        f_blis = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, *[ctypes.c_int64] * 3,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(fn)
        calls = []
        for (ta, tb, m, n, k), (a, b, c) in zip(case.dims.tolist(), case.ops):
            lda, ldb = (m if ta else k), (k if tb else n)
            if self.kind == BLIS:
                args = (8 * ta, 8 * tb, m, n, k, ctypes.byref(one), a.ctypes.data, lda, 1,
                        b.ctypes.data, ldb, 1, ctypes.byref(zero), c.ctypes.data, n, 1)
                calls.append((f_blis, args))
            else:
                v = [it(x) for x in (n, m, k, ldb, lda, n)]
                args = (b"T" if tb else b"N", b"T" if ta else b"N", ctypes.byref(v[0]),
                        ctypes.byref(v[1]), ctypes.byref(v[2]), ctypes.byref(one), b.ctypes.data,
                        ctypes.byref(v[3]), a.ctypes.data, ctypes.byref(v[4]), ctypes.byref(zero),
                        c.ctypes.data, ctypes.byref(v[5]))
                calls.append((f, args))
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            for g, args in calls:
                g(*args)
        return time.perf_counter_ns() - t0


class NumpyMatmul:
    name, max_threads = "np.matmul", None

    def __init__(self, set_threads, kernel):
        self.set_threads, self.kernel = set_threads, kernel

    def run(self, case, reps):
        calls = [((a.T if ta else a), (b.T if tb else b), c)
                 for (_, ta, tb, *_), (a, b, c) in zip(case.products, case.ops)]
        mm = np.matmul
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            for a, b, c in calls:
                mm(a, b, out=c)
        return time.perf_counter_ns() - t0


class Fastgrad:
    name, max_threads = "fastgrad", None

    def __init__(self):
        sys.path.insert(0, ROOT)
        import fastgrad as fg
        from fastgrad import _linalg
        self.fg, self.matmul = fg, _linalg.matmul
        self.kernel = f"fastgrad._linalg over scipy's OpenBLAS ({_linalg.__file__})"

    def set_threads(self, n):
        self.fg.set_num_threads(n)

    def run(self, case, reps):
        calls = [(a, b, ta, tb, c) for (_, ta, tb, *_), (a, b, c) in zip(case.products, case.ops)]
        mm = self.matmul
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            for a, b, ta, tb, _ in calls:
                mm(a, b, ta, tb)
        dt = time.perf_counter_ns() - t0
        for a, b, ta, tb, c in calls:  # leave the results where the check reads them
            c[...] = mm(a, b, ta, tb)
        return dt


def _openblas(path, suffix):
    lib = ctypes.CDLL(path)
    setter = getattr(lib, "scipy_openblas_set_num_threads" + suffix)
    corename = getattr(lib, "scipy_openblas_get_corename" + suffix)
    config = getattr(lib, "scipy_openblas_get_config" + suffix)
    corename.restype = config.restype = ctypes.c_char_p
    s = ctypes.cast(getattr(lib, "scipy_sgemm_" + suffix), ctypes.c_void_p).value
    d = ctypes.cast(getattr(lib, "scipy_dgemm_" + suffix), ctypes.c_void_p).value
    return lib, s, d, setter, f"{config().decode().strip()} (core {corename().decode()})"


def _one(pattern):
    found = sorted(glob.glob(os.path.join(SITE, pattern)))
    if not found:
        raise ImportError(f"no {pattern} under {SITE}")
    return found[0]


def load(name, loop):
    """The backend `name`, or raise ImportError/OSError/AttributeError saying why it is not here."""
    if name in ("scipy", "scipy-haswell"):
        import scipy
        from scipy.linalg import cython_blas
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        getname = ctypes.pythonapi.PyCapsule_GetName
        getname.restype, getname.argtypes = ctypes.c_char_p, [ctypes.py_object]
        caps = [cython_blas.__pyx_capi__[f] for f in ("sgemm", "dgemm")]
        s, d = (get(c, getname(c)) for c in caps)
        lib, _, _, setter, kernel = _openblas(_one("scipy.libs/libscipy_openblas*.so"), "")
        env = " ".join(f"{v}={os.environ[v]}" for v in HASWELL_ENV if v in os.environ)
        return Compiled(name, LP64, s, d, setter,
                        f"scipy {scipy.__version__}: {kernel}" + (f", with {env}" if env else ""),
                        loop)
    if name in ("numpy", "np.matmul"):
        lib, s, d, setter, kernel = _openblas(_one("numpy.libs/libscipy_openblas64_*.so"), "64_")
        if name == "np.matmul":
            return NumpyMatmul(setter, f"np.matmul(out=) over numpy {np.__version__}'s {kernel}")
        return Compiled(name, ILP64, s, d, setter, f"numpy {np.__version__}: {kernel}", loop)
    if name == "openblas32":
        import scipy_openblas32  # noqa: F401  (the wheel is there)
        lib, s, d, setter, kernel = _openblas(_one("scipy_openblas32/lib/libscipy_openblas.so"), "")
        return Compiled(name, LP64, s, d, setter, kernel, loop)
    if name == "openblas64":
        import scipy_openblas64  # noqa: F401
        lib, s, d, setter, kernel = _openblas(
            _one("scipy_openblas64/lib/libscipy_openblas64_.so"), "64_")
        return Compiled(name, ILP64, s, d, setter, kernel, loop)
    if name == "mkl":
        paths = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
        if not paths:
            raise ImportError(f"no libmkl_rt.so under {sys.prefix}/lib (pip install mkl)")
        lib = ctypes.CDLL(paths[0])
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, 256)
        s = ctypes.cast(lib.sgemm_, ctypes.c_void_p).value
        d = ctypes.cast(lib.dgemm_, ctypes.c_void_p).value
        layer = os.environ.get("MKL_THREADING_LAYER", "INTEL (default)")
        isa = os.environ.get("MKL_ENABLE_INSTRUCTIONS", "its own choice")
        return Compiled(name, LP64, s, d, lambda n: lib.MKL_Set_Num_Threads(n),
                        f"{buf.value.decode()}; threading layer {layer}; ISA {isa}", loop)
    if name == "blis":
        from blis import about
        lib = ctypes.CDLL(_one("blis/cy.*.so"))
        lib.bli_init()
        lib.bli_arch_string.restype = lib.bli_info_get_version_str.restype = ctypes.c_char_p
        arch = lib.bli_arch_string(lib.bli_arch_query_id()).decode()
        threaded = lib.bli_info_get_enable_threading()
        s = ctypes.cast(lib.bli_sgemm, ctypes.c_void_p).value
        d = ctypes.cast(lib.bli_dgemm, ctypes.c_void_p).value
        b = Compiled(name, BLIS, s, d, lambda n: lib.bli_thread_set_num_threads(ctypes.c_int64(n)),
                     f"blis {about.__version__} (BLIS {lib.bli_info_get_version_str().decode()}), "
                     f"configuration {arch}, threading {'on' if threaded else 'not built in'}",
                     loop)
        b.max_threads = None if threaded else 1
        return b
    if name == "fastgrad":
        return Fastgrad()
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


# ------------------------------------------------------------------------------------------------
# worker: loads some backends, checks them, then times rounds on command (JSON lines on stdout)


def _say(obj):
    sys.stdout.write("@@ " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _reps(backend, case, target_ns):
    backend.run(case, 1)  # warm up (thread pools, buffers, fastgrad's thread choice)
    reps = 1
    while True:
        dt = backend.run(case, reps)
        if dt >= target_ns or reps >= 1 << 20:
            return reps, dt / reps
        reps = max(reps * 2, int(reps * target_ns / max(dt, 1)) + 1)


def worker(names, threads, quick):
    loop = _cloop()
    cases = [Case(n, step_products(s, b), dt) for n, s, b, dt in STEPS]
    peak = peak_case()
    loaded, missing, errors = {}, {}, {}
    for name in names:
        try:
            loaded[name] = load(name, loop)
        except (ImportError, OSError, AttributeError) as e:
            missing[name] = f"{type(e).__name__}: {e}"
    for name, b in list(loaded.items()):
        if b.max_threads is not None and threads > b.max_threads:
            missing[name] = f"runs on at most {b.max_threads} thread here"
            del loaded[name]
            continue
        b.set_threads(threads)
        for case in cases + [peak]:
            for _, _, c in case.ops:
                c.fill(np.nan)
            b.run(case, 1)
            err = case.error()
            tol = 1e-5 if case.dtype == np.float32 else 1e-13
            errors.setdefault(name, {})[case.name] = err
            if not err <= tol:
                missing[name] = f"wrong result on {case.name}: max rel. error {err:.3g} > {tol}"
                del loaded[name]
                break
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: p.get(k) for k in ("internal_api", "version", "architecture",
                                        "threading_layer", "num_threads", "filepath")}
                 for p in threadpool_info()]
    except ImportError:
        pools = []
    target = (2 if quick else 10) * 1_000_000  # ns per timing
    reps = {name: {c.name: _reps(b, c, target)[0] for c in cases} for name, b in loaded.items()}
    _say({"loaded": {n: b.kernel for n, b in loaded.items()}, "missing": missing,
          "errors": errors, "pools": pools, "c_loop": loop is not None})
    order = list(loaded)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        out = {}
        if cmd == "round":  # each step INNER times per backend, interleaved; their median
            for case in cases:
                got = {name: [] for name in order}
                for _ in range(INNER):
                    for name in order:
                        n = reps[name][case.name]
                        got[name].append(loaded[name].run(case, n) / n)
                for name in order:
                    out.setdefault(name, {})[case.name] = statistics.median(got[name])
            order = order[1:] + order[:1]  # who goes first changes each round
        elif cmd == "peak":
            for name in order:
                runs = max(1, int(0.3e9 / _reps(loaded[name], peak, 0)[1]))
                ns = loaded[name].run(peak, runs) / runs
                out[name] = flops(peak.products) * 1e9 / ns  # FLOP/s
        _say(out)


# ------------------------------------------------------------------------------------------------
# driver


class Worker:
    def __init__(self, names, threads, quick, env):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(names),
               "--threads", str(threads)] + (["--quick"] if quick else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
        self.hello = self.read()

    def read(self):
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError(f"worker {self.proc.args} ended: exit code {self.proc.wait()}")

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def _machine_busy():
    """CPU seconds the whole machine has been busy since boot (nan where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _process_cpu(pid):
    """CPU seconds of process `pid`, all its threads (0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Turns:
    """Runs a worker's turn, and runs it again (up to `retries` times, after a pause) when other
    processes used more than `max_others` cores meanwhile: those timings would measure them."""

    def __init__(self, workers, max_others, retries):
        self.workers, self.max_others, self.retries = workers, max_others, retries
        self.redone = self.disturbed = self.turns = 0
        self.others = []

    def run(self, w, cmd):
        for attempt in range(self.retries + 1):
            own0 = sum(_process_cpu(x.proc.pid) for x in self.workers) + sum(os.times()[:2])
            busy0, t0 = _machine_busy(), time.perf_counter()
            answer = w.ask(cmd)
            busy1, t1 = _machine_busy(), time.perf_counter()
            own1 = sum(_process_cpu(x.proc.pid) for x in self.workers) + sum(os.times()[:2])
            others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
            if not others > self.max_others:  # (nan: no /proc, accept)
                break
            if attempt < self.retries:
                self.redone += 1
                time.sleep(2.0)
        else:
            self.disturbed += 1
        self.turns += 1
        self.others.append(others)
        return answer


def measure(names, threads, rounds, quick, pause, max_others, retries):
    """{backend: {step: [seconds per step, one per round]}}, peaks, worker hellos, Turns."""
    if threads == 1:
        groups = [[n for n in names if n not in OWN_PROCESS]] + [[n] for n in names
                                                                 if n in OWN_PROCESS]
    else:
        groups = [[n] for n in names]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    workers = [Worker(g, threads, quick,
                      dict(env, **HASWELL_ENV) if g == ["scipy-haswell"] else env)
               for g in groups if g]
    hellos = [w.hello for w in workers]
    for w in [w for w in workers if not w.hello["loaded"]]:  # nothing to time there
        w.close()
        workers.remove(w)
    free = (os.cpu_count() or 1) - threads
    turns = Turns(workers, max(0, free) + max_others, retries=0 if quick else retries)
    times, peaks = {}, {}
    for r in range(rounds):
        turn = workers[r % len(workers):] + workers[:r % len(workers)]
        for w in turn:
            for name, per_step in turns.run(w, "round").items():
                for step, t in per_step.items():
                    times.setdefault(name, {}).setdefault(step, []).append(t * 1e-9)
            time.sleep(pause)
    for w in workers:
        for name, gf in turns.run(w, "peak").items():
            peaks[name] = gf
        time.sleep(pause)
    for w in workers:
        w.close()
    return times, peaks, hellos, turns


def machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model "
                 f"{info.get('model', '?')}), {os.cpu_count()} cores")
    except OSError:
        pass
    return model


def fmt_ms(s):
    ms = s * 1e3
    return f"{ms:.4f}" if ms < 0.1 else f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 \
        else f"{ms:.1f}"


def table(results, thread_counts, names):
    steps = [s[0] for s in STEPS]
    head = "| backend | " + " | ".join(f"{s}, {t} thr" for t in thread_counts for s in steps) + " |"
    lines = [head, "|---" * (1 + len(steps) * len(thread_counts)) + "|"]
    for name in names:
        cells = []
        for t in thread_counts:
            times = results[t][0]
            for s in steps:
                if name not in times or s not in times[name]:
                    cells.append("—")
                    continue
                mine = times[name][s]
                med = statistics.median(mine)
                base = times.get(BASELINE, {}).get(s)
                # the median of the rounds' ratios (each round times both, one after the other)
                ratio = f" ({statistics.median(a / b for a, b in zip(mine, base)):.2f}×)" \
                    if base and len(base) == len(mine) else ""
                cells.append(f"{fmt_ms(med)} ms{ratio}")
        if any(c != "—" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--retries", type=int, default=8, help="times a disturbed turn is redone")
    p.add_argument("--max-others", type=float, default=0.15,
                   help="redo a timed turn when other processes used more than this many cores "
                        "beyond those the bench leaves free (cores - threads)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [n for n in args.backends.split(",") if n]
    for n in names:
        if n not in BACKENDS:
            p.error(f"unknown backend {n!r}; expected some of {', '.join(BACKENDS)}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.worker:
        return worker(args.worker.split(","), thread_counts[0], args.quick)
    rounds = args.rounds or (3 if args.quick else 9)
    set_vars = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if set_vars:
        print(f"WARNING: {' and '.join(f'{v}={os.environ[v]}' for v in set_vars)} set: OpenBLAS "
              "then runs that kernel, not the one it would pick (slower on this CPU?). Run with "
              "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to measure what it picks.",
              file=sys.stderr)
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {t: measure(names, t, rounds, args.quick, pause=0.0 if t == 1 else 0.5,
                          max_others=args.max_others, retries=args.retries)
               for t in thread_counts}
    load1 = os.getloadavg()
    print(f"# BLAS backends for fastgrad's products ({started:%Y-%m-%d %H:%M} UTC)\n")
    print(f"command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`  ")
    print(f"CPU: {machine()}  ")
    print(f"load average (1, 5, 15 min): before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}  ")
    for t in thread_counts:
        turns = results[t][3]
        print(f"{t} thr: other processes used {statistics.median(turns.others):.2f} cores (median "
              f"over {turns.turns} timed turns; max {max(turns.others):.2f}); {turns.redone} turns "
              f"redone for using more than {turns.max_others:.2f}, {turns.disturbed} kept anyway  ")
    print(f"OpenBLAS variables: {', '.join(f'{v}={os.environ[v]}' for v in set_vars) or 'unset'}; "
          f"{rounds} rounds; medians\n")
    print("Products per step: " + "; ".join(
        f"{n} {len(step_products(sz, b))} ({flops(step_products(sz, b)) / 1e6:.1f} MFLOP)"
        for n, sz, b, _ in STEPS) + "\n")
    print("## GEMM floor of one training step (ms; ratio to scipy's OpenBLAS, same threads)\n")
    print(table(results, thread_counts, names))
    print("\n## sgemm peak, 2048^3 (GFLOP/s)\n")
    print("| backend | " + " | ".join(f"{t} thr" for t in thread_counts) + " |")
    print("|---" * (1 + len(thread_counts)) + "|")
    for name in names:
        cells = [f"{results[t][1][name] / 1e9:.1f}" if name in results[t][1] else "—"
                 for t in thread_counts]
        if any(c != "—" for c in cells):
            print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n## What ran\n")
    kernels, missing, errors, pools = {}, {}, {}, {}
    for t in thread_counts:
        for hello in results[t][2]:
            kernels.update(hello["loaded"])
            errors.update({n: e for n, e in hello["errors"].items() if n in hello["loaded"]})
            for n, why in hello["missing"].items():
                missing.setdefault(n, set()).add(f"{why} ({t} thr)")
            for pool in hello["pools"]:  # (scipy-haswell's process runs other kernels)
                pools[pool["filepath"], pool.get("architecture")] = pool
            if not hello["c_loop"]:
                print("(no C compiler: compiled backends timed from ctypes, with its overhead)")
    print("| backend | kernel | max rel. error vs float64/float128 reference |")
    print("|---|---|---|")
    for name in names:
        if name in kernels:
            err = max(errors.get(name, {}).values(), default=float("nan"))
            print(f"| {name} | {kernels[name]} | {err:.1e} |")
    for name, whys in missing.items():
        print(f"| {name} | not measured: {'; '.join(sorted(whys))} | |")
    print("\nthreadpoolctl:\n")
    for pool in pools.values():
        print(f"- {pool['internal_api']} {pool['version']} {pool.get('architecture') or ''} "
              f"{pool.get('threading_layer') or ''}: {os.path.basename(pool['filepath'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
