"""Threads that never hurt: products split into fixed blocks (bit-identical for any thread count)
and a thread count chosen per call site by measurement (csrc/adapt.c)."""
import time

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _linalg as L

SITE = 99  # a call site no kernel uses


@pytest.fixture(autouse=True)
def _restore_threads():
    from fastgrad import _kernels as K

    before = fg.get_num_threads()
    for module in (L, K):  # what the machine's other processes do must not decide these tests
        module._adapt_force_others(0.0)
        module.adapt_reset()  # nor a stall an earlier test's real timings happened to show
    yield
    for module in (L, K):
        module._adapt_force_others(-1.0)
    fg.set_num_threads(before)
    L.adapt_reset()


def measure(site, key, n_ns, one_ns, n=2):
    """Drive a fresh call site through its first measurements: two calls on n threads, two on one."""
    for ns in n_ns:
        assert L._adapt_choose(site, *key, n) == n
        L._adapt_record(site, *key, n, ns)
    for ns in one_ns:
        assert L._adapt_choose(site, *key, n) == 1
        L._adapt_record(site, *key, 1, ns)


def test_first_calls_measure_n_then_one_thread_the_faster_call_of_each_counting():
    L.adapt_reset()
    measure(SITE, (1, 2, 3), [9000, 1000], [1800, 1700], n=4)  # the first team call is cold
    assert L._adapt_choose(SITE, 1, 2, 3, 4) == 4  # n threads were faster: keep them
    L.adapt_reset()
    measure(SITE, (1, 2, 3), [3000, 2500], [1800, 1900], n=4)
    assert L._adapt_choose(SITE, 1, 2, 3, 4) == 1


def test_two_slow_parallel_calls_switch_to_one_thread_at_once():
    L.adapt_reset()
    measure(SITE, (5, 5, 5), [1000, 1000], [1800, 1800])
    L._adapt_record(SITE, 5, 5, 5, 2, 40_000)  # one slow call (an interrupt) changes nothing
    assert L._adapt_choose(SITE, 5, 5, 5, 2) == 2
    L._adapt_record(SITE, 5, 5, 5, 2, 40_000)  # two in a row: a busy core, the team waits for it
    assert L._adapt_choose(SITE, 5, 5, 5, 2) == 1


def test_two_team_calls_that_waited_for_a_taken_core_stop_every_team_for_a_window():
    L.adapt_reset()
    measure(SITE, (10, 10, 10), [100_000, 100_000], [180_000, 180_000])  # the team wins
    L._adapt_record(SITE, 10, 10, 10, 2, 900_000)  # 9x, but under 1 ms more: jitter, not a stall
    assert L.adapt_stalls() == 0 and L._adapt_choose(SITE, 10, 10, 10, 2) == 2
    measure(SITE, (12, 12, 12), [20_000_000, 20_000_000], [36_000_000, 36_000_000])
    L._adapt_record(SITE, 12, 12, 12, 2, 30_000_000)  # a large call 1.5x slower: not a stall
    assert L.adapt_stalls() == 0 and L._adapt_choose(SITE, 12, 12, 12, 2) == 2
    L._adapt_record(SITE, 10, 10, 10, 2, 5_000_000)  # 5 ms: it waited for a core
    assert L.adapt_stalls() == 1
    assert L._adapt_choose(SITE, 12, 12, 12, 2) == 2  # one stall alone (an interrupt?) stops nothing
    for _ in range(64):  # and one 64 normal team calls later is alone again
        L._adapt_record(SITE, 10, 10, 10, 2, 100_000)
    L._adapt_record(SITE, 10, 10, 10, 2, 5_000_000)
    assert L.adapt_stalls() == 2 and L._adapt_choose(SITE, 12, 12, 12, 2) == 2
    for _ in range(63):
        L._adapt_record(SITE, 10, 10, 10, 2, 100_000)
    L._adapt_record(SITE, 12, 12, 12, 2, 45_000_000)  # a second within 64 team calls, anywhere
    assert L.adapt_stalls() == 3
    assert L._adapt_choose(SITE, 10, 10, 10, 2) == 1  # every call site stops at once
    assert L._adapt_choose(SITE, 12, 12, 12, 2) == 1
    assert L._adapt_choose(SITE, 11, 11, 11, 2) == 1  # a new one is not even measured
    time.sleep(0.25)  # past the window (0.2 s) that the stop lasts
    assert L._adapt_choose(SITE, 14, 14, 14, 2) == 2  # the load (forced: 0) says free: measured
    L.adapt_reset()
    assert L.adapt_stalls() == 0


def test_after_stalls_a_quarter_core_of_load_counts_as_a_taken_core():
    L._adapt_force_others(0.3)  # another process uses 30% of a core
    measure(SITE, (13, 13, 13), [100_000, 100_000], [180_000, 180_000])  # 0.3 rounds to 0: free
    assert L._adapt_choose(SITE, 13, 13, 13, 2) == 2
    L._adapt_record(SITE, 13, 13, 13, 2, 5_000_000)  # two stalls
    L._adapt_record(SITE, 13, 13, 13, 2, 5_000_000)
    time.sleep(0.25)
    cpus = __import__("os").cpu_count() or 1
    assert L._adapt_choose(SITE, 15, 15, 15, 2) == (1 if cpus <= 2 else 2)  # 2 cores: 1 left


