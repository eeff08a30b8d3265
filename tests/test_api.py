"""The PyTorch-style surface: dim=/keepdim= spellings, max/min with indices, argmax/argmin, shape
methods, factories, the random generator and the functional API.

Expected values are NumPy's or derived by hand; the differentiable rows added for this surface are
also in tests/test_ops.py's table (gradcheck in float64, reference.py in both dtypes).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg

DTYPES = ["float32", "float64"]


def leaf(a, dtype="float64"):
    return fg.tensor(np.asarray(a, dtype=dtype), dtype=dtype, requires_grad=True)


# ---------------------------------------------------------------------------------------------
# dim= / keepdim=


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis, keep", [(None, False), (0, True), (1, False), ((0, 1), True), (-1, True)])
def test_dim_keepdim_spell_axis_keepdims(op, axis, keep):
    x = np.random.default_rng(1).permutation(12).reshape(3, 4).astype(np.float64)
    numpy_op = {"sum": np.sum, "mean": np.mean, "max": np.max}[op]
    expected = numpy_op(x, axis=axis, keepdims=keep)
    t = fg.tensor(x, dtype="float64")
    got = [
        getattr(t, op)(axis=axis, keepdims=keep),
        getattr(t, op)(axis=axis, keepdim=keep),
    ]
    if op != "max" or axis is None:  # max(dim=int) returns (values, indices), tested below
        got.append(getattr(t, op)(dim=axis, keepdim=keep))
        got.append(getattr(t, op)(dim=axis, keepdims=keep))
    if op != "max":
        got.append(getattr(t, op)(axis, keep))  # positional
    for out in got:
        assert isinstance(out, fg.Tensor)
        np.testing.assert_array_equal(out.data, expected)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "argmax", "argmin"])
def test_both_spellings_at_once_raise(op):
    t = fg.tensor(np.ones((2, 3)))
    with pytest.raises(TypeError, match="axis.*dim|dim.*axis"):
        getattr(t, op)(axis=0, dim=0)
    with pytest.raises(TypeError, match="keepdim"):
        getattr(t, op)(dim=0, keepdims=True, keepdim=True)


# ---------------------------------------------------------------------------------------------
# max / min with indices, argmax / argmin


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_dim_returns_values_and_indices(dtype):
    x = np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0]])  # ties: the first maximum wins
    t = leaf(x, dtype)
    out = t.max(1)
    values, indices = out  # PyTorch's `_, pred = out.max(1)`
    assert out.values is values and out.indices is indices
    assert isinstance(values, fg.Tensor) and values.dtype == dtype
    np.testing.assert_array_equal(values.data, [5.0, 7.0])
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [1, 0])
    values.backward(np.array([10.0, 20.0]))
    np.testing.assert_array_equal(t.grad, [[0, 10, 0], [20, 0, 0]])  # to the first maximal entry
    # the same through dim= and keepdim, and the lecture's axis= still gives the values only
    kept = t.max(dim=0, keepdim=True)
    np.testing.assert_array_equal(kept.values.data, [[7.0, 5.0, 7.0]])
    np.testing.assert_array_equal(kept.indices, [[1, 0, 1]])
    assert isinstance(t.max(axis=1), fg.Tensor) and isinstance(t.max(), fg.Tensor)
    assert t.max().item() == 7.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_min_values_indices_and_gradient(dtype):
    x = np.array([[3.0, 1.0, 1.0], [0.5, 2.0, 0.5]])
    t = leaf(x, dtype)
    values, indices = t.min(dim=1)
    np.testing.assert_array_equal(values.data, [1.0, 0.5])
    np.testing.assert_array_equal(indices, [1, 0])
    values.backward(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(t.grad, [[0, 1, 0], [2, 0, 0]])  # to the first minimal entry
    assert t.min().item() == 0.5
    np.testing.assert_array_equal(t.min(axis=0).data, [0.5, 1.0, 0.5])


def test_max_min_with_a_tensor_are_elementwise():
    a, b = leaf([1.0, 4.0, -2.0]), leaf([3.0, 0.0, -1.0])
    np.testing.assert_array_equal(a.max(b).data, [3.0, 4.0, -1.0])
    np.testing.assert_array_equal(a.min(b).data, [1.0, 0.0, -2.0])
    a.min(b).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(b.grad, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("axis, keep", [(None, False), (0, False), (1, True), (-1, False)])
def test_argmax_argmin_match_numpy(op, axis, keep):
    x = np.random.default_rng(2).integers(0, 4, size=(5, 6)).astype(np.float32)  # many ties
    t = fg.tensor(x)
    expected = getattr(np, op)(x, axis=axis, keepdims=keep)
    for got in (getattr(t, op)(axis, keep), getattr(t, op)(dim=axis, keepdim=keep)):
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_argmax_compares_with_labels():
    scores = fg.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 0, 0])
    assert (scores.argmax(1) == labels).mean() == pytest.approx(2 / 3)


def test_argmax_and_max_dim_errors():
    t = fg.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="argmax.*axis 2"):
        t.argmax(2)
    with pytest.raises(TypeError, match="argmin.*int"):
        t.argmin(1.0)
    with pytest.raises(ValueError, match="argmax.*empty"):
        fg.tensor(np.ones((0, 3))).argmax(0)
    with pytest.raises(ValueError, match="argmax.*empty"):
        fg.tensor([]).argmax()
    with pytest.raises(TypeError, match=r"max\(dim\).*axis="):
        t.max((0, 1))
    with pytest.raises(ValueError, match="max"):
        t.max(dim=5)
