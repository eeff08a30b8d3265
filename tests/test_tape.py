"""The tape's public accessors (grad_fn, next_functions, name) and the Python tape kept beside the
compiled one (FASTGRAD_PURE_TAPE=1), both against hand-derived gradients."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import autograd, ops


def test_grad_fn_is_none_for_leaves_and_constants():
    x = fg.tensor(1.0, requires_grad=True)
    assert x.grad_fn is None and fg.tensor(2.0).grad_fn is None
    with fg.no_grad():
        assert (x * 2).grad_fn is None


def test_grad_fn_names_and_next_functions_walk_the_graph():
    x, y, z = (fg.tensor(v, requires_grad=True) for v in (-2.0, 5.0, -4.0))
    q = x + y
    f = q * z
    assert f.grad_fn.name() == "mul"
    (first, i0), (second, i1) = f.grad_fn.next_functions
    assert first is q.grad_fn and second is None and i0 == i1 == 0
    assert q.grad_fn.name() == "add"
    assert q.grad_fn.next_functions == ((None, 0), (None, 0))
    g = fg.exp(-f)  # unary gates: one pair each
    assert g.grad_fn.name() == "exp"
    assert g.grad_fn.next_functions[0][0].name() == "neg"
    assert len(g.grad_fn.next_functions) == 1


# the lecture's neuron and a graph with fan-out, reuse and a constant: gradients by hand
SCRIPT = r"""
import json, math
import fastgrad as fg
from fastgrad import autograd, ops
w0, w1, w2, x0, x1 = (fg.tensor(v, requires_grad=True, dtype="float64") for v in (2.0, -3.0, -3.0, -1.0, -2.0))
f = 1 / (1 + fg.exp(-(w0 * x0 + w1 * x1 + w2)))
f.backward()
a = fg.tensor([1.0, 2.0], requires_grad=True)
h = a * a             # used twice below
y = (h + h * 3.0 - a / 2.0).sum()
y.backward()
print(json.dumps({"compiled": autograd._tape is not None, "f": f.item(),
                  "neuron": [t.grad.item() for t in (w0, w1, w2, x0, x1)], "a": a.grad.tolist()}))