def test_the_losing_choice_is_tried_again_later():
    L.adapt_reset()
    measure(SITE, (6, 6, 6), [50_000, 50_000], [1000, 1000])  # contended: one thread wins
    choices = {L._adapt_choose(SITE, 6, 6, 6, 2) for _ in range(100)}
    assert choices == {1}
    time.sleep(0.3)  # past FG_ADAPT_REPROBE_NS (0.25 s)
    for ns in (900, 500):  # the probe: two calls on the team; the machine is free again
        assert L._adapt_choose(SITE, 6, 6, 6, 2) == 2
        L._adapt_record(SITE, 6, 6, 6, 2, ns)
    assert L._adapt_choose(SITE, 6, 6, 6, 2) == 2


def test_setting_of_one_thread_never_runs_parallel():
    L.adapt_reset()
    assert {L._adapt_choose(SITE, 7, 7, 7, 1) for _ in range(10)} == {1}


SHAPES = [  # (m, k, n, trans_a, trans_b): the training steps' products, odd sizes, tall and wide
    (32, 64, 256, False, False), (128, 784, 256, False, False), (128, 256, 784, False, True),
    (784, 128, 256, True, False), (256, 3072, 512, False, False), (1000, 37, 9, False, False),
    (3, 5000, 1100, False, False), (777, 130, 1, True, True), (1025, 300, 200, False, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,ta,tb", SHAPES)
def test_products_are_bit_identical_for_any_thread_count(m, k, n, ta, tb, dtype):
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    exact = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    results = []
    for threads in (1, 2, 1, 2, 2):
        fg.set_num_threads(threads)
        L.adapt_reset()  # the first call at 2 threads does run on 2
        results.append(L.matmul(a, b, trans_a=ta, trans_b=tb))
    tol = 1e-4 * np.sqrt(k) if dtype == np.float32 else 1e-12 * np.sqrt(k)
    np.testing.assert_allclose(results[0], exact, rtol=0, atol=tol * np.abs(exact).max())
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_large_products_did_run_in_parallel_when_asked():
    fg.set_num_threads(2)
    L.adapt_reset()
    a = np.ones((256, 512), np.float32)
    L.matmul(a, a.T.copy())
    serial, parallel = L.adapt_counts()
    assert parallel == 1 and serial == 0


def test_scipy_blas_keeps_the_thread_setting_after_a_product():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not L.BLAS_THREADS_PER_CALL:
        pytest.skip("this BLAS has no openblas_set_num_threads")
    import scipy.linalg  # noqa: F401

    fg.set_num_threads(2)
    a = np.ones((512, 512), np.float32)
    L.matmul(a, a)
    counts = {
        info["filepath"]: info["num_threads"]
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    }
    assert counts and set(counts.values()) == {2}, counts


def test_kernels_measure_a_team_then_one_thread_and_agree_bit_for_bit():
    from fastgrad import _kernels as K

    if not K.openmp_enabled():
        pytest.skip("built without OpenMP: every kernel is serial")
    fg.set_num_threads(2)
    K.adapt_reset()
    x = np.random.default_rng(3).standard_normal(1 << 20).astype(np.float32)
    results = [K.sigmoid_forward(x) for _ in range(4)]  # two calls on a team, then two on one thread
    assert K.adapt_counts() == (2, 2)
    assert all(np.array_equal(results[0], r) for r in results)
    small = K.sigmoid_forward(x[:100])  # below the threshold: neither timed nor split
    assert K.adapt_counts() == (2, 2) and small.shape == (100,)
    fg.set_num_threads(1)
    K.sigmoid_forward(x)
    assert K.adapt_counts() == (2, 2)  # a setting of one thread is not measured


def test_no_team_is_tried_on_cores_other_processes_hold():
    cpus = __import__("os").cpu_count() or 1
    if cpus < 2:
        pytest.skip("one core")
    L._adapt_force_others(cpus - 1.0)  # every core but one is busy: one thread, not even measured
    assert {L._adapt_choose(SITE, 8, 8, 8, cpus) for _ in range(5)} == {1}
    L._adapt_force_others(0.0)
    assert L._adapt_choose(SITE, 9, 9, 9, cpus) == cpus  # free again: the team is measured


def test_the_load_of_other_processes_is_measured():
    import subprocess
    import sys

    L._adapt_force_others(-1.0)
    L.adapt_others()  # opens a window
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)
        L.adapt_others()
        time.sleep(0.4)  # a window of 0.4 s while the spinner holds a core
        others = L.adapt_others()
    finally:
        spin.kill()
        spin.wait()
    assert others > 0.5, others
