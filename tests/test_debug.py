"""The backward debug switch: FASTGRAD_DEBUG=1 or fg.set_debug(True) catches broken rules and aliasing."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import ops
from fastgrad.tensor import apply


@pytest.fixture
def debug():
    was = fg.is_debug()
    fg.set_debug(True)
    try:
        yield
    finally:
        fg.set_debug(was)


@pytest.fixture
def no_debug():
    was = fg.is_debug()
    fg.set_debug(False)
    try:
        yield
    finally:
        fg.set_debug(was)


def leaf(v, name=None):
    return fg.tensor(v, dtype="float64", requires_grad=True, name=name)


# Deliberately broken rules, each in a test op of its own (the op table itself is not touched).

_CACHE = {}


def _cached_rule(g):
    # wrong: hands out the same module-level buffer every time (hidden state the engine cannot see)
    buf = _CACHE.setdefault(g.shape, np.empty(g.shape))
    np.multiply(g, 2.0, out=buf)
    return (buf,)


_double_cached = ops.Op("test_double_cached", lambda x: (2.0 * x, ()))
_double_cached.defbackward(_cached_rule)


def _writes_g(g):
    g *= 2.0  # wrong: modifies its upstream gradient, which the engine may have handed elsewhere
    return (g,)


_double_in_place = ops.Op("test_double_in_place", lambda x: (2.0 * x, ()))
_double_in_place.defbackward(_writes_g)

_returns_list = ops.Op("test_returns_list", lambda x: (2.0 * x, ()))
_returns_list.defbackward(lambda g: ([2.0 * v for v in g],))


def test_switch_and_environment_variable():
    was = fg.is_debug()
    try:
        fg.set_debug(True)
        assert fg.is_debug() is True
        fg.set_debug(False)
        assert fg.is_debug() is False
    finally:
        fg.set_debug(was)
    code = "import fastgrad as fg; print(fg.is_debug())"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = dict(os.environ, FASTGRAD_DEBUG=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


def test_rule_handing_out_a_shared_buffer_is_caught(debug):
    a, b = leaf([1.0, 2.0], name="a"), leaf([3.0, 4.0], name="b")
    loss = (apply(_double_cached, a) + apply(_double_cached, b)).sum()
    with pytest.raises(RuntimeError, match=r"debug: the \.grad of tensor '(a|b)'.*shares memory with "
                                           r"the \.grad of tensor '(a|b)'"):
        loss.backward()


def test_without_debug_the_shared_buffer_goes_unnoticed(no_debug):
    # what the debug mode exists for: the engine cannot see hidden state, so the two grads alias
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (apply(_double_cached, a) + apply(_double_cached, b)).sum().backward()
    assert np.shares_memory(a.grad, b.grad)


def test_rule_writing_into_its_upstream_gradient_is_caught(debug):
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="op 'test_double_in_place'.*wrote into its upstream gradient"):
        (apply(_double_in_place, x) * 3.0).sum().backward()


def test_rule_returning_a_list_is_caught(debug):
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="op 'test_returns_list'.*returned a list"):
        apply(_returns_list, x).sum().backward()


def test_wrong_shape_and_dtype_are_caught_with_or_without_debug():
    bad_shape = ops.Op("test_bad_shape", lambda x: (2.0 * x, ()))
    bad_shape.defbackward(lambda g: (np.ones(g.shape + (1,)),))
    bad_dtype = ops.Op("test_bad_dtype", lambda x: (2.0 * x, ()))
    bad_dtype.defbackward(lambda g: (np.ones(g.shape, np.float32),))
    for on in (False, True):
        was = fg.is_debug()
        fg.set_debug(on)
        try:
            with pytest.raises(RuntimeError, match="op 'test_bad_shape'.*shape"):
                apply(bad_shape, leaf([1.0, 2.0])).sum().backward()
            with pytest.raises(RuntimeError, match="op 'test_bad_dtype'.*float32"):
                apply(bad_dtype, leaf([1.0, 2.0])).sum().backward()
        finally:
            fg.set_debug(was)


def test_user_grad_aliasing_a_tensors_data_is_caught(debug):
    x, y = leaf([1.0, 2.0], name="x"), leaf([3.0, 4.0], name="y")
    x.grad = y.data  # wrong: backward accumulates into .grad in place
    with pytest.raises(RuntimeError, match=r"the \.grad of tensor 'x'.*shares memory with the data of "
                                           r"tensor 'y'"):
        (x * y).sum().backward()


def test_grad_aliasing_a_saved_buffer_is_caught(debug):
    x, y = leaf([1.0, 2.0], name="x"), leaf([3.0, 4.0], name="y")
    z = x * 2.0
    w = z.exp()  # saves its output, z.exp()'s data
    x.grad = w.data
    with pytest.raises(RuntimeError, match=r"the \.grad of tensor 'x'.*shares memory with"):
        (w * y).sum().backward()


def _graphs():
    rng = np.random.default_rng(0)
    net = fg.nn.MLP([5, 7, 3], seed=0, dtype="float64")
    X = rng.standard_normal((4, 5))
    loss = fg.softmax_cross_entropy(net(X), [0, 1, 2, 1]) + net.l2(0.1)
    loss.backward(retain_graph=True)
    loss.backward(keep_grads=True)
    x = leaf(rng.standard_normal((2, 3)))
    h = x.reshape(3, 2).T.reshape(2, 3) + x[:, ::-1] + x
    (h * h + h.sum(axis=0)).sum().backward()
    return [p.grad for p in net.parameters()] + [x.grad]


def test_correct_graphs_pass_in_debug_mode_with_the_same_gradients():
    was = fg.is_debug()
    try:
        fg.set_debug(True)
        with_debug = _graphs()
        fg.set_debug(False)
        without = _graphs()
    finally:
        fg.set_debug(was)
    for a, b in zip(with_debug, without):
        np.testing.assert_array_equal(a, b)
