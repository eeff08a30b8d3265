"""Graph mechanics: fan-out, deep chains, retain_graph, no_grad, detach, buffer ownership, memory."""
import gc
import tracemalloc
import weakref
from contextlib import contextmanager

import numpy as np
import pytest

import fastgrad as fg


@contextmanager
def refcounting_only():
    """Run with the cyclic garbage collector off: whatever is freed is freed by refcounting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def leaf(v, dtype="float64"):
    return fg.tensor(v, dtype=dtype, requires_grad=True)


# --- gradients add up at branches ----------------------------------------------------------------


def test_a_plus_a():
    a = leaf([1.0, -2.0])
    (a + a).backward(np.array([1.0, 3.0]))
    np.testing.assert_array_equal(a.grad, [2.0, 6.0])


def test_x_times_x():
    x = leaf([3.0, -0.5])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, -1.0])


def test_shared_input_through_two_paths():
    x, y = leaf(3.0), leaf(-4.0)
    z = x + y
    p = x / z  # x reaches p directly and through z
    p.backward()
    # dp/dx = 1/z - x/z^2 = y/z^2, dp/dy = -x/z^2, with z = -1
    assert x.grad == pytest.approx(-4.0)
    assert y.grad == pytest.approx(-3.0)


def test_inner_node_reached_twice_through_reductions():
    """Two consumers of one inner node, each handing back a broadcast (read-only) view."""
    x = leaf([1.0, 2.0, 3.0])
    h = x * 1.0
    (h.sum() * 2 + h.mean() * 3).backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0, 3.0])


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 7.0])


# --- deep graphs -----------------------------------------------------------------------------------

CHAIN = 100_000


def test_100k_node_chain_backward_and_drop():
    x = leaf(1.5)
    y = x
    for _ in range(CHAIN):
        y = -y  # CHAIN is even: y = x
    assert y.item() == 1.5
    y.backward()  # iterative: no RecursionError
    assert x.grad == 1.0
    del y  # tearing down 100k nested nodes must not overflow the C stack


def test_100k_node_chain_dropped_without_backward_is_freed():
    x = leaf(1.0)
    with refcounting_only():
        y = x
        for i in range(CHAIN):
            y = y * 1.0
            if i == CHAIN // 2:
                middle = weakref.ref(y)
        assert middle() is not None
        del y
        assert middle() is None


# --- backward twice ----------------------------------------------------------------------------------


def test_second_backward_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])  # the failed call added nothing


def test_retain_graph_accumulates_then_releases():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # allowed: the first kept the graph; this one releases it
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_backward_through_a_released_subgraph_raises_and_changes_nothing():
    x = leaf(2.0)
    h = x.exp()
    h.backward()
    assert x.grad == pytest.approx(np.exp(2.0))
    z = h * 3 + x  # the new part would reach x before the released exp node
    with pytest.raises(RuntimeError, match="'exp'"):  # names the op where it stopped
        z.backward()
    assert x.grad == pytest.approx(np.exp(2.0))  # nothing was accumulated by the failed call


def test_a_backward_failing_deep_in_the_graph_changes_no_grad():
    from fastgrad import ops
    from fastgrad.tensor import apply

    no_rule = ops.Op("double_without_rule", lambda x: (x * 2, ()))  # not registered in TABLE
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = (apply(no_rule, x) * w).sum() + (w * w).sum()  # w's gradients arrive before the failure
    with pytest.raises(NotImplementedError, match="double_without_rule"):
        y.backward()
    assert x.grad is None and w.grad is None


# --- no_grad, detach, leaves --------------------------------------------------------------------------


def test_no_grad():
    x = leaf([1.0, 2.0])
    with fg.no_grad():
        assert not fg.is_grad_enabled()
        y = x * 2
        with fg.no_grad():
            pass
        z = y + x  # still inside: nesting restored the outer state, not True
    assert fg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and not z.requires_grad and z.is_leaf
    np.testing.assert_array_equal(z.data, [3.0, 6.0])
    with pytest.raises(RuntimeError, match="requires_grad=True"):
        z.sum().backward()
    w = (x * 2).sum()  # recording is back on
    w.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(KeyError):
        with fg.no_grad():
            raise KeyError
    assert fg.is_grad_enabled()


def test_detach():
    x = leaf([1.0, 2.0])
    y = x * 3
    d = y.detach()
    assert d.is_leaf and not d.requires_grad
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()  # d is a constant: only the direct path to x counts
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])


def test_leaf_and_non_leaf():
    x = leaf([1.0, 2.0])
    c = fg.tensor([5.0, 7.0], dtype="float64")  # a constant leaf
    y = x * c
    assert x.is_leaf and c.is_leaf and not y.is_leaf
    assert y.requires_grad and not c.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 7.0])
    assert c.grad is None and y.grad is None  # only leaves that require grad get .grad


def test_backward_of_a_leaf():
    x = leaf([1.0, 2.0])
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


# --- buffer ownership ---------------------------------------------------------------------------------


def test_sibling_gradients_do_not_alias():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.array([1.0, 1.0]))
    assert not np.shares_memory(a.grad, b.grad)
    a.grad[0] = 100.0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_gradient_argument_is_not_aliased():
    x = leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    (x + 0.0).backward(g)
    x.grad[0] = 50.0
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_reshape_and_transpose_flow_into_independent_buffers():
    x = leaf(np.arange(6.0))
    y = x.reshape(2, 3).T  # views of views: backward hands back views of the upstream gradient
    g = np.arange(6.0).reshape(3, 2)
    y.backward(g)
    np.testing.assert_array_equal(x.grad, g.T.reshape(6))
    assert x.grad.flags.c_contiguous and x.grad.flags.writeable
    assert not np.shares_memory(x.grad, g)


def test_reduction_gradient_is_a_real_array():
    x = leaf(np.zeros((2, 3)))
    x.sum().backward()
    x.grad[0, 0] = 9.0  # a broadcast view would make this write every entry (or refuse)
    np.testing.assert_array_equal(x.grad, [[9, 1, 1], [1, 1, 1]])


def test_used_twice_leaf_gradient_is_owned():
    x = leaf([1.0, 2.0])
    y = x.reshape(2)
    (y + x).backward(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_inner_gradients_kept_for_drawing_are_not_overwritten():
    x = leaf([1.0, 2.0])
    h = x + 0.0
    y = h + h
    y.backward(np.array([1.0, 1.0]), keep_grads=True)
    kept = y._node.grad.copy()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    np.testing.assert_array_equal(y._node.grad, kept)
    np.testing.assert_array_equal(h._node.grad, [2.0, 2.0])


# --- memory ------------------------------------------------------------------------------------------------


def test_relu_backward_memory_is_proportional_to_the_input():
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal((100, 4096), np.float32), requires_grad=True)  # 1.6 MB
    g = np.ones((100, 4096), dtype=np.float32)
    tracemalloc.start()
    try:
        y = fg.relu(x)
        y.backward(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * x.data.nbytes  # a per-example Jacobian alone would be 4096 * 4096 * 4 bytes
    assert peak < 4096 * 4096 * 4 / 4
    np.testing.assert_array_equal(x.grad, (x.data > 0).astype(np.float32))


def test_dropped_graph_frees_tensors_and_saved_buffers():
    x = leaf(np.ones((3, 3)))
    with refcounting_only():
        h = (x * 2).exp()
        saved = weakref.ref(h._node.saved[0])  # exp saves its output
        middle = weakref.ref(h)
        loss = h.sum()
        del h
        assert middle() is not None  # still needed by loss
        del loss
        assert middle() is None and saved() is None


@pytest.mark.parametrize("retain", [False, True])
def test_backward_releases_saved_buffers(retain):
    x = leaf(np.ones((3, 3)))
    with refcounting_only():
        h = fg.maximum(x, 0.5)
        mask = weakref.ref(h._node.saved[0])  # the a >= b mask: only the node holds it
        loss = h.sum()
        loss.backward(retain_graph=retain)
        assert h._node.released is not retain
        assert (mask() is not None) is retain  # freed right away unless the graph is retained


def test_grad_fn_called_on_a_gradient_gives_the_inputs_gradients():
    """PyTorch's y.grad_fn(g): the op's local rule applied to g (the lecture's mul gate swaps)."""
    import fastgrad as fg

    x = fg.tensor(3.0, requires_grad=True)
    y = fg.tensor(-4.0, requires_grad=True)
    f = x * y
    gx, gy = f.grad_fn(np.array(2.0, dtype=np.float32))
    assert gx == -8.0 and gy == 6.0  # 2 y and 2 x
    f.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        f.grad_fn(np.array(1.0, dtype=np.float32))
