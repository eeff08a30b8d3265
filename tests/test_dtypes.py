"""dtype inference as PyTorch does it: NumPy float arrays keep their dtype; the rest take the default."""
import numpy as np
import pytest

import fastgrad as fg


@pytest.fixture
def default_float64():
    was = fg.get_default_dtype()
    fg.set_default_dtype("float64")
    try:
        yield
    finally:
        fg.set_default_dtype(was)


@pytest.mark.parametrize("data, dtype", [
    (np.ones((2, 3)), np.float64), (np.ones((2, 3), np.float32), np.float32),
    (np.float64(1.5), np.float64), (np.float32(1.5), np.float32),
    (np.ones((3, 2))[::2].T, np.float64),  # a non-contiguous float64 view: copied, still float64
])
def test_numpy_floats_keep_their_dtype(data, dtype):
    t = fg.tensor(data)
    assert t.dtype == dtype and t.data.flags.c_contiguous
    np.testing.assert_array_equal(t.data, data)


@pytest.mark.parametrize("data", [[1.0, 2.0], 3, 2.5, True, [True, False], [[1, 2], [3, 4]], np.arange(3),
                                  np.ones(2, np.float16), [np.float64(1.0), np.float64(2.0)]])
def test_everything_else_takes_the_default_dtype(data):
    assert fg.get_default_dtype() == np.float32
    assert fg.tensor(data).dtype == np.float32
    assert fg.as_tensor(data).dtype == np.float32


def test_default_dtype_can_be_float64(default_float64):
    assert fg.get_default_dtype() == np.float64
    assert fg.tensor([1.0, 2.0]).dtype == np.float64
    assert fg.tensor(3).dtype == np.float64
    assert fg.tensor(np.ones(2, np.float32)).dtype == np.float32  # arrays keep theirs
    net = fg.nn.MLP([3, 4, 2], seed=0)
    assert all(p.dtype == np.float64 for p in net.parameters())


@pytest.mark.parametrize("bad", [None, "int32", np.int64, "float16", "complex128"])
def test_set_default_dtype_rejects_other_types(bad):
    with pytest.raises(TypeError):
        fg.set_default_dtype(bad)
    assert fg.get_default_dtype() == np.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_python_numbers_take_the_tensors_dtype(dtype):
    t = fg.tensor([1.0, 2.0], dtype=dtype)
    for r in (t + 1, 1 - t, t * 2.5, 2.5 / t, t ** 2, fg.maximum(t, 0.5), fg.maximum(0.5, t)):
        assert r.dtype == dtype


def test_a_tensor_keeps_its_dtype_when_copied():
    t = fg.tensor([1.0], dtype="float64")
    assert fg.tensor(t).dtype == np.float64
    assert fg.tensor(t, dtype="float32").dtype == np.float32


def test_mixing_tensors_of_two_dtypes_still_raises():
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        fg.tensor([1.0]) + fg.tensor(np.array([1.0]))


def test_float64_data_fed_to_a_float32_model_runs_in_float32():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))  # float64, as NumPy makes it
    net = fg.nn.MLP([3, 4, 2], seed=0)
    out = net(X)
    assert out.dtype == np.float32
    loss = fg.softmax_cross_entropy(out, [0, 1, 0, 1, 1])
    loss.backward()
    assert net.W1.grad.dtype == np.float32
    lin = fg.nn.Linear(3, 2, seed=0)
    assert lin(X).dtype == np.float32


def test_cs231n_style_float64_gradient_check_is_tight():
    # fg.tensor of float64 arrays now stays float64: the assignment's 1e-7-level checks hold
    rng = np.random.default_rng(1)
    X, W1, b1, W2 = rng.standard_normal((4, 5)), rng.standard_normal((5, 6)), rng.standard_normal(6), \
        rng.standard_normal((6, 3))
    y = np.array([0, 2, 1, 2])
    params = [fg.tensor(a, requires_grad=True) for a in (W1, b1, W2)]
    assert all(p.dtype == np.float64 for p in params)

    def loss_of(w1, b1_, w2):
        return fg.softmax_cross_entropy(fg.relu(fg.tensor(X) @ w1 + b1_) @ w2, y)

    loss_of(*params).backward()
    eps = 1e-6
    for p in params:
        num = np.zeros_like(p.data)
        for i in np.ndindex(p.shape):
            old = p.data[i]
            p.data[i] = old + eps
            hi = loss_of(*params).item()
            p.data[i] = old - eps
            lo = loss_of(*params).item()
            p.data[i] = old
            num[i] = (hi - lo) / (2 * eps)
        rel = np.abs(num - p.grad) / np.maximum(1e-8, np.abs(num) + np.abs(p.grad))
        assert rel.max() < 1e-6
