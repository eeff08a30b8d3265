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


# ---------------------------------------------------------------------------------------------
# sizes and shapes


def test_size_numel_dim():
    t = fg.tensor(np.zeros((2, 3, 4)))
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    assert t.numel() == 24 and t.dim() == 3 and fg.tensor(5.0).numel() == 1 and fg.tensor(5.0).dim() == 0
    with pytest.raises(ValueError, match="size.*axis 3"):
        t.size(3)
    with pytest.raises(TypeError, match="size"):
        t.size(1.0)


@pytest.mark.parametrize(
    "method, args, shape",
    [
        ("view", (6, 4), (6, 4)), ("view", ((-1,),), (24,)), ("view", (2, -1), (2, 12)),
        ("flatten", (), (24,)), ("flatten", (1,), (2, 12)), ("flatten", (0, 1), (6, 4)),
        ("flatten", (-2, -1), (2, 12)), ("flatten", (1, 1), (2, 3, 4)),
        ("unsqueeze", (0,), (1, 2, 3, 4)), ("unsqueeze", (3,), (2, 3, 4, 1)), ("unsqueeze", (-1,), (2, 3, 4, 1)),
        ("unsqueeze", (-4,), (1, 2, 3, 4)),
        ("permute", (2, 0, 1), (4, 2, 3)), ("permute", ((1, 2, 0),), (3, 4, 2)), ("permute", (-1, 0, 1), (4, 2, 3)),
    ],
)
def test_shape_methods_match_numpy_and_differentiate(method, args, shape):
    x = np.random.default_rng(3).normal(size=(2, 3, 4))
    t = leaf(x)
    out = getattr(t, method)(*args)
    assert out.shape == shape
    if method == "permute":
        dims = args[0] if len(args) == 1 else args
        np.testing.assert_array_equal(out.data, np.transpose(x, dims))
    else:
        np.testing.assert_array_equal(out.data.ravel(), x.ravel())  # same order of elements
    assert fg.gradcheck(lambda a: getattr(a, method)(*args), [t])


def test_squeeze():
    t = fg.tensor(np.zeros((1, 2, 1, 3, 1)))
    assert t.squeeze().shape == (2, 3)
    assert t.squeeze(0).shape == (2, 1, 3, 1)
    assert t.squeeze(1).shape == t.shape  # not of size 1: kept, as in PyTorch
    assert t.squeeze(-1).shape == (1, 2, 1, 3)
    assert t.squeeze((0, 2)).shape == (2, 3, 1)
    assert fg.tensor(3.0).squeeze().shape == () and fg.tensor([3.0]).squeeze().shape == ()
    with pytest.raises(ValueError, match="squeeze.*axis 5"):
        t.squeeze(5)


def test_flatten_and_unsqueeze_edges():
    assert fg.tensor(2.0).flatten().shape == (1,)
    assert fg.tensor(np.zeros((0, 3))).flatten().shape == (0,)
    assert fg.tensor(2.0).unsqueeze(0).shape == (1,)
    with pytest.raises(ValueError, match="flatten.*start_dim"):
        fg.tensor(np.zeros((2, 3))).flatten(1, 0)
    with pytest.raises(ValueError, match="unsqueeze.*axis 3"):
        fg.tensor(np.zeros((2, 3))).unsqueeze(3)
    with pytest.raises(ValueError, match="transpose"):
        fg.tensor(np.zeros((2, 3))).permute(0, 0)


# ---------------------------------------------------------------------------------------------
# casts and copies


def test_float_double_cast_both_ways_with_the_gradient_cast_back():
    x64 = leaf([1.0 + 1e-12, -2.0])  # float64: the 1e-12 is lost in float32
    y = x64.float()
    assert y.dtype == np.float32 and y.data[0] == np.float32(1.0)
    (y * fg.tensor([3.0, 5.0])).sum().backward()
    assert x64.grad.dtype == np.float64
    np.testing.assert_array_equal(x64.grad, [3.0, 5.0])
    x32 = leaf([0.1, 0.2], "float32")
    z = x32.double()
    assert z.dtype == np.float64 and z.data[0] == np.float64(np.float32(0.1))
    z.backward(np.array([1e-10, 2.0]))
    assert x32.grad.dtype == np.float32
    np.testing.assert_array_equal(x32.grad, np.array([1e-10, 2.0], dtype=np.float32))


