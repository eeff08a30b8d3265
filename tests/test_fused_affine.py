"""The fused layer fg.affine(x, W, b, activation=a) against the same layer built from its parts,
fg.<a>(x @ W + b), TO THE LAST BIT: forward and the gradients of x, W and b, both dtypes, every
activation, awkward sizes (odd widths for the SIMD tails, sizes around the OpenMP thresholds, one
column, empty axes), pinned edge values (0, -0, subnormals, +-17, +-100, +-inf, NaN) and one or two
threads. Both paths run the same sgemm and the same C functions (csrc/activations.h), and the bias is
added with its own rounding before the activation in both, so nothing may differ.

Independent oracles pin what both paths compute at the edges: hand-derived values for NaN, the
infinities and the kinks (DESIGN.md: ReLU'(0) = 0, leaky'(0) = slope, ELU'(0) = alpha), and float64
NumPy for the ELU gradient far left (the old fused formula y + alpha was 44% off at x = -17).
"""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels, _linalg

DTYPES = ["float32", "float64"]
# what DESIGN.md and the README promise; the table in csrc/activations.h may only add to it
DOCUMENTED = {None, "relu", "leaky_relu", "sigmoid", "tanh", "elu"}
ACTIVATIONS = list(_linalg.ACTIVATIONS)  # every activation the fused layer knows, from the C table
PARAMS = {"negative_slope": 0.1, "alpha": 0.7}  # not the defaults, so a dropped parameter shows


def gate(activation, **params):
    """z -> fg.<activation>(z) with its parameter (the unfused path); identity for None."""
    if activation is None:
        return lambda z: z
    key = _linalg.ACTIVATION_PARAMS[activation]
    fn = getattr(fg, activation)
    return (lambda z: fn(z)) if key is None else (lambda z: fn(z, **{key: params[key]}))


def both_paths(x0, W0, b0, g0, activation, dtype, **params):
    """[[y, dx, dW, db] fused, [y, dx, dW, db] unfused] for the layer on these arrays."""
    params = {**PARAMS, **params}
    out = []
    for fused in (True, False):
        x, W, b = (fg.tensor(np.asarray(a, dtype=dtype), dtype=dtype, requires_grad=True)
                   for a in (x0, W0, b0))
        if fused:
            y = fg.affine(x, W, b, activation=activation, **params)
        else:
            y = gate(activation, **params)(x @ W + b)
        y.backward(np.asarray(g0, dtype=dtype))
        out.append([y.data, x.grad, W.grad, b.grad])
    return out


def assert_bits_equal(fused, unfused, what):
    for name, f, u in zip(("y", "dx", "dW", "db"), fused, unfused):
        assert f.dtype == u.dtype and f.shape == u.shape, (what, name)
        if f.size == 0:
            continue
        differ = f.view(np.uint8).reshape(f.size, -1) != u.view(np.uint8).reshape(u.size, -1)
        if differ.any():
            k = np.flatnonzero(differ.any(axis=1))[0]
            raise AssertionError(f"{what}: {name} differs at flat index {k}: fused "
                                 f"{f.ravel()[k]!r} vs unfused {u.ravel()[k]!r}")


def test_the_table_has_the_documented_activations():
    assert DOCUMENTED <= set(_linalg.ACTIVATIONS)
    assert _linalg.ACTIVATIONS[None] == 0 and len(set(_linalg.ACTIVATIONS.values())) == len(ACTIVATIONS)
    assert _linalg.ACTIVATION_PARAMS["leaky_relu"] == "negative_slope"
    assert _linalg.ACTIVATION_PARAMS["elu"] == "alpha"
    for name in ACTIVATIONS:  # every fused activation has its separate op
        assert name is None or callable(getattr(fg, name))


