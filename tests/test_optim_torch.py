"""optim: weight decay, AdamW, parameter groups, state_dict, schedulers; against PyTorch when it is
importable and against the update rules written out in NumPy; resuming in a fresh process."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import optim

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
ROOT = Path(__file__).resolve().parents[1]


def problem(seed=0, steps=25):
    rng = np.random.default_rng(seed)
    starts = [rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(3, 2))]
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(steps)]
    return starts, grads


def run_fastgrad(make, starts, grads, sched=None):
    params = [fg.tensor(s, dtype="float64", requires_grad=True) for s in starts]
    opt = make(params)
    scheduler = sched(opt) if sched else None
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.copy()
        opt.step()
        if scheduler:
            scheduler.step()
    return [p.data for p in params], opt


def run_torch(make, starts, grads, sched=None):
    params = [torch.tensor(s, requires_grad=True) for s in starts]
    opt = make(params)
    scheduler = sched(opt) if sched else None
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        if scheduler:
            scheduler.step()
    return [p.detach().numpy() for p in params]


PAIRS = {
    "sgd-wd": (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.05),
               lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05)),
    "momentum-wd": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
                    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2)),
    "rmsprop-wd": (lambda ps: optim.RMSProp(ps, lr=1e-2, decay=0.9, weight_decay=1e-2),
                   lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.9, weight_decay=1e-2)),
    "adam": (lambda ps: optim.Adam(ps, lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    "adam-wd": (lambda ps: optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1),
                lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
    "adamw": (lambda ps: optim.AdamW(ps, lr=1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    "adamw-wd": (lambda ps: optim.AdamW(ps, lr=3e-2, weight_decay=0.3),
                 lambda ps: torch.optim.AdamW(ps, lr=3e-2, weight_decay=0.3)),
    "groups": (
        lambda ps: optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1, "weight_decay": 0.2}], lr=1e-2),
        lambda ps: torch.optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1, "weight_decay": 0.2}], lr=1e-2),
    ),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_optimizers_match_torch(name):
    starts, grads = problem()
    ours, theirs = PAIRS[name]
    got, _ = run_fastgrad(ours, starts, grads)
    want = run_torch(theirs, starts, grads)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


SCHEDULERS = {
    "step": (lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "exponential": (lambda o: optim.ExponentialLR(o, gamma=0.9),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    "cosine": (lambda o: optim.CosineAnnealingLR(o, T_max=7, eta_min=1e-3),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-3)),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_match_torch(name):
    ours, theirs = SCHEDULERS[name]
    po = optim.SGD([fg.tensor([1.0], requires_grad=True)], lr=0.1)
    pt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    so, st = ours(po), theirs(pt)
    for epoch in range(30):  # past T_max twice: the cosine goes back up
        assert so.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-13, abs=1e-16), epoch
        po.step()
        pt.step()
        so.step()
        st.step()


@needs_torch
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_optimizer_with_scheduler_matches_torch(name):
    starts, grads = problem(steps=12)
    got, _ = run_fastgrad(PAIRS["momentum-wd"][0], starts, grads, SCHEDULERS[name][0])
    want = run_torch(PAIRS["momentum-wd"][1], starts, grads, SCHEDULERS[name][1])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_schedules_by_hand():
    opt = optim.SGD([fg.tensor([1.0], requires_grad=True)], lr=1.0)
    s = optim.StepLR(opt, step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        lrs.append(s.get_last_lr()[0])
        s.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    opt = optim.SGD([fg.tensor([1.0], requires_grad=True)], lr=2.0)
    c = optim.CosineAnnealingLR(opt, T_max=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.lr)
        c.step()
    assert lrs == pytest.approx([1 + math.cos(math.pi * e / 4) for e in range(5)], abs=1e-15)
    opt = optim.SGD([fg.tensor([1.0], requires_grad=True)], lr=1.0)
    e = optim.ExponentialLR(opt, gamma=0.5)
    e.step()
    e.step()
    assert opt.lr == 0.25


def test_adamw_by_hand():
    """One step from m = v = 0: w <- w (1 - lr wd) - lr * sign-ish(g) = w (1 - lr wd) - lr g / (|g| + eps)."""
    w = fg.tensor([2.0, -1.0], dtype="float64", requires_grad=True)
    opt = optim.AdamW([w], lr=0.1, weight_decay=0.5, eps=1e-8)
    w.grad = np.array([0.3, -4.0])
    opt.step()
    g = np.array([0.3, -4.0])
    np.testing.assert_allclose(w.data, np.array([2.0, -1.0]) * 0.95 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)


def test_param_groups_have_their_own_lr_and_the_lr_property():
    a, b = (fg.tensor(np.ones(2), dtype="float64", requires_grad=True) for _ in range(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.5)
    opt.lr = 0.01  # sets every group, as the lecture's lr decay expects
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        optim.SGD([{"params": [a], "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(ValueError, match="more than one place"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=1e-4),
    lambda ps: optim.RMSProp(ps, weight_decay=1e-3),
    lambda ps: optim.Adam(ps, weight_decay=1e-3),
    lambda ps: optim.AdamW(ps),
], ids=["sgd", "rmsprop", "adam", "adamw"])
def test_weight_decay_steps_allocate_no_parameter_sized_buffers(make):
    w = fg.tensor(np.zeros((500, 500), np.float32), requires_grad=True)
    w.grad = np.ones((500, 500), dtype=np.float32)
    opt = make([w])
    sched = optim.CosineAnnealingLR(opt, T_max=5)
    opt.step()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            opt.step()
            sched.step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"step() allocated {peak} bytes at its peak"


@pytest.mark.parametrize("name", ["momentum-wd", "rmsprop-wd", "adam-wd", "adamw-wd", "groups"])
def test_state_dict_round_trip_continues_identically(name):
    """10 steps, state_dict, a new optimizer loads it, 10 more steps = 20 straight."""
    starts, grads = problem(steps=20)
    make = PAIRS[name][0]
    straight, _ = run_fastgrad(make, starts, grads)
    first, opt = run_fastgrad(make, starts, grads[:10])
    state = opt.state_dict()
    params = [fg.tensor(p, dtype="float64", requires_grad=True) for p in first]
    opt2 = make(params)
    opt2.load_state_dict(state)
    for step in grads[10:]:
        for p, g in zip(params, step):
            p.grad = g.copy()
        opt2.step()
    for a, b in zip(straight, params):
        np.testing.assert_array_equal(a, b.data)


def test_load_state_dict_checks_before_changing_anything():
    starts, grads = problem(steps=2)
    _, opt = run_fastgrad(lambda ps: optim.Adam(ps, lr=0.1), starts, grads)
    state = opt.state_dict()
    other = optim.Adam([fg.tensor(np.zeros((2, 2)), dtype="float64", requires_grad=True)] * 1, lr=0.5)
    with pytest.raises(ValueError, match="groups have sizes"):
        other.load_state_dict(state)
    params = [fg.tensor(np.zeros(s.shape), dtype="float64", requires_grad=True) for s in starts[:2]]
    params.append(fg.tensor(np.zeros((2, 3)), dtype="float64", requires_grad=True))  # wrong shape
    fresh = optim.Adam(params, lr=0.5)
    with pytest.raises(ValueError, match="parameter 2: state 'exp_avg' has shape"):
        fresh.load_state_dict(state)
    assert fresh.lr == 0.5 and fresh.state[0]["step"] == 0  # unchanged


RESUME_SCRIPT = r"""
import json, sys
import numpy as np
import fastgrad as fg
from fastgrad import nn, optim

