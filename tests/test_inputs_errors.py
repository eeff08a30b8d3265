"""What goes in (lists, ints, float64 and non-contiguous arrays) and every documented error."""
import re

import numpy as np
import pytest

import fastgrad as fg


def esc(*parts):
    """A regex matching the parts in order, each taken literally (shapes contain parentheses)."""
    return ".*".join(re.escape(str(p)) for p in parts)


# --- inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, shape",
    [([[1, 2], [3, 4]], (2, 2)), (3, ()), (2.5, ()), ([True, False], (2,)), (np.arange(3), (3,)),
     (np.arange(4, dtype=np.int8), (4,)), (np.ones((2, 3)), (2, 3)), (np.float64(1.5), ()), ([], (0,))],
)
def test_inputs_become_float32_by_default(data, shape):
    t = fg.tensor(data)
    assert t.dtype == np.float32 and t.shape == shape
    assert t.data.flags.c_contiguous and t.data.flags.owndata
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float64))


@pytest.mark.parametrize("dtype", ["float64", np.float64, np.dtype("float64")])
def test_float64_on_request(dtype):
    t = fg.tensor([1, 2], dtype=dtype)
    assert t.dtype == np.float64
    assert (t * 2).dtype == np.float64 and (2.5 * t).dtype == np.float64 and (t**2).dtype == np.float64


def test_tensor_copies_its_input():
    a = np.ones(3, dtype=np.float32)
    t = fg.tensor(a)
    a[0] = 5
    assert t.data[0] == 1


@pytest.mark.parametrize(
    "make",
    [lambda a: a.T, lambda a: a[:, ::2], lambda a: a[::-1], np.asfortranarray, lambda a: a[1:, 1:3]],
    ids=["transposed", "strided", "reversed", "fortran", "sliced"],
)
def test_non_contiguous_arrays_become_c_contiguous(make):
    view = make(np.arange(20.0).reshape(4, 5))
    for t in (fg.tensor(view), fg.tensor(view, dtype="float64"), fg.as_tensor(view)):
        assert t.data.flags.c_contiguous
        np.testing.assert_array_equal(t.data, view)
    x = fg.tensor(np.zeros(view.shape), requires_grad=True)
    y = x + view  # as a constant operand
    assert y.data.flags.c_contiguous
    np.testing.assert_array_equal(y.data, view)
    np.testing.assert_array_equal(fg.relu(view).data, np.maximum(view, 0))


def test_numpy_arrays_and_numbers_on_both_sides():
    x = fg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a = np.array([[2.0, 0.5], [1.0, -1.0]])  # float64: a constant, takes the tensor's dtype
    results = {
        "a+x": a + x, "x+a": x + a, "a-x": a - x, "x-a": x - a, "a*x": a * x, "x*a": x * a,
        "a/x": a / x, "x/a": x / a, "a@x": a @ x, "x@a": x @ a, "2-x": 2 - x, "x-2": x - 2,
        "2/x": 2 / x, "2*x": 2 * x, "x**2": x**2, "-x": -x,
    }
    expected = {
        "a+x": a + x.data, "x+a": x.data + a, "a-x": a - x.data, "x-a": x.data - a, "a*x": a * x.data,
        "x*a": x.data * a, "a/x": a / x.data, "x/a": x.data / a, "a@x": a @ x.data, "x@a": x.data @ a,
        "2-x": 2 - x.data, "x-2": x.data - 2, "2/x": 2 / x.data, "2*x": 2 * x.data, "x**2": x.data**2,
        "-x": -x.data,
    }
    for key, y in results.items():
        assert isinstance(y, fg.Tensor) and y.dtype == np.float32 and y.requires_grad, key
        np.testing.assert_allclose(y.data, expected[key], rtol=1e-6, err_msg=key)
    (a @ x).sum().backward()  # d/dx sum(a @ x) = a^T 1
    np.testing.assert_allclose(x.grad, a.T @ np.ones((2, 2)), rtol=1e-6)