# (N, D, M). Thresholds: 32768 elements for exp passes, 65536 for cheap ones (csrc/common.h):
# just below, at and just above both; odd widths run the vector tails; M = 1 is the column that
# NumPy sums pairwise; D = 0 and N = 0 are empty products.
SHAPES = [
    (1, 1, 1), (2, 3, 1), (9, 4, 1), (300, 5, 1), (7, 5, 3), (1, 6, 17), (33, 17, 65), (5, 3, 2),
    (127, 4, 257), (128, 2, 256), (129, 2, 255), (128, 3, 257),
    (255, 2, 257), (256, 2, 256), (257, 2, 256), (513, 2, 129), (4, 0, 6), (0, 3, 4),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_equals_unfused_to_the_last_bit(shape, activation, dtype):
    n, d, m = shape
    rng = np.random.default_rng(n * 10007 + d * 101 + m)
    x0 = rng.standard_normal((n, d)) * 3  # pre-activations of both signs, some saturating
    W0 = rng.standard_normal((d, m))
    b0 = rng.standard_normal(m)
    g0 = rng.standard_normal((n, m))
    fused, unfused = both_paths(x0, W0, b0, g0, activation, dtype)
    assert_bits_equal(fused, unfused, f"{activation} {dtype} {shape}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_equals_unfused_with_one_and_two_threads(activation, threads):
    # above both thresholds, with M >= 2 so the backward splits its columns over the threads
    before = fg.get_num_threads()
    rng = np.random.default_rng(11)
    x0, W0 = rng.standard_normal((301, 7)) * 3, rng.standard_normal((7, 333))
    b0, g0 = rng.standard_normal(333), rng.standard_normal((301, 333))
    try:
        for dtype in DTYPES:
            fg.set_num_threads(threads)
            fused, unfused = both_paths(x0, W0, b0, g0, activation, dtype)
            assert_bits_equal(fused, unfused, f"{activation} {dtype} threads={threads}")
            # the C pass alone (z + b, act, dz and db; BLAS itself may round differently on
            # another thread count): the same bits for any thread count
            x, W, b, g = (a.astype(dtype) for a in (x0, W0, b0, g0))
            z = x @ W
            outs = []
            for n_threads in (threads, 1):
                fg.set_num_threads(n_threads)
                y, saved = _linalg.affine_forward(np.eye(301, dtype=dtype), z, b, activation, 0.1, 0.7)
                db = _linalg.affine_backward(g, saved, None, None, activation, 0.1, 0.7)[2]
                outs.append([y, db] + ([] if saved is None else [saved]))
            for a, c in zip(*outs):
                np.testing.assert_array_equal(a.view(np.uint8), c.view(np.uint8))
    finally:
        fg.set_num_threads(before)


def edge_values(dtype):
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    v = [0.0, -0.0, tiny, -tiny, info.tiny, -info.tiny, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0,
         17.0, -17.0, 30.0, -30.0, 88.5, -88.5, 100.0, -100.0, 104.0, -104.0, 800.0, -800.0,
         info.max, -info.max, np.inf, -np.inf, np.nan]
    return np.array(v, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("where", ["x", "b"])
def test_fused_equals_unfused_on_edge_values(activation, dtype, where):
    # z = x W + b takes each edge value exactly: through x (W = 1, b = 0) or through b (x = 0)
    v = edge_values(dtype)
    k = v.size
    if where == "x":  # (k, 1) @ (1, 3) + 0: every row holds one value, in 3 columns
        x0, W0, b0 = v.reshape(k, 1), np.ones((1, 3)), np.zeros(3)
    else:  # (5, 1) zeros @ (1, k) + b: every column holds one value
        x0, W0, b0 = np.zeros((5, 1)), np.ones((1, k)), v
    rng = np.random.default_rng(3)
    g0 = rng.standard_normal((x0.shape[0], W0.shape[1]))
    fused, unfused = both_paths(x0, W0, b0, g0, activation, dtype)
    assert_bits_equal(fused, unfused, f"{activation} {dtype} edge values in {where}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_any_parameter_sign_is_exact(activation, dtype):
    # the derivative reads the input z, so a negative slope or alpha needs no special case
    rng = np.random.default_rng(5)
    x0, W0, b0, g0 = (rng.standard_normal(s) for s in ((17, 4), (4, 9), (9,), (17, 9)))
    for p in (-0.5, 0.0, 2.0):
        fused, unfused = both_paths(x0, W0, b0, g0, activation, dtype,
                                    **{_linalg.ACTIVATION_PARAMS[activation]: p})
        assert_bits_equal(fused, unfused, f"{activation} {dtype} param {p}")


# ---------------------------------------------------------------------------------------------
# what both paths compute at the edges, against hand-derived values


def fused_layer(z_values, activation, dtype, g=1.0, **params):
    """fg.affine over pre-activations z = v (through the bias: x = 0), upstream gradient g."""
    v = np.asarray(z_values, dtype=dtype)
    x = fg.tensor(np.zeros((1, 1)), dtype=dtype, requires_grad=True)
    W = fg.tensor(np.ones((1, v.size)), dtype=dtype, requires_grad=True)
    b = fg.tensor(v, dtype=dtype, requires_grad=True)
    y = fg.affine(x, W, b, activation=activation, **{**PARAMS, **params})
    y.backward(np.full((1, v.size), g, dtype=dtype))
    return y.data[0], b.grad  # with one row, db is the local gradient g act'(z)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_nan_out_for_every_activation(dtype):
    for activation in ACTIVATIONS:
        y, _ = fused_layer([np.nan, 1.0], activation, dtype)
        assert np.isnan(y[0]) and not np.isnan(y[1]), activation
    # relu: NaN stays NaN forward (as fg.relu; the fused pass used to make it 0), and its
    # derivative reads NaN as "not > 0"
    y, dz = fused_layer([np.nan, -1.0, 2.0], "relu", dtype, g=3.0)
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2
    assert list(dz) == [0.0, 0.0, 3.0]
    y, dz = fused_layer([np.nan], "leaky_relu", dtype, g=3.0)
    assert np.isnan(y[0]) and dz[0] == np.asarray(3.0 * 0.1, dtype)
    for activation in ("sigmoid", "tanh", "elu"):
        assert np.isnan(fused_layer([np.nan], activation, dtype)[1][0]), activation


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinities(dtype):
    inf = np.inf
    cases = {  # activation: (y at -inf, y at +inf, act' at -inf, act' at +inf)
        None: (-inf, inf, 1.0, 1.0),
        "relu": (0.0, inf, 0.0, 1.0),
        "leaky_relu": (-inf, inf, 0.1, 1.0),
        "sigmoid": (0.0, 1.0, 0.0, 0.0),
        "tanh": (-1.0, 1.0, 0.0, 0.0),
        "elu": (-0.7, inf, 0.0, 1.0),
    }
    for activation, want in cases.items():
        y, dz = fused_layer([-inf, inf], activation, dtype)
        np.testing.assert_array_equal(np.r_[y, dz], np.asarray(want, dtype), err_msg=str(activation))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kinks_at_zero(dtype):
    # DESIGN.md: ReLU'(0) = 0, leaky'(0) = slope; ELU'(0) = alpha, sigmoid'(0) = 1/4, tanh'(0) = 1
    want = {None: (0.0, 1.0), "relu": (0.0, 0.0), "leaky_relu": (0.0, 0.1), "sigmoid": (0.5, 0.25),
            "tanh": (0.0, 1.0), "elu": (0.0, 0.7)}
    for activation, (y0, d0) in want.items():
        for zero in (0.0, -0.0):
            y, dz = fused_layer([zero], activation, dtype)
            assert y[0] == y0 and dz[0] == np.asarray(d0, dtype), (activation, zero)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_gradient_far_left_is_accurate(dtype):
    # the old fused backward computed alpha e^z as y + alpha, which cancels: 44% off at z = -17
    z = np.array([-17.0, -30.0, -60.0, -5.0, -1e-3], dtype=dtype)
    _, dz = fused_layer(z, "elu", dtype)
    want = 0.7 * np.exp(z.astype(np.float64))
    np.testing.assert_allclose(dz, want, rtol=4e-7 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturation_is_exact(dtype):
    y, dz = fused_layer([-100.0, 100.0, -30.0, 30.0], "tanh", dtype)
    np.testing.assert_array_equal(y, np.asarray([-1, 1, -1, 1], dtype))
    assert np.all(dz >= 0) and np.all(dz[:2] == 0)
    y, _ = fused_layer([-100.0, 100.0], "sigmoid", dtype)
    np.testing.assert_allclose(y, [np.exp(-100.0), 1.0], rtol=1e-6, atol=0 if dtype == "float64" else 2e-45)


def test_what_the_fused_layer_saves():
    # act' reads the output (relu, sigmoid, tanh): y is all it keeps; it reads the input
    # (leaky_relu, elu): z = x W + b is kept and y is a second array
    x = np.array([[1.0, -2.0]])
    W = np.array([[1.0, 0.5], [1.0, 1.0]])
    b = np.array([0.25, -0.5])
    z = x @ W + b
    for activation in ACTIVATIONS:
        y, saved = _linalg.affine_forward(x, W, b, activation, 0.1, 0.7)
        if activation is None:
            assert saved is None
        elif activation in ("leaky_relu", "elu"):
            assert saved is not y and np.array_equal(saved, z), activation
        else:
            assert saved is y, activation


def test_relu_nan_through_the_kernels_agrees():
    # the elementwise kernel and the fused pass: one function, one answer
    z = np.array([[np.nan, -0.0, 0.0, 1.0, -1.0]], dtype=np.float32)
    y, _ = _linalg.affine_forward(np.zeros((1, 1), np.float32), np.ones((1, 5), np.float32), z[0], "relu")
    np.testing.assert_array_equal(y, _kernels.relu_forward(z + np.float32(0)))
