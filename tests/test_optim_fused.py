"""The one-pass C optimizer updates (fastgrad._optim, csrc/optim.c) against the NumPy `out=`
sequences they replaced, bit for bit, float32 and float64, every rule, with and without weight
decay and momentum, over many steps; through the bindings and through fg.optim; and bad buffers.

The oracle below is an independent copy of the NumPy code optim.py ran before the C pass (it does
not call fastgrad): one rounding per NumPy operation, Python-float hyperparameters rounded to the
array's dtype by NumPy 2's rules, the bias corrections in Python floats.
"""
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _optim

DTYPES = ["float32", "float64"]
STEPS = 30


# --- the oracle: NumPy, op by op ---------------------------------------------------------------
def np_decayed(w, dw, buf, wd):
    if not wd:
        return dw
    np.multiply(w, wd, out=buf)
    buf += dw
    return buf


def np_sgd(w, dw, v, lr, momentum, wd):
    buf, wdbuf = np.empty_like(w), np.empty_like(w)
    g = np_decayed(w, dw, wdbuf, wd)
    if momentum:
        v *= momentum
        v += g
        g = v
    np.multiply(g, lr, out=buf)
    w -= buf


def np_rmsprop(w, dw, cache, lr, decay, eps, wd):
    buf = np.empty_like(w)
    g = np_decayed(w, dw, np.empty_like(w), wd)
    cache *= decay
    np.multiply(g, g, out=buf)
    buf *= 1.0 - decay
    cache += buf
    np.sqrt(cache, out=buf)
    buf += eps
    np.divide(g, buf, out=buf)
    buf *= lr
    w -= buf


def np_adam(w, dw, m, v, lr, beta1, beta2, eps, wd, t, decoupled):
    buf = np.empty_like(w)
    if decoupled:
        if wd:
            w *= 1.0 - lr * wd
        g = dw
    else:
        g = np_decayed(w, dw, np.empty_like(w), wd)
    m *= beta1
    np.multiply(g, 1.0 - beta1, out=buf)
    m += buf
    v *= beta2
    np.multiply(g, g, out=buf)
    buf *= 1.0 - beta2
    v += buf
    np.sqrt(v, out=buf)
    buf /= math.sqrt(1.0 - beta2**t)
    buf += eps
    np.divide(m, buf, out=buf)
    buf *= lr / (1.0 - beta1**t)
    w -= buf


# --- helpers -----------------------------------------------------------------------------------
def bits(a):
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_bits(got, want, what):
    assert got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True), what
    same = bits(got) == bits(want)
    if not same.all():
        k = int(np.flatnonzero(~same.ravel())[0])
        raise AssertionError(f"{what}: element {k} is {got.ravel()[k]!r} (bits {bits(got).ravel()[k]:#x}), "
                             f"NumPy gives {want.ravel()[k]!r} (bits {bits(want).ravel()[k]:#x})")


def random_arrays(rng, dtype, n=1037):
    """w and a gradient of mixed magnitudes, with zeros and negative zeros among them (n is odd
    and not a multiple of a vector width, so the loops' tails run too)."""
    scale = 10.0 ** rng.uniform(-6, 3, n)
    w = (rng.standard_normal(n) * scale).astype(dtype)
    w[:5] = [0.0, -0.0, 1.0, -1.0, 0.0]
    return w


def grad(rng, dtype, n):
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 2, n)).astype(dtype)
    g[::97] = 0.0
    g[1::101] = -0.0
    return g


def hyper(rng, wd):
    return dict(
        lr=float(10.0 ** rng.uniform(-4, 0)),
        weight_decay=float(10.0 ** rng.uniform(-5, -1)) if wd else 0.0,
        momentum=float(rng.uniform(0.5, 0.99)),
        decay=float(rng.uniform(0.9, 0.999)),
        eps=float(10.0 ** rng.uniform(-10, -6)),
        beta1=float(rng.uniform(0.8, 0.95)),
        beta2=float(rng.uniform(0.99, 0.9999)),
    )


