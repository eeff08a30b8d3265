"""Pinned edge values: kinks, ties and extreme inputs, routed as DESIGN.md documents.

Expected values are worked out by hand from the documented conventions, not copied from the code.
"""
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import reference

DTYPES = ["float32", "float64"]


@contextmanager
def strict_floats(under="raise"):
    """Any floating-point exception (overflow, invalid, divide, underflow) and any warning is an error.

    The softmax loss passes under="ignore": e**-20000 -> 0 is the correct result of a stable formula.
    """
    with np.errstate(all="raise", under=under), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def grad_of(fn, values, dtype, **kw):
    x = fg.tensor(values, dtype=dtype, requires_grad=True)
    y = fn(x, **kw)
    y.sum().backward()
    return y.data, x.grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_at_zero(dtype):
    y, g = grad_of(fg.relu, [-1.0, 0.0, 1.0], dtype)
    np.testing.assert_array_equal(y, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])  # ReLU'(0) = 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_at_zero(dtype):
    y, g = grad_of(fg.leaky_relu, [-1.0, 0.0, 1.0], dtype, negative_slope=0.25)
    np.testing.assert_array_equal(y, [-0.25, 0.0, 1.0])
    np.testing.assert_array_equal(g, [0.25, 0.25, 1.0])  # Leaky ReLU'(0) = slope


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_default_slope(dtype):
    _, g = grad_of(fg.leaky_relu, [0.0], dtype)
    np.testing.assert_allclose(g, [0.01], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_at_zero(dtype):
    y, g = grad_of(fg.elu, [-1.0, 0.0, 1.0], dtype, alpha=0.5)
    np.testing.assert_allclose(y, [0.5 * (np.exp(-1.0) - 1), 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(g, [0.5 * np.exp(-1.0), 0.5, 1.0], rtol=1e-6)  # ELU'(0) = alpha


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_ties_go_to_the_first_argument(dtype):
    a = fg.tensor([1.0, 2.0, 3.0, -1.0], dtype=dtype, requires_grad=True)
    b = fg.tensor([1.0, 5.0, 3.0, -2.0], dtype=dtype, requires_grad=True)
    fg.maximum(a, b).backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 3.0, 4.0])
    np.testing.assert_array_equal(b.grad, [0.0, 2.0, 0.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_ties_with_broadcasting_and_constants(dtype):
    x = fg.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=dtype, requires_grad=True)
    fg.maximum(x, 0.0).sum().backward()  # ties at 0 go to x, the first argument
    np.testing.assert_array_equal(x.grad, [[1.0, 1.0], [1.0, 0.0]])
    x.grad = None
    fg.maximum(0.0, x).sum().backward()  # now the constant is first and takes the ties
    np.testing.assert_array_equal(x.grad, [[0.0, 1.0], [0.0, 0.0]])
    row = fg.tensor([0.0, 1.0], dtype=dtype, requires_grad=True)
    fg.maximum(row, x).sum().backward()  # row broadcast over 2 rows; ties at (0,0), (0,1), (1,0)
    np.testing.assert_array_equal(row.grad, [2.0, 2.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_ties_go_to_the_first_maximal_entry(dtype):
    x = fg.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], dtype=dtype, requires_grad=True)
    x.max(axis=1).backward(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])

    x = fg.tensor([[3.0, 1.0], [3.0, 3.0]], dtype=dtype, requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[1, 0], [0, 0]])

    x = fg.tensor([[3.0, 1.0], [3.0, 3.0]], dtype=dtype, requires_grad=True)
    x.max(axis=0, keepdims=True).sum().backward()
    np.testing.assert_array_equal(x.grad, [[1, 0], [0, 1]])

    x = fg.tensor(np.full((2, 2, 2), 7.0), dtype=dtype, requires_grad=True)
    x.max(axis=(0, 2)).sum().backward()  # first in C order over the reduced axes
    expected = np.zeros((2, 2, 2))
    expected[0, :, 0] = 1
    np.testing.assert_array_equal(x.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxout_ties_go_to_the_first_piece(dtype):
    z = fg.tensor([[1.0, 1.0, 2.0, 0.0], [5.0, 5.0, -1.0, -1.0]], dtype=dtype, requires_grad=True)
    y = fg.maxout(z, 2)
    np.testing.assert_array_equal(y.data, [[1.0, 2.0], [5.0, -1.0]])
    y.sum().backward()
    np.testing.assert_array_equal(z.grad, [[1, 0, 1, 0], [1, 0, 1, 0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [fg.sigmoid, fg.tanh])
def test_saturating_gates_at_1000(fn, dtype):
    with strict_floats():
        y, g = grad_of(fn, [-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype)
    low = 0.0 if fn is fg.sigmoid else -1.0
    mid = 0.5 if fn is fg.sigmoid else 0.0
    mid_grad = 0.25 if fn is fg.sigmoid else 1.0
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(y, [low, low, mid, 1.0, 1.0], atol=1e-30)
    np.testing.assert_allclose(g, [0.0, 0.0, mid_grad, 0.0, 0.0], atol=1e-30)
    forward, backward = reference.REFERENCE[fn.__name__]  # the reference is just as safe
    with strict_floats():
        ref_y, cache = forward(np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype))
        (ref_g,) = backward(np.ones(5, dtype=dtype), cache)
    np.testing.assert_allclose(ref_y, y, atol=1e-30)
    np.testing.assert_allclose(ref_g, g, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_with_huge_logits(dtype):
    scores = fg.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype, requires_grad=True)
    with strict_floats(under="ignore"):
        loss = fg.softmax_cross_entropy(scores, [0, 0])
        loss.backward()
    # row 0 is right with certainty (log-prob 0); row 1 puts its label 2e4 below the max
    assert np.isfinite(loss.item())
    assert loss.item() == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(scores.grad, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)
    with strict_floats(under="ignore"):
        ref_loss, cache = reference.softmax_cross_entropy_forward(scores.data, np.array([0, 0]))
        (ref_grad,) = reference.softmax_cross_entropy_backward(np.ones((), dtype=dtype), cache)
    assert ref_loss == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(ref_grad, scores.grad, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_loss_at_a_zero_margin(dtype):
    # s_j - s_y + delta = 0 exactly: the hinge is inactive there (strict > 0, as in CS231n)
    scores = fg.tensor([[1.0, 0.0, 2.0]], dtype=dtype, requires_grad=True)
    loss = fg.svm_loss(scores, [0], delta=1.0)
    loss.backward()
    assert loss.item() == 2.0  # only class 2 contributes 2 - 1 + 1
    np.testing.assert_array_equal(scores.grad, [[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_at_zero(dtype):
    with strict_floats():
        _, g0 = grad_of(lambda x: x**0, [0.0, 2.0], dtype)
        _, g1 = grad_of(lambda x: x**1, [0.0, 2.0], dtype)
        _, g2 = grad_of(lambda x: x**2, [0.0, 2.0], dtype)
    np.testing.assert_array_equal(g0, [0.0, 0.0])
    np.testing.assert_array_equal(g1, [1.0, 1.0])
    np.testing.assert_array_equal(g2, [0.0, 4.0])
