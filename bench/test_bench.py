"""pytest-benchmark suite: every kernel's forward+backward, fastgrad against fastgrad.reference.

    python -m pytest bench/                                # all kernels at all sizes
    python -m pytest bench/ -k "relu and 1M"               # a subset
    python -m pytest bench/ --benchmark-group-by=group     # fastgrad next to reference per case

Not collected by the default `python -m pytest` (testpaths is tests/). Sizes: 64x100, the MNIST MLP
layer (128x784 -> 256), the CIFAR-10 MLP layer (256x3072 -> 512) and 1M elements; see cases.py.
Each case first checks that fastgrad and the reference agree, then each contender is timed.
"""
import pytest

import cases

KERNELS = cases.kernel_cases()


@pytest.fixture(scope="module", params=KERNELS, ids=[name for name, _ in KERNELS])
def case(request):
    """The case built once per module, its contenders' results checked to agree."""
    _, factory = request.param
    built = factory()
    built.check()
    return built


@pytest.mark.parametrize("contender", ["fastgrad", "reference"])
def test_forward_backward(benchmark, case, contender):
    benchmark.group = case.name
    benchmark(case.contenders[contender])


# --- bench/step.py (issue 11's training-step bench): its checks, not its timings -------------------

DIGITS = ((64, 100, 10), 32)


def test_step_flop_bound_is_the_issues():
    """2 x multiply-adds at 100 GFLOP/s: the issue's 1.29 ms (mnist) and 18.2 ms (cifar), one thread."""
    import step

    assert round(2 * step.multiply_adds((784, 256, 128, 10), 128) / 100e9 * 1e3, 2) == 1.29
    assert round(2 * step.multiply_adds((3072, 512, 256, 10), 256) / 100e9 * 1e3, 1) == 18.2
    # digits by hand: 32 * (3 * (64*100 + 100*10) - 64*100)
    assert step.multiply_adds(*DIGITS) == 32 * (3 * 7400 - 6400)


def test_step_contenders_agree_and_a_wrong_one_is_flagged():
    import step

    contenders = step.build(*DIGITS)  # also checks the GEMM floor's products against NumPy's
    contenders["fastgrad eager SGD"].params()[0][0, 0] += 0.5  # a different start: must be caught
    step.check(contenders, "digits")
    statuses = {label: c.status for label, c in contenders.items()}
    assert statuses.pop("fastgrad eager SGD") == "WRONG"
    assert all(s in ("", "n/a") for s in statuses.values()), statuses


def test_step_captured_columns_with_a_stand_in_capture(monkeypatch):
    """The captured columns' plumbing, with a capture that runs every call eagerly and says so."""
    import step

    import fastgrad as fg

    def capture(fn):
        def run(*args):
            run.last_reason = "stand-in: always eager"
            return fn(*args)

        run.last_reason = None
        return run

    monkeypatch.setattr(fg, "capture", capture, raising=False)
    contenders = step.build(*DIGITS)
    step.check(contenders, "digits")
    captured = contenders["fastgrad captured Adam"]
    assert captured.status == "" and captured.step.last_reason == "stand-in: always eager"
    times = step.measure({"fastgrad captured Adam": captured}, rounds=2, target=1e-3, pause=0.0)
    assert len(times["fastgrad captured Adam"]) == 2
    arrays, blocks, alive, peak, faults = step.allocations(captured.run, steps=2, fault_steps=2)
    assert blocks > 0 and peak > 0  # the eager step allocates: the measurement sees it
    assert arrays[0] >= 6 and arrays[1] == 0  # at least the 6 gradients; none of 64 KiB on digits


def test_step_tables_mark_a_capture_that_ran_eagerly(monkeypatch, capsys):
    """The child's tables, in this process (threads left alone), with the stand-in capture."""
    import argparse
    import re

    import step

    import fastgrad as fg

    def capture(fn):
        def run(*args):
            return fn(*args)

        run.last_reason = "stand-in: always eager"
        return run

    monkeypatch.setattr(fg, "capture", capture, raising=False)
    monkeypatch.setattr(step, "pin", lambda n: None)
    monkeypatch.setattr(step, "BlasThreads", lambda n: (lambda: None))
    args = argparse.Namespace(threads=1, quick=True, only="digits")
    assert step.child(args) == 0
    out = capsys.readouterr().out
    cells = next(line for line in out.splitlines() if line.startswith("| digits 64-100-10")).split("|")[2:-1]
    columns = dict(zip(step.COLUMNS, (cell.strip() for cell in cells)))
    for opt in ("SGD", "Adam"):  # timed, and marked
        assert re.fullmatch(r"[0-9.]+ (µs|ms) \(eager!\)", columns[f"fastgrad captured {opt}"]), columns
    assert not columns["fastgrad eager SGD"].endswith("(eager!)")
    assert "a captured call ran eagerly" in out and "stand-in: always eager" in out


def test_step_counts_numpy_array_allocations():
    """The counting memory handler against allocations known by hand."""
    import numpy as np
    import step

    counter = step.array_counter()
    counter.reset()
    with counter.counting():
        a = np.full(100_000, 1.0, np.float32)  # one of 400 000 bytes
        c = a + a  # one more
        a += 1.0  # in place
    # the two arrays, and 0-d temporaries (the scalars) of a few bytes each
    assert counter.large == 2 and 800_000 <= counter.nbytes < 800_100 and counter.count >= 2
    counter.reset()
    with counter.counting():
        b = a[10:]  # views: no allocation
        d = c.reshape(1000, 100).T
    assert np.shares_memory(a, b) and np.shares_memory(c, d)
    assert counter.count == 0 and counter.nbytes == 0
    del a, b, c, d  # freed through the handler's (NumPy's default) free


def test_step_cli_quick_one_thread():
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(here, "step.py"), "--quick", "--only", "digits",
                          "--thread-counts", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "## 1 thread" in out.stdout and "| digits 64-100-10, batch 32 |" in out.stdout
    assert "WRONG" not in out.stdout and "error" not in out.stdout
