"""fastgrad.nn: parameter order, initialisation, forward against NumPy, gradients, state and files."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import nn

ACTIVATION_NAMES = ["relu", "leaky_relu", "elu", "maxout", "sigmoid", "tanh"]


def np_activation(name, z, pieces=2):
    """Independent NumPy versions of the hidden activations (DESIGN.md's definitions)."""
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "elu":
        return np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1)
    if name == "maxout":
        return z.reshape(z.shape[0], -1, pieces).max(axis=2)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    raise AssertionError(name)


def test_mlp_parameters_are_W1_b1_W2_b2_in_order_with_cs231n_shapes():
    model = nn.MLP([5, 7, 4, 3], seed=0)
    named = [(n, p.shape) for n, p in model.named_parameters()]
    assert named == [("W1", (5, 7)), ("b1", (7,)), ("W2", (7, 4)), ("b2", (4,)), ("W3", (4, 3)), ("b3", (3,))]
    assert [p for _, p in model.named_parameters()] == model.parameters()
    for p in model.parameters():
        assert p.requires_grad and p.is_leaf and p.dtype == np.float32
    assert [p.shape for p in model.weights()] == [(5, 7), (7, 4), (4, 3)]
    assert all(np.all(model.parameters()[i].data == 0) for i in (1, 3, 5))  # biases start at zero


def test_maxout_mlp_widens_hidden_weights_by_pieces():
    model = nn.MLP([5, 4, 3], activation="maxout", pieces=3, seed=0)
    assert [(n, p.shape) for n, p in model.named_parameters()] == [
        ("W1", (5, 12)), ("b1", (12,)), ("W2", (4, 3)), ("b2", (3,))]


def test_sequential_names_and_nesting_keep_assignment_order():
    net = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Sequential(nn.Maxout(8, 3, seed=1), nn.Tanh()),
                        nn.Linear(3, 2, bias=False, seed=2))
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "3.weight"]
    assert len(net) == 4 and isinstance(net[1], nn.ReLU)
    with pytest.raises(TypeError, match="layer 1"):
        nn.Sequential(nn.ReLU(), np.tanh)


def test_custom_module_registers_tensors_and_submodules_in_assignment_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = fg.tensor([2.0], requires_grad=True)
            self.constant = fg.tensor([1.0])  # does not require grad: not a parameter
            self.body = nn.Linear(3, 2, seed=0)

        def forward(self, x):
            return self.body(x) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "body.weight", "body.bias"]
    out = net(np.ones((4, 3)))
    np.testing.assert_allclose(out.data, 2 * (np.ones((4, 3)) @ net.body.weight.data), rtol=1e-6)
    net.body = nn.ReLU()  # replacing a child drops its parameters
    assert [n for n, _ in net.named_parameters()] == ["scale"]


def test_linear_forward_is_x_at_W_plus_b():
    rng = np.random.default_rng(1)
    layer = nn.Linear(6, 3, seed=0)
    layer.bias.data[:] = rng.standard_normal(3)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(layer(x).data, x @ layer.weight.data + layer.bias.data, rtol=1e-5, atol=1e-6)
    no_bias = nn.Linear(6, 3, bias=False, seed=0)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(no_bias(x).data, x @ no_bias.weight.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_mlp_forward_matches_numpy(activation):
    rng = np.random.default_rng(2)
    model = nn.MLP([6, 5, 4, 3], activation=activation, seed=3, dtype="float64")
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal((7, 6))
    h = x
    for k in (1, 2):
        h = np_activation(activation, h @ getattr(model, f"W{k}").data + getattr(model, f"b{k}").data)
    expected = h @ model.W3.data + model.b3.data
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-12, atol=1e-12)


