"""fastgrad.distributed under mpiexec: the trajectory of N ranks equals one process's, faults end all ranks.

Every MPI program runs in a subprocess (mpiexec, with fastgrad.launch's flags) under a timeout, so a
hang fails the test instead of stalling the suite. Skipped, with the reason, only where mpi4py or
mpiexec is missing (CI installs them: pip install -e ".[test,mpi]").
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastgrad import launch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("mpi") / "worker.py"
TIMEOUT = 180  # seconds for one mpiexec run (2 shared cores; a run takes 3-15 s)

MPIEXEC = launch.find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason='needs mpi4py and mpiexec: pip install -e ".[mpi]"',
)


def mpirun(n, *argv, timeout=TIMEOUT):
    """Run `python argv...` on n ranks; returns the CompletedProcess (never hangs: a timeout fails)."""
    env = launch.mpi_env(threads=1)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = launch.mpiexec_command(n, [sys.executable, *map(str, argv)])
    # a session of its own, so that a hang can be ended with every rank (killpg), not only mpiexec
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(map(str, argv))} did not finish in {timeout} s (a hang):\n"
                    f"{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _worker_module():
    spec = importlib.util.spec_from_file_location("_mpi_worker_configs", WORKER)
    source = WORKER.read_text()
    # the configurations and the training function, without importing fastgrad.distributed (MPI)
    namespace = {}
    head = source.split("def save(")[0].replace("from fastgrad import distributed as dist\n", "")
    exec(compile(head, str(WORKER), "exec"), namespace)
    return namespace


def test_import_without_mpi4py():
    """fastgrad imports without mpi4py; fastgrad.distributed then names the extra to install."""
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import fastgrad, fastgrad.train, fastgrad.flat, fastgrad.launch\n"
        "try:\n    import fastgrad.distributed\nexcept ImportError as e:\n    print('IMPORTERROR', e)\n"
        "rc = fastgrad.train.main(['--distributed', '--epochs', '1'])\nprint('RC', rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "IMPORTERROR" in r.stdout and 'pip install "fastgrad[mpi]"' in r.stdout, r.stdout + r.stderr
    assert "RC 2" in r.stdout and "fastgrad[mpi]" in r.stderr and "Traceback" not in r.stderr


def test_launch_command_has_the_flags_in_one_place():
    cmd = launch.mpiexec_command(3, ["python", "x.py"], mpiexec="mpiexec")
    assert cmd[:3] == ["mpiexec", "-n", "3"] and cmd[-2:] == ["python", "x.py"]
    assert "--oversubscribe" in cmd and cmd[cmd.index("--bind-to") + 1] == "none"
    with pytest.raises(ValueError):
        launch.mpiexec_command(0, ["python"], mpiexec="mpiexec")
    env = launch.mpi_env({}, threads=2)
    assert env["OMP_NUM_THREADS"] == "2"
    if os.geteuid() == 0:
        assert env["OMPI_ALLOW_RUN_AS_ROOT"] == env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"


@pytest.fixture(scope="module")
def single_process():
    """The oracle: every configuration trained in this process, without MPI."""
    ns = _worker_module()
    return {name: ns["config_run"](name, kw, dtype, rows, None) for name, kw, dtype, rows in ns["CONFIGS"]}


@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 3])
def test_n_ranks_follow_the_single_process_trajectory(n, tmp_path, single_process):
    """Same global batches, same seed: losses and parameters agree to summation-order rounding.

    Configurations cover uneven splits (32 rows over 3 ranks; a last batch of 9 or 2), a rank with
    no rows (batch 2 over 3 ranks), SVM and softmax losses, every optimizer, lr decay, float64.
    Tolerance (relative to the largest magnitude): 1e-5 in float32, 1e-11 in float64.
    """
    out = tmp_path / "result.npz"
    r = mpirun(n, WORKER, "trajectory", out)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(out)
    for name, (losses, params, val) in single_process.items():
        tol = 1e-11 if "float64" in str(params["W1"].dtype) else 1e-5
        np.testing.assert_allclose(got[f"{name}/loss"], losses, rtol=tol, atol=0, err_msg=name)
        for k, v in params.items():
            diff = np.max(np.abs(got[f"{name}/{k}"] - v)) / np.max(np.abs(v))
            assert diff <= tol, f"{name} {k}: relative difference {diff:.2e} > {tol:g} with {n} ranks"
        np.testing.assert_array_equal(got[f"{name}/val_acc"], val, err_msg=name)


@needs_mpi
def test_cli_distributed_prints_once_and_only_rank_0_writes(tmp_path):
    one = tmp_path / "one"
    from fastgrad import train
    assert train.main(["--epochs", "2", "--batch-size", "50", "--no-progress", "--out", str(one)]) == 0
    many = tmp_path / "many"
    r = mpirun(3, "-m", "fastgrad.train", "--distributed", "--epochs", "2", "--batch-size", "50",
               "--no-progress", "--out", many)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("accuracy: train") == 1 and r.stdout.count("digits:") == 1, r.stdout
    assert "3 ranks" in r.stdout
    assert sorted(p.name for p in many.iterdir()) == ["checkpoint.npz", "curves.png", "history.json", "model.npz"]
    a, b = (json.loads((d / "history.json").read_text()) for d in (one, many))
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    assert a["final_accuracy"] == b["final_accuracy"]  # reduced over ranks: the same counts


@needs_mpi
@pytest.mark.parametrize("fault,n", [("label", 3), ("kill", 2)])
def test_a_failing_rank_ends_every_rank(fault, n):
    """A ValueError on rank 1 (an out-of-range label in its shard) or rank 1 killed by SIGKILL, in
    the middle of an endless training loop: every rank ends, with a line naming rank 1 and the cause."""
    r = mpirun(n, WORKER, fault, timeout=120)
    assert r.returncode != 0
    if fault == "label":
        lines = [l for l in r.stderr.splitlines() if l.startswith("fastgrad: rank 1 of 3 failed")]
        assert len(lines) == 1, r.stderr
        assert "ValueError" in lines[0] and "label" in lines[0], lines[0]
    else:  # Open MPI's launcher notices the dead process and ends the job
        assert re.search(r"rank 1 .*\n?.*signal 9", r.stderr), r.stderr


@needs_mpi
@pytest.mark.parametrize("patch,expect", [
    ("labels", r"^fastgrad-train: error: DataParallel: rank 1's training data or fit arguments differs"),
    ("missing", r"^fastgrad-train: error: rank 1 of 2: no such file: /data/on/rank1$"),
])
def test_cli_ranks_that_disagree_stop_together(patch, expect, tmp_path):
    """Errors every rank learns together (one allgather) print one line, on rank 0, and exit 2."""
    r = mpirun(2, WORKER, "cli", patch, "--distributed", "--epochs", "1", "--no-progress", "--out", tmp_path / "o")
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("fastgrad-train")]
    assert len(errors) == 1 and re.search(expect, errors[0]), r.stderr
    assert "Traceback" not in r.stderr


@needs_mpi
def test_cli_failed_write_on_rank_0_leaves_no_half_written_file(tmp_path):
    out = tmp_path / "o"
    r = mpirun(2, WORKER, "cli", "write", "--distributed", "--epochs", "1", "--no-progress", "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("fastgrad-train")]
    assert len(errors) == 1 and "rank 0 of 2" in errors[0] and "No space left" in errors[0], r.stderr
    # neither model.npz nor its temporary (the checkpoint of the finished epoch was written before)
    assert [p.name for p in out.iterdir()] == ["checkpoint.npz"]