# --- the bindings against the oracle, step by step ----------------------------------------------
RULES = ["sgd", "sgd_momentum", "rmsprop", "adam", "adamw"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [False, True], ids=["no_decay", "decay"])
@pytest.mark.parametrize("rule", RULES)
def test_binding_matches_numpy_bit_for_bit(rule, wd, dtype):
    rng = np.random.default_rng([RULES.index(rule), wd, DTYPES.index(dtype)])
    w = random_arrays(rng, dtype)
    n = w.size
    h = hyper(rng, wd)
    w_ref, w0 = w.copy(), w.copy()
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    s1_ref, s2_ref = s1.copy(), s2.copy()
    for t in range(1, STEPS + 1):
        dw = grad(rng, dtype, n)
        dw_before = dw.copy()
        if t % 10 == 0:  # a scheduler may change the lr between steps
            h["lr"] *= 0.5
        if rule == "sgd":
            _optim.sgd(w, dw, h["lr"], h["weight_decay"])
            np_sgd(w_ref, dw, None, h["lr"], 0.0, h["weight_decay"])
        elif rule == "sgd_momentum":
            _optim.sgd_momentum(w, dw, s1, h["lr"], h["momentum"], h["weight_decay"])
            np_sgd(w_ref, dw, s1_ref, h["lr"], h["momentum"], h["weight_decay"])
        elif rule == "rmsprop":
            _optim.rmsprop(w, dw, s1, h["lr"], h["decay"], h["eps"], h["weight_decay"])
            np_rmsprop(w_ref, dw, s1_ref, h["lr"], h["decay"], h["eps"], h["weight_decay"])
        else:
            fn = _optim.adam if rule == "adam" else _optim.adamw
            fn(w, dw, s1, s2, h["lr"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"], t)
            np_adam(w_ref, dw, s1_ref, s2_ref, h["lr"], h["beta1"], h["beta2"], h["eps"],
                    h["weight_decay"], t, decoupled=rule == "adamw")
        assert_bits(w, w_ref, f"{rule} step {t}: w")
        assert_bits(s1, s1_ref, f"{rule} step {t}: first state")
        assert_bits(s2, s2_ref, f"{rule} step {t}: second state")
        assert_bits(dw, dw_before, f"{rule} step {t}: the gradient was changed")
    assert not np.array_equal(w, w0)  # it did update


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
def test_special_values_match_numpy(rule, dtype):
    """Infinities, NaN, huge and subnormal values: the same results (NaN where NumPy has NaN)."""
    info = np.finfo(dtype)
    special = np.array([np.inf, -np.inf, np.nan, info.max, -info.max, info.tiny, info.smallest_subnormal,
                        -info.smallest_subnormal, 0.0, -0.0, 1.0, 3.0], dtype=dtype)
    w = np.repeat(special, special.size)
    dw = np.tile(special, special.size)
    for wd in (0.0, 1e-2):
        ours, ref = w.copy(), w.copy()
        a, b, a_ref, b_ref = (np.zeros_like(w) for _ in range(4))
        with np.errstate(all="ignore"):
            for t in (1, 2):
                if rule == "sgd":
                    _optim.sgd(ours, dw, 0.1, wd)
                    np_sgd(ref, dw, None, 0.1, 0.0, wd)
                elif rule == "sgd_momentum":
                    _optim.sgd_momentum(ours, dw, a, 0.1, 0.9, wd)
                    np_sgd(ref, dw, a_ref, 0.1, 0.9, wd)
                elif rule == "rmsprop":
                    _optim.rmsprop(ours, dw, a, 0.1, 0.99, 1e-8, wd)
                    np_rmsprop(ref, dw, a_ref, 0.1, 0.99, 1e-8, wd)
                else:
                    fn = _optim.adam if rule == "adam" else _optim.adamw
                    fn(ours, dw, a, b, 0.1, 0.9, 0.999, 1e-8, wd, t)
                    np_adam(ref, dw, a_ref, b_ref, 0.1, 0.9, 0.999, 1e-8, wd, t, decoupled=rule == "adamw")
        for got, want, what in ((ours, ref, "w"), (a, a_ref, "state 1"), (b, b_ref, "state 2")):
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan), f"{rule} wd={wd}: NaN in {what}"
            assert_bits(got[~nan], want[~nan], f"{rule} wd={wd}: {what}")


# --- through fg.optim: the step count, the groups, the bias corrections --------------------------
def make(name, params, wd, dtype):
    lr = 0.05
    if name == "sgd":
        return fg.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "sgd_momentum":
        return fg.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "rmsprop":
        return fg.optim.RMSProp(params, lr=lr, decay=0.95, eps=1e-7, weight_decay=wd)
    if name == "adam":
        return fg.optim.Adam(params, lr=lr, betas=(0.85, 0.995), eps=1e-7, weight_decay=wd)
    return fg.optim.AdamW(params, lr=lr, betas=(0.85, 0.995), eps=1e-7, weight_decay=wd)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 3e-3], ids=["no_decay", "decay"])
