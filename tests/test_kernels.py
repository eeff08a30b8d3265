"""The C kernels (fastgrad._kernels) against plain NumPy, in float32 and float64.

Every kernel is compared with an independent NumPy computation in float64 on awkward sizes
(empty, 1, not a multiple of any vector width), pinned edge values (kinks, ties, +-inf, NaN),
and the validation each binding does before releasing the GIL. Also: kernels from two Python
threads at once, and results that do not depend on the thread count.
"""
import os
import threading

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels as K

DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 7, 1023, 1025]
# float32 kernels evaluate exp with a polynomial accurate to ~1 ulp; allow a few ulp
TOL = {np.float32: dict(rtol=4e-7 * 8, atol=1e-30), np.float64: dict(rtol=1e-14, atol=1e-300)}
EDGES = [-np.inf, -1e4, -100.0, -20.0, -1.0, -1e-8, -0.0, 0.0, 1e-8, 1.0, 20.0, 100.0, 1e4, np.inf]


def data(shape, dtype, seed=0, scale=3.0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)


def close(got, want, dtype):
    assert got.dtype == dtype and got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, **TOL[dtype])


# ------------------------------------------------------------------------------------------------
# elementwise gates: (kernel forward, kernel backward, NumPy forward, NumPy backward)
# The NumPy versions take float64 arrays; backward takes (g, x, y) with y the kernel's output,
# since sigmoid and tanh differentiate from their saved output, as they promise to.

def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


GATES = {
    "relu": (
        K.relu_forward, lambda g, x, y: K.relu_backward(g, y),
        lambda x: np.maximum(x, 0), lambda g, x, y: np.where(x > 0, g, 0.0),
    ),
    "leaky_relu": (
        lambda x: K.leaky_relu_forward(x, 0.1), lambda g, x, y: K.leaky_relu_backward(g, x, 0.1),
        lambda x: np.where(x > 0, x, 0.1 * x), lambda g, x, y: np.where(x > 0, g, 0.1 * g),
    ),
    "elu": (
        lambda x: K.elu_forward(x, 1.5), lambda g, x, y: K.elu_backward(g, x, 1.5),
        lambda x: np.where(x > 0, x, 1.5 * np.expm1(np.minimum(x, 0))),
        lambda g, x, y: np.where(x > 0, g, g * 1.5 * np.exp(np.minimum(x, 0))),
    ),
    "sigmoid": (
        K.sigmoid_forward, lambda g, x, y: K.sigmoid_backward(g, y),
        _sigmoid, lambda g, x, y: g * y * (1 - y),
    ),
    "tanh": (
        K.tanh_forward, lambda g, x, y: K.tanh_backward(g, y),
        np.tanh, lambda g, x, y: g * (1 - y * y),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(n,) for n in SIZES] + [(3, 5, 7), (1025, 3)])
@pytest.mark.parametrize("gate", sorted(GATES))
def test_gate_matches_numpy(gate, shape, dtype):
    fwd, bwd, np_fwd, np_bwd = GATES[gate]
    x, g = data(shape, dtype, 1), data(shape, dtype, 2)
    y = fwd(x)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    close(y, np_fwd(x64), dtype)
    dx = bwd(g, x, y)
    assert dx.dtype == dtype and dx.shape == shape
    # 1 - y and 1 - y*y cancel near |y| = 1, so the backward rules are exact to eps * |g|
    eps, gmax = np.finfo(dtype).eps, np.abs(g64).max(initial=0)
    np.testing.assert_allclose(dx, np_bwd(g64, x64, y.astype(np.float64)), rtol=8 * eps,
                               atol=2 * eps * gmax)
    # and within rounding of the exact derivative at x (from the exact output)
    np.testing.assert_allclose(dx, np_bwd(g64, x64, np_fwd(x64)), rtol=8 * eps,
                               atol=8 * eps * gmax)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate", sorted(GATES))
def test_gate_edge_values(gate, dtype):
    fwd, bwd, np_fwd, np_bwd = GATES[gate]
    x = np.array(EDGES, dtype=dtype)
    g = np.linspace(-1, 2, x.size).astype(dtype)
    y = fwd(x)
    with np.errstate(all="ignore"):
        want = np_fwd(x.astype(np.float64))
        close(y, want, dtype)
        finite = np.isfinite(x)
        dx = bwd(g, x, y)[finite]
        want_dx = np_bwd(g.astype(np.float64), x.astype(np.float64), y.astype(np.float64))[finite]
        np.testing.assert_allclose(dx, want_dx, rtol=8 * np.finfo(dtype).eps,
                                   atol=4 * np.finfo(dtype).eps)
    # NaN in, NaN out (forward)
    assert np.isnan(fwd(np.array([np.nan, 1.0], dtype=dtype))[0])


