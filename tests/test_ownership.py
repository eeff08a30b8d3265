"""Whole-graph gradient buffer ownership: branches, a leaf in several argument positions, views.

The engine accumulates in place only into buffers it can prove nobody else holds (see
docs/ARCHITECTURE.md, "Backward and buffer ownership"). Per-op tests cannot see aliasing bugs: they
exist only in whole graphs, so every test here builds one and compares each leaf gradient with float64
central differences of the same function evaluated in plain NumPy (an independent oracle), and checks
that no `.grad` shares memory with another `.grad` or with any leaf's data.
"""
import itertools

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import ops
from fastgrad.tensor import Tensor, apply


def sig(v):
    if isinstance(v, Tensor):
        return v.sigmoid()
    return 1.0 / (1.0 + np.exp(-v))


def numeric_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) (NumPy arrays, float64) w.r.t. each array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            hi = float(f(*arrays))
            a[i] = old - eps
            lo = float(f(*arrays))
            a[i] = old
            g[i] = (hi - lo) / (2 * eps)
        grads.append(g)
    return grads


def assert_no_aliasing(leaves):
    for a, b in itertools.combinations(leaves, 2):
        assert not np.shares_memory(a.grad, b.grad), "two .grad buffers share memory"
    for a in leaves:
        for b in leaves:
            assert not np.shares_memory(a.grad, b.data), ".grad shares memory with a tensor's data"
        assert a.grad.flags.c_contiguous and a.grad.flags.writeable and a.grad.dtype == a.dtype