@pytest.mark.parametrize("rule", RULES)
def test_optimizer_step_matches_numpy_bit_for_bit(rule, wd, dtype):
    """Three parameters (one skipping a step: its count lags), a changing lr, 40 steps."""
    rng = np.random.default_rng([7, RULES.index(rule), DTYPES.index(dtype), wd > 0])
    shapes = [(33, 17), (17,), (5, 3, 2)]
    params = [fg.tensor(random_arrays(rng, dtype, int(np.prod(s))).reshape(s), requires_grad=True) for s in shapes]
    opt = make(rule, params, wd, dtype)
    g = opt.param_groups[0]
    ref = [p.data.copy() for p in params]
    s1 = [np.zeros_like(r) for r in ref]
    s2 = [np.zeros_like(r) for r in ref]
    steps = [0] * len(params)
    for step in range(40):
        grads = [grad(rng, dtype, r.size).reshape(r.shape) for r in ref]
        for k, p in enumerate(params):
            p.grad = None if (k == 2 and step % 3 == 1) else grads[k].copy()
        if step == 20:
            g["lr"] = 0.01  # as a scheduler would
        opt.step()
        for k, p in enumerate(params):
            if p.grad is None:
                continue
            steps[k] += 1
            if rule in ("sgd", "sgd_momentum"):
                np_sgd(ref[k], grads[k], s1[k], g["lr"], g["momentum"], g["weight_decay"])
            elif rule == "rmsprop":
                np_rmsprop(ref[k], grads[k], s1[k], g["lr"], g["decay"], g["eps"], g["weight_decay"])
            else:
                b1, b2 = g["betas"]
                np_adam(ref[k], grads[k], s1[k], s2[k], g["lr"], b1, b2, g["eps"], g["weight_decay"], steps[k],
                        decoupled=rule == "adamw")
            assert_bits(p.data, ref[k], f"{rule} step {step}: parameter {k}")
            assert opt.state[k]["step"] == steps[k]
    keys = {"sgd_momentum": ["momentum_buffer"], "rmsprop": ["square_avg"], "adam": ["exp_avg", "exp_avg_sq"],
            "adamw": ["exp_avg", "exp_avg_sq"]}.get(rule, [])
    for k in range(len(params)):
        for key, want in zip(keys, (s1[k], s2[k])):
            assert_bits(opt.state[k][key], want, f"{rule}: state {key} of parameter {k}")


