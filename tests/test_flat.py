"""Flat parameter and gradient buffers (fastgrad.flat, Module.flatten_parameters)."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import flat as flatmod

DTYPES = ["float32", "float64"]


def _batch(dtype, n=7, d=5, c=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, c, n)


def _pair(dtype, sizes=(5, 6, 4, 3), activation="tanh"):
    """Two identical MLPs; the first gets flattened by the caller, the second stays as it is."""
    return (fg.nn.MLP(list(sizes), activation=activation, seed=3, dtype=dtype),
            fg.nn.MLP(list(sizes), activation=activation, seed=3, dtype=dtype))


def _loss(model, X, y, reg=1e-2):
    return fg.softmax_cross_entropy(model(X), y) + model.l2(reg)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_moves_data_into_one_buffer_in_order(dtype):
    model, plain = _pair(dtype)
    flat = model.flatten_parameters()
    params = model.parameters()
    assert flat.data.ndim == 1 and flat.data.flags.c_contiguous and flat.data.dtype == dtype
    assert flat.size == sum(p.data.size for p in plain.parameters()) == flat.grad.size
    expected = np.concatenate([p.data.ravel() for p in plain.parameters()])
    np.testing.assert_array_equal(flat.data, expected)
    offset = 0
    for p, q in zip(params, plain.parameters()):
        n = q.data.size
        assert p.data.flags.c_contiguous and p.data.shape == q.data.shape
        # the tensor's data IS the slice: writing through one shows in the other
        assert np.shares_memory(p.data, flat.data[offset:offset + n])
        assert np.shares_memory(p.grad, flat.grad[offset:offset + n])
        offset += n
    assert not np.any(flat.grad)
    flat.data[0] = 42.0
    assert params[0].data.flat[0] == 42.0
    assert model.flatten_parameters() is flat  # idempotent


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_accumulates_into_the_existing_grad_in_place(dtype):
    """Fails if autograd stops adding into an existing leaf .grad in place (flat buffers rely on it)."""
    model, plain = _pair(dtype)
    flat = model.flatten_parameters()
    views = [p.grad for p in model.parameters()]
    X, y = _batch(dtype)
    _loss(model, X, y).backward()
    _loss(plain, X, y).backward()
    for p, v in zip(model.parameters(), views):
        assert p.grad is v, "backward replaced a pinned .grad instead of accumulating into it"
    expected = np.concatenate([p.grad.ravel() for p in plain.parameters()])
    np.testing.assert_array_equal(flat.grad, expected)
    assert np.any(flat.grad)
    # a second backward without zero_grad adds (the same values, so exactly twice)
    _loss(model, X, y).backward()
    np.testing.assert_array_equal(flat.grad, 2 * expected)
    assert all(p.grad is v for p, v in zip(model.parameters(), views))


@pytest.mark.parametrize("zero", ["module", "optimizer"])
def test_zero_grad_zeroes_in_place(zero):
    model, _ = _pair("float32")
    flat = model.flatten_parameters()
    opt = fg.optim.SGD(model.parameters(), lr=0.1)
    X, y = _batch("float32")
    _loss(model, X, y).backward()
    buffer = flat.grad
    (model if zero == "module" else opt).zero_grad()
    assert flat.grad is buffer and not np.any(buffer)
    assert all(p.grad is not None and np.shares_memory(p.grad, buffer) for p in model.parameters())
    # an unflattened model keeps the set-to-None behaviour
    _, plain = _pair("float32")
    _loss(plain, X, y).backward()
    plain.zero_grad()
    assert all(p.grad is None for p in plain.parameters())
    opt2 = fg.optim.SGD(plain.parameters(), lr=0.1)
    _loss(plain, X, y).backward()
    opt2.zero_grad()
    assert all(p.grad is None for p in plain.parameters())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make", [
    ("sgd", lambda ps: fg.optim.SGD(ps, lr=0.1)),
    ("momentum", lambda ps: fg.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("rmsprop", lambda ps: fg.optim.RMSProp(ps, lr=1e-2)),
    ("adam", lambda ps: fg.optim.Adam(ps, lr=1e-2)),
])
@pytest.mark.parametrize("order", ["flatten-first", "optimizer-first"])
def test_optimizers_work_on_views(dtype, name, make, order):
    """A flattened model trains bit-identically to an unflattened one (same kernels, same order)."""
    model, plain = _pair(dtype)
    if order == "flatten-first":
        flat = model.flatten_parameters()
        opt = make(model.parameters())
    else:
        opt = make(model.parameters())
        flat = model.flatten_parameters()
    opt_plain = make(plain.parameters())
    for step in range(5):
        X, y = _batch(dtype, seed=step)
        for m, o in ((model, opt), (plain, opt_plain)):
            o.zero_grad()
            _loss(m, X, y).backward()
            o.step()
    for p, q in zip(model.parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    np.testing.assert_array_equal(flat.data, np.concatenate([q.data.ravel() for q in plain.parameters()]))
    flat.check()  # every .data still a view


def test_state_dict_and_save_load_keep_the_views(tmp_path):
    model, plain = _pair("float32")
    flat = model.flatten_parameters()
    model.load_state_dict({k: v + 1 for k, v in plain.state_dict().items()})
    flat.check()
    np.testing.assert_array_equal(flat.data, np.concatenate([q.data.ravel() + 1 for q in plain.parameters()]))
    path = fg.nn.save(model, tmp_path / "m.npz")
    again = fg.nn.load(path)
    for p, q in zip(again.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_gather_grads_repairs_a_replaced_grad():
    model, _ = _pair("float64")
    flat = model.flatten_parameters()
    W1, b1 = model.W1, model.b1
    W1.grad = np.full(W1.shape, 3.0)   # a user assigned a new array
    b1.grad = None                     # ... or dropped one
    flat.grad[:] = 7.0
    flat.gather_grads()
    assert np.shares_memory(W1.grad, flat.grad) and np.all(W1.grad == 3.0)
    assert np.shares_memory(b1.grad, flat.grad) and np.all(b1.grad == 0.0)


def test_check_names_a_replaced_data_buffer():
    model, _ = _pair("float32")
    flat = model.flatten_parameters()
    model.W2.data = model.W2.data.copy()
    with pytest.raises(RuntimeError, match="parameter 2"):
        flat.check()
    assert model.flatten_parameters() is not flat  # flattening again brings it back


def test_flatten_rejects_bad_parameter_lists():
    a = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    b = fg.tensor(np.ones(2), dtype="float64", requires_grad=True)
    with pytest.raises(TypeError, match="dtype"):
        flatmod.flatten([a, b])
    with pytest.raises(ValueError, match="no parameters"):
        flatmod.flatten([])
    with pytest.raises(ValueError, match="leaf"):
        flatmod.flatten([a * 2])
    with pytest.raises(ValueError, match="tail"):
        flatmod.flatten([a], tail=-1)


def test_shared_parameter_is_flattened_once_and_tail_slots():
    a = fg.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    flat = flatmod.flatten([a, a], tail=2)
    assert flat.size == 3 and flat.comm.size == 5 and flat.tail.size == 2
    assert np.shares_memory(flat.comm, flat.grad)
    (a * a).sum().backward()
    np.testing.assert_array_equal(flat.comm, [0, 2, 4, 0, 0])