def test_numpy_scalars_take_the_tensor_dtype():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    for y in (np.float64(2) * x, x - np.float64(1), np.int64(1) + x, x ** np.float64(2), x ** np.int64(3)):
        assert y.dtype == np.float32
    (x ** np.float64(2)).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_functional_api_accepts_arrays_and_lists():
    y = fg.maximum([1.0, 5.0], np.array([3.0, 2.0]))
    assert y.dtype == np.float32 and not y.requires_grad
    np.testing.assert_array_equal(y.data, [3.0, 5.0])
    W = fg.tensor(np.ones((2, 3)), requires_grad=True)
    out = fg.affine([[1.0, 2.0]], W, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(out.data, [[3.0, 4.0, 5.0]])
    loss = fg.softmax_cross_entropy(np.zeros((2, 4)), np.array([1, 3]))  # labels as an array
    assert loss.item() == pytest.approx(np.log(4))


# --- shape errors: ValueError naming the op and both shapes -------------------------------------


@pytest.mark.parametrize(
    "op, fn",
    [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
     ("div", lambda a, b: a / b), ("maximum", fg.maximum)],
)
def test_broadcast_mismatch(op, fn):
    a, b = fg.tensor(np.ones((2, 3))), fg.tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=esc(op, "(2, 3)", "(4,)")):
        fn(a, b)


@pytest.mark.parametrize("sa, sb", [((2, 3), (2, 4)), ((3,), (4, 2)), ((2, 3), (2,)), ((3,), (2,))])
def test_matmul_mismatch(sa, sb):
    with pytest.raises(ValueError, match=esc("matmul", sa, sb)):
        fg.tensor(np.ones(sa)) @ fg.tensor(np.ones(sb))


@pytest.mark.parametrize("sa, sb", [((2, 2, 2), (2, 2)), ((), ())])
def test_matmul_needs_vectors_or_matrices(sa, sb):
    with pytest.raises(ValueError, match=esc("matmul", sa, sb)):
        fg.tensor(np.ones(sa)) @ fg.tensor(np.ones(sb))


@pytest.mark.parametrize(
    "sx, sw, sb",
    [((2, 3), (2, 4), (4,)), ((2, 3), (3, 4), (3,)), ((3,), (3, 4), (4,)), ((2, 3), (3, 4), (1, 4))],
)
def test_affine_mismatch(sx, sw, sb):
    with pytest.raises(ValueError, match=esc("affine", sx, sw, sb)):
        fg.affine(np.ones(sx), np.ones(sw), np.ones(sb))


@pytest.mark.parametrize("shape, pieces", [((2, 3), 2), ((6,), 2), ((2, 4), 0)])
def test_maxout_mismatch(shape, pieces):
    with pytest.raises(ValueError, match=esc("maxout", f"pieces={pieces}", shape)):
        fg.maxout(np.ones(shape), pieces)


