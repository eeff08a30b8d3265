"""Affine layers (with each fused activation) and 2-D matmul through BLAS, against NumPy in float64."""
import threading
import tracemalloc

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _linalg

ACTIVATIONS = [None, "relu", "leaky_relu", "sigmoid", "tanh", "elu"]
SLOPE, ALPHA = 0.1, 0.7  # not the defaults, so that a parameter that is dropped shows up
TOL = {"float32": dict(rtol=2e-4, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-12)}
# (N, D, M): empty batch, 1x1, odd sizes not a multiple of any vector width, an empty inner size
SHAPES = [(0, 3, 4), (1, 1, 1), (7, 5, 3), (33, 17, 65), (4, 0, 6)]


def numpy_affine(x, W, b, activation):
    """act(x W + b) and the local gradient act'(z), in float64, written from the definitions."""
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    if activation is None:
        return z, np.ones_like(z)
    if activation == "relu":
        return np.maximum(z, 0), (z > 0).astype(float)
    if activation == "leaky_relu":
        return np.where(z > 0, z, SLOPE * z), np.where(z > 0, 1.0, SLOPE)
    if activation == "sigmoid":
        s = 1 / (1 + np.exp(-z))
        return s, s * (1 - s)
    if activation == "tanh":
        return np.tanh(z), 1 - np.tanh(z) ** 2
    assert activation == "elu"
    return np.where(z > 0, z, ALPHA * np.expm1(z)), np.where(z > 0, 1.0, ALPHA * np.exp(z))