def check_graph(f, *shapes, seed=0, dtype="float64"):
    """Backpropagate f (written with operators that work on Tensors and ndarrays alike) and compare."""
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-2, 2, s) for s in shapes]
    leaves = [fg.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    before = [t.data.copy() for t in leaves]
    f(*leaves).backward()
    expected = numeric_grads(f, [a.copy() for a in arrays])
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == "float64" else dict(rtol=2e-3, atol=2e-3)
    for i, (t, e) in enumerate(zip(leaves, expected)):
        np.testing.assert_allclose(t.grad, e, err_msg=f"gradient of leaf {i}", **tol)
    for t, b in zip(leaves, before):
        np.testing.assert_array_equal(t.data, b)  # no rule result was accumulated into data
    assert_no_aliasing(leaves)
    return leaves


# --- the two examples of issue 9 (hand-derived values) ---------------------------------------------


def test_issue9_example_branch_through_add():
    rng = np.random.default_rng(25)
    x0, x1, x2 = (fg.tensor(rng.uniform(-2, 2, (2, 2)), dtype="float64", requires_grad=True) for _ in range(3))
    loss = (x2.sigmoid() * x0).sum() + (x2 + x1).sum()
    loss.backward()
    np.testing.assert_array_equal(x1.grad, np.ones((2, 2)))  # d/dx1 sum(x2 + x1)
    s = 1 / (1 + np.exp(-x2.data))
    np.testing.assert_allclose(x0.grad, s, rtol=1e-12)
    np.testing.assert_allclose(x2.grad, x0.data * s * (1 - s) + 1, rtol=1e-12)


def test_issue9_example_leaf_in_three_places():
    w = fg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    z = w * 3
    r = w * w
    ((w + z) * 1.0 + r).sum().backward()
    np.testing.assert_array_equal(w.grad, [6.0, 8.0])  # d/dw (w + 3w + w^2) = 4 + 2w


# --- whole graphs against central differences ------------------------------------------------------

GRAPHS = {
    "add_then_reuse": (lambda a, b: ((a + b) * a + (b + a) * b).sum(), [(3,), (3,)]),
    "same_leaf_both_positions": (lambda a: ((a + a) * (a * a) + a).sum(), [(2, 3)]),
    "sub_both_positions": (lambda a, b: ((a - b) * (b - a) - (a - a)).sum(), [(4,), (4,)]),
    "chain_of_adds": (lambda a, b: (((a + b) + b) + a + (a + b)).sum() * 1.0, [(2, 2), (2, 2)]),
    "sigmoid_and_add_share_x": (lambda x, y: (sig(x) * y).sum() + (x + y).sum() + (x + x).sum(), [(2, 2)] * 2),
    "broadcast_both_ways": (lambda a, b: ((a + b) * (b + a) + a).sum(), [(3, 1), (1, 4)]),
    "row_vector_reused": (lambda a, b: ((a + b) + (a * b) + b).sum(), [(2, 3), (3,)]),
    "reshape_views": (lambda a: (a.reshape(3, 2) * a.reshape(3, 2) + a.reshape(6).reshape(3, 2)).sum(), [(2, 3)]),
    "transpose_views": (lambda a, b: ((a.T + b) * a.T + (b.T + a).T).sum(), [(2, 3), (3, 2)]),
    "matmul_reuse": (lambda a: ((a @ a.T) + (a.T @ a).sum()).sum(), [(2, 3)]),
    "sum_broadcast_then_add": (lambda a: (a.sum() + a + a.sum(axis=0)).sum(), [(2, 3)]),
    "mean_and_sum_keepdims": (lambda a: (a.mean(axis=1, keepdims=True) * a + a.sum(axis=0, keepdims=True)).sum(), [(2, 3)]),
    "getitem_views": (lambda a: (a[0] * a[1] + a[::-1][0] + a[:, 1:].sum()).sum(), [(2, 3)]),
    "neg_and_div": (lambda a, b: ((-a) / (b * b + 1) + a / (a * a + 1)).sum(), [(3,), (3,)]),
    "several_outputs_summed": (lambda a, b: (a * b).sum() + (a + b).sum() + (a - b).sum() + a.sum(), [(2,), (2,)]),
    "diamond": (lambda x: (lambda h: (h * h + h + sig(h)).sum())(x + x), [(3,)]),
    # an add that receives a fresh (engine-owned) gradient and hands it to two inputs, the first of
    # which receives more later: the shape of the bug of issue 9
    "fresh_gradient_through_add": (lambda a, b: (sig(a) * b).sum() + ((a + b) * 2.0).sum(), [(2, 2)] * 2),
    "fresh_gradient_through_reshape": (
        lambda a: (a * a).sum() + ((a.reshape(6) + a.reshape(6)) * 3.0).sum(), [(2, 3)]),
    "fresh_gradient_through_transpose": (
        lambda a, b: (a * b).sum() + ((a.T + b.T) * b.T).sum(), [(2, 3), (2, 3)]),
    "fresh_gradient_through_sub": (lambda a, b: (a * b * b).sum() + ((a - b) * 0.5).sum(), [(3,), (3,)]),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_whole_graph_gradients(name, dtype):
    f, shapes = GRAPHS[name]
    check_graph(f, *shapes, dtype=dtype)


def test_retain_graph_twice_doubles_every_gradient():
    rng = np.random.default_rng(1)
    x = fg.tensor(rng.uniform(-1, 1, (2, 3)), dtype="float64", requires_grad=True)
    y = fg.tensor(rng.uniform(-1, 1, (2, 3)), dtype="float64", requires_grad=True)
    loss = ((x + y) * x + (y + x).reshape(3, 2).T.reshape(2, 3)).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy(), y.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first[0], rtol=1e-14)
    np.testing.assert_allclose(y.grad, 2 * first[1], rtol=1e-14)
    np.testing.assert_allclose(first[0], 2 * x.data + y.data + 1, rtol=1e-14)
    np.testing.assert_allclose(first[1], x.data + 1, rtol=1e-14)


def test_keep_grads_inner_gradients_survive_branches():
    x = fg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x + x
    y = h * h + h
    y.backward(np.array([1.0, 1.0]), keep_grads=True)
    np.testing.assert_array_equal(h._node.grad, 2 * h.data + 1)
    np.testing.assert_array_equal(x.grad, 2 * (2 * h.data + 1))
    assert not np.shares_memory(x.grad, h._node.grad)


def test_upstream_gradient_argument_is_never_written():
    x = fg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    g = np.array([1.0, 1.0])
    ((x + x) + x).backward(g)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    assert not np.shares_memory(x.grad, g)


# --- rules that hand back what they saved or an input's data ---------------------------------------
# Both rules below are mathematically right; they return a buffer that someone else holds, which the
# engine must notice by itself (accumulating into it would corrupt the saved buffer or x.data).

_half_square = ops.Op("test_half_square", lambda x: (np.asarray(0.5 * np.sum(x * x)), (x,)))
_half_square.defbackward(lambda g, x: (x if g == 1 else g * x,))  # d/dx 0.5 x.x = x: x.data itself

_dot_const = ops.Op("test_dot_const", lambda x, c: (np.asarray(np.sum(x * c)), (c,)))
_dot_const.defbackward(lambda g, c: (c if g == 1 else g * c, None))  # a saved buffer itself


def test_rule_returning_an_inputs_data_is_not_accumulated_into():
    x = fg.tensor([1.0, -2.0, 3.0], dtype="float64", requires_grad=True)
    (x.sum() + apply(_half_square, x) + apply(_half_square, x)).backward()
    np.testing.assert_array_equal(x.data, [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)
    assert not np.shares_memory(x.grad, x.data)


def test_rule_returning_a_saved_buffer_is_not_accumulated_into():
    c = np.array([0.5, 1.5, -2.0])
    x = fg.tensor([1.0, 2.0, 3.0], dtype="float64", requires_grad=True)
    ct = fg.tensor(c, dtype="float64")
    loss = apply(_dot_const, x, ct) + apply(_dot_const, x, ct)
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, 2 * c)
    np.testing.assert_array_equal(ct.data, c)
    x.grad = None
    loss.backward()  # the saved buffer is still intact for a second pass
    np.testing.assert_array_equal(x.grad, 2 * c)
    np.testing.assert_array_equal(ct.data, c)


def test_leaf_used_as_its_own_upstream_view():
    # y = x.reshape(...) hands x a view of g while x is also reached directly: both must add up
    x = fg.tensor(np.arange(6.0), dtype="float64", requires_grad=True)
    (x.reshape(2, 3).T.reshape(6) + x + x.reshape(3, 2).reshape(6)).backward(np.arange(6.0))
    g = np.arange(6.0)
    np.testing.assert_array_equal(x.grad, g.reshape(3, 2).T.reshape(6) + g + g)