mode, path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
X, y = rng.normal(size=(64, 6)), rng.integers(0, 3, size=64)
model = nn.MLP([6, 16, 3], norm="batch", dropout=0.2, seed=0, dtype="float64")
opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
sched = optim.StepLR(opt, step_size=4, gamma=0.5)
fg.manual_seed(7)
start = 0
if mode == "resume":
    ckpt = fg.checkpoint.load(path, model, opt, sched)
    start = ckpt["step"]
stop = 20 if mode in ("straight", "resume") else 10
losses = []
for step in range(start, stop):
    idx = np.arange(step % 4 * 16, step % 4 * 16 + 16)
    opt.zero_grad()
    loss = fg.softmax_cross_entropy(model(X[idx]), y[idx])
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())
if mode == "first":
    fg.checkpoint.save(path, model, opt, sched, step=stop)
print(json.dumps(losses))
"""


def test_resume_in_a_fresh_process_equals_a_straight_run(tmp_path):
    """Train 10 steps, save model + buffers + optimizer + scheduler + RNG state, reload in a new
    process, 10 more: the same 20 losses, bit for bit, as 20 straight (dropout and batch norm on)."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    ckpt = tmp_path / "ckpt.npz"

    def run(mode):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, str(script), mode, str(ckpt)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    straight = run("straight")
    first = run("first")
    second = run("resume")
    assert len(straight) == 20 and len(first) == 10 and len(second) == 10
    assert first + second == straight
