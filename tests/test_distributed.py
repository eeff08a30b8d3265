"""fastgrad.distributed under mpiexec: the trajectory of N ranks equals one process's, faults end all ranks.

Every MPI program runs in a subprocess (mpiexec, with fastgrad.launch's flags) under a timeout, so a
hang fails the test instead of stalling the suite. Skipped, with the reason, only where mpi4py or
mpiexec is missing (CI installs them: pip install -e ".[test,mpi]").
"""
import importlib.util
import json
import os
import re
import shlex
import shutil
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


def mpirun(n, *argv, timeout=TIMEOUT, extra=(), wrap=None, env_extra=None):
    """Run `python argv...` on n ranks; returns the CompletedProcess (never hangs: a timeout fails).

    extra: more mpiexec flags; wrap(cmd) -> the command line actually run (e.g. inside a namespace)."""
    env = launch.mpi_env(threads=1)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    cmd = launch.mpiexec_command(n, [sys.executable, *map(str, argv)], extra=extra)
    if wrap is not None:
        cmd = wrap(cmd)
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


def test_launch_command_has_the_flags_in_one_place(capsys, monkeypatch):
    cmd = launch.mpiexec_command(3, ["python", "x.py"], mpiexec="mpiexec")
    assert cmd[:3] == ["mpiexec", "-n", "3"] and cmd[-2:] == ["python", "x.py"]
    assert "--oversubscribe" in cmd and cmd[cmd.index("--bind-to") + 1] == "none"
    with pytest.raises(ValueError):
        launch.mpiexec_command(0, ["python"], mpiexec="mpiexec")
    monkeypatch.setattr(launch, "find_mpiexec", lambda: "/opt/mpi/bin/mpiexec")  # works without MPI too
    assert launch.main(["-n", "2", "--dry-run", "-m", "fastgrad.train", "--distributed", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-4:] == ["fastgrad.train", "--distributed", "--epochs", "1"], printed
    assert printed[0] == "/opt/mpi/bin/mpiexec" and printed[printed.index("-n") + 1] == "2"
    assert "--oversubscribe" in printed
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
    # with 3 ranks through the polled Iallreduce of DataParallel(timeout=...), else plain Allreduce
    r = mpirun(n, WORKER, "trajectory", out, env_extra={"FASTGRAD_DIST_TIMEOUT": "120"} if n == 3 else None)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(out)
    for name, (losses, params, val) in single_process.items():
        tol = 1e-11 if "float64" in str(params["W1"].dtype) else 1e-5
        np.testing.assert_allclose(got[f"{name}/loss"], losses, rtol=tol, atol=0, err_msg=name)
        for k, v in params.items():
            diff = np.max(np.abs(got[f"{name}/{k}"] - v)) / np.max(np.abs(v))
            assert diff <= tol, f"{name} {k}: relative difference {diff:.2e} > {tol:g} with {n} ranks"
        np.testing.assert_array_equal(got[f"{name}/val_acc"], val, err_msg=name)
    for k, v in _worker_module()["manual_run"](None).items():  # average_gradients, by hand
        diff = np.max(np.abs(got[f"manual/{k}"] - v)) / np.max(np.abs(v))
        assert diff <= 1e-5, f"manual loop {k}: relative difference {diff:.2e} with {n} ranks"
    assert got["broadcast_max_diff"] == 0.0  # every rank started from rank 0's parameters
    assert got["buffers_max_diff"] == 0.0  # ... and rank 0's buffers


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
def test_a_rank_that_leaves_early_ends_every_rank_after_the_timeout():
    """Rank 1 calls sys.exit(0) mid-training: without a timeout the others would wait forever in
    the next Allreduce; with FASTGRAD_DIST_TIMEOUT=5 they abort, saying why, within seconds."""
    r = mpirun(3, WORKER, "exit", timeout=120, env_extra={"FASTGRAD_DIST_TIMEOUT": "5"})
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if "got no answer from the other ranks in 5 s" in l]
    # Open MPI's launcher shares stderr with the ranks, so other bytes (once a NUL) may start the line
    assert lines and all(re.search(r"fastgrad: rank [02] of 3: the gradient Allreduce of step 4 ", l)
                         for l in lines), r.stderr


@needs_mpi
@pytest.mark.parametrize("patch,expect", [
    ("labels", r"^fastgrad-train: error: DataParallel: rank 1's training data or fit arguments differs"),
    ("missing", r"^fastgrad-train: error: rank 1 of 2: no such file: /data/on/rank1$"),
])
def test_cli_ranks_that_disagree_stop_together(patch, expect, tmp_path):
    """Errors every rank learns together (one allgather) print one line, on rank 0, and exit 2."""
    r = mpirun(2, WORKER, "cli", patch, "--distributed", "--epochs", "1", "--no-progress", "--out", tmp_path / "o")
    assert r.returncode == 2, r.stdout + r.stderr
    # Open MPI's own abort banner shares stderr with the ranks, so the line may not start a line
    errors = [l.strip() for l in r.stderr.splitlines() if "fastgrad-train:" in l]
    assert len(errors) == 1 and re.search(expect, errors[0]), r.stderr
    assert "Traceback" not in r.stderr


