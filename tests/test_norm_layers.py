"""nn.Dropout, BatchNorm1d, LayerNorm, buffers and train/eval; the CS231n FullyConnectedNet.

Oracles: hand-derived values, reference.py (through the op-table test), finite differences in
float64, and PyTorch when it is importable (the comparisons skip only when torch is absent).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import nn

try:
    import torch
except ImportError:  # pragma: no cover - the venv may not have it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def t64(a, requires_grad=False):
    return fg.tensor(a, dtype="float64", requires_grad=requires_grad)


# ---------------------------------------------------------------------------------------------
# hand-derived values


def test_batchnorm_by_hand():
    """One feature, x = [1, 3]: mean 2, biased var 1, xhat = [-1, 1] / sqrt(1 + eps)."""
    bn = nn.BatchNorm1d(1, eps=1e-5, dtype="float64")
    bn.weight.data[:] = 2.0
    bn.bias.data[:] = 0.5
    x = t64([[1.0], [3.0]], requires_grad=True)
    y = bn(x)
    s = 1 / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(y.data[:, 0], [0.5 - 2 * s, 0.5 + 2 * s], rtol=1e-15)
    # running stats: 0.9 * 0 + 0.1 * 2 and 0.9 * 1 + 0.1 * (unbiased var 2)
    np.testing.assert_allclose(bn.running_mean.data, [0.2], rtol=1e-15)
    np.testing.assert_allclose(bn.running_var.data, [1.1], rtol=1e-15)
    assert int(bn.num_batches_tracked) == 1
    # dy = [1, 0]: dbeta = 1, dgamma = -s, dx = gamma s / 2 (2 dy - 1 - xhat dgamma)
    y.backward(np.array([[1.0], [0.0]]))
    np.testing.assert_allclose(bn.bias.grad, [1.0])
    np.testing.assert_allclose(bn.weight.grad, [-s])
    xh = np.array([-s, s])
    expected = 2 * s / 2 * (2 * np.array([1.0, 0.0]) - 1 - xh * -s)
    np.testing.assert_allclose(x.grad[:, 0], expected, rtol=1e-9, atol=1e-16)  # cancellation: ~1e-5 from O(1) terms
    # evaluation uses the running statistics: (x - 0.2) / sqrt(1.1 + eps) * 2 + 0.5
    bn.eval()
    np.testing.assert_allclose(bn(t64([[1.0]])).data, [[(1 - 0.2) / np.sqrt(1.1 + 1e-5) * 2 + 0.5]], rtol=1e-15)
    assert int(bn.num_batches_tracked) == 1  # evaluation does not count


def test_layernorm_by_hand():
    """A row [1, 2, 3]: mean 2, var 2/3."""
    ln = nn.LayerNorm(3, dtype="float64")
    y = ln(t64([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(y.data, [[-1, 0, 1] / np.sqrt(2 / 3 + 1e-5)], rtol=1e-14)


def test_dropout_by_hand():
    class Draws:
        def random(self, shape, dtype=np.float64):
            return np.array([0.1, 0.6, 0.5, 0.9], dtype=dtype).reshape(shape)

    drop = nn.Dropout(0.5, generator=Draws())
    x = t64([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = drop(x)
    np.testing.assert_array_equal(y.data, [0.0, 4.0, 6.0, 8.0])  # u >= p kept, scaled by 2
    y.backward(np.ones(4))
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 2.0, 2.0])
    drop.eval()
    assert drop(x) is x


def test_dropout_statistics_and_seeds():
    x = fg.tensor(np.ones((200, 500), np.float32))
    a = nn.Dropout(0.3, generator=fg.Generator().manual_seed(4))(x).data
    b = nn.Dropout(0.3, generator=fg.Generator().manual_seed(4))(x).data
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.7)}
    assert abs((a == 0).mean() - 0.3) < 0.005  # 100k draws: 5 sigma is 0.0072... well within
    assert abs(a.mean() - 1.0) < 0.01  # inverted: the expectation is kept
    fg.manual_seed(1)
    c = nn.Dropout(0.3)(x).data
    fg.manual_seed(1)
    np.testing.assert_array_equal(nn.Dropout(0.3)(x).data, c)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.0)  # as F.dropout: p in [0, 1)


# ---------------------------------------------------------------------------------------------
# buffers, state_dict, train/eval


def test_buffers_are_registered_and_saved(tmp_path):
    net = nn.Sequential(nn.Linear(4, 6, seed=0), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3, seed=1))
    assert [n for n, _ in net.named_buffers()] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert list(net.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias",
    ]  # PyTorch's keys and order for this Sequential
    assert len(net.parameters()) == 6  # buffers are not parameters
    rng = np.random.default_rng(0)
    for _ in range(3):
        net(rng.normal(size=(8, 4)))
    net.eval()
    x = rng.normal(size=(5, 4))
    out = net(x).data
    path = nn.save(net, tmp_path / "bn.npz")
    fresh = nn.Sequential(nn.Linear(4, 6, seed=5), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3, seed=6))
    nn.load(path, fresh)
    fresh.eval()
    np.testing.assert_array_equal(fresh(x).data, out)  # the bug: outputs differed without buffers
    assert int(fresh[1].num_batches_tracked) == 3


def test_mlp_save_load_rebuilds_norm_and_dropout(tmp_path):
    net = nn.MLP([4, 7, 5, 3], norm="batch", dropout=0.25, seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    net(rng.normal(size=(9, 4)))
    net.eval()
    x = rng.normal(size=(3, 4))
    loaded = nn.load(nn.save(net, tmp_path / "m.npz"))
    assert loaded.norm == "batch" and loaded.dropout == 0.25
    loaded.eval()
    np.testing.assert_array_equal(loaded(x).data, net(x).data)


def test_register_buffer_rules():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = fg.tensor([1.0], requires_grad=True)
            self.register_buffer("kept", np.zeros(2))
            self.register_buffer("scratch", np.zeros(2), persistent=False)

    m = M()
    assert [n for n, _ in m.named_buffers()] == ["kept", "scratch"]
    assert list(m.state_dict()) == ["w", "kept"]
    m.kept = np.ones(2)  # assignment keeps it a buffer
    assert list(m.state_dict()) == ["w", "kept"] and np.all(m.state_dict()["kept"] == 1)
    with pytest.raises(ValueError, match="already a parameter"):
        m.register_buffer("w", np.zeros(1))
    with pytest.raises(ValueError, match="missing keys \\['kept'\\]"):
        m.load_state_dict({"w": np.zeros(1)})


def test_train_eval_is_recursive():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(2)))
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_batchnorm_errors():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"expected input \(N, 3\)"):
        bn(np.ones((4, 2)))
    bn.eval()
    assert bn(np.ones((1, 3))).shape == (1, 3)  # one example is fine in evaluation
    with pytest.raises(TypeError):
        fg.functional.batch_norm(fg.tensor(np.ones((2, 3)), dtype="float32"), None, None, fg.tensor(np.ones(3), dtype="float64"),
                                 None, training=True)


# ---------------------------------------------------------------------------------------------
# against PyTorch


@needs_torch
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm_matches_torch(momentum):
    rng = np.random.default_rng(0)
    ours = nn.BatchNorm1d(5, momentum=momentum, dtype="float64")
    theirs = torch.nn.BatchNorm1d(5, momentum=momentum, dtype=torch.float64)
    g, b = rng.normal(size=5), rng.normal(size=5)
    ours.weight.data[:], ours.bias.data[:] = g, b
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(g))
        theirs.bias.copy_(torch.from_numpy(b))
    for step in range(4):
        x = rng.normal(size=(7, 5)) * 3 + 1
        dy = rng.normal(size=(7, 5))
        xo = t64(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
        yo.backward(dy)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-12, atol=1e-12)
        ours.zero_grad()
        theirs.zero_grad()
        np.testing.assert_allclose(ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-13)
    ours.eval()
    theirs.eval()
    x = rng.normal(size=(3, 5))
    np.testing.assert_allclose(ours(x).data, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-13)


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, normalized", [((6, 5), (5,)), ((2, 3, 4), (3, 4)), ((2, 3, 4), (4,))])
def test_layernorm_matches_torch(dtype, shape, normalized):
    rng = np.random.default_rng(1)
    tdt = getattr(torch, dtype)
    ours = nn.LayerNorm(normalized, dtype=dtype)
    theirs = torch.nn.LayerNorm(normalized, dtype=tdt)
    g, b = rng.normal(size=normalized), rng.normal(size=normalized)
    ours.weight.data[...], ours.bias.data[...] = g, b
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(g))
        theirs.bias.copy_(torch.from_numpy(b))
    x = (rng.normal(size=shape) * 2 + 0.5).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    xo = fg.tensor(x, dtype=dtype, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **tol)
    yo.backward(dy)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)


@needs_torch
def test_batchnorm_float32_matches_torch():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(64, 33)) * 5 + 10).astype(np.float32)
    dy = rng.normal(size=(64, 33)).astype(np.float32)
    ours, theirs = nn.BatchNorm1d(33), torch.nn.BatchNorm1d(33)
    xo, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    yo.backward(dy)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-5)


@needs_torch
def test_losses_match_torch():
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=(6, 4)), rng.integers(0, 4, size=6)
    so, st = t64(s, requires_grad=True), torch.tensor(s, requires_grad=True)
    lo, lt = nn.CrossEntropyLoss()(so, y), torch.nn.CrossEntropyLoss()(st, torch.from_numpy(y))
    np.testing.assert_allclose(lo.item(), lt.item(), rtol=1e-14)
    lo.backward()
    lt.backward()
    np.testing.assert_allclose(so.grad, st.grad.numpy(), rtol=1e-13, atol=1e-15)
    target = rng.normal(size=(6, 4))
    for red in ("mean", "sum"):
        so, st = t64(s, requires_grad=True), torch.tensor(s, requires_grad=True)
        lo = nn.MSELoss(red)(so, target)
        lt = torch.nn.MSELoss(reduction=red)(st, torch.from_numpy(target))
        np.testing.assert_allclose(lo.item(), lt.item(), rtol=1e-14)
        lo.backward()
        lt.backward()
        np.testing.assert_allclose(so.grad, st.grad.numpy(), rtol=1e-14)


@needs_torch
def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (4,), (2, 2)]
    for max_norm, norm_type in ((0.5, 2.0), (100.0, 2.0), (0.3, 1.0), (0.2, float("inf"))):
        grads = [rng.normal(size=s) for s in shapes]
        ours = [t64(np.zeros(s), requires_grad=True) for s in shapes]
        theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
        for o, t, g in zip(ours, theirs, grads):
            o.grad = g.copy()
            t.grad = torch.from_numpy(g.copy())
        no = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
        nt = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
        np.testing.assert_allclose(no.item(), nt.item(), rtol=1e-14)
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-14)


def test_clip_grad_norm_by_hand():
    w = t64([0.0, 0.0], requires_grad=True)
    w.grad = np.array([3.0, 4.0])
    total = nn.utils.clip_grad_norm_([w], 1.0)
    assert total.item() == 5.0
    np.testing.assert_allclose(w.grad, np.array([3.0, 4.0]) / (5.0 + 1e-6), rtol=1e-15)
    w.grad = np.array([0.3, 0.4])
    nn.utils.clip_grad_norm_(w, 1.0)  # under the limit: unchanged
    np.testing.assert_array_equal(w.grad, [0.3, 0.4])


# ---------------------------------------------------------------------------------------------
# nn.init


def test_init_statistics_follow_the_layout():
    W = fg.tensor(np.zeros((400, 100)), requires_grad=True)  # fastgrad layout (in, out): fan_in 400
    nn.init.kaiming_normal_(W, nonlinearity="relu", generator=0)
    assert abs(W.data.std() / np.sqrt(2 / 400) - 1) < 0.02
    nn.init.kaiming_uniform_(W, a=np.sqrt(5), generator=1)  # PyTorch Linear's default: bound 1/sqrt(fan_in)
    assert np.abs(W.data).max() <= 1 / np.sqrt(400) and np.abs(W.data).max() > 0.99 / np.sqrt(400)
    nn.init.xavier_uniform_(W, generator=2)
    bound = np.sqrt(6 / 500)
    assert np.abs(W.data).max() <= bound and np.abs(W.data).max() > 0.99 * bound
    nn.init.xavier_normal_(W, gain=nn.init.calculate_gain("tanh"), generator=3)
    assert abs(W.data.std() / (5 / 3 * np.sqrt(2 / 500)) - 1) < 0.02
    nn.init.kaiming_normal_(W, mode="fan_out", generator=0)
    assert abs(W.data.std() / np.sqrt(2 / (1 + 0.01**2) / 100) - 1) < 0.02
    b = fg.tensor(np.zeros(5), requires_grad=True)
    assert np.all(nn.init.ones_(b).data == 1) and np.all(nn.init.zeros_(b).data == 0)
    nn.init.uniform_(b, -2, -1, generator=0)
    assert np.all((b.data >= -2) & (b.data < -1))
    nn.init.normal_(b, 3.0, 0.0)
    assert np.all(b.data == 3)
    with pytest.raises(ValueError, match="fewer than 2 dims"):
        nn.init.kaiming_normal_(b)
    assert b.grad is None and b.is_leaf  # filled under no_grad, nothing recorded


# ---------------------------------------------------------------------------------------------
# CS231n's FullyConnectedNet with dropout and batch/layer norm: numeric gradient checks


class SameDraws:
    """Dropout draws that repeat on every forward pass (CS231n fixes dropout_param['seed'])."""

    def random(self, shape, dtype=np.float64):
        return np.random.default_rng(123).random(shape, dtype=dtype)


def rel_error(a, b):
    """||a - b|| / (||a|| + ||b||): the relative error of a whole gradient array."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_fully_connected_net_gradient_check(norm, dropout):
    """CS231n's FullyConnectedNet check (N=5, D=15, H=[20, 30], C=10, reg 0 and 3.14), float64.

    Central differences with h = 1e-5 carry a round-off noise of about eps * |loss| / h (1e-10
    at reg 0, 3e-9 at reg 3.14), so the measure is the relative error of each whole gradient
    array (measured: 1e-10 at reg 0, up to 5e-9 at reg 3.14). The bias before a batch norm has a zero gradient (the norm
    removes any shift); there both sides must be zero to within that noise.
    """
    rng = np.random.default_rng(231)
    N, D, C = 5, 15, 10
    X, y = rng.normal(size=(N, D)), rng.integers(0, C, size=N)
    net = nn.MLP([D, 20, 30, C], norm=norm, dropout=dropout, seed=0, dtype="float64", generator=SameDraws())
    for name, p in net.named_parameters():  # CS231n perturbs gamma and beta away from 1 and 0 too
        if name.startswith(("gamma", "beta")):
            p.data[:] = rng.normal(size=p.shape) * 0.5 + (1.0 if name.startswith("gamma") else 0.0)
    for reg in (0.0, 3.14):
        def loss():
            return fg.softmax_cross_entropy(net(X), y) + net.l2(reg)

        net.zero_grad()
        loss().backward()
        for name, p in net.named_parameters():
            numeric = np.zeros_like(p.data)
            flat = p.data.reshape(-1)
            for k in range(flat.size):
                orig = flat[k]
                flat[k] = orig + 1e-5
                with fg.no_grad():
                    plus = loss().item()
                flat[k] = orig - 1e-5
                with fg.no_grad():
                    minus = loss().item()
                flat[k] = orig
                numeric.reshape(-1)[k] = (plus - minus) / 2e-5
            if norm == "batch" and name.startswith("b") and not name.startswith("beta") and name != "b3":
                assert np.abs(p.grad).max() < 1e-14 and np.abs(numeric).max() < 1e-9, name
                continue
            err = rel_error(p.grad, numeric)
            assert err < 2e-8, f"{name}: relative error {err:.2e}"


def test_the_norm_bindings_check_buffers_as_the_other_kernels_do():
    """One set of checks (fastgrad/_validate.pxd): byte order and alignment too, which the norm
    bindings used not to look at."""
    from fastgrad import _norm as N

    x = np.ones((4, 3))
    g, b = np.ones(3), np.zeros(3)
    with pytest.raises(TypeError, match="native byte order"):
        N.batchnorm_forward(x.astype(">f8"), g, b, 1e-5)
    raw = np.zeros(4 * 3 * 8 + 1, np.uint8)
    unaligned = np.ndarray((4, 3), dtype=np.float64, buffer=raw, offset=1)
    with pytest.raises(ValueError, match="aligned"):
        N.layernorm_forward(unaligned, g, b, 1e-5)
