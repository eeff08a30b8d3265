"""CS231n lecture 4's worked examples, to the digits on the slides."""
import numpy as np
import pytest

import fastgrad as fg


def leaves(*values, dtype=None):
    return [fg.tensor(v, dtype=dtype, requires_grad=True) for v in values]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_then_multiply(dtype):
    x, y, z = leaves(-2.0, 5.0, -4.0, dtype=dtype)
    f = (x + y) * z
    assert f.item() == -12.0
    f.backward()
    assert (x.grad, y.grad, z.grad) == (-4.0, -4.0, 3.0)


def sigmoid_neuron_by_gates(w, x):
    return 1 / (1 + fg.exp(-(w[0] * x[0] + w[1] * x[1] + w[2])))


def sigmoid_neuron_fused(w, x):
    return fg.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


@pytest.mark.parametrize("neuron", [sigmoid_neuron_by_gates, sigmoid_neuron_fused])
def test_sigmoid_neuron(neuron):
    w = leaves(2.0, -3.0, -3.0)
    x = leaves(-1.0, -2.0)
    f = neuron(w, x)
    assert round(f.item(), 2) == 0.73
    f.backward()
    assert [round(float(t.grad), 2) for t in w] == [-0.20, -0.39, 0.20]
    assert [round(float(t.grad), 2) for t in x] == [0.39, -0.59]
    # sigma(1 - sigma) at the neuron's input of 1.0, exactly as the slide's 0.20 comes about
    s = 1 / (1 + np.exp(-1.0))
    assert float(w[0].grad) == pytest.approx(-1.0 * s * (1 - s), rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_squared_norm_of_matrix_vector_product(dtype):
    W = fg.tensor([[0.1, 0.5], [-0.3, 0.8]], dtype=dtype, requires_grad=True)
    x = fg.tensor([0.2, 0.4], dtype=dtype, requires_grad=True)
    q = W @ x
    f = (q * q).sum()
    np.testing.assert_allclose(q.data, [0.22, 0.26], rtol=1e-6)
    assert f.item() == pytest.approx(0.116, rel=1e-6)
    f.backward()
    np.testing.assert_allclose(W.grad, [[0.088, 0.176], [0.104, 0.208]], rtol=1e-6)
    np.testing.assert_allclose(x.grad, [-0.112, 0.636], rtol=1e-6)


def test_the_walkthrough_of_a_loss_shows_its_labels_as_a_constant(capsys):
    from fastgrad import lecture

    W = fg.tensor([[1.0, -1.0], [0.5, 2.0]], dtype="float64", requires_grad=True, name="W")
    x = fg.tensor([[1.0, 0.0], [0.0, 1.0]], dtype="float64", name="x")  # scores = W
    f = fg.softmax_cross_entropy(x @ W, [1, 0])
    lecture.walkthrough(f, [W])
    out = capsys.readouterr().out
    assert out.count("to labels: constant, no gradient") == 1
    jac_scores, jac_labels = lecture.local_jacobians(f.grad_fn, (), np.float64)
    assert jac_labels is None
    # d loss / d scores = (softmax - onehot) / N, by hand for the rows [1, -1] (label 1), [0.5, 2] (label 0)
    p = np.exp([[1.0, -1.0], [0.5, 2.0]])
    p /= p.sum(axis=1, keepdims=True)
    p[[0, 1], [1, 0]] -= 1
    np.testing.assert_allclose(jac_scores, p / 2, rtol=1e-12)
    np.testing.assert_allclose(W.grad, p / 2, rtol=1e-12)  # x is the identity