"""


@pytest.mark.parametrize("pure", ["1", "0"])
def test_python_and_compiled_tape_give_the_hand_derived_gradients(pure):
    env = dict(os.environ, FASTGRAD_PURE_TAPE=pure)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["compiled"] is (pure == "0")
    f = 1 / (1 + np.exp(-1.0))  # w0 x0 + w1 x1 + w2 = 1
    d = f * (1 - f)  # 0.196..., the lecture's 0.20
    np.testing.assert_allclose(got["f"], f, rtol=1e-12)
    np.testing.assert_allclose(got["neuron"], [-1 * d, -2 * d, d, 2 * d, -3 * d], rtol=1e-12)
    # y = sum(4 a^2 - a/2): dy/da = 8a - 1/2
    np.testing.assert_allclose(got["a"], [7.5, 15.5], rtol=1e-6)


def test_the_compiled_tape_is_the_default():
    if os.environ.get("FASTGRAD_PURE_TAPE", "").strip().lower() in ("", "0", "false", "no", "off"):
        assert autograd._tape is not None
        assert type(fg.tensor(1.0, requires_grad=True).exp().grad_fn) is autograd._tape.Node


# the small same-shape arithmetic (computed by the tape itself) against NumPy, bit for bit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (1,), (3, 4), (65,)])  # (65,): past the small path, NumPy's
def test_small_arithmetic_and_its_gradients_are_numpys_bit_for_bit(dtype, shape):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape).astype(dtype) + dtype(3)  # no zero divisors
    b = rng.standard_normal(shape).astype(dtype) + dtype(3)
    g = rng.standard_normal(shape).astype(dtype)
    cases = {
        "add": (lambda x, y: x + y, lambda: (g, g)),
        "sub": (lambda x, y: x - y, lambda: (g, -g)),
        "mul": (lambda x, y: x * y, lambda: (g * b, g * a)),
        "div": (lambda x, y: x / y, lambda: (g / b, -(g / b) * a / b)),
    }
    for name, (f, grads) in cases.items():
        x, y = fg.tensor(a, dtype=dtype, requires_grad=True), fg.tensor(b, dtype=dtype, requires_grad=True)
        out = f(x, y)
        out.backward(g)
        assert out.data.dtype == dtype and x.grad.dtype == dtype
        np.testing.assert_array_equal(out.data, f(a, b), err_msg=name)
        ga, gb = grads()
        np.testing.assert_array_equal(x.grad, ga, err_msg=name)
        np.testing.assert_array_equal(y.grad, gb, err_msg=name)
    x = fg.tensor(a, dtype=dtype, requires_grad=True)
    y = -x
    y.backward(g)
    np.testing.assert_array_equal(y.data, -a)
    np.testing.assert_array_equal(x.grad, -g)
    x = fg.tensor(a, dtype=dtype, requires_grad=True)
    (x.exp() * 1.0).backward(g)  # exp's rule g * y
    np.testing.assert_array_equal(x.grad, g * np.exp(a))


def test_small_arithmetic_warns_as_numpy_does():
    zero = fg.tensor(0.0)
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        q = fg.tensor(1.0) / zero
    assert q.item() == np.inf
    with pytest.warns(RuntimeWarning, match="overflow"):
        big = fg.tensor(3e38) * 10.0
    assert big.item() == np.inf
    with np.errstate(all="ignore"):  # and stays quiet when NumPy is told to
        assert np.isnan((fg.tensor(np.inf) - np.inf).item())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_overwritten_in_place_is_intact_when_numpy_must_redo_the_op(dtype):
    # y = x * a * b: the walk owns the gradient g*b that reaches x * a and may write x's gradient
    # into it; an overflow in one element hands that op to NumPy, which must still see g*b itself
    big = np.finfo(dtype).max / 2
    x_, a_, b_ = (np.array(v, dtype=dtype) for v in ([1e-30, 1.0], [big, 3.0], [4.0, 2.0]))
    x = fg.tensor(x_, requires_grad=True)
    y = x * fg.tensor(a_) * fg.tensor(b_)
    with pytest.warns(RuntimeWarning, match="overflow"):
        y.backward(np.ones(2, dtype))
    with np.errstate(over="ignore"):
        want = (np.ones(2, dtype) * b_) * a_  # [inf, 6]; from a clobbered g: [inf, 18]
    np.testing.assert_array_equal(x.grad, want)
    assert want[1] == 6


# relu, sigmoid and tanh on small tensors: the tape calls the gate kernels itself (fastgrad/_tape.pyx,
# _small_gate); the values must be the bits the kernels give inside a large array (their vector and
# threaded loops), forward and backward, through a chain whose gradients the walk overwrites in place
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (1,), (3, 4), (64,), (65,)])  # (65,): past the small path
@pytest.mark.parametrize("gate", ["relu", "sigmoid", "tanh"])
def test_small_gates_are_the_kernels_bits_forward_and_backward(dtype, shape, gate):
    from fastgrad import _kernels as K

    forward, backward = getattr(K, f"{gate}_forward"), getattr(K, f"{gate}_backward")
    rng = np.random.default_rng(11)
    size = int(np.prod(shape))
    special = np.array([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 20.0, -20.0, 1e4, -1e4], dtype)
    a = np.resize(np.concatenate([special, (rng.standard_normal(size) * 4).astype(dtype)]), size)
    g = rng.standard_normal(size).astype(dtype)
    # the oracle: the kernels on arrays of 200,000 elements (past every thread threshold) whose first
    # entries are a and g
    big_a = np.concatenate([a, rng.standard_normal(200_000).astype(dtype)])
    big_g = np.concatenate([g, rng.standard_normal(200_000).astype(dtype)])
    y1 = forward(big_a)
    y2 = forward(y1)
    dx2 = backward(big_g, y2)  # d/dy1 of gate(gate(.)), then d/dx
    dx = backward(dx2, y1)
    x = fg.tensor(a.reshape(shape), dtype=dtype, requires_grad=True)
    out = getattr(getattr(x, gate)(), gate)()
    out.backward(g.reshape(shape))
    assert out.dtype == dtype and x.grad.dtype == dtype and x.grad.shape == shape
    np.testing.assert_array_equal(out.data.ravel(), y2[:size])
    np.testing.assert_array_equal(x.grad.ravel(), dx[:size])
    # and the values are the gate's (an independent formula, to rounding)
    ref = {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v.astype(np.float64))),
           "tanh": lambda v: np.tanh(v.astype(np.float64))}[gate]
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(out.data.ravel(), ref(ref(a)).astype(dtype), rtol=1e-5, atol=1e-6)


# the losses' labels: an input slot of the node that takes no gradient (a Constant, not a Tensor)
def _softmax_grad(s, y):
    """(softmax(s) - onehot(y)) / N, in float64 from NumPy (the oracle)."""
    s = s.astype(np.float64)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)


def _svm_grad(s, y, delta=1.0):
    """d/ds of mean_i sum_{j != y_i} max(0, s_ij - s_iy_i + delta), by hand."""
    s = s.astype(np.float64)
    n = len(y)
    m = (s - s[np.arange(n), y][:, None] + delta > 0).astype(np.float64)
    m[np.arange(n), y] = 0
    m[np.arange(n), y] = -m.sum(axis=1)
    return m / n


LOSSES = {"softmax_cross_entropy": (fg.softmax_cross_entropy, _softmax_grad), "svm_loss": (fg.svm_loss, _svm_grad)}
LABEL_FORMS = {
    "list": lambda y: [int(k) for k in y],
    "int64": lambda y: y.astype(np.int64),
    "int32": lambda y: y.astype(np.int32),
    "uint8": lambda y: y.astype(np.uint8),
    "strided": lambda y: np.repeat(y, 2)[::2],  # not contiguous
    "tensor": lambda y: fg.tensor(y.astype(np.float32)),  # float labels with integer values
}


@pytest.mark.parametrize("form", list(LABEL_FORMS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_a_loss_node_holds_its_labels_as_an_input_that_takes_no_gradient(loss, dtype, form):
    fn, oracle = LOSSES[loss]
    rng = np.random.default_rng(3)
    s = (rng.standard_normal((5, 4)) * 2).astype(dtype)
    y = np.array([0, 3, 1, 3, 2])
    W = fg.tensor(np.eye(4), dtype=dtype, requires_grad=True)
    scores = fg.tensor(s, dtype=dtype) @ W  # an op output: next_functions names its node
    out = fn(scores, LABEL_FORMS[form](y))
    node = out.grad_fn
    assert node.name() == loss and len(node.inputs) == 2 and node.inputs[0] is scores
    labels = node.inputs[1]
    assert type(labels) is autograd.Constant and not isinstance(labels, fg.Tensor)
    assert labels.data.dtype == np.intp and labels.data.flags.c_contiguous
    np.testing.assert_array_equal(labels.data, y)
    assert labels.requires_grad is False and labels.grad_fn is None and labels.name == "labels"
    assert node.next_functions == ((scores.grad_fn, 0), (None, 0))
    assert node.next_functions[0][0].name() == "matmul"
    # the node's rule (PyTorch's grad_fn(g)): a gradient for the scores, None for the labels
    ds, dy = node(np.array(2.0, dtype=dtype))
    assert dy is None
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds, 2 * oracle(s, y), **tol)
    out.backward()
    np.testing.assert_allclose(W.grad, s.astype(np.float64).T @ oracle(s, y), **tol)
    assert labels.grad is None  # the walk sent it nothing


def test_an_intp_array_of_labels_is_the_input_itself():
    """No copy: a captured step finds its labels argument's buffer in the node by identity."""
    y = np.array([1, 0, 2], dtype=np.intp)
    out = fg.softmax_cross_entropy(fg.tensor(np.zeros((3, 3)), requires_grad=True), y)
    assert out.grad_fn.inputs[1].data is y