def test_momentum_switched_on_later_starts_from_zero():
    rng = np.random.default_rng(3)
    p = fg.tensor(rng.standard_normal(10).astype(np.float32), requires_grad=True)
    opt = fg.optim.SGD([p], lr=0.1)
    assert opt.state[0]["momentum_buffer"] is None
    opt.param_groups[0]["momentum"] = 0.5
    ref, v = p.data.copy(), np.zeros(10, np.float32)
    for _ in range(3):
        dw = rng.standard_normal(10).astype(np.float32)
        p.grad = dw.copy()
        opt.step()
        np_sgd(ref, dw, v, 0.1, 0.5, 0.0)
    assert_bits(p.data, ref, "w")
    assert_bits(opt.state[0]["momentum_buffer"], v, "v")


# --- bad buffers: clear errors before any C runs -------------------------------------------------
def f32(*shape):
    return np.zeros(shape, np.float32)


def test_bad_buffers_raise_and_change_nothing():
    w = np.ones(8, np.float32)
    cases = [
        (TypeError, "numpy.ndarray", lambda: _optim.sgd([1.0, 2.0], f32(2), 0.1)),
        (TypeError, "float32 or float64", lambda: _optim.sgd(np.ones(8, np.int32), f32(8), 0.1)),
        (TypeError, "its gradient is float64 but the parameter is float32", lambda: _optim.sgd(w, np.zeros(8), 0.1)),
        (ValueError, "has shape \\(7,\\) but the parameter has shape \\(8,\\)", lambda: _optim.sgd(w, f32(7), 0.1)),
        (ValueError, "C-contiguous", lambda: _optim.sgd(w, f32(16)[::2], 0.1)),
        (ValueError, "C-contiguous", lambda: _optim.sgd(np.ones((4, 2), np.float32).T, f32(2, 4), 0.1)),
        (ValueError, "aligned",
         lambda: _optim.sgd(w, np.frombuffer(bytearray(40), np.float32, count=8, offset=1), 0.1)),
        (TypeError, "native byte order", lambda: _optim.sgd(w, np.zeros(8, ">f4"), 0.1)),
        (ValueError, "exp_avg is read-only",
         lambda: _optim.adam(w, f32(8), _readonly(8), f32(8), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)),
        (ValueError, "the parameter is read-only", lambda: _optim.sgd(_readonly(8), f32(8), 0.1)),
        (ValueError, "the parameter and its gradient share memory", lambda: _optim.sgd(w, w, 0.1)),
        (ValueError, "exp_avg and exp_avg_sq share memory",
         lambda: _optim.adam(w, f32(8), (s := f32(9))[:8], s[1:], 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)),
        (ValueError, "step count must be >= 1", lambda: _optim.adam(w, f32(8), f32(8), f32(8), 1e-3, 0.9, 0.999,
                                                                     1e-8, 0.0, 0)),
        (TypeError, "exp_avg is float64", lambda: _optim.adamw(w, f32(8), np.zeros(8), f32(8), 1e-3, 0.9, 0.999,
                                                               1e-8, 0.0, 1)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
        assert (w == 1).all()


def _readonly(n):
    a = np.zeros(n, np.float32)
    a.setflags(write=False)
    return a


def test_check_buffers_for_the_cython_entry_points():
    w, dw, m, v = f32(4), f32(4), f32(4), f32(4)
    assert _optim.check_buffers(w, dw, m, v) == "f32"
    assert _optim.check_buffers(np.zeros(3), np.zeros(3)) == "f64"
    with pytest.raises(ValueError, match="state buffer 0 and state buffer 1 share memory"):
        _optim.check_buffers(w, dw, m, m)
    with pytest.raises(ValueError, match="Adam: state buffer 1 has shape"):
        _optim.check_buffers(w, dw, m, f32(5), op="Adam")


def test_empty_parameter_is_a_no_op():
    for dtype in DTYPES:
        w = np.zeros(0, dtype)
        _optim.adam(w, np.zeros(0, dtype), np.zeros(0, dtype), np.zeros(0, dtype), 1e-3, 0.9, 0.999, 1e-8, 0.1, 1)
        _optim.sgd(w, np.zeros(0, dtype), 0.1, 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_strided_or_transposed_gradient_is_used_as_its_values(dtype):
    """A leaf's gradient can be a view (backward of a transpose, or set by hand): step() reads its
    values as NumPy did."""
    rng = np.random.default_rng(11)
    W = fg.tensor(rng.standard_normal((6, 4)).astype(dtype), requires_grad=True)
    x = fg.tensor(rng.standard_normal((6, 3)).astype(dtype))
    (W.T @ x).sum().backward()
    opt = fg.optim.Adam([W], lr=0.1)
    ref, m, v = W.data.copy(), np.zeros((6, 4), dtype), np.zeros((6, 4), dtype)
    grads = [W.grad.copy(), rng.standard_normal((4, 6)).astype(dtype).T, rng.standard_normal((6, 8)).astype(dtype)[:, ::2]]
    for t, g in enumerate(grads, 1):
        W.grad = g
        opt.step()
        np_adam(ref, np.array(g), m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, t, decoupled=False)
        assert_bits(W.data, ref, f"step {t}")


def test_a_misaligned_gradient_and_a_0d_parameter():
    p = fg.tensor(np.float32(2.0), requires_grad=True)
    mis = np.frombuffer(bytearray(b"\0" + np.float32(0.5).tobytes()), np.float32, count=1, offset=1).reshape(())
    assert not mis.flags.aligned
    opt = fg.optim.SGD([p], lr=0.5)
    p.grad = mis
    opt.step()
    assert p.data.shape == () and p.data == np.float32(2.0) - np.float32(0.5) * np.float32(0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", ["adam", "adamw"])
def test_bias_corrections_at_late_steps(rule, dtype):
    """One step at step counts up to where 1 - beta**t rounds to 1 (the bias corrections vanish)."""
    rng = np.random.default_rng(5)
    fn = _optim.adam if rule == "adam" else _optim.adamw
    for t in (1, 2, 7, 100, 4321, 20_000, 40_000, 10**6, 2**40):
        w, dw = random_arrays(rng, dtype, 257), grad(rng, dtype, 257)
        m = (rng.standard_normal(257) * 1e-3).astype(dtype)
        v = (rng.random(257) * 1e-4).astype(dtype)
        refs = [a.copy() for a in (w, m, v)]
        fn(w, dw, m, v, 3e-4, 0.9, 0.999, 1e-8, 1e-2, t)
        np_adam(*refs[:1], dw, *refs[1:], 3e-4, 0.9, 0.999, 1e-8, 1e-2, t, decoupled=rule == "adamw")
        for got, want in zip((w, m, v), refs):
            assert_bits(got, want, f"{rule} t={t}")


@pytest.mark.parametrize("rule", ["sgd", "rmsprop", "adam", "adamw"])
def test_weight_decay_switched_on_later(rule):
    """A group's weight decay set after construction (no buffer was planned for it) is applied."""
    rng = np.random.default_rng(13)
    p = fg.tensor(rng.standard_normal(50).astype(np.float32), requires_grad=True)
    opt = make(rule, [p], 0.0, "float32")
    g = opt.param_groups[0]
    ref, a, b = p.data.copy(), np.zeros(50, np.float32), np.zeros(50, np.float32)
    for t in range(1, 5):
        if t == 3:
            g["weight_decay"] = 0.05
        dw = grad(rng, "float32", 50)
        p.grad = dw.copy()
        opt.step()
        if rule == "sgd":
            np_sgd(ref, dw, None, g["lr"], 0.0, g["weight_decay"])
        elif rule == "rmsprop":
            np_rmsprop(ref, dw, a, g["lr"], g["decay"], g["eps"], g["weight_decay"])
        else:
            np_adam(ref, dw, a, b, g["lr"], *g["betas"], g["eps"], g["weight_decay"], t, decoupled=rule == "adamw")
        assert_bits(p.data, ref, f"{rule} step {t}")
