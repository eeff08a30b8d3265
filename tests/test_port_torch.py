"""Issue 12's "done when": a PyTorch MLP training loop written the usual way runs in fastgrad with
only the imports (and the weight layout) changed, and matches PyTorch to 1e-10 over 100 steps.

The loop below (LOOP) is one text executed twice: after PyTorch's imports and after fastgrad's
(HEADERS). What differs is only in the headers: the import lines, the dtype spelling, the data
(torch tensors vs arrays), how a state_dict goes to a file, and fastgrad's start from PyTorch's
initial weights through `fg.nn.load_torch_state_dict` (which transposes each Linear weight).

Dropout masks are made equal by recording PyTorch's: a forward hook on each torch Dropout saves
which entries it kept (out != 0), and fastgrad's Dropout modules get a generator that replays
them as uniform draws (kept -> 0.999 >= p, dropped -> 0 < p). Entries whose input was already 0
(after ReLU) count as dropped; their value and gradient are 0 either way. The batch order is one
seeded permutation per epoch, given to both DataLoaders as the sampler.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

LOOP = '''
def build():
    return nn.Sequential(
        nn.Linear(D, 32, dtype=DTYPE), nn.BatchNorm1d(32, dtype=DTYPE), nn.ReLU(), nn.Dropout(P),
        nn.Linear(32, 16, dtype=DTYPE), nn.BatchNorm1d(16, dtype=DTYPE), nn.ReLU(), nn.Dropout(P),
        nn.Linear(16, C, dtype=DTYPE),
    )

model = build()
start(model)
loss_fn = nn.CrossEntropyLoss()
opt = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
sched = optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
loader = DataLoader(TensorDataset(X_train, y_train), batch_size=32, sampler=sampler)

losses, val_losses, norms = [], [], []
for epoch in range(10):
    model.train()
    for xb, yb in loader:
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0).item())
        opt.step()
        losses.append(loss.item())
    sched.step()
    model.eval()
    with no_grad():
        out = model(X_val)
        val_losses.append(loss_fn(out, y_val).item())
        accuracy = (out.numpy().argmax(1) == np.asarray(y_val)).mean()

save_state(model.state_dict(), path)
reloaded = build()
reloaded.load_state_dict(load_state(path))
reloaded.eval()
with no_grad():
    reloaded_out = reloaded(X_val).numpy()
final_out = out.numpy()
'''

TORCH_HEADER = '''
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset
no_grad = torch.no_grad
DTYPE = torch.float64
X_train, y_train = torch.tensor(Xtr), torch.tensor(ytr)
X_val, y_val = torch.tensor(Xva), torch.tensor(yva)
save_state = torch.save
load_state = torch.load
'''

FASTGRAD_HEADER = '''
import fastgrad as fg
from fastgrad import nn, optim
from fastgrad.data import DataLoader, TensorDataset
no_grad = fg.no_grad
DTYPE = "float64"
X_train, y_train = Xtr, ytr
X_val, y_val = Xva, yva
save_state = lambda state, path: fg.checkpoint.atomic_savez(path, state)
load_state = lambda path: dict(np.load(path))
'''


class EpochOrders:
    """The same seeded permutation sequence for both loaders: a new order every epoch."""

    def __init__(self, n, seed):
        self.n, self.rng = n, np.random.default_rng(seed)

    def __iter__(self):
        return iter(self.rng.permutation(self.n).tolist())

    def __len__(self):
        return self.n


class Replay:
    """Hands one Dropout module's recorded torch masks back as uniform draws, in order."""

    def __init__(self, masks):
        self.masks = list(masks)

    def random(self, shape, dtype=np.float64):
        kept = self.masks.pop(0)
        assert kept.shape == tuple(shape)
        return np.where(kept, 0.999, 0.0).astype(dtype)


def data():
    rng = np.random.default_rng(12)
    D, C = 20, 5
    centers = rng.normal(size=(C, D)) * 2
    y = rng.integers(0, C, size=400)
    X = centers[y] + rng.normal(size=(400, D)) * 1.5
    return X[:320], y[:320], X[320:], y[320:], D, C


