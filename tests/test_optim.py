"""fastgrad.optim: a few steps against CS231n's update rules written out in NumPy; in place; validation."""
import tracemalloc

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import optim

STEPS = 4


def setup(dtype="float64", seed=0):
    """Two parameters and STEPS gradients for each, fixed by the seed."""
    rng = np.random.default_rng(seed)
    params = [fg.tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True),
              fg.tensor(rng.standard_normal(4), dtype=dtype, requires_grad=True)]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(STEPS)]
    return params, grads


def run(opt, params, grads):
    buffers = [p.data for p in params]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        opt.step()
    assert all(p.data is b for p, b in zip(params, buffers))  # updated in place
    return [p.data for p in params]


# CS231n assignment 2, optim.py, written out: update(w, dw, config) -> next_w
def cs231n_sgd(w, dws, lr):
    for dw in dws:
        w = w - lr * dw
    return w


def cs231n_sgd_momentum(w, dws, lr, mu):
    v = np.zeros_like(w)
    for dw in dws:
        v = mu * v - lr * dw
        w = w + v
    return w


def cs231n_rmsprop(w, dws, lr, decay, eps):
    cache = np.zeros_like(w)
    for dw in dws:
        cache = decay * cache + (1 - decay) * dw ** 2
        w = w - lr * dw / (np.sqrt(cache) + eps)
    return w


def cs231n_adam(w, dws, lr, beta1, beta2, eps):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, dw in enumerate(dws, start=1):
        m = beta1 * m + (1 - beta1) * dw
        mt = m / (1 - beta1 ** t)
        v = beta2 * v + (1 - beta2) * dw ** 2
        vt = v / (1 - beta2 ** t)
        w = w - lr * mt / (np.sqrt(vt) + eps)
    return w


CASES = [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.1), lambda w, dws: cs231n_sgd(w, dws, 0.1)),
    ("momentum", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
     lambda w, dws: cs231n_sgd_momentum(w, dws, 0.05, 0.9)),
    ("rmsprop", lambda ps: optim.RMSProp(ps, lr=1e-2, decay=0.9, eps=1e-8),
     lambda w, dws: cs231n_rmsprop(w, dws, 1e-2, 0.9, 1e-8)),
    ("rmsprop-defaults", lambda ps: optim.RMSProp(ps), lambda w, dws: cs231n_rmsprop(w, dws, 1e-2, 0.99, 1e-8)),
    ("adam", lambda ps: optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
     lambda w, dws: cs231n_adam(w, dws, 1e-2, 0.8, 0.99, 1e-6)),
    ("adam-defaults", lambda ps: optim.Adam(ps), lambda w, dws: cs231n_adam(w, dws, 1e-3, 0.9, 0.999, 1e-8)),
]


@pytest.mark.parametrize("name, make, reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_steps_match_cs231n_rules(name, make, reference, dtype, rtol):
    params, grads = setup(dtype)
    start = [p.data.astype(np.float64) for p in params]
    got = run(make(params), params, grads)
    for i, w in enumerate(got):
        assert w.dtype == np.dtype(dtype)
        expected = reference(start[i], [g[i].astype(np.float64) for g in grads])
        np.testing.assert_allclose(w, expected, rtol=rtol, atol=rtol * 1e-2)


def test_sgd_weight_decay_adds_decay_times_w_to_the_gradient():
    params, grads = setup()
    w = [p.data.copy() for p in params]
    v = [np.zeros_like(x) for x in w]
    run(optim.SGD(params, lr=0.1, momentum=0.5, weight_decay=0.01), params, grads)
    for step in grads:  # PyTorch's SGD: g = dw + wd * w; v = mu v + g; w -= lr v
        for i, dw in enumerate(step):
            v[i] = 0.5 * v[i] + (dw + 0.01 * w[i])
            w[i] = w[i] - 0.1 * v[i]
    for p, expected in zip(params, w):
        np.testing.assert_allclose(p.data, expected, rtol=1e-12)


def test_parameters_without_a_gradient_are_left_alone_and_zero_grad_clears():
    params, grads = setup()
    before = params[1].data.copy()
    opt = optim.Adam(params)
    params[0].grad = grads[0][0]
    opt.step()
    np.testing.assert_array_equal(params[1].data, before)
    assert not np.array_equal(params[0].data, setup()[0][0].data)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=1e-4),
                                  lambda ps: optim.RMSProp(ps), lambda ps: optim.Adam(ps)],
                         ids=["sgd", "rmsprop", "adam"])
def test_steps_allocate_no_parameter_sized_buffers(make):
    w = fg.tensor(np.zeros((500, 500), np.float32), requires_grad=True)  # 1 MB in float32
    w.grad = np.ones((500, 500), dtype=np.float32)
    opt = make([w])
    opt.step()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            opt.step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"step() allocated {peak} bytes at its peak"


def test_the_allocation_check_can_fail():
    """The same measurement catches a step that allocates, so the test above means something."""
    w = np.zeros((500, 500), dtype=np.float32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        w = w - 0.1 * np.ones_like(w)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak >= 1_000_000


@pytest.mark.parametrize("make, match", [
    (lambda ps: optim.SGD(ps, lr=0), r"lr must be in \(0"),
    (lambda ps: optim.SGD(ps, lr=-0.1), r"lr must be in \(0"),
    (lambda ps: optim.SGD(ps, lr=float("nan")), "lr must be"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=1.0), "momentum must be in"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.1), "momentum must be in"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay must be in"),
    (lambda ps: optim.RMSProp(ps, lr=0), "lr must be"),
    (lambda ps: optim.RMSProp(ps, decay=1.5), "decay must be in"),
    (lambda ps: optim.RMSProp(ps, eps=0), "eps must be in"),
    (lambda ps: optim.Adam(ps, lr=-1), "lr must be"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "beta2 must be in"),
    (lambda ps: optim.Adam(ps, betas=(0.9,)), "betas must be a pair"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps must be in"),
    (lambda ps: optim.SGD([], lr=0.1), "empty parameter list"),
    (lambda ps: optim.SGD([fg.tensor([1.0])], lr=0.1), "does not require grad"),
])
def test_bad_hyperparameters_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make(setup()[0])


def test_non_tensor_parameters_raise_type_error():
    with pytest.raises(TypeError, match="parameter 0 is a ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.Adam(setup()[0], lr="fast")


def test_gradient_of_the_wrong_shape_is_reported():
    params, _ = setup()
    params[0].grad = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(3, 4\)"):
        optim.SGD(params, lr=0.1).step()


def test_an_optimizer_minimises_a_quadratic():
    target = np.array([1.0, -2.0, 3.0])
    for opt_cls, kwargs in [(optim.SGD, {"lr": 0.1, "momentum": 0.9}), (optim.RMSProp, {"lr": 0.01}),
                            (optim.Adam, {"lr": 0.05})]:
        w = fg.tensor(np.zeros(3), dtype="float64", requires_grad=True)
        opt = opt_cls([w], **kwargs)
        for _ in range(500):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
        np.testing.assert_allclose(w.data, target, atol=0.02, err_msg=opt_cls.__name__)
