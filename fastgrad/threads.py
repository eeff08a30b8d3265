"""How many threads fastgrad computes with: the C kernels' OpenMP teams and the BLAS pool.

Kernels split work over threads only above a measured size (csrc/common.h); small problems run
on the calling thread whatever the setting. The default is OpenMP's (OMP_NUM_THREADS when set,
else the number of cores); OpenBLAS reads the same variable when it loads.

A child made by os.fork() (multiprocessing's default start method on Linux) runs the kernels on
one thread: GNU OpenMP cannot use its thread pool after a fork, and a parallel kernel would hang.
"""
from __future__ import annotations

import numbers
import os

from . import _kernels as K
from . import _linalg as L


def _default_num_threads() -> int:
    if K.openmp_enabled():
        return K.default_num_threads()
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else (os.cpu_count() or 1)


_forked = False  # True in a child of os.fork(): kernels stay on one thread

#: The most threads `set_num_threads` accepts: more is a typo, and GNU OpenMP aborts the process when
#: it cannot allocate a team (10**9 threads asks it for 224 GB).
MAX_THREADS = 1024


def set_num_threads(n: int) -> None:
    """Use `n` threads in the C kernels (OpenMP) and in BLAS (through threadpoolctl).

    n: an int in 1..MAX_THREADS (1024); anything else raises ValueError. Applies to every Python thread. In a
    child of os.fork() the kernels keep to one thread (see the module docstring); BLAS takes n.

    >>> import fastgrad as fg
    >>> fg.set_num_threads(1)      # e.g. for timings that do not depend on the machine's load
    >>> fg.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    if n > MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be at most {MAX_THREADS}, got {n}")
    n = int(n)
    K.set_num_threads(1 if _forked else n)
    import scipy.linalg  # noqa: F401  (load scipy's BLAS first, so that its pool is limited too)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
    L.set_num_threads(1 if _forked else n)


def get_num_threads() -> int:
    """The thread count set by `set_num_threads` (or the default): kernels and BLAS use it.

    Without OpenMP (a compiler lacking -fopenmp) the kernels are serial and this is BLAS's count.
    """
    return K.get_num_threads()


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    K.set_num_threads(1)
    L.set_num_threads(1)


K.set_num_threads(_default_num_threads())
L.set_num_threads(_default_num_threads())  # fastgrad's products: blocks on its own threads
if K.openmp_enabled():
    os.register_at_fork(after_in_child=_after_fork_in_child)