@pytest.fixture
def one_torch_thread():
    """torch's own thread pool would fight the other processes on this small machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_pytorch_loop_runs_in_fastgrad_and_matches(tmp_path, one_torch_thread):
    Xtr, ytr, Xva, yva, D, C = data()
    common = dict(np=np, Xtr=Xtr, ytr=ytr, Xva=Xva, yva=yva, D=D, C=C, P=0.3)

    # PyTorch, recording its initial weights and its dropout masks
    masks, initial = {}, {}

    def torch_start(model):
        torch.manual_seed(0)
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Dropout):
                masks[name] = []
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: masks[name].append((out != 0).numpy().copy()) if mod.training else None)
        initial.update({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})

    tns = dict(common, start=torch_start, sampler=EpochOrders(320, 5), path=str(tmp_path / "torch.pt"))
    exec(TORCH_HEADER + LOOP, tns)
    assert len(tns["losses"]) == 100 and sum(len(m) for m in masks.values()) == 200

    # fastgrad, from the same weights, with the same masks and batch order
    import fastgrad as fg

    def fg_start(model):
        fg.nn.load_torch_state_dict(model, initial)
        for name, m in fg.nn._named_modules(model):
            if isinstance(m, fg.nn.Dropout):
                m.generator = Replay(masks[name])

    fns = dict(common, start=fg_start, sampler=EpochOrders(320, 5), path=str(tmp_path / "fg.npz"))
    exec(FASTGRAD_HEADER + LOOP, fns)

    np.testing.assert_allclose(fns["losses"], tns["losses"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(fns["norms"], tns["norms"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(fns["val_losses"], tns["val_losses"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(fns["final_out"], tns["final_out"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fns["reloaded_out"], fns["final_out"])  # buffers came back
    assert fns["accuracy"] == tns["accuracy"] and fns["accuracy"] > 0.5
    ours = fns["model"].state_dict()
    for key, value in tns["model"].state_dict().items():
        want = value.detach().numpy()
        got = ours[key]
        if got.ndim == 2:
            got = got.T  # the layout: fastgrad (in, out), PyTorch (out, in)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=key)
    worst = max(abs(a - b) / abs(b) for a, b in zip(fns["losses"], tns["losses"]))
    print(f"worst relative loss difference over 100 steps: {worst:.2e}")


def test_load_torch_state_dict_into_an_mlp():
    import fastgrad as fg

    torch.manual_seed(1)
    for norm, norm_layer in ((None, None), ("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm)):
        layers = []
        sizes = [6, 8, 7, 3]
        for i in range(len(sizes) - 2):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64))
            if norm_layer:
                layers.append(norm_layer(sizes[i + 1], dtype=torch.float64))
            layers += [torch.nn.ReLU(), torch.nn.Dropout(0.1)]
        layers.append(torch.nn.Linear(sizes[-2], sizes[-1], dtype=torch.float64))
        tmodel = torch.nn.Sequential(*layers)
        tmodel.train()
        x = np.random.default_rng(0).normal(size=(9, 6))
        if norm_layer:  # move the running statistics and the affine parameters away from their start
            with torch.no_grad():
                for m in tmodel.modules():
                    if isinstance(m, norm_layer):
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.5, 0.5)
                tmodel(torch.tensor(x))
        tmodel.eval()
        mlp = fg.nn.MLP(sizes, norm=norm, dropout=0.1, dtype="float64", seed=3)
        fg.nn.load_torch_state_dict(mlp, tmodel.state_dict())
        mlp.eval()
        with torch.no_grad():
            want = tmodel(torch.tensor(x)).numpy()
        np.testing.assert_allclose(mlp(x).data, want, rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="Linear layers"):
        fg.nn.load_torch_state_dict(fg.nn.MLP([6, 3], dtype="float64"), tmodel.state_dict())
