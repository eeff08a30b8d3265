"""In-place operators (+=, -=, *=, /=) and the version counter, as in PyTorch."""
import numpy as np
import pytest

import fastgrad as fg


def leaf(v, dtype="float64"):
    return fg.tensor(v, dtype=dtype, requires_grad=True)


def const(v, dtype="float64"):
    return fg.tensor(v, dtype=dtype)


# --- the operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_update_under_no_grad_is_in_place(dtype):
    W = leaf([[1.0, 2.0], [3.0, 4.0]], dtype)
    (W * W).sum().backward()
    data, ident = W.data, id(W)
    expected = W.data - 0.1 * (2 * W.data)
    with fg.no_grad():
        W -= 0.1 * W.grad
    assert id(W) == ident and W.data is data and W.dtype == dtype
    assert W.requires_grad and W.is_leaf
    np.testing.assert_allclose(W.data, expected, rtol=1e-6)


def test_leaf_requiring_grad_outside_no_grad_raises():
    W = leaf([1.0, 2.0])
    for op in ("+=", "-=", "*=", "/="):
        with pytest.raises(RuntimeError, match=r"leaf tensor that requires grad.*no_grad\(\)"):
            exec(f"W {op} 2.0", {"W": W})
    np.testing.assert_array_equal(W.data, [1.0, 2.0])
    assert W._version == 0


@pytest.mark.parametrize("op, numpy_op", [("+=", np.add), ("-=", np.subtract), ("*=", np.multiply),
                                          ("/=", np.divide)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_operands_and_broadcasting(op, numpy_op, dtype):
    base = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    for other, other_np in ((2.5, 2.5), (3, 3.0), (const([1.0, 2.0, 4.0], dtype), np.array([1.0, 2.0, 4.0])),
                            (np.array([[2.0], [-1.0]]), np.array([[2.0], [-1.0]])),
                            (const(2.0, dtype), 2.0)):
        x = const(base, dtype)
        data = x.data
        ns = {"x": x, "other": other}
        exec(f"x {op} other", ns)
        assert ns["x"] is x and x.data is data and x.dtype == dtype
        np.testing.assert_allclose(x.data, numpy_op(base, other_np), rtol=1e-6)
        assert x._version == 1


def test_operand_that_does_not_fit_the_target_shape_raises():
    x = const(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 1\)"):
        x += const([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="cannot be broadcast"):
        x += np.ones((3, 3))
    np.testing.assert_array_equal(x.data, np.zeros((2, 1)))
    assert x._version == 0


def test_dtype_mix_raises_type_error():
    x = const([1.0, 2.0], "float32")
    with pytest.raises(TypeError):
        x += const([1.0, 2.0], "float64")


def test_recorded_output_or_operand_requiring_grad_raises_in_grad_mode():
    w = leaf([1.0, 2.0])
    y = w * 2.0
    with pytest.raises(RuntimeError, match=r"output of op 'mul'.*x = x \+ y"):
        y += 1.0
    x = const([1.0, 1.0])
    with pytest.raises(RuntimeError, match="operand that requires grad"):
        x += w
    np.testing.assert_array_equal(x.data, [1.0, 1.0])


def test_views_and_detached_copies_see_the_change_and_share_the_version():
    x = const(np.arange(6.0))
    v = x.reshape(2, 3)
    d = x.detach()
    v += 1.0
    np.testing.assert_array_equal(x.data, np.arange(6.0) + 1)
    np.testing.assert_array_equal(d.data, np.arange(6.0) + 1)
    assert x._version == v._version == d._version == 1
    d *= 2.0
    assert x._version == 2
    np.testing.assert_array_equal(v.data, (np.arange(6.0) + 1).reshape(2, 3) * 2)


# --- the version counter: a saved tensor modified afterwards ------------------------------------------


def test_modified_saved_input_makes_backward_raise_naming_the_op():
    w = leaf([1.0, 2.0])
    x = const([3.0, 4.0])
    y = (x * w).sum()  # mul saves x to compute w's gradient
    x += 1.0
    with pytest.raises(RuntimeError, match=r"op 'mul'.*modified in place.*version 1"):
        y.backward()
    assert w.grad is None  # a failed backward changes no .grad


def test_modified_input_that_was_not_saved_is_fine():
    w = leaf([1.0, 2.0])
    x = const([3.0, 4.0])
    y = (x + w).sum()  # add saves only shapes
    x += 1.0
    y.backward()
    np.testing.assert_array_equal(w.grad, [1.0, 1.0])


def test_modified_saved_output_makes_backward_raise():
    w = leaf([0.0, 1.0])
    y = w.exp()  # exp saves its output
    with fg.no_grad():
        y += 1.0
    with pytest.raises(RuntimeError, match=r"op 'exp'.*its output"):
        (y * 1.0).sum().backward()


def test_modified_output_that_was_not_saved_is_fine():
    w = leaf([0.0, 1.0])
    y = w * 2.0  # mul saves its inputs, not its output
    with fg.no_grad():
        y += 1.0
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, [2.0, 2.0])


def test_modification_through_a_view_is_seen():
    w = leaf([1.0, 2.0, 3.0, 4.0])
    x = const([1.0, 1.0, 1.0, 1.0])
    y = (x * w).sum()
    v = x.reshape(2, 2)
    v -= 1.0
    with pytest.raises(RuntimeError, match="op 'mul'"):
        y.backward()


def test_leaf_updated_under_no_grad_after_use_makes_backward_raise():
    W = leaf([1.0, 2.0])
    x = leaf([3.0, 4.0])
    loss = (W * x).sum()
    with fg.no_grad():
        W *= 0.5
    with pytest.raises(RuntimeError, match="op 'mul'"):
        loss.backward()


def test_optimizer_step_bumps_versions_and_a_stale_graph_raises():
    rng = np.random.default_rng(0)
    net = fg.nn.MLP([4, 5, 3], seed=0, dtype="float64")
    opt = fg.optim.SGD(net.parameters(), lr=0.1)
    X = rng.standard_normal((6, 4))
    y = [0, 1, 2, 0, 1, 2]
    loss = fg.softmax_cross_entropy(net(X), y)
    loss.backward(retain_graph=True)
    opt.step()
    assert all(p._version == 1 for p in net.parameters())
    with pytest.raises(RuntimeError, match="op 'affine'"):
        loss.backward()
    for _ in range(3):  # the ordinary loop never trips the check
        opt.zero_grad()
        fg.softmax_cross_entropy(net(X), y).backward()
        opt.step()
    assert all(p._version == 4 for p in net.parameters())


def test_version_starts_at_zero_and_counts():
    x = const([1.0])
    assert x._version == 0
    x += 1.0
    x *= 2.0
    assert x._version == 2
    np.testing.assert_array_equal(x.data, [4.0])