def test_casts_to_the_same_dtype_return_self_and_clone_copies():
    x = leaf([1.0, 2.0], "float32")
    assert x.float() is x and x.to("float32") is x and x.to(np.float32) is x and x.to("cpu") is x
    assert x.cpu() is x
    c = x.clone()
    assert c is not x and not np.shares_memory(c.data, x.data)
    np.testing.assert_array_equal(c.data, x.data)
    (c * c).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    c.data[0] = 7.0
    assert x.data[0] == 1.0
    with pytest.raises(TypeError, match="float32 or float64"):
        x.to("int64")


# ---------------------------------------------------------------------------------------------
# abs, sqrt, clamp, pow


def test_abs_sqrt_at_zero():
    x = leaf([0.0, -3.0, 4.0])
    x.abs().sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, -1.0, 1.0])  # abs'(0) = 0
    y = leaf([0.0, 4.0])
    fg.sqrt(y).sum().backward()  # no RuntimeWarning (errors in this suite)
    assert y.grad[0] == np.inf and y.grad[1] == 0.25
    assert np.isnan(fg.sqrt(fg.tensor([-1.0])).data[0])
    np.testing.assert_array_equal(fg.abs([-1.0, 2.0]).data, [1.0, 2.0])


def test_clamp_gradient_includes_the_bounds():
    x = leaf([-1.0, 0.0, 0.5, 1.0, 2.0])
    out = x.clamp(0.0, 1.0)
    np.testing.assert_array_equal(out.data, [0.0, 0.0, 0.5, 1.0, 1.0])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0, 1.0, 0.0])  # min <= x <= max, as PyTorch
    np.testing.assert_array_equal(fg.clamp(x, max=0.0).data, [-1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(x.clip(min=0.5).data, [0.5, 0.5, 0.5, 1.0, 2.0])
    assert x.clamp(np.float64(0.0)).dtype == x.dtype
    assert leaf([1.0], "float32").clamp(np.float64(0.0)).dtype == np.float32  # no upcast
    with pytest.raises(ValueError, match="clamp: give min, max or both"):
        x.clamp()
    with pytest.raises(TypeError, match="clamp.*Tensor"):
        x.clamp(min=x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_with_tensor_exponents(dtype):
    x, t = leaf([2.0, 3.0], dtype), leaf([3.0, 0.5], dtype)
    out = x**t
    np.testing.assert_allclose(out.data, [8.0, np.sqrt(3.0)], rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, [3 * 4.0, 0.5 / np.sqrt(3.0)], rtol=1e-6)
    np.testing.assert_allclose(t.grad, [8 * np.log(2.0), np.sqrt(3.0) * np.log(3.0)], rtol=1e-6)
    e = leaf([1.0, -1.0], dtype)
    y = 2**e
    np.testing.assert_allclose(y.data, [2.0, 0.5])
    y.sum().backward()
    np.testing.assert_allclose(e.grad, [2 * np.log(2.0), 0.5 * np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose((x ** np.array([2.0, 1.0])).data, [4.0, 3.0])
    np.testing.assert_allclose(fg.pow(3.0, fg.tensor([2.0])).data, [9.0])
    np.testing.assert_allclose(x.pow(2).data, [4.0, 9.0])


def test_pow_tensor_at_zero_base_and_zero_exponent():
    a, b = leaf([0.0, 0.0, 2.0]), leaf([2.0, 0.0, 0.0])
    (a**b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, 0.0])  # b a**(b-1), and 0 where b = 0
    np.testing.assert_array_equal(b.grad, [0.0, 0.0, np.log(2.0)])  # 0 where a = 0 and b >= 0
    assert fg.gradcheck(lambda x, y: x**y, [leaf([[0.5, 1.5]]), leaf([[2.0], [-1.0]])])


# ---------------------------------------------------------------------------------------------
# cat, stack, where


def test_cat_and_stack_match_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    ta, tb = leaf(a), leaf(b)
    for dim in (0, 1, -1):
        np.testing.assert_array_equal(fg.cat([ta, tb], dim=dim).data, np.concatenate([a, b], axis=dim))
        np.testing.assert_array_equal(fg.cat((ta, b), dim).data, np.concatenate([a, b], axis=dim))
    for dim in (0, 1, 2, -1, -3):
        np.testing.assert_array_equal(fg.stack([ta, tb], dim=dim).data, np.stack([a, b], axis=dim))
    out = fg.stack([ta, tb, ta], dim=1)
    out.backward(np.arange(18.0).reshape(2, 3, 3))
    # out[i, k, j] = t_k[i, j] and g[i, k, j] = 9 i + 3 k + j: ta gets k = 0 and k = 2, tb k = 1
    np.testing.assert_array_equal(ta.grad, [[0 + 6, 1 + 7, 2 + 8], [9 + 15, 10 + 16, 11 + 17]])
    np.testing.assert_array_equal(tb.grad, [[3, 4, 5], [12, 13, 14]])
    assert fg.gradcheck(lambda x, y: fg.stack([x, y], dim=-1), [leaf(a), leaf(b)])


def test_cat_stack_errors():
    a, b = fg.tensor(np.zeros((2, 3))), fg.tensor(np.zeros((3, 2)))  # float64, as the arrays
    with pytest.raises(ValueError, match="cat: shapes"):
        fg.cat([a, b], dim=0)
    with pytest.raises(ValueError, match="cat: shapes"):
        fg.cat([a, fg.tensor(np.zeros(3))])
    with pytest.raises(ValueError, match="cat.*0-d"):
        fg.cat([fg.tensor(1.0), fg.tensor(2.0)])
    with pytest.raises(ValueError, match="at least one"):
        fg.cat([])
    with pytest.raises(TypeError, match="list or tuple"):
        fg.cat(a)
    with pytest.raises(ValueError, match="cat.*axis 2"):
        fg.cat([a, a], dim=2)
    with pytest.raises(ValueError, match="stack.*one shape"):
        fg.stack([a, b])
    with pytest.raises(TypeError, match="float32.*float64|mix"):
        fg.cat([a, fg.tensor(np.zeros((2, 3)), dtype="float32")])
    np.testing.assert_array_equal(fg.stack([fg.tensor(1.0), fg.tensor(2.0)]).data, [1.0, 2.0])


def test_where_routes_the_gradient():
    x, y = leaf([-1.0, 2.0, -3.0]), leaf([10.0, 20.0, 30.0])
    cond = x.data > 0
    out = fg.where(cond, x, y)
    np.testing.assert_array_equal(out.data, [10.0, 2.0, 30.0])
    out.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(y.grad, [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(fg.where(cond, x, 0.0).data, [0.0, 2.0, 0.0])  # a number operand
    np.testing.assert_array_equal(fg.where(fg.tensor([1.0, 0.0, 1.0]), x, y).data, [-1.0, 20.0, -3.0])
    with pytest.raises(TypeError, match="where.*bool"):
        fg.where(np.array([1, 0, 1]), x, y)
    with pytest.raises(ValueError, match="where.*broadcast"):
        fg.where(np.array([True, False]), x, y)


# ---------------------------------------------------------------------------------------------
# softmax, log_softmax, cross_entropy


def test_log_softmax_is_stable_and_exact_for_large_scores():
    x = leaf([[1000.0, 0.0, -1000.0]])
    y = fg.functional.log_softmax(x, dim=1)
    np.testing.assert_allclose(y.data, [[0.0, -1000.0, -2000.0]], atol=1e-12)
    s = fg.softmax(x, 1)
    np.testing.assert_array_equal(s.data, [[1.0, 0.0, 0.0]])
    y[0, 1].backward()
    np.testing.assert_allclose(x.grad, [[-1.0, 1.0, 0.0]], atol=1e-12)  # d/dx of x1 - lse(x)


def test_softmax_dim_argument():
    x = fg.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(fg.softmax(x, dim=0).data.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(x.softmax(-1).data.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(TypeError, match="softmax: dim must be an int"):
        fg.softmax(x, (0, 1))
    with pytest.raises(ValueError, match="log_softmax.*axis 2"):
        fg.log_softmax(x, 2)


def test_cross_entropy_reductions():
    import fastgrad.functional as F

    rng = np.random.default_rng(5)
    s, y = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2])
    shifted = s - s.max(axis=1, keepdims=True)
    per = -(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(4), y]  # by hand
    t = leaf(s)
    np.testing.assert_allclose(F.cross_entropy(t, y).item(), per.mean(), rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy(t, y, reduction="sum").item(), per.sum(), rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy(t, y, reduction="none").data, per, rtol=1e-12)
    assert F.cross_entropy(t, y)._node.op.name == "softmax_cross_entropy"  # the same op as the loss
    for reduction in ("mean", "sum", "none"):
        assert fg.gradcheck(lambda a: F.cross_entropy(a, y, reduction=reduction), [leaf(s)])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(t, y, reduction="max")
    for reduction in ("mean", "sum", "none"):
        with pytest.raises(ValueError, match="range|\\[0, 3\\)"):
            F.cross_entropy(t, np.array([0, 3, 1, 2]), reduction=reduction)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.mark.skipif(_torch() is None, reason="torch is not installed")
def test_softmax_family_matches_torch_in_float64():
    torch = _torch()
    import fastgrad.functional as F

    rng = np.random.default_rng(6)
    x, y, g = rng.normal(size=(5, 7)) * 4, rng.integers(0, 7, size=5), rng.normal(size=(5, 7))
    for fn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        for dim in (0, 1):
            ours = leaf(x)
            out = fn(ours, dim)
            out.backward(g)
            theirs = torch.tensor(x, requires_grad=True)
            tout = tfn(theirs, dim)
            tout.backward(torch.tensor(g))
            np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-14)
    for reduction in ("mean", "sum", "none"):
        ours = leaf(x)
        out = F.cross_entropy(ours, y, reduction=reduction)
        theirs = torch.tensor(x, requires_grad=True)
        tout = torch.nn.functional.cross_entropy(theirs, torch.tensor(y), reduction=reduction)
        gout = rng.normal(size=out.shape)
        out.backward(gout)
        tout.backward(torch.tensor(gout))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-13)
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# dropout


def test_dropout_is_inverted_and_draws_from_the_generator():
    import fastgrad.functional as F

    x = leaf(np.random.default_rng(7).normal(size=(4, 5)))
    out = F.dropout(x, p=0.3, generator=np.random.default_rng(11))
    keep = np.random.default_rng(11).random((4, 5)) >= 0.3  # the documented draw
    np.testing.assert_allclose(out.data, np.where(keep, x.data / 0.7, 0.0), rtol=1e-15)
    g = np.random.default_rng(8).normal(size=(4, 5))
    out.backward(g)
    np.testing.assert_allclose(x.grad, np.where(keep, g / 0.7, 0.0), rtol=1e-15)
    # float32 and float64 drop the same entries for the same generator state
    o32 = F.dropout(np.ones((4, 5), np.float32), 0.3, generator=np.random.default_rng(11))
    np.testing.assert_array_equal(o32.data != 0, keep)
    # fastgrad's generator: manual_seed repeats the mask
    fg.manual_seed(3)
    m1 = F.dropout(fg.ones(50), 0.5).data
    fg.manual_seed(3)
    m2 = F.dropout(fg.ones(50), 0.5).data
    np.testing.assert_array_equal(m1, m2)
    assert set(np.unique(m1)) <= {0.0, 2.0}


def test_dropout_keeps_the_mean_and_drops_about_p():
    import fastgrad.functional as F

    out = F.dropout(fg.ones(200_000, dtype="float64"), p=0.25, generator=np.random.default_rng(0)).data
    assert abs((out == 0).mean() - 0.25) < 0.005  # 5 standard deviations
    assert abs(out.mean() - 1.0) < 0.01


def test_dropout_identity_and_validation():
    import fastgrad.functional as F

    x = leaf([1.0, 2.0])
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    for p in (-0.1, 1.0, 1.5, True, "0.5", None):
        with pytest.raises(ValueError, match="dropout: p must be"):
            F.dropout(x, p)
    with pytest.raises(TypeError, match="Generator"):
        F.dropout(x, 0.5, generator="0")


# ---------------------------------------------------------------------------------------------
# factories and the generator


@pytest.mark.parametrize("dtype", [None, "float32", "float64", np.float64, fg.float64])
def test_factories(dtype):
    want = np.dtype(dtype or "float32")
    for fn, value in ((fg.zeros, 0.0), (fg.ones, 1.0)):
        for t in (fn(2, 3, dtype=dtype), fn((2, 3), dtype=dtype), fn([2, 3], dtype=dtype)):
            assert t.shape == (2, 3) and t.dtype == want and t.is_leaf and not t.requires_grad
            assert np.all(t.data == value) and t.data.flags.c_contiguous
    assert fg.zeros(3, requires_grad=True).requires_grad
    assert fg.zeros(()).shape == () and fg.ones().shape == () and fg.zeros(0, 4).shape == (0, 4)
    np.testing.assert_array_equal(fg.full((2,), 7.5, dtype=dtype).data, [7.5, 7.5])
    assert fg.full(3, 1.0).shape == (3,)
    assert fg.empty(2, 2, dtype=dtype).shape == (2, 2) and fg.empty(2, dtype=dtype).dtype == want
    np.testing.assert_array_equal(fg.eye(3, dtype=dtype).data, np.eye(3))
    np.testing.assert_array_equal(fg.eye(2, 3).data, np.eye(2, 3))
    np.testing.assert_array_equal(fg.arange(5, dtype=dtype).data, np.arange(5.0))
    np.testing.assert_allclose(fg.arange(1, 2, 0.25).data, [1.0, 1.25, 1.5, 1.75])
    np.testing.assert_array_equal(fg.arange(3, 0, -1).data, [3.0, 2.0, 1.0])
    assert fg.arange(4, dtype=dtype).dtype == want


def test_like_factories_take_shape_and_dtype():
    base = fg.tensor(np.ones((2, 3)), dtype="float64")
    for fn in (fg.zeros_like, fg.ones_like, fg.empty_like, fg.randn_like, fg.rand_like):
        t = fn(base)
        assert t.shape == (2, 3) and t.dtype == np.float64
        assert fn(base, dtype="float32").dtype == np.float32
        assert fn(np.ones(4)).dtype == np.float64  # an array's float dtype too
        assert fn(base, requires_grad=True).requires_grad
    np.testing.assert_array_equal(fg.full_like(base, 2.0).data, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(fg.ones_like(base).data, np.ones((2, 3)))


def test_factory_errors():
    with pytest.raises(ValueError, match="negative"):
        fg.zeros(-1, 2)
    with pytest.raises(TypeError, match="ints"):
        fg.ones(2.5)
    with pytest.raises(TypeError, match="float32 or float64"):
        fg.zeros(2, dtype="int32")
    with pytest.raises(ValueError, match="step"):
        fg.arange(0, 3, 0)
    with pytest.raises(TypeError, match="fill_value"):
        fg.full(2, "x")
    with pytest.raises(TypeError, match="zeros_like"):
        fg.zeros_like([1, 2])
    with pytest.raises(TypeError, match="generator must be"):
        fg.randn(2, generator="x")
    np.testing.assert_array_equal(fg.rand(3, generator=7).data, fg.rand(3, generator=7).data)


def test_manual_seed_drives_randn_rand_and_nn_defaults():
    fg.manual_seed(123)
    a, u = fg.randn(3, 4), fg.rand(5, dtype="float64")
    ref = np.random.default_rng(123)  # the generator is NumPy's PCG64 seeded with the same int
    np.testing.assert_array_equal(a.data, ref.standard_normal((3, 4), dtype=np.float32))
    np.testing.assert_array_equal(u.data, ref.random(5))
    fg.manual_seed(123)
    np.testing.assert_array_equal(fg.randn(3, 4).data, a.data)
    state = fg.get_rng_state()
    w1 = fg.nn.Linear(4, 3).weight.data.copy()
    fg.set_rng_state(state)
    np.testing.assert_array_equal(fg.nn.Linear(4, 3).weight.data, w1)
    fg.manual_seed(0)
    m1 = [p.data.copy() for p in fg.nn.MLP([4, 5, 2]).parameters()]
    fg.manual_seed(0)
    for p, q in zip(fg.nn.MLP([4, 5, 2]).parameters(), m1):
        np.testing.assert_array_equal(p.data, q)
    # nn's own seed= stays independent of the global generator
    fg.manual_seed(1)
    s1 = fg.nn.Linear(4, 3, seed=9).weight.data.copy()
    fg.manual_seed(2)
    np.testing.assert_array_equal(fg.nn.Linear(4, 3, seed=9).weight.data, s1)
    assert fg.randn(2, generator=np.random.default_rng(5)).data.tolist() == \
        np.random.default_rng(5).standard_normal(2, dtype=np.float32).tolist()
    with pytest.raises(ValueError, match="manual_seed"):
        fg.manual_seed(-1)
    with pytest.raises(ValueError, match="set_rng_state"):
        fg.set_rng_state({"bit_generator": "MT19937"})
    assert isinstance(fg.seed(), int)


def test_nn_functional_is_fastgrad_functional():
    import fastgrad.nn.functional as F1
    from fastgrad.nn import functional as F2

    assert F1 is F2 is fg.nn.functional is fg.functional
    assert F1.relu is fg.relu and F1.dropout and F1.cross_entropy and F1.softmax


def test_transpose_with_two_ints_swaps_as_pytorch():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = leaf(x)
    np.testing.assert_array_equal(t.transpose(0, 2).data, np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(t.transpose(-1, 1).data, np.swapaxes(x, -1, 1))
    m = leaf(x[0])
    np.testing.assert_array_equal(m.transpose(0, 1).data, x[0].T)  # PyTorch's swap, not NumPy's identity
    np.testing.assert_array_equal(m.transpose((0, 1)).data, x[0])  # one sequence: NumPy's permutation
    np.testing.assert_array_equal(t.transpose((2, 0, 1)).data, np.transpose(x, (2, 0, 1)))
    with pytest.raises(ValueError, match="transpose.*axis 3"):
        t.transpose(0, 3)


# ---------------------------------------------------------------------------------------------
# docstrings: help() shows every public method and function, and their examples run


def _public_tensor_members():
    out = []
    for name in dir(fg.Tensor):
        if name.startswith("_") or name in fg.Tensor.__slots__:  # slots: documented on the class
            continue
        out.append((name, getattr(fg.Tensor, name)))
    return out


def _public_functions():
    import inspect

    out = []
    for module in (fg, fg.functional):
        for name in getattr(module, "__all__", None) or dir(module):
            obj = getattr(module, name)
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
                if getattr(obj, "__module__", "").startswith("fastgrad"):
                    out.append((f"{module.__name__}.{name}", obj))
    return out


@pytest.mark.parametrize("name, member", _public_tensor_members(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_tensor_member_has_a_docstring(name, member):
    doc = member.__doc__ if not isinstance(member, property) else member.fget.__doc__ or member.__doc__
    assert doc and len(doc.strip()) > 10, f"Tensor.{name} has no docstring"


@pytest.mark.parametrize("name, fn", _public_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_function_has_a_docstring(name, fn):
    assert fn.__doc__ and len(fn.__doc__.strip()) > 10, f"{name} has no docstring"


def _doctest_targets():
    import fastgrad.factories
    import fastgrad.random

    targets = [(f"Tensor.{n}", m.fget if isinstance(m, property) else m) for n, m in _public_tensor_members()]
    for module in (fg.functional, fastgrad.factories, fastgrad.random):
        for name in dir(module):
            obj = getattr(module, name)
            if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__:
                targets.append((f"{module.__name__}.{name}", obj))
    return targets


@pytest.mark.parametrize("name, obj", _doctest_targets(), ids=lambda v: v if isinstance(v, str) else "")
def test_docstring_examples_run(name, obj):
    import doctest

    import sys

    globs = {n: getattr(fg, n) for n in fg.__all__}
    globs.update(vars(sys.modules[obj.__module__]))  # the names of the module the example is in
    globs.update({"np": np, "fg": fg, "tensor": fg.tensor})
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(obj, name, globs=globs):
        runner.run(test)
    assert runner.failures == 0, f"the example in {name}'s docstring fails (run with -s to see it)"


def test_tolist_and_requires_grad_():
    assert fg.tensor([[1.0, 2.5]]).tolist() == [[1.0, 2.5]] and fg.tensor(3.0).tolist() == 3.0
    w = fg.tensor([1.0, 2.0])
    assert w.requires_grad_() is w and w.requires_grad
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])
    assert not w.requires_grad_(False).requires_grad
    y = fg.tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad_(False)


TORCH_CASES = {
    "abs": (lambda x: x.abs(), lambda x: x.abs()),
    "sqrt": (lambda x: fg.sqrt(x.abs() + 0.5), lambda x: (x.abs() + 0.5).sqrt()),
    "clamp": (lambda x: x.clamp(-0.3, 0.4), lambda x: x.clamp(-0.3, 0.4)),
    "pow": (lambda x: (x.abs() + 0.5) ** x, lambda x: (x.abs() + 0.5) ** x),
    "rpow": (lambda x: 3.0 ** x, lambda x: 3.0 ** x),
    "cat": (lambda x: fg.cat([x, x * 2, x[:, :2]], dim=1), None),
    "stack": (lambda x: fg.stack([x, -x], dim=1), None),
    "where": (lambda x: fg.where(x.data > 0, x * 3, x), None),
    "max_dim": (lambda x: x.max(1).values * 2 + x.min(dim=0).values.sum(), lambda x: x.max(1).values * 2 + x.min(dim=0).values.sum()),
    "shapes": (lambda x: x.unsqueeze(0).permute(2, 0, 1).flatten(1).transpose(0, 1).squeeze(),
               lambda x: x.unsqueeze(0).permute(2, 0, 1).flatten(1).transpose(0, 1).squeeze()),
}


@pytest.mark.skipif(_torch() is None, reason="torch is not installed")
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_surface_matches_torch_in_float64(name):
    torch = _torch()
    ours_fn, torch_fn = TORCH_CASES[name]
    if torch_fn is None:  # the same call with torch's spelling
        torch_fn = {
            "cat": lambda x: torch.cat([x, x * 2, x[:, :2]], dim=1),
            "stack": lambda x: torch.stack([x, -x], dim=1),
            "where": lambda x: torch.where(x > 0, x * 3, x),
        }[name]
    rng = np.random.default_rng(9)
    while True:  # off the kinks (0 and the clamp bounds) so both libraries agree on the side
        x = rng.normal(size=(3, 4))
        if np.all(np.abs(x) > 0.05) and np.all(np.abs(x + 0.3) > 0.05) and np.all(np.abs(x - 0.4) > 0.05):
            break
    ours = leaf(x)
    out = ours_fn(ours)
    theirs = torch.tensor(x, requires_grad=True)
    tout = torch_fn(theirs)
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-13, atol=1e-15)
    g = rng.normal(size=out.shape)
    out.backward(g)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(_torch() is None, reason="torch is not installed")
def test_max_min_indices_match_torch():
    torch = _torch()
    x = np.random.default_rng(10).normal(size=(4, 6))
    for op in ("max", "min"):
        for dim in (0, 1, -1):
            v, i = getattr(fg.tensor(x, dtype="float64"), op)(dim)
            tv, ti = getattr(torch.tensor(x), op)(dim)
            np.testing.assert_array_equal(v.data, tv.numpy())
            np.testing.assert_array_equal(i, ti.numpy())
        np.testing.assert_array_equal(getattr(fg.tensor(x), "arg" + op)(1), getattr(torch.tensor(x), "arg" + op)(1).numpy())


def test_function_forms_of_the_methods():
    x = np.array([[0.1, 0.9], [0.8, 0.2]])
    _, predicted = fg.max(x, 1)  # torch.max(outputs.data, 1) in PyTorch tutorials
    np.testing.assert_array_equal(predicted, [1, 0])
    np.testing.assert_array_equal(fg.max(fg.tensor(x), axis=0).data, [0.8, 0.9])  # float64 kept
    np.testing.assert_array_equal(fg.min(x, dim=1).indices, [0, 1])
    np.testing.assert_allclose(fg.sum(x, dim=0, keepdim=True).data, [[0.9, 1.1]], rtol=1e-6)
    np.testing.assert_allclose(fg.mean(x, 1).data, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(fg.argmax(x, 1), [1, 0])
    np.testing.assert_array_equal(fg.argmin(x), 0)
    assert fg.flatten(np.zeros((2, 3, 4)), 1).shape == (2, 12)
    a, b = leaf([1.0, 5.0, 2.0]), leaf([2.0, 3.0, 2.0])
    m = fg.minimum(a, b)
    np.testing.assert_array_equal(m.data, [1.0, 3.0, 2.0])
    m.sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 1.0])  # ties to a
    np.testing.assert_array_equal(b.grad, [0.0, 1.0, 0.0])
    namespace = {}
    exec("from fastgrad import *", namespace)
    assert not {"max", "min", "sum", "abs", "pow"} & set(namespace)  # builtins stay builtins


def test_a_row_name_cannot_be_registered_twice():
    from fastgrad import ops

    with pytest.raises(RuntimeError, match="'dropout' is already registered"):
        ops.primitive("dropout")(lambda x: (x, ()))
    assert ops.TABLE["dropout"].forward is ops.dropout.forward