@needs_mpi
def test_cli_failed_write_on_rank_0_leaves_no_half_written_file(tmp_path):
    out = tmp_path / "o"
    r = mpirun(2, WORKER, "cli", "write", "--distributed", "--epochs", "1", "--no-progress", "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    # Open MPI's own abort banner shares stderr with the ranks, so the line may not start a line
    errors = [l.strip() for l in r.stderr.splitlines() if "fastgrad-train:" in l]
    assert len(errors) == 1 and "rank 0 of 2" in errors[0] and "No space left" in errors[0], r.stderr
    assert list(out.iterdir()) == []  # neither model.npz nor its temporary (nor the epoch's checkpoint)


# ---------------------------------------------------------------------------------------------
# two "hosts": network namespaces joined by a veth pair, so the ranks talk over TCP


def _sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Two network namespaces with 10.X.Y.1 and .2 on a veth pair; yields (names, addresses); removed after."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs the ip (iproute2) and unshare (util-linux) commands")
    tag = f"fg{os.getpid() % 100000}"
    names = (f"{tag}a", f"{tag}b")
    subnet = f"10.231.{os.getpid() % 250}"
    addrs = (f"{subnet}.1", f"{subnet}.2")
    created = []
    try:
        for ns in names:
            r = _sh("ip", "netns", "add", ns)
            if r.returncode:
                pytest.skip(f"ip netns add is not allowed here: {r.stderr.strip()}")
            created.append(ns)
        steps = [("ip", "link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb")]
        for ns, dev, addr in zip(names, (f"{tag}va", f"{tag}vb"), addrs):
            steps += [("ip", "link", "set", dev, "netns", ns),
                      ("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev),
                      ("ip", "-n", ns, "link", "set", dev, "up"),
                      ("ip", "-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            r = _sh(*step)
            if r.returncode:
                pytest.skip(f"cannot build the veth pair ({' '.join(step)}): {r.stderr.strip()}")
        # the "ssh" stand-in enters a namespace and a UTS namespace of its own (distinct hostnames)
        r = _sh("ip", "netns", "exec", names[0], "unshare", "--uts", "/bin/sh", "-c", "hostname probe")
        if r.returncode:
            pytest.skip(f"cannot enter a network + UTS namespace here: {r.stderr.strip()}")
        yield names, addrs, (f"{tag}va", f"{tag}vb")
    finally:
        for ns in created:  # deleting a namespace deletes its end of the veth pair (and so both)
            _sh("ip", "netns", "del", ns)


def _veth_bytes(ns, dev):
    stats = json.loads(_sh("ip", "-n", ns, "-j", "-s", "link", "show", dev).stdout)[0]["stats64"]
    return stats["rx"]["bytes"]


@needs_mpi
def test_two_hosts_over_tcp_follow_the_single_process_trajectory(two_hosts, tmp_path, single_process):
    """Rank 0 in one network namespace, rank 1 in another, Open MPI's TCP transport between them
    (shared memory excluded): the same trajectory as one process, and the bytes cross the veth."""
    (ns_a, ns_b), (addr_a, addr_b), (dev_a, dev_b) = two_hosts
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"{addr_a} slots=1\n{addr_b} slots=1\n")
    agent = Path(__file__).with_name("mpi") / "netns_agent.py"
    net = f"{addr_a.rsplit('.', 1)[0]}.0/24"
    extra = ["--hostfile", str(hostfile), "--map-by", "node",
             "--prtemca", "plm_ssh_agent", f"{sys.executable} {agent}",
             "--prtemca", "oob_tcp_if_include", net,
             "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", net, "-x", "PYTHONPATH"]

    def in_host_a(cmd):
        return ["ip", "netns", "exec", ns_a, "unshare", "--uts", "/bin/sh", "-c",
                f"hostname {ns_a}; exec " + " ".join(shlex.quote(c) for c in cmd)]

    before = _veth_bytes(ns_b, dev_b)
    out = tmp_path / "result.npz"
    r = mpirun(2, WORKER, "trajectory", out, extra=extra, wrap=in_host_a,
               env_extra={"FG_NETNS_MAP": f"{addr_a}={ns_a},{addr_b}={ns_b}"})
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(out)
    for name, (losses, params, _) in single_process.items():
        tol = 1e-11 if "float64" in str(params["W1"].dtype) else 1e-5
        np.testing.assert_allclose(got[f"{name}/loss"], losses, rtol=tol, atol=0, err_msg=name)
        for k, v in params.items():
            assert np.max(np.abs(got[f"{name}/{k}"] - v)) / np.max(np.abs(v)) <= tol, (name, k)
    # every step's gradient buffer (2,410 float32/float64 values) crossed the wire
    steps = sum(len(got[f"{name}/loss"]) for name, *_ in _worker_module()["CONFIGS"])
    assert _veth_bytes(ns_b, dev_b) - before > steps * 2410 * 4
