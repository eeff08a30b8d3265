"""Forking while another thread is inside a fastgrad BLAS product (or a parallel kernel) must not hang.

Before the fork gate (csrc/forkgate.h) the first script below hung in 8 of 8 runs: OpenBLAS's at-fork
handler raced with the product running in the other thread. Each script runs in its own process
with a timeout, so a hang fails the test instead of hanging the suite.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastgrad as fg
from fastgrad import _linalg

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PRELUDE = textwrap.dedent("""
    import os, sys, threading, time
    import numpy as np
    import fastgrad as fg

    def busy(work):
        stop = threading.Event()
        def loop():
            while not stop.is_set():
                work()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        time.sleep(0.05)
        return stop, thread

    def fork_and_check(child_work, times):
        for i in range(times):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if child_work() else 3)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0, f"child {i} computed a wrong result"
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    sys.exit(f"child {i} hung")
                time.sleep(0.002)
""")


def run_script(body, timeout=90):
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and any forked children
        out, err = None, proc.communicate()[1]
    if out is None:
        pytest.fail(f"the process hung (no exit within {timeout} s): a fork deadlocked\n{err}")
    assert proc.returncode == 0 and out.strip().endswith("ok"), out + err
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fork_while_another_thread_multiplies_matrices(dtype):
    run_script(f"""
        rng = np.random.default_rng(0)
        a = fg.tensor(rng.standard_normal((400, 400)), dtype="{dtype}")
        W = fg.tensor(rng.standard_normal((400, 300)), dtype="{dtype}")
        b = fg.tensor(np.zeros(300), dtype="{dtype}")
        stop, thread = busy(lambda: (a @ a, fg.affine(a, W, b, activation="relu")))
        x = np.arange(12.0).reshape(3, 4)
        fork_and_check(lambda: np.allclose((fg.tensor(x, dtype="{dtype}") @ fg.tensor(x.T, dtype="{dtype}")).data,
                                           x @ x.T), times=10)
        stop.set()
        thread.join()
        print("ok")
    """)


def test_fork_while_another_thread_runs_parallel_kernels():
    run_script("""
        fg.set_num_threads(2)
        a = fg.tensor(np.linspace(-3, 3, 2_000_000, dtype=np.float32))
        stop, thread = busy(lambda: (fg.tanh(a), fg.relu(a)))
        fork_and_check(lambda: abs(float(fg.tanh(a).data[0]) - np.tanh(np.float32(-3))) < 1e-6, times=10)
        stop.set()
        thread.join()
        print("ok")
    """)


def test_a_fork_pool_works_while_a_thread_multiplies():
    run_script("""
        import multiprocessing as mp

        def gram(n):
            x = np.arange(float(n * 3)).reshape(n, 3)
            return float((fg.tensor(x) @ fg.tensor(x.T)).data.sum())

        a = fg.tensor(np.ones((400, 400), np.float32))
        stop, thread = busy(lambda: a @ a)
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(gram, range(1, 9))
        expected = [float((np.arange(n * 3.0).reshape(n, 3) @ np.arange(n * 3.0).reshape(n, 3).T).sum())
                    for n in range(1, 9)]
        assert results == expected, (results, expected)
        stop.set()
        thread.join()
        print("ok")
    """)


def test_the_gate_is_built_and_reopens_after_fork():
    assert _linalg._fork_gate_enabled() == (os.name == "posix")
    out = run_script("""
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        x = fg.tensor(np.eye(3))
        assert ((x @ x).data == np.eye(3)).all()   # the parent's gate is open again
        print("ok")
    """)
    assert out.strip() == "ok"


def test_set_num_threads_caps_absurd_counts():
    before = fg.get_num_threads()
    for bad in (0, -1, 10**9, 1025, 2.0, "2", True):
        with pytest.raises(ValueError, match="set_num_threads"):
            fg.set_num_threads(bad)
    assert fg.get_num_threads() == before