@pytest.mark.parametrize("loss", [fg.softmax_cross_entropy, fg.svm_loss])
def test_loss_shape_errors(loss):
    name = loss.__name__
    with pytest.raises(ValueError, match=esc(name, "(2,)", "(2, 3)", "(3,)")):
        loss(np.zeros((2, 3)), [0, 1, 2])  # one label too many
    with pytest.raises(ValueError, match=esc(name, "(2, 3)", "(2, 1)")):
        loss(np.zeros((2, 3)), [[0], [1]])
    with pytest.raises(ValueError, match=esc(name, "2-D", "(3,)")):
        loss(np.zeros(3), [0])
    with pytest.raises(ValueError, match=esc(name, "empty batch", "(0, 3)")):
        loss(np.zeros((0, 3)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("loss", [fg.softmax_cross_entropy, fg.svm_loss])
@pytest.mark.parametrize("labels, bad", [([0, 3], 3), ([-1, 0], -1), ([0, 7], 7)])
def test_labels_out_of_range(loss, labels, bad):
    # the op, the offending value and what was wrong with it
    with pytest.raises(ValueError, match=rf"{loss.__name__}.*(?<![\d-]){bad}(?!\d).*out of range"):
        loss(np.zeros((2, 3)), labels)


@pytest.mark.parametrize("loss", [fg.softmax_cross_entropy, fg.svm_loss])
def test_labels_must_be_integers(loss):
    with pytest.raises(ValueError, match=esc(loss.__name__, "integers", "float")):
        loss(np.zeros((2, 3)), [0.5, 1.0])


def test_other_shape_errors_name_the_op():
    x = fg.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=esc("reshape", "(2, 3)", "(4,)")):
        x.reshape(4)
    with pytest.raises(ValueError, match=esc("sum", "axis 2", "2-d")):
        x.sum(axis=2)
    for reduce in ("sum", "mean", "max"):
        with pytest.raises(ValueError, match=esc(reduce, "axis 0", "0-d")):
            getattr(fg.tensor(2.0), reduce)(axis=0)
        with pytest.raises(ValueError, match=esc(reduce, "repeated axis")):
            getattr(x, reduce)(axis=(1, -1))
    with pytest.raises(ValueError, match=esc("transpose", "(2, 3)")):
        x.transpose((0, 0))  # not a permutation (two ints are PyTorch's swap: (0, 0) is one)
    with pytest.raises(ValueError, match=esc("max", "empty", "(0, 3)")):
        fg.tensor(np.ones((0, 3))).max(axis=0)
    with pytest.raises(ValueError, match=esc("mean", "empty", "(0, 3)")):
        fg.tensor(np.ones((0, 3))).mean()
    with pytest.raises(IndexError, match=esc("getitem", "(2, 3)")):
        x[5]
    with pytest.raises(ValueError, match=esc("(2, 3)")):
        x.item()


# --- dtype errors: TypeError ------------------------------------------------------------------------


def test_float32_and_float64_do_not_mix():
    a = fg.tensor([1.0, 2.0], requires_grad=True)
    b = fg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    for fn in (lambda: a + b, lambda: b - a, lambda: a * b, lambda: b / a, lambda: fg.maximum(a, b)):
        with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
            fn()
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        fg.affine(fg.tensor(np.ones((1, 2))), fg.tensor(np.ones((2, 2)), dtype="float64"), np.zeros(2))
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        fg.tensor(np.ones((2, 2))) @ fg.tensor(np.ones(2), dtype="float64")


@pytest.mark.parametrize("dtype", ["int8", np.int32, "float16", object, "complex64", "junk"])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="float32 or float64"):
        fg.tensor([1, 2], dtype=dtype)


@pytest.mark.parametrize("data", ["abc", ["1", "2"], None, [1 + 2j], [[1, 2], [3]], {"a": 1}])
def test_bad_data(data):
    with pytest.raises(TypeError, match=f"cannot make a float32 tensor from {type(data).__name__}"):
        fg.tensor(data)


def test_bad_operands():
    x = fg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="str"):
        x + "a"
    with pytest.raises(TypeError, match="NoneType"):
        None * x
    with pytest.raises(TypeError, match="pow.*exponent.*str"):
        x**"2"


# --- graph misuse: RuntimeError saying what to do ---------------------------------------------------


def test_second_backward():
    x = fg.tensor([1.0], requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_non_scalar_backward_needs_a_gradient():
    y = fg.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=esc("non-scalar", "(2, 3)", "gradient")):
        y.backward()


def test_backward_of_a_tensor_not_requiring_grad():
    for y in (fg.tensor([1.0]).sum(), fg.tensor(1.0)):
        with pytest.raises(RuntimeError, match="does not require grad.*requires_grad=True"):
            y.backward()


def test_backward_gradient_of_the_wrong_shape():
    y = fg.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(ValueError, match=esc("backward", "(3,)", "(2, 3)")):
        y.backward(np.ones(3))