def test_kinks_and_no_overflow():
    x = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    g = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(K.relu_backward(g, K.relu_forward(x)), [0, 0, 1])  # ReLU'(0) = 0
    np.testing.assert_array_equal(K.leaky_relu_backward(g, x, 0.01), np.float32([0.01, 0.01, 1]))
    np.testing.assert_allclose(K.elu_backward(g, x, 2.0),
                               [2 * np.exp(-1), 2.0, 1.0], rtol=1e-6)
    big = np.array([-1e30, -88.8, 88.8, 1e30], dtype=np.float32)
    for fwd in (K.sigmoid_forward, K.tanh_forward, lambda v: K.elu_forward(v, 1.0)):
        assert np.all(np.isfinite(fwd(big)))
    # sigmoid(-88.8) = 2.7e-39 is subnormal in float32, and kept
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-big.astype(np.float64)))
    np.testing.assert_allclose(K.sigmoid_forward(big), want, rtol=1e-6, atol=1e-44)
    np.testing.assert_array_equal(K.tanh_forward(big), np.float32([-1, -1, 1, 1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_maximum(n, dtype):
    a, b, g = data(n, dtype, 1), data(n, dtype, 2), data(n, dtype, 3)
    b[::3] = a[::3]  # ties go to a
    np.testing.assert_array_equal(K.maximum_forward(a, b), np.maximum(a, b))
    da, db = K.maximum_backward(g, a, b)
    np.testing.assert_array_equal(da, np.where(a >= b, g, 0))
    np.testing.assert_array_equal(db, np.where(a >= b, 0, g))
    nan = np.array([np.nan, 1.0], dtype=dtype)
    assert np.isnan(K.maximum_forward(nan, nan[::-1].copy())).all()


# ------------------------------------------------------------------------------------------------
# max routing


def np_max_range(x, start, stop):
    """NumPy: max over axes [start, stop) and the flat index of the first maximum."""
    moved = x.reshape(x.shape[:start] + (int(np.prod(x.shape[start:stop])),) + x.shape[stop:])
    return moved.max(axis=start), moved.argmax(axis=start)


def np_max_backward(g, idx, shape, start, stop):
    moved_shape = shape[:start] + (int(np.prod(shape[start:stop])),) + shape[stop:]
    gx = np.zeros(moved_shape)
    np.put_along_axis(gx, np.expand_dims(idx, start), np.expand_dims(g, start), axis=start)
    return gx.reshape(shape)


MAX_CASES = [
    ((1,), 0, 1), ((7,), 0, 1), ((1025,), 0, 1),  # all
    ((5, 1023), 1, 2), ((3, 1025), 1, 2), ((1025, 7), 1, 2),  # last axis
    ((1023, 5), 0, 1), ((7, 1025), 0, 1), ((1, 3), 0, 1),  # first axis
    ((3, 4, 5), 1, 2), ((3, 4, 1025), 0, 2), ((2, 3, 4, 5), 1, 3), ((0, 5), 1, 2), ((5, 0), 0, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, start, stop", MAX_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_matches_numpy(shape, start, stop, ties, dtype):
    x = data(shape, dtype, 4)
    if ties:  # few distinct values: the first maximum must win
        x = np.round(x).clip(-1, 1).astype(dtype)
    y, idx = K.max_forward(x, start, stop)
    want_y, want_idx = np_max_range(x, start, stop)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    assert idx.dtype == np.intp and y.dtype == dtype
    g = data(y.shape, dtype, 5)
    gx = K.max_backward(g, idx, shape, start, stop)
    np.testing.assert_array_equal(gx, np_max_backward(g, want_idx, shape, start, stop))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_nan_wins_like_numpy(dtype):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 5.0, 5.0, 0.0]], dtype=dtype)
    for start, stop in [(1, 2), (0, 1), (0, 2)]:
        y, idx = K.max_forward(x, start, stop)
        want_y, want_idx = np_max_range(x, start, stop)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_of_infinite_rows(dtype):
    """Rows long enough for the vectorized path, all -inf but (row 1) one finite entry."""
    x = np.full((3, 40), -np.inf, dtype=dtype)
    x[1, 33] = -np.finfo(dtype).max
    y, idx = K.max_forward(x, 1, 2)
    np.testing.assert_array_equal(idx, [0, 33, 0])
    np.testing.assert_array_equal(y, x.max(axis=1))
    s = np.full((3, 40), -np.inf, dtype=dtype)
    s[:, 7] = 0  # all probability on class 7
    loss, grad = K.softmax_cross_entropy(s, np.array([7, 7, 7]))
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(s))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, h, p", [(0, 3, 2), (1, 1, 1), (7, 5, 2), (3, 1025, 3), (1025, 2, 5)])
def test_maxout_matches_numpy(n, h, p, dtype):
    z = np.round(data((n, h * p), dtype, 6))  # rounded: ties within a group
    y, idx = K.maxout_forward(z, p)
    grouped = z.reshape(n, h, p)
    np.testing.assert_array_equal(y, grouped.max(axis=-1))
    np.testing.assert_array_equal(idx, grouped.argmax(axis=-1))
    g = data((n, h), dtype, 7)
    want = np.zeros((n, h, p), dtype=dtype)
    np.put_along_axis(want, grouped.argmax(axis=-1)[..., None], g[..., None], axis=-1)
    np.testing.assert_array_equal(K.maxout_backward(g, idx, p), want.reshape(n, h * p))


# ------------------------------------------------------------------------------------------------
# losses


def np_softmax_ce(s, y):
    s = s.astype(np.float64)
    n = s.shape[0]
    shifted = s - s.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    grad = np.exp(log_p)
    grad[np.arange(n), y] -= 1
    return -log_p[np.arange(n), y].mean(), grad / n


def np_svm(s, y, delta):
    s = s.astype(np.float64)
    n = s.shape[0]
    margins = s - s[np.arange(n), y][:, None] + delta
    margins[np.arange(n), y] = 0
    active = margins > 0
    grad = active.astype(np.float64)
    grad[np.arange(n), y] = -active.sum(axis=1)
    return np.maximum(margins, 0).sum() / n, grad / n


LOSS_SHAPES = [(1, 1), (1, 7), (7, 1), (3, 1023), (5, 1025), (1025, 7)]
LOSSES = {
    "softmax_cross_entropy": (lambda s, y, w: K.softmax_cross_entropy(s, y, w), np_softmax_ce),
    "svm_loss": (lambda s, y, w: K.svm_loss(s, y, 0.5, w), lambda s, y: np_svm(s, y, 0.5)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_matches_numpy(loss, shape, dtype):
    kernel, reference = LOSSES[loss]
    s = data(shape, dtype, 8)
    y = np.random.default_rng(9).integers(0, shape[1], shape[0]).astype(np.intp)
    value, grad = kernel(s, y, True)
    want_value, want_grad = reference(s, y)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(want_value, rel=rtol, abs=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol / shape[0] / 10)
    assert grad.dtype == dtype
    value_only, none = kernel(s, y, False)
    assert none is None and value_only == value


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_for_huge_scores(dtype):
    s = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4 + 1.0, -3e4]], dtype=dtype)
    y = np.array([1, 1])
    value, grad = K.softmax_cross_entropy(s, y)
    want_value, want_grad = np_softmax_ce(s, y)
    assert np.isfinite(value) and value == pytest.approx(want_value, rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# validation before the GIL is released


f32 = np.zeros((4, 6), dtype=np.float32)
f64 = np.zeros((4, 6), dtype=np.float64)
labels = np.zeros(4, dtype=np.intp)

BAD_CALLS = [
    # (call, exception, words the message must contain)
    (lambda: K.relu_forward(f32[:, ::2]), ValueError, "C-contiguous"),
    (lambda: K.relu_forward(f32.T), ValueError, "C-contiguous"),
    (lambda: K.sigmoid_forward(f32.astype(np.int64)), TypeError, "float32 or float64"),
    (lambda: K.tanh_forward(f32.astype(np.float16)), TypeError, "float32 or float64"),
    (lambda: K.tanh_forward([1.0, 2.0]), TypeError, "numpy.ndarray"),
    (lambda: K.relu_backward(f32, f64), TypeError, "float32 but y is float64"),
    (lambda: K.sigmoid_backward(f32, f32[:3]), ValueError, "(4, 6) but y has shape (3, 6)"),
    (lambda: K.leaky_relu_backward(f32, f32[:, ::2], 0.1), ValueError, "C-contiguous"),
    (lambda: K.elu_backward(f32, f32.ravel(), 1.0), ValueError, "shape"),
    (lambda: K.maximum_forward(f32, f32[:2]), ValueError, "shape"),
    (lambda: K.maximum_backward(f32, f32, f64), TypeError, "float64"),
    (lambda: K.max_forward(f32, 1, 1), ValueError, "non-empty range"),
    (lambda: K.max_forward(f32, 0, 3), ValueError, "non-empty range"),
    (lambda: K.max_forward(np.zeros((3, 0), np.float32), 1, 2), ValueError, "empty"),
    (lambda: K.max_backward(f32[:, 0].copy(), labels + 6, (4, 6), 1, 2), ValueError,
     "out of range [0, 6)"),
    (lambda: K.max_backward(f32[:, 0].copy(), labels - 1, (4, 6), 1, 2), ValueError,
     "value -1"),
    (lambda: K.max_backward(f32[:, 0].copy(), labels.astype(np.int32), (4, 6), 1, 2), TypeError,
     "int32"),
    (lambda: K.max_backward(f32[:3, 0].copy(), labels[:3], (4, 6), 1, 2), ValueError,
     "expected (4,)"),
    (lambda: K.maxout_forward(f32, 4), ValueError, "pieces=4"),
    (lambda: K.maxout_backward(f32, np.zeros((4, 6), np.intp) + 2, 2), ValueError,
     "out of range [0, 2)"),
    (lambda: K.maxout_backward(f32, np.zeros((4, 5), np.intp), 2), ValueError, "(4, 5)"),
    (lambda: K.softmax_cross_entropy(f32, labels + 6), ValueError, "out of range [0, 6)"),
    (lambda: K.softmax_cross_entropy(f32, labels - 1), ValueError, "value -1"),
    (lambda: K.softmax_cross_entropy(f32, labels.astype(np.int32)), TypeError, "int32"),
    (lambda: K.softmax_cross_entropy(f32, labels[:3]), ValueError, "shape (3,)"),
    (lambda: K.softmax_cross_entropy(f32[:, ::2], labels), ValueError, "C-contiguous"),
    (lambda: K.softmax_cross_entropy(np.zeros((0, 3), np.float32), labels[:0]), ValueError,
     "N, C >= 1"),
    (lambda: K.svm_loss(f32, labels + 6, 1.0), ValueError, "out of range [0, 6)"),
    (lambda: K.svm_loss(f32.ravel(), labels, 1.0), ValueError, "(N, C)"),
    (lambda: K.svm_loss(f32, labels[::2], 1.0), ValueError, "C-contiguous"),
    (lambda: K.svm_loss(f32, labels[:2], 1.0), ValueError, "shape (2,)"),
]


@pytest.mark.parametrize("call, exc, words", BAD_CALLS)
def test_kernels_reject_bad_arguments(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_the_arguments_around_the_bad_ones_are_accepted():
    """The valid neighbours of BAD_CALLS go through, so those fail for the stated reason."""
    assert K.max_backward(f32[:, 0].copy(), labels + 5, (4, 6), 1, 2).shape == (4, 6)
    assert K.maxout_backward(f32, np.zeros((4, 6), np.intp) + 1, 2).shape == (4, 12)
    assert K.softmax_cross_entropy(f32, labels + 5)[1].shape == (4, 6)
    assert K.svm_loss(f32, labels + 5, 1.0)[1].shape == (4, 6)
    assert K.maximum_backward(f32, f32, f32)[0].shape == (4, 6)


def test_op_layer_makes_inputs_contiguous():
    base = data((6, 8), np.float32, 10)
    view = base[:, ::2]  # not contiguous
    x = fg.tensor(view, requires_grad=True)
    y = fg.elu(x, alpha=0.5)
    g = data((4, 6), np.float32, 11).T  # a non-contiguous upstream gradient
    y.backward(g)
    v64 = view.astype(np.float64)
    np.testing.assert_allclose(y.data, np.where(v64 > 0, v64, 0.5 * np.expm1(v64)), rtol=3e-6)
    np.testing.assert_allclose(x.grad, np.where(v64 > 0, g, g * 0.5 * np.exp(v64)), rtol=3e-6)
    scores = fg.tensor(base.T, requires_grad=True)  # (8, 6) from a transposed view
    lab = np.arange(16)[::2] % 6  # a strided label array
    loss = fg.softmax_cross_entropy(scores, lab)
    loss.backward()
    want_loss, want_grad = np_softmax_ce(base.T, lab)
    assert loss.item() == pytest.approx(want_loss, rel=1e-6)
    np.testing.assert_allclose(scores.grad, want_grad, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# threads


@pytest.fixture
def restore_threads():
    before = fg.get_num_threads()
    yield
    fg.set_num_threads(before)


def big_calls():
    """One call per kernel on inputs above the OpenMP thresholds (so that teams do start)."""
    n = 2 * max(K.parallel_thresholds().values()) + 7
    x, g = data(n, np.float32, 12), data(n, np.float32, 13)
    s = data((n // 100, 100), np.float32, 14)
    y = np.random.default_rng(15).integers(0, 100, n // 100).astype(np.intp)
    m = data((n // 50, 50), np.float32, 16)
    return {
        "relu": lambda: K.relu_backward(g, K.relu_forward(x)),
        "leaky": lambda: K.leaky_relu_backward(g, x, 0.1) + K.leaky_relu_forward(x, 0.1),
        "elu": lambda: K.elu_backward(g, x, 1.0) + K.elu_forward(x, 1.0),
        "sigmoid": lambda: K.sigmoid_backward(g, K.sigmoid_forward(x)),
        "tanh": lambda: K.tanh_backward(g, K.tanh_forward(x)),
        "maximum": lambda: np.concatenate([K.maximum_forward(x, g), *K.maximum_backward(g, x, g)]),
        "max_last": lambda: K.max_backward(K.max_forward(m, 1, 2)[0], K.max_forward(m, 1, 2)[1],
                                           m.shape, 1, 2),
        "max_first": lambda: K.max_backward(K.max_forward(m, 0, 1)[0], K.max_forward(m, 0, 1)[1],
                                            m.shape, 0, 1),
        "maxout": lambda: K.maxout_backward(*K.maxout_forward(m, 5), 5),
        "softmax": lambda: np.append(*K.softmax_cross_entropy(s, y)[::-1]),
        "svm": lambda: np.append(*K.svm_loss(s, y, 1.0)[::-1]),
    }


def test_set_num_threads_validates():
    for bad in (0, -1, 1.5, "2", None, True):
        with pytest.raises(ValueError, match="positive integer"):
            fg.set_num_threads(bad)


def test_one_and_two_threads_give_identical_results(restore_threads):
    calls = big_calls()
    fg.set_num_threads(1)
    assert fg.get_num_threads() == 1
    one = {name: call() for name, call in calls.items()}
    fg.set_num_threads(2)
    assert fg.get_num_threads() == 2
    for name, call in calls.items():
        np.testing.assert_array_equal(call(), one[name], err_msg=name)


def test_kernels_from_two_python_threads(restore_threads):
    fg.set_num_threads(2)  # each Python thread also starts its own OpenMP team
    calls = big_calls()
    want = {name: call() for name, call in calls.items()}
    barrier = threading.Barrier(2)
    failures = []

    def worker(order):
        barrier.wait()
        for _ in range(3):
            for name in order:
                got = calls[name]()
                if not np.array_equal(got, want[name]):
                    failures.append(name)

    names = sorted(calls)
    threads = [threading.Thread(target=worker, args=(o,)) for o in (names, names[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernels_work_in_a_forked_child(restore_threads):
    """GNU OpenMP's pool is unusable after fork: the child must run the kernels serially."""
    fg.set_num_threads(2)
    n = 2 * max(K.parallel_thresholds().values())
    x = data(n, np.float32, 17)
    want = K.sigmoid_forward(x)  # starts the parent's thread pool
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 1
        try:
            fg.set_num_threads(2)  # asking again must not bring the pool back
            code = 0 if np.array_equal(K.sigmoid_forward(x), want) else 2
        finally:
            os._exit(code)
    for _ in range(200):  # up to 20 s; a hang shows as a timeout, not a stuck test run
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        threading.Event().wait(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("a kernel hung in a forked child")