def test_activation_modules_match_numpy():
    z = np.linspace(-3, 3, 13).reshape(1, -1)
    for module, name in [(nn.ReLU(), "relu"), (nn.Sigmoid(), "sigmoid"), (nn.Tanh(), "tanh"),
                         (nn.LeakyReLU(), "leaky_relu"), (nn.ELU(), "elu")]:
        out = module(fg.tensor(z, dtype="float64"))
        np.testing.assert_allclose(out.data, np_activation(name, z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(nn.LeakyReLU(0.2)(fg.tensor([-1.0])).data, [-0.2])
    np.testing.assert_allclose(nn.ELU(2.0)(fg.tensor([-1.0], dtype="float64")).data, [2 * (np.exp(-1) - 1)])


def test_he_and_xavier_initialisation_have_the_right_scale():
    he = nn.Linear(2000, 500, seed=0).weight.data
    xavier = nn.Linear(2000, 500, init="xavier", seed=0).weight.data
    assert abs(he.mean()) < 1e-3 and abs(xavier.mean()) < 1e-3
    assert he.std() == pytest.approx(np.sqrt(2 / 2000), rel=0.01)
    assert xavier.std() == pytest.approx(np.sqrt(2 / 2500), rel=0.01)
    assert nn.Linear(2000, 500, init=0.01, seed=0).weight.data.std() == pytest.approx(0.01, rel=0.01)
    # MLP picks Xavier for sigmoid/tanh hidden layers and He for the ReLU family
    assert nn.MLP([2000, 500, 10], activation="tanh", seed=0).W1.data.std() == pytest.approx(np.sqrt(2 / 2500), rel=0.01)
    assert nn.MLP([2000, 500, 10], activation="elu", seed=0).W1.data.std() == pytest.approx(np.sqrt(2 / 2000), rel=0.01)
    with pytest.raises(ValueError, match="unknown init"):
        nn.Linear(3, 2, init="glorious")


def test_seeds_make_weights_reproducible():
    a, b, c = nn.MLP([8, 6, 3], seed=5), nn.MLP([8, 6, 3], seed=5), nn.MLP([8, 6, 3], seed=6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa.data, pb.data)
    assert not np.array_equal(a.W1.data, c.W1.data)
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    assert np.array_equal(nn.Linear(4, 3, rng=r1).weight.data, nn.Linear(4, 3, rng=r2).weight.data)
    with pytest.raises(ValueError, match="rng or seed"):
        nn.Linear(4, 3, rng=r1, seed=1)


@pytest.mark.parametrize("bad", [[], [5], [5, 0, 3], [5, -1], [5, 2.5, 3]])
def test_mlp_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP(bad)


def test_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.MLP([3, 2], activation="swish")


def _swap_in(model, names, tensors):
    for name, t in zip(names, tensors):
        setattr(model, name, t)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_gradcheck_mlp_loss_with_each_activation(activation):
    rng = np.random.default_rng(4)
    model = nn.MLP([4, 5, 3], activation=activation, seed=1, dtype="float64")
    for p in model.parameters():  # nonzero biases, so every parameter's gradient is exercised
        p.data[...] = rng.standard_normal(p.shape) * 0.7
    names = [n for n, _ in model.named_parameters()]
    x = rng.standard_normal((6, 4))
    labels = rng.integers(0, 3, size=6)

    def loss(*params):
        _swap_in(model, names, params)
        return fg.softmax_cross_entropy(model(x), labels) + model.l2(0.1)

    assert fg.gradcheck(loss, model.parameters(), atol=1e-7, rtol=1e-5)


def test_l2_is_half_reg_sum_of_squared_weights_only():
    model = nn.MLP([4, 5, 3], seed=0, dtype="float64")
    for p in model.parameters():
        p.data[...] = np.random.default_rng(len(p.shape)).standard_normal(p.shape)
    reg = 0.3
    penalty = model.l2(reg)
    assert penalty.shape == ()
    assert penalty.item() == pytest.approx(0.5 * reg * (np.sum(model.W1.data ** 2) + np.sum(model.W2.data ** 2)),
                                           rel=1e-12)
    penalty.backward()
    np.testing.assert_allclose(model.W1.grad, reg * model.W1.data, rtol=1e-12)
    np.testing.assert_allclose(model.W2.grad, reg * model.W2.data, rtol=1e-12)
    assert model.b1.grad is None and model.b2.grad is None  # biases are not regularised
    names = [n for n, _ in model.named_parameters()]

    def l2(*params):
        _swap_in(model, names, params)
        return model.l2(reg)

    assert fg.gradcheck(l2, model.parameters())  # biases: analytic and numeric gradient both zero
    with pytest.raises(ValueError, match="reg must be >= 0"):
        model.l2(-1.0)


def test_zero_grad_and_train_eval_modes():
    net = nn.Sequential(nn.Linear(3, 2, seed=0), nn.ReLU())
    fg.softmax_cross_entropy(net(np.ones((2, 3))), [0, 1]).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.training and net[0].training
    assert net.eval() is net and not net.training and not net[0].training
    net.train()
    assert net.training and net[0].training


def test_state_dict_round_trip_copies_and_restores():
    a, b = nn.MLP([6, 5, 3], seed=0), nn.MLP([6, 5, 3], seed=1)
    x = np.random.default_rng(0).standard_normal((4, 6))
    state = a.state_dict()
    assert list(state) == ["W1", "b1", "W2", "b2"]
    state["W1"] += 1.0  # a copy: the model is untouched
    assert not np.array_equal(state["W1"], a.W1.data)
    W1_buffer = b.W1.data
    b.load_state_dict(a.state_dict())
    assert b.W1.data is W1_buffer  # loaded in place: optimizers holding the buffers keep working
    np.testing.assert_array_equal(b(x).data, a(x).data)


def test_load_state_dict_errors_name_the_problem_and_change_nothing():
    model = nn.MLP([6, 5, 3], seed=0)
    before = model.state_dict()
    good = nn.MLP([6, 5, 3], seed=1).state_dict()
    missing = dict(good)
    del missing["b2"]
    with pytest.raises(ValueError, match=r"missing keys \['b2'\]"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['W3'\]"):
        model.load_state_dict({**good, "W3": np.zeros((3, 3))})
    wrong = {**good, "W2": np.zeros((5, 4))}
    with pytest.raises(ValueError, match=r"'W2' has shape \(5, 4\) in the state but \(5, 3\)"):
        model.load_state_dict(wrong)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_save_and_load_npz_round_trip(tmp_path):
    model = nn.MLP([6, 8, 3], activation="maxout", pieces=3, seed=0)
    for p in model.parameters():
        p.data += 0.5
    path = nn.save(model, tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((4, 6))
    rebuilt = nn.load(path)  # a new MLP from the saved config
    assert isinstance(rebuilt, nn.MLP) and rebuilt.config == model.config
    np.testing.assert_array_equal(rebuilt(x).data, model(x).data)
    into = nn.MLP([6, 8, 3], activation="maxout", pieces=3, seed=7)
    assert nn.load(path, into) is into
    np.testing.assert_array_equal(into(x).data, model(x).data)
    with pytest.raises(ValueError, match="W1"):
        nn.load(path, nn.MLP([6, 9, 3], activation="maxout", pieces=3))
    seq = nn.Sequential(nn.Linear(6, 2, seed=0), nn.Sigmoid())
    nn.save(seq, tmp_path / "s.npz")
    with pytest.raises(ValueError, match="no MLP config"):
        nn.load(tmp_path / "s.npz")
    loaded = nn.load(tmp_path / "s.npz", nn.Sequential(nn.Linear(6, 2, seed=3), nn.Sigmoid()))
    np.testing.assert_array_equal(loaded(x).data, seq(x).data)
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        nn.load(tmp_path / "nothing.npz")


def test_float64_models_take_float32_batches():
    model = nn.MLP([3, 4, 2], seed=0, dtype="float64")
    out = model(np.ones((2, 3), dtype=np.float32))
    assert out.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_l2_equals_the_penalty_written_out_bit_for_bit(dtype):
    """Module.l2 runs the sumsq row (no array of squares): the value and, with the penalty added
    after the data loss, every gradient equal those of 0.5 reg sum((W * W).sum()) written out."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((9, 13)).astype(dtype), rng.integers(0, 4, 9)
    grads, values = [], []
    for written_out in (False, True):
        model = fg.nn.MLP([13, 37, 4], seed=1, dtype=dtype)
        loss = fg.softmax_cross_entropy(model(X), y)
        if written_out:
            Ws = model.weights()
            total = (Ws[0] * Ws[0]).sum()
            for W in Ws[1:]:
                total = total + (W * W).sum()
            penalty = total * (0.5 * 0.3)
        else:
            penalty = model.l2(0.3)
        (loss + penalty).backward()
        values.append(penalty.item())
        grads.append([p.grad.copy() for p in model.parameters()])
    assert values[0] == values[1]
    assert all(np.array_equal(a, b) for a, b in zip(*grads))