def test_a_rule_that_returns_a_gradient_for_the_labels_sends_it_nowhere(monkeypatch):
    """Even a rule replaced at run time (here returning ones for the labels slot) cannot make the
    walk treat the Constant as a tensor: its gradient is dropped, as for a constant tensor."""
    row = ops.TABLE["softmax_cross_entropy"]
    own = row.backward
    monkeypatch.setattr(row, "backward", lambda g, grad: (own(g, grad)[0], np.ones(3)))
    s = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0], [2.0, 2.0, 2.0]])
    x = fg.tensor(s, dtype="float64", requires_grad=True)
    out = fg.softmax_cross_entropy(x * 1.0, [2, 0, 1])
    out.backward()
    np.testing.assert_allclose(x.grad, _softmax_grad(s, np.array([2, 0, 1])), rtol=1e-12)
    assert out.grad_fn is not None and out.grad_fn.inputs[1].grad is None


def test_no_labels_input_without_a_gradient_to_record():
    with fg.no_grad():
        out = fg.svm_loss(fg.tensor(np.zeros((2, 3)), requires_grad=True), [0, 1])
    assert out.grad_fn is None and out.item() == 2.0  # two margins of delta = 1 per row, mean of 2
    assert fg.softmax_cross_entropy(fg.tensor(np.zeros((2, 2))), [0, 1]).grad_fn is None


def test_a_node_made_by_hand_with_a_constant_input_is_walked_safely(monkeypatch):
    """Node(...) called directly (not by apply) learns that an input is a Constant too: the walk
    drops the gradient a rule returns for it instead of reading it as a tensor."""
    row = ops.TABLE["svm_loss"]
    monkeypatch.setattr(row, "backward", lambda g, grad: (grad * g, np.ones(2)))
    x = fg.tensor(np.zeros((2, 3)), dtype="float64", requires_grad=True)
    labels = autograd.Constant(np.array([0, 2], dtype=np.intp), "labels")
    out, saved = row.forward(x.data, labels.data, needs=(True, False))
    y = fg.Tensor._wrap(out, True)
    y._node = autograd.Node(row, (x, labels), saved, out)
    assert y.grad_fn.next_functions == ((None, 0), (None, 0))
    y.backward()
    # all margins are delta = 1 > 0: ds_ij = 1/N off the label, -(C-1)/N on it
    np.testing.assert_array_equal(x.grad, [[-1.0, 0.5, 0.5], [0.5, 0.5, -1.0]])
    assert labels.grad is None