def random_layer(shape, dtype, seed=0):
    n, d, m = shape
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)), rng.standard_normal((d, m)) / np.sqrt(max(d, 1)),
            rng.standard_normal(m), rng.standard_normal((n, m)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_affine_matches_numpy(shape, activation, dtype):
    x0, W0, b0, g0 = (a.astype(dtype) for a in random_layer(shape, dtype))
    x, W, b = (fg.tensor(a, dtype=dtype, requires_grad=True) for a in (x0, W0, b0))
    y = fg.affine(x, W, b, activation=activation, negative_slope=SLOPE, alpha=ALPHA)
    y.backward(g0)

    expected, local = numpy_affine(x0, W0, b0, activation)
    dz = g0.astype(np.float64) * local
    assert y.dtype == dtype and y.shape == expected.shape and y.data.flags.c_contiguous
    np.testing.assert_allclose(y.data, expected, **TOL[dtype])
    for t, want in [(x, dz @ W0.T.astype(np.float64)), (W, x0.T.astype(np.float64) @ dz),
                    (b, dz.sum(axis=0))]:
        assert t.grad.dtype == dtype and t.grad.shape == t.shape
        np.testing.assert_allclose(t.grad, want, **TOL[dtype])


def away_from_kinks(shape, seed):
    """A float64 layer whose pre-activations all keep |z| >= 0.05 (no kink inside the FD step)."""
    for s in range(seed, seed + 100):
        x, W, b, _ = random_layer(shape, "float64", s)
        if np.abs(x @ W + b).min() >= 0.05:
            return x, W, b
    raise AssertionError("no kink-free draw")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_affine_gradcheck_float64(activation):
    x, W, b = (fg.tensor(a, dtype="float64", requires_grad=True)
               for a in away_from_kinks((3, 4, 5), seed=1))
    fn = lambda x, W, b: fg.affine(x, W, b, activation, negative_slope=SLOPE, alpha=ALPHA)
    assert fg.gradcheck(fn, [x, W, b])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_affine_equals_the_separate_ops(activation):
    # the same layer through fg.affine(..., activation) and through @, + and the gate's own op
    gate = {None: lambda z: z, "relu": fg.relu, "sigmoid": fg.sigmoid, "tanh": fg.tanh,
            "leaky_relu": lambda z: fg.leaky_relu(z, SLOPE), "elu": lambda z: fg.elu(z, ALPHA)}[activation]
    x0, W0, b0, g0 = random_layer((9, 6, 5), "float64", seed=2)
    results = []
    for fused in (True, False):
        x, W, b = (fg.tensor(a, dtype="float64", requires_grad=True) for a in (x0, W0, b0))
        y = fg.affine(x, W, b, activation, negative_slope=SLOPE, alpha=ALPHA) if fused else gate(x @ W + b)
        y.backward(g0)
        results.append([y.data, x.grad, W.grad, b.grad])
    for fused, separate in zip(*results):
        np.testing.assert_allclose(fused, separate, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation, slope_at_zero", [
    ("relu", 0.0), ("leaky_relu", SLOPE), ("elu", ALPHA), ("sigmoid", 0.25), ("tanh", 1.0),
])
def test_affine_local_gradient_at_zero(activation, slope_at_zero):
    # z = 0 exactly: the kink conventions of DESIGN.md (ReLU'(0) = 0, leaky'(0) = slope, elu'(0) = alpha)
    x = fg.tensor([[1.0, -1.0]], requires_grad=True)
    W = fg.tensor([[2.0], [2.0]], requires_grad=True)
    b = fg.tensor([0.0], requires_grad=True)
    y = fg.affine(x, W, b, activation, negative_slope=SLOPE, alpha=ALPHA)
    assert y.item() == pytest.approx(0.5 if activation == "sigmoid" else 0.0)
    y.backward()
    assert b.grad[0] == pytest.approx(slope_at_zero)
    np.testing.assert_allclose(x.grad, [[2 * slope_at_zero] * 2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_saturated_activations_are_finite(dtype):
    x = fg.tensor([[1.0], [-1.0]], dtype=dtype, requires_grad=True)
    W = fg.tensor([[1000.0]], dtype=dtype, requires_grad=True)
    b = fg.tensor([0.0], dtype=dtype, requires_grad=True)
    for activation in ("sigmoid", "tanh", "elu"):
        y = fg.affine(x, W, b, activation)
        y.backward(np.ones((2, 1)))
        assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(W.grad))


def test_affine_skips_inputs_that_need_no_grad():
    x0, W0, b0, g0 = random_layer((6, 4, 3), "float64")
    x = fg.tensor(x0, dtype="float64")                     # the data batch: no gradient wanted
    W = fg.tensor(W0, dtype="float64")
    b = fg.tensor(b0, dtype="float64", requires_grad=True)
    y = fg.affine(x, W, b, "tanh")
    assert y._node.saved[1] is None and y._node.saved[2] is None  # x and W are not kept for backward
    y.backward(g0)
    assert x.grad is None and W.grad is None
    np.testing.assert_allclose(b.grad, (g0 * numpy_affine(x0, W0, b0, "tanh")[1]).sum(axis=0))


def test_affine_without_bias_gradient_computes_weights_only():
    x0, W0, b0, g0 = random_layer((6, 4, 3), "float64")
    x = fg.tensor(x0, dtype="float64")
    W = fg.tensor(W0, dtype="float64", requires_grad=True)
    y = fg.affine(x, W, fg.tensor(b0, dtype="float64"), "relu")
    y.backward(g0)
    np.testing.assert_allclose(W.grad, x0.T @ (g0 * numpy_affine(x0, W0, b0, "relu")[1]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_with_transposed_weight_tensor(dtype):
    # W (D, M) given as the transpose of a (M, D) parameter, as in `x @ W.T` layouts
    x0, W0, b0, g0 = random_layer((5, 7, 3), dtype)
    x = fg.tensor(x0, dtype=dtype, requires_grad=True)
    Wt = fg.tensor(W0.T, dtype=dtype, requires_grad=True)
    b = fg.tensor(b0, dtype=dtype, requires_grad=True)
    y = fg.affine(x, Wt.T, b, "sigmoid")
    y.backward(g0)
    expected, local = numpy_affine(x0, W0, b0, "sigmoid")
    np.testing.assert_allclose(y.data, expected, **TOL[dtype])
    np.testing.assert_allclose(Wt.grad, (x0.T @ (g0 * local)).T, **TOL[dtype])
    np.testing.assert_allclose(x.grad, (g0 * local) @ W0.T, **TOL[dtype])


def test_affine_accepts_non_contiguous_arrays():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 10))[::2, ::2]        # strided
    W = np.asfortranarray(rng.standard_normal((5, 3)))  # F-ordered
    b = rng.standard_normal(6)[::2]
    y = fg.affine(x, W, b, "relu")
    np.testing.assert_allclose(y.data, np.maximum(x @ W + b, 0), rtol=1e-5, atol=1e-6)


def test_affine_errors_name_the_shapes():
    x, W, b = fg.tensor(np.ones((2, 3))), fg.tensor(np.ones((4, 5))), fg.tensor(np.ones(5))
    with pytest.raises(ValueError, match=r"affine.*\(2, 3\).*\(4, 5\).*\(5,\)"):
        fg.affine(x, W, b)
    with pytest.raises(ValueError, match=r"affine.*b \(4,\)"):
        fg.affine(fg.tensor(np.ones((2, 4))), W, fg.tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"affine.*x \(4,\)"):
        fg.affine(fg.tensor(np.ones(4)), W, b)
    with pytest.raises(TypeError, match="float64"):
        fg.affine(fg.tensor(np.ones((2, 4)), dtype="float64"), W, b)
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        fg.affine(fg.tensor(np.ones((2, 4))), W, b, activation="softplus")
    with pytest.raises(ValueError, match="unknown activation 'maxout'"):
        fg.affine(fg.tensor(np.ones((2, 4))), W, b, activation="maxout")


# ---------------------------------------------------------------------------------------------
# matmul


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (1, 1, 1), (7, 5, 3), (31, 65, 17)], ids=str)
def test_matmul_matches_numpy(shape, dtype):
    n, k, m = shape
    rng = np.random.default_rng(4)
    a0, b0, g0 = rng.standard_normal((n, k)), rng.standard_normal((k, m)), rng.standard_normal((n, m))
    a = fg.tensor(a0, dtype=dtype, requires_grad=True)
    b = fg.tensor(b0, dtype=dtype, requires_grad=True)
    y = a @ b
    y.backward(g0)
    assert y.dtype == dtype and y.shape == (n, m)
    np.testing.assert_allclose(y.data, a0 @ b0, **TOL[dtype])
    np.testing.assert_allclose(a.grad, g0 @ b0.T, **TOL[dtype])
    np.testing.assert_allclose(b.grad, a0.T @ g0, **TOL[dtype])


