"""Python protocols mean what they mean in PyTorch: comparisons, bool(), hashing, from_numpy."""
import operator

import numpy as np
import pytest

import fastgrad as fg

COMPARISONS = [(operator.eq, np.equal), (operator.ne, np.not_equal), (operator.lt, np.less),
               (operator.le, np.less_equal), (operator.gt, np.greater), (operator.ge, np.greater_equal)]


@pytest.mark.parametrize("op, numpy_op", COMPARISONS, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_comparisons_are_elementwise_booleans_without_gradient(op, numpy_op, dtype):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x = fg.tensor(a, dtype=dtype, requires_grad=True)
    y = fg.tensor(b, dtype=dtype)
    for other, other_np in ((y, b), (2.0, 2.0), (2, 2.0), (b, b), ([2.0, 2.0, 2.0], b)):
        r = op(x, other)
        assert isinstance(r, np.ndarray) and isinstance(r, fg.BoolArray) and r.dtype == bool
        np.testing.assert_array_equal(r, numpy_op(a, other_np))
    np.testing.assert_array_equal(op(b, x), numpy_op(b, a))  # ndarray on the left defers to the tensor
    np.testing.assert_array_equal(op(2.0, x), numpy_op(2.0, a))


def test_float32_and_float64_compare_without_error():
    assert (fg.tensor([1.0]) == fg.tensor([1.0], dtype="float64")).all()


def test_pytorch_accuracy_idioms():
    pred = fg.tensor([0, 1, 2, 2])
    y = np.array([0, 1, 1, 2])
    acc = (pred == y).float().mean()
    assert isinstance(acc, fg.Tensor) and acc.dtype == np.float32 and acc.item() == 0.75
    assert (pred == y).sum().item() == 3
    assert (pred == y).double().dtype == np.float64
    assert (pred == y).long().tolist() == [1, 1, 0, 1]
    assert type((pred == y).numpy()) is np.ndarray


def test_shape_mismatch_in_a_comparison_raises_value_error():
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        fg.tensor([1.0, 2.0]) == fg.tensor([1.0, 2.0, 3.0])


def test_comparing_with_non_numbers():
    x = fg.tensor([1.0, 2.0])
    assert (x == None) is False and (x != None) is True  # noqa: E711 (identity fallback, as PyTorch)
    assert (x == "a") is False
    with pytest.raises(TypeError):
        x < "a"


def test_tensors_stay_hashable_by_identity():
    a, b = fg.tensor([1.0, 2.0]), fg.tensor([1.0, 2.0])
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b" and len({a, b}) == 2
    assert hash(a) == object.__hash__(a)


def test_bool_of_a_tensor():
    assert bool(fg.tensor(2.0)) is True
    assert bool(fg.tensor([0.0])) is False
    assert bool(fg.tensor([[3.0]])) is True
    for bad in ([1.0, 2.0], [], [[1.0, 0.0]]):
        with pytest.raises(ValueError, match="ambiguous"):
            bool(fg.tensor(bad))
    with pytest.raises(ValueError):
        bool(fg.tensor([1.0, 2.0]) > 0)  # NumPy's rule for the comparison result too
    assert (fg.tensor([1.0, 2.0]) > 0).all()
    x = fg.tensor([1.0, -1.0])
    if (x > 0).any():
        pass


def test_backward_still_works_with_tensors_used_twice():
    # the tape keys tensors by identity; a == that compares values must never be used there
    x = fg.tensor([1.0, 1.0], dtype="float64", requires_grad=True)
    y = fg.tensor([1.0, 1.0], dtype="float64", requires_grad=True)  # equal values, other tensor
    (x * y + x + y).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    np.testing.assert_array_equal(y.grad, [2.0, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_numpy_shares_memory(dtype):
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    t = fg.from_numpy(a)
    assert t.data is a and t.dtype == dtype and not t.requires_grad
    a[0, 0] = 10.0
    assert t.data[0, 0] == 10.0
    t += 1.0
    assert a[1, 2] == 6.0


@pytest.mark.parametrize("bad, error, message", [
    (np.arange(3), TypeError, "int64"),
    (np.ones(3, np.float16), TypeError, "float16"),
    (np.ones(3, bool), TypeError, "bool"),
    (np.ones((3, 2)).T, ValueError, "not C-contiguous"),
    (np.ones(6)[::2], ValueError, "not C-contiguous"),
    ([1.0, 2.0], TypeError, "list"),
])
def test_from_numpy_rejects_what_it_cannot_share(bad, error, message):
    with pytest.raises(error, match=message):
        fg.from_numpy(bad)
