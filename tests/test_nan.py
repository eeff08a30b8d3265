"""NaN in, NaN out: every op whose output is NaN says so, and max-like ops route the gradient to
the NaN (the operand whose value the output is). Expected values are derived by hand."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import reference

nan = float("nan")
DTYPES = ["float32", "float64"]


def t(values, dtype, requires_grad=True):
    return fg.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=requires_grad)


# --- svm_loss ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_delta_nan_is_a_nan_loss(dtype):
    s = t([[1.0, 2.0, 3.0], [0.0, -5.0, 1.0]], dtype)
    loss = fg.svm_loss(s, [0, 1], delta=nan)
    assert np.isnan(loss.item())  # it was 0: every margin NaN, none counted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, where", [(3, 0), (3, 2), (40, 37), (100, 0)], ids=["c3-first", "c3-last", "c40", "c100"])
def test_svm_nan_score_gives_nan_and_counts_the_margin(c, where, dtype):
    # one example, label 1, scores 0 except a NaN: the margins are 1 (active) and NaN (active, as
    # max(0, NaN) = NaN routes to the margin), so d/ds_j = 1 for every j != 1 and -(c - 1) for j = 1
    scores = np.zeros((1, c))
    scores[0, where] = nan
    s = t(scores, dtype)
    loss = fg.svm_loss(s, [1])
    assert np.isnan(loss.item())
    loss.backward()
    expected = np.ones((1, c))
    expected[0, 1] = -(c - 1)
    np.testing.assert_array_equal(s.grad, expected)
    ref, cache = reference.svm_loss_forward(scores.astype(dtype), np.array([1]))
    assert np.isnan(ref)
    np.testing.assert_array_equal(reference.svm_loss_backward(np.asarray(1.0, dtype), cache)[0], expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_nan_label_score_makes_every_margin_nan(dtype):
    s = t([[0.0, nan, 0.0, 0.0]], dtype)
    loss = fg.svm_loss(s, [1])
    loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(s.grad, [[1.0, -3.0, 1.0, 1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_finite_rows_are_unchanged_by_the_nan_rule(dtype):
    # margins -1, 0 (not active: max(0, 0) has gradient 0 here) and 0.5
    s = t([[-1.0, 1.0, 0.0, 0.5]], dtype)
    loss = fg.svm_loss(s, [1])
    loss.backward()
    assert loss.item() == 0.5
    np.testing.assert_array_equal(s.grad, [[0.0, -1.0, 0.0, 1.0]])


# --- softmax cross-entropy --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, where", [(3, 0), (3, 2), (50, 0), (50, 33)])
def test_softmax_nan_score_gives_nan_loss(c, where, dtype):
    scores = np.zeros((2, c))
    scores[1, where] = nan
    s = t(scores, dtype)
    loss = fg.softmax_cross_entropy(s, [0, 1])
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isnan(s.grad[1]).all() and np.isfinite(s.grad[0]).all()  # the finite row keeps its gradient
    np.testing.assert_allclose(s.grad[0], (np.full(c, 1.0 / c) - np.eye(c)[0]) / 2, rtol=1e-6)


# --- maximum ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [4, 100001])  # one kernel call on one thread, one big enough to split
def test_maximum_routes_to_the_nan_operand(n, dtype):
    a = np.zeros(n)
    b = np.ones(n)
    a[0], b[1] = nan, nan  # a NaN, b NaN, both NaN, then plain entries where b wins
    a[2] = b[2] = nan
    ta, tb = t(a, dtype), t(b, dtype)
    y = fg.maximum(ta, tb)
    assert np.isnan(y.data[:3]).all() and (y.data[3:] == 1).all()
    y.backward(np.ones(n))
    da = np.zeros(n)
    da[[0, 2]] = 1  # a's NaN; both NaN: a (the tie rule)
    np.testing.assert_array_equal(ta.grad, da)
    np.testing.assert_array_equal(tb.grad, 1 - da)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_routes_to_the_nan_operand_when_broadcasting(dtype):
    a = t([[nan], [0.0], [2.0]], dtype)  # (3, 1)
    b = t([1.0, nan, 1.0, 3.0], dtype)  # (4,)
    y = fg.maximum(a, b)
    expected = np.array([[nan] * 4, [1.0, nan, 1.0, 3.0], [2.0, nan, 2.0, 3.0]])
    np.testing.assert_array_equal(y.data, expected)
    y.sum().backward()
    # a wins: its whole NaN row, and in the other rows where it is >= b and b is not NaN
    np.testing.assert_array_equal(a.grad, [[4.0], [0.0], [2.0]])
    np.testing.assert_array_equal(b.grad, [1.0, 2.0, 1.0, 2.0])
    ref, cache = reference.maximum_forward(a.data, b.data)
    np.testing.assert_array_equal(ref, expected)
    ga, gb = reference.maximum_backward(np.ones((3, 4), dtype), cache)
    np.testing.assert_array_equal(ga, a.grad)
    np.testing.assert_array_equal(gb, b.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_with_a_nan_constant(dtype):
    x = t([1.0, -1.0], dtype)
    y = fg.maximum(x, nan)
    assert np.isnan(y.data).all()
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])  # the NaN constant is the output


# --- max(axis) and maxout ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [5, 70])  # plain loop, and the vectorized search for a NaN
def test_max_over_the_last_axis_goes_to_the_first_nan(width, dtype):
    x = np.arange(3.0 * width).reshape(3, width)
    x[0, 3] = x[0, 4] = nan
    x[2, width - 1] = nan
    tx = t(x, dtype)
    y = tx.max(axis=1)
    assert np.isnan(y.data[0]) and y.data[1] == x[1].max() and np.isnan(y.data[2])
    y.sum().backward()
    expected = np.zeros_like(x)
    expected[0, 3] = expected[1, width - 1] = expected[2, width - 1] = 1
    np.testing.assert_array_equal(tx.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, (0, 2), None])
def test_max_over_other_axes_goes_to_the_first_nan(axis, dtype):
    x = np.arange(24.0).reshape(4, 3, 2)
    x[1, 0, 0] = x[3, 0, 0] = nan
    tx = t(x, dtype)
    y = tx.max(axis=axis)
    ref, cache = reference.max_forward(x.astype(dtype), axis=axis)
    np.testing.assert_array_equal(y.data, ref)  # NaN where the group holds one
    assert np.isnan(y.data).any()
    y.backward(np.ones(y.shape))
    expected = reference.max_backward(np.ones(np.shape(ref), dtype), cache)[0]
    assert expected[1, 0, 0] == 1 and expected[3, 0, 0] == 0  # numpy.argmax: the first NaN
    np.testing.assert_array_equal(tx.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pieces", [2, 3, 5])
def test_maxout_goes_to_the_first_nan(pieces, dtype):
    z = np.arange(2.0 * 2 * pieces).reshape(2, 2 * pieces)
    z[0, 1] = nan  # unit 0 of row 0
    z[1, pieces:] = nan  # unit 1 of row 1: all NaN, the first piece wins
    tz = t(z, dtype)
    y = fg.maxout(tz, pieces)
    assert np.isnan(y.data[0, 0]) and np.isnan(y.data[1, 1]) and y.data[0, 1] == z[0, -1]
    y.sum().backward()
    expected = np.zeros_like(z)
    expected[0, 1] = expected[0, -1] = expected[1, pieces - 1] = expected[1, pieces] = 1
    np.testing.assert_array_equal(tz.grad, expected)


# --- train.fit stops when the loss or the weights stop being finite ----------------------------------


def _splits(rng, n=64, d=8, c=3):
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    return X, y, X[:16], y[:16]


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_fit_stops_on_an_absurd_learning_rate(loss):
    from fastgrad import train

    model = fg.nn.MLP([8, 16, 3], seed=0)
    with pytest.raises(train.TrainingError, match=r"(loss|parameter \w+) became .*epoch \d.*lower the learning"):
        train.fit(model, _splits(np.random.default_rng(0)), optimizer="sgd", lr=1e30, epochs=3, loss=loss)


@pytest.mark.parametrize("loss", ["softmax", "svm"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "maxout"])
def test_fit_stops_on_nan_in_the_data(loss, activation):
    from fastgrad import train

    X, y, Xv, yv = _splits(np.random.default_rng(1))
    X[5, 2] = np.nan
    model = fg.nn.MLP([8, 16, 3], activation=activation, seed=0)
    with pytest.raises(train.TrainingError, match=r"NaN"):
        train.fit(model, (X, y, Xv, yv), optimizer="adam", lr=1e-3, epochs=2, batch_size=64, loss=loss)


def test_fit_stops_when_a_step_makes_the_weights_infinite():
    """The loss of step 1 is finite, but lr = 1e39 is inf in float32: the step itself makes W1
    infinite (and NaN where its gradient is 0), which only the parameter check can see."""
    from fastgrad import train

    model = fg.nn.MLP([8, 16, 3], seed=0)
    with pytest.raises(train.TrainingError, match=r"parameter W1 became NaN or infinite at epoch 1, step 1"):
        train.fit(model, _splits(np.random.default_rng(2)), optimizer="sgd", lr=1e39, epochs=1)


def test_fit_trains_on_when_everything_is_finite():
    from fastgrad import train

    model = fg.nn.MLP([8, 16, 3], seed=0)
    history = train.fit(model, _splits(np.random.default_rng(3)), optimizer="adam", lr=1e-2, epochs=2)
    assert len(history.loss) == 2 and all(np.isfinite(history.loss))


def test_cli_reports_divergence_in_one_line(tmp_path, capsys):
    from fastgrad import train

    status = train.main(["--lr", "1e30", "--optimizer", "sgd", "--epochs", "2", "--hidden", "16",
                         "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgrad-train: error: the ") and "became" in lines[0]
    assert not (tmp_path / "run" / "model.npz").exists()