def test_matmul_gradcheck_float64_with_transposed_operand():
    rng = np.random.default_rng(5)
    a = fg.tensor(rng.standard_normal((3, 4)), dtype="float64", requires_grad=True)
    b = fg.tensor(rng.standard_normal((5, 4)), dtype="float64", requires_grad=True)
    assert fg.gradcheck(lambda a, b: a @ b.T, [a, b])


def test_matmul_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        fg.tensor(np.ones((2, 3))) @ fg.tensor(np.ones((4, 5)))


# ---------------------------------------------------------------------------------------------
# the BLAS bindings themselves


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_blas_matmul_flags_and_orders(dtype, trans_a, trans_b, order):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 3) if trans_a else (3, 5)).astype(dtype)
    b = rng.standard_normal((4, 5) if trans_b else (5, 4)).astype(dtype)
    a, b = np.asarray(a, order=order), np.asarray(b, order=order)
    out = _linalg.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_blas_transposed_view_is_not_copied():
    # W.T of a C-contiguous W is F-contiguous: BLAS reads it through a flag, so no 4 MB copy appears
    W = np.ones((1000, 1000), dtype=np.float32)
    x = np.ones((2, 1000), dtype=np.float32)
    tracemalloc.start()
    try:
        out = _linalg.matmul(x, W.T)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000
    np.testing.assert_array_equal(out, np.full((2, 1000), 1000.0, dtype=np.float32))


def test_blas_bindings_validate_before_nogil():
    with pytest.raises(ValueError, match="C- or F-contiguous"):
        _linalg.matmul(np.ones((4, 4))[::2, ::2], np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        _linalg.matmul(np.ones(3), np.ones((3, 2)))
    with pytest.raises(TypeError, match="float32 or float64"):
        _linalg.matmul(np.ones((2, 2), dtype=np.int64), np.ones((2, 2)))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _linalg.matmul([[1.0]], np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"saved must have shape \(2, 3\)"):
        _linalg.affine_backward(np.ones((2, 3)), np.ones((3, 2)), None, None, "relu")
    with pytest.raises(ValueError, match="unknown activation 'RELU'"):
        _linalg.affine_backward(np.ones((2, 3)), np.ones((2, 3)), None, None, "RELU")
    with pytest.raises(ValueError, match=r"affine_backward: W \(3, 4\) and dy \(2, 3\)"):
        _linalg.affine_backward(np.ones((2, 3)), None, None, np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"affine_backward: x \(2, 5\) and W \(4, 3\) differ in D"):
        _linalg.affine_backward(np.ones((2, 3)), None, np.ones((2, 5)), np.ones((4, 3)))


def test_blas_from_two_threads_at_once():
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((64, 200)).astype(np.float32) for _ in range(2)]
    W = rng.standard_normal((200, 100)).astype(np.float32)
    b = rng.standard_normal(100).astype(np.float32)
    expected = [np.maximum(x @ W + b, 0) for x in xs]
    results = [[], []]

    def work(i):
        for _ in range(50):
            results[i].append(_linalg.affine_forward(xs[i], W, b, "relu")[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(expected, results):
        assert len(got) == 50
        for y in got:
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
