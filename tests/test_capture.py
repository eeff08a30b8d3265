"""fastgrad.capture: a replayed step gives what the eager step gives, bit for bit, or runs eagerly.

The oracle is the eager step itself on a twin model (same seed, same batches): the replay must
reproduce its losses and parameters exactly (np.array_equal) over 100 steps, for every activation,
both losses, every optimizer, float32 and float64, with and without flat parameter buffers. The
eager step is in turn checked against finite differences and torch by the rest of the suite.
"""
import re
import resource
import tracemalloc
import warnings

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import capture as C
from fastgrad import _plan

ACTIVATIONS = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "maxout"]
OPTIMIZERS = {
    "sgd": lambda p: fg.optim.SGD(p, lr=0.05),
    "momentum": lambda p: fg.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "rmsprop": lambda p: fg.optim.RMSProp(p, lr=1e-3),
    "adam": lambda p: fg.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: fg.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
}
LOSSES = {"softmax": fg.softmax_cross_entropy, "svm": fg.svm_loss}


def make_step(sizes, activation="relu", optimizer="sgd", loss="softmax", dtype=np.float32, flat=False,
              reg=1e-3, seed=0, norm=None, dropout=0.0):
    model = fg.nn.MLP(sizes, activation=activation, seed=seed, dtype=dtype, norm=norm, dropout=dropout)
    if flat:
        model.flatten_parameters()
    opt = OPTIMIZERS[optimizer](model.parameters())
    loss_fn = LOSSES[loss]

    def step(X, y):
        opt.zero_grad()
        L = loss_fn(model(X), y) + model.l2(reg)
        L.backward()
        opt.step()
        return L

    return model, opt, step


def batches(n, sizes, batch, dtype, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (rng.standard_normal((batch, sizes[0])).astype(dtype),
               rng.integers(0, sizes[-1], batch))


def assert_same_run(sizes, steps=100, batch=8, **kw):
    dtype = kw.get("dtype", np.float32)
    eager_model, _, eager = make_step(sizes, **kw)
    model, _, step = make_step(sizes, **kw)
    replay = fg.capture(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CaptureWarning)  # this step must replay
        for X, y in batches(steps, sizes, batch, dtype):
            expected = eager(X, y).item()
            got = replay(X, y).item()
            assert got == expected or (np.isnan(got) and np.isnan(expected))
    assert replay.captures == 1 and replay.replays == steps - 1
    for p, q in zip(eager_model.parameters(), model.parameters()):
        assert np.array_equal(p.data, q.data)
        assert np.array_equal(p.grad, q.grad)
    for (name, a), (_, b) in zip(eager_model.named_buffers(), model.named_buffers()):
        assert np.array_equal(np.asarray(getattr(a, "data", a)), np.asarray(getattr(b, "data", b))), name
    return model, replay


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", list(LOSSES))
def test_replay_equals_eager_every_activation_and_loss(activation, loss, dtype):
    assert_same_run([7, 12, 9, 5], activation=activation, loss=loss, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("flat", [False, True])
def test_replay_equals_eager_every_optimizer(optimizer, flat, dtype):
    assert_same_run([6, 10, 4], optimizer=optimizer, flat=flat, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_replay_equals_eager_with_a_norm(norm, activation, dtype):
    """Batch or layer norm between the affine map and a separate gate (the gates' own C entry
    points); batch norm's running statistics too."""
    model, _ = assert_same_run([7, 12, 9, 5], norm=norm, activation=activation, optimizer="adam", dtype=dtype)
    if norm == "batch":  # the running statistics moved (and equal the eager twin's: assert_same_run)
        assert any(np.any(b.data != 0) for k, b in model.named_buffers() if k.startswith("running_mean"))


@pytest.mark.parametrize("threads", [1, 2])
def test_replay_equals_eager_with_products_split_over_threads(threads):
    """mnist-sized layers: the products are split into blocks and run on a team (adaptively);
    the replay goes through the same blocks, so it stays bit-identical."""
    before = fg.get_num_threads()
    fg.set_num_threads(threads)
    try:
        assert_same_run([784, 256, 10], steps=12, batch=128, optimizer="adam")
    finally:
        fg.set_num_threads(before)


def test_a_scheduler_changes_the_replayed_lr():
    eager_model, eager_opt, eager = make_step([5, 8, 3])
    model, opt, step = make_step([5, 8, 3])
    sched = fg.optim.StepLR(opt, step_size=3, gamma=0.5)
    eager_sched = fg.optim.StepLR(eager_opt, step_size=3, gamma=0.5)
    replay = fg.capture(step)
    for X, y in batches(12, [5, 8, 3], 4, np.float32):
        assert replay(X, y).item() == eager(X, y).item()
        sched.step()
        eager_sched.step()
    assert opt.lr == eager_opt.lr < 0.05
    for p, q in zip(eager_model.parameters(), model.parameters()):
        assert np.array_equal(p.data, q.data)


def test_a_new_batch_shape_records_a_new_plan_and_keeps_both():
    eager_model, _, eager = make_step([5, 8, 3])
    model, _, step = make_step([5, 8, 3])
    replay = fg.capture(step)
    rng = np.random.default_rng(0)
    for n in [8, 8, 3, 8, 3, 3, 8]:  # a full batch and the last, partial one
        X, y = rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 3, n)
        assert replay(X, y).item() == eager(X, y).item()
    assert replay.captures == 2 and len(replay.plans) == 2 and replay.replays == 5
    for p, q in zip(eager_model.parameters(), model.parameters()):
        assert np.array_equal(p.data, q.data)


def test_the_cache_keeps_at_most_cache_size_plans():
    _, _, step = make_step([3, 4, 2])
    replay = fg.capture(step, cache_size=2)
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 1]:
        replay(rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 2, n))
    assert len(replay.plans) == 2 and replay.captures == 4  # batch 1 was dropped, then recorded again


def test_a_replaced_parameter_records_again():
    eager_model, _, eager = make_step([4, 6, 3])
    model, _, step = make_step([4, 6, 3])
    replay = fg.capture(step)
    data = list(batches(6, [4, 6, 3], 5, np.float32))
    for X, y in data[:3]:
        assert replay(X, y).item() == eager(X, y).item()
    for p, q in zip(eager_model.parameters(), model.parameters()):
        p.data = p.data.copy()  # as nn.load or a careless user would: a new array
        q.data = q.data.copy()
    for X, y in data[3:]:
        assert replay(X, y).item() == eager(X, y).item()
    assert replay.captures == 2


def test_the_returned_tensor_is_the_plans_buffer():
    _, _, step = make_step([4, 6, 3])
    replay = fg.capture(step)
    (X1, y1), (X2, y2), (X3, y3) = batches(3, [4, 6, 3], 5, np.float32)
    first = replay(X1, y1)
    second = replay(X2, y2)
    value = second.item()
    third = replay(X3, y3)
    assert third is second and third.item() != value  # overwritten by the next call, as documented


def test_labels_out_of_range_raise_before_anything_changes():
    model, _, step = make_step([4, 6, 3])
    replay = fg.capture(step)
    X, y = next(batches(1, [4, 6, 3], 5, np.float32))
    replay(X, y)
    replay(X, y)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"labels value 7 at position 1 is out of range \[0, 3\)"):
        replay(X, np.array([0, 7, 1, 2, 0]))
    with pytest.raises(ValueError, match="out of range"):
        replay(X, np.array([0, -1, 1, 2, 0]))
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_labels_that_change_each_call_replay_as_eager(loss, dtype, label_dtype):
    """One batch X for every call, only the labels change: a plan that kept the first call's
    labels (instead of reading the loss node's labels input from the argument) would go wrong."""
    sizes = [5, 8, 4]
    eager_model, _, eager = make_step(sizes, loss=loss, dtype=dtype)
    model, _, step = make_step(sizes, loss=loss, dtype=dtype)
    replay = fg.capture(step)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 5)).astype(dtype)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CaptureWarning)  # this step must replay
        for _ in range(20):
            y = rng.integers(0, 4, 6).astype(label_dtype)
            expected = eager(X, y).item()
            assert replay(X, y).item() == expected
            losses.append(expected)
    assert replay.captures == 1 and replay.replays == 19
    assert len(set(losses)) > 10  # the labels did change the loss
    for p, q in zip(eager_model.parameters(), model.parameters()):
        assert np.array_equal(p.data, q.data) and np.array_equal(p.grad, q.grad)
    (plan,) = replay.plans.values()
    op = {"softmax": "softmax_cross_entropy", "svm": "svm_loss"}[loss]
    assert [(i, checks) for i, _, checks in plan.inputs] == [(0, []), (1, [(4, op)])]  # range-checked


def test_labels_from_outside_the_arguments_are_frozen_at_capture():
    """As every value read from outside the arguments: changing the array afterwards (here to
    labels out of range, which the program would read out of bounds) changes no replay."""
    sizes = [5, 8, 4]
    model, opt, _ = make_step(sizes)
    _, _, twin = make_step(sizes)
    y = np.array([0, 1, 2, 3, 0, 1])
    frozen = y.copy()

    def step(X):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(X), y) + model.l2(1e-3)
        L.backward()
        opt.step()
        return L

    replay = fg.capture(step)
    X = np.random.default_rng(5).standard_normal((6, 5)).astype(np.float32)
    assert replay(X).item() == twin(X, frozen).item()
    y[:] = 99
    for _ in range(3):
        assert replay(X).item() == twin(X, frozen).item()
    assert replay.replays == 3


def test_forward_only_steps_replay_under_no_grad():
    model = fg.nn.MLP([5, 7, 3], seed=0)
    predict = fg.capture(lambda X: model(X))
    rng = np.random.default_rng(0)
    with fg.no_grad():
        for _ in range(4):
            X = rng.standard_normal((6, 5)).astype(np.float32)
            assert np.array_equal(predict(X).data, model(X).data)
    assert predict.captures == 1 and predict.replays == 3


def test_a_hand_written_two_layer_net_replays():
    """The lecture's f = W2 max(0, W1 x) + b written with matmul, +, a bias row and sums."""
    rng = np.random.default_rng(0)
    params = [fg.tensor(rng.standard_normal(s).astype(np.float32) * 0.3, requires_grad=True)
              for s in [(5, 8), (8,), (8, 3), (3,)]]
    twins = [fg.tensor(p.data.copy(), requires_grad=True) for p in params]

    def make(ps):
        W1, b1, W2, b2 = ps
        opt = fg.optim.SGD(ps, lr=0.1)

        def step(X, y):
            opt.zero_grad()
            h = fg.affine(X, W1, b1, activation="relu")
            scores = h @ W2 + b2
            reg = (W1 * W1).sum() * 0.5 + (W2 * W2).sum() * 0.5 - b2.sum() * 0.0
            L = fg.softmax_cross_entropy(scores, y) + reg * 1e-2 / 2.0
            L.backward()
            opt.step()
            return L

        return step

    eager, replay = make(params), fg.capture(make(twins))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CaptureWarning)
        for _ in range(30):
            X, y = rng.standard_normal((4, 5)).astype(np.float32), rng.integers(0, 3, 4)
            assert replay(X, y).item() == eager(X, y).item()
    assert replay.replays == 29
    for p, q in zip(params, twins):
        assert np.array_equal(p.data, q.data)


def plain_step(model, opt):
    """zero_grad, softmax loss, backward, step: the training step without a penalty."""

    def step(X, y):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward()
        opt.step()
        return L

    return step


def _record_batchnorm():
    fg.manual_seed(0)  # the twin gets the same initial weights
    model = fg.nn.Sequential(fg.nn.Linear(4, 6), fg.nn.BatchNorm1d(6), fg.nn.ReLU(), fg.nn.Linear(6, 3))
    return plain_step(model, fg.optim.SGD(model.parameters(), lr=0.1)), "BatchNorm1d counts its batches"


def _record_item():
    model, opt, step = make_step([4, 6, 3])
    return (lambda X, y: step(X, y).item()), "the step returns a float"


def _record_no_zero_grad():
    model = fg.nn.MLP([4, 6, 3], seed=0)

    def step(X, y):
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward()
        return L

    return step, "is not zeroed in the step"


def _record_random():
    model, opt, step = make_step([4, 6, 3])

    def noisy(X, y):
        return step(X + fg.randn(*X.shape) * 0.01, y)

    return noisy, "draws random numbers"


def _record_inplace():
    model, opt, step = make_step([4, 6, 3])

    def shrink(X, y):
        L = step(X, y)
        W = model.parameters()[0]
        with fg.no_grad():
            W *= 0.5
        return L

    return shrink, "changed in place outside the optimizer"


def _record_converted():
    model, opt, step = make_step([4, 6, 3])
    return (lambda X, y: step(X.astype(np.float32), y)), "does not reach the step's ops as it is"


@pytest.mark.parametrize("make", [_record_batchnorm, _record_item, _record_no_zero_grad,
                                  _record_random, _record_inplace, _record_converted])
def test_a_step_that_cannot_replay_exactly_runs_eagerly_and_says_why_once(make):
    step, reason = make()
    twin, _ = make()
    fg.manual_seed(0)
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((5, 4)), rng.integers(0, 3, 5)) for _ in range(4)]
    expected = []
    for X, y in data:
        out = twin(X if make is _record_converted else X.astype(np.float32), y)
        expected.append(out if isinstance(out, float) else out.item())
    fg.manual_seed(0)
    replay = fg.capture(step)
    with pytest.warns(fg.CaptureWarning, match=reason) as caught:
        got = []
        for X, y in data:
            out = replay(X if make is _record_converted else X.astype(np.float32), y)
            got.append(out if isinstance(out, float) else out.item())
    assert len(caught) == 1
    assert reason in replay.last_reason
    assert got == expected  # eager every time: the same numbers as without capture
    assert replay.replays == 0


def test_arguments_that_cannot_be_keys_run_eagerly():
    _, _, step = make_step([4, 6, 3])
    replay = fg.capture(step)
    X, y = next(batches(1, [4, 6, 3], 5, np.float32))
    with pytest.warns(fg.CaptureWarning, match="argument 1 is a list"):
        replay(X, list(y))
    with pytest.warns(fg.CaptureWarning, match="keyword arguments"):
        replay(X, y=y)


def test_capture_rejects_what_is_not_a_function():
    with pytest.raises(TypeError, match="expected a function"):
        fg.capture(3)
    with pytest.raises(ValueError, match="cache_size"):
        fg.capture(lambda: None, cache_size=0)


def test_replay_allocates_no_array_and_faults_no_page():
    """The issue's steady state: no array created (NumPy reports its data allocations to
    tracemalloc's domain), no Python memory kept, no minor page fault per replayed step."""
    _, _, step = make_step([64, 100, 10], optimizer="adam")
    replay = fg.capture(step)
    X, y = next(batches(1, [64, 100, 10], 32, np.float32))
    for _ in range(20):
        replay(X, y)
    numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    tracemalloc.start()
    try:
        replay(X, y)
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            replay(X, y)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        now, peak = tracemalloc.get_traced_memory()
        later = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    arrays = later.filter_traces([numpy_domain]).compare_to(snapshot.filter_traces([numpy_domain]), "lineno")
    assert sum(s.count_diff for s in arrays) == 0
    # Python's own small objects (an int counter, a float) come and go: well under one array of
    # this step, the smallest of which ((32, 10) float32 scores) is 1.3 KB, the largest 12.8 KB
    assert now - base < 1024
    assert peak - base < 4096
    assert faults == 0


def test_pairwise_sum_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in list(range(1, 300)) + [1000, 4097, 8192, 8193, 65536 + 5, 200_704]:
            a = (rng.standard_normal(n) * 3).astype(dtype)
            assert _plan.pairwise_sum(a) == a.sum()
        zeros = np.full(9, -0.0, dtype)
        assert not np.signbit(_plan.pairwise_sum(zeros)) and not np.signbit(zeros.sum())


def test_sum_of_squares_rejects_what_its_c_loop_cannot_read():
    with pytest.raises(TypeError, match="float32 or float64"):
        _plan.sum_of_squares(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _plan.sum_of_squares(np.ones(6)[::2])
    with pytest.raises(ValueError, match="C-contiguous"):
        _plan.pairwise_sum(np.ones(6)[::2])


def test_program_checks_its_buffers_before_running():
    f = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="float64, expected float32"):
        _plan.Program([{"kind": "copy", "a": np.zeros(4), "c": f, "n": 4}], np.float32)
    with pytest.raises(ValueError, match="holds 4 values, needs 5"):
        _plan.Program([{"kind": "copy", "a": f, "c": np.zeros(4, np.float32), "n": 5}], np.float32)
    with pytest.raises(ValueError, match="not C-contiguous"):
        _plan.Program([{"kind": "copy", "a": np.zeros(8, np.float32)[::2], "c": f, "n": 4}], np.float32)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _plan.Program([{"kind": "copy", "a": f, "c": ro, "n": 4}], np.float32)
    with pytest.raises(ValueError, match="product sizes"):
        _plan.Program([{"kind": "gemm", "a": f, "b": f, "c": f, "m": 0, "n": 2, "k": 2}], np.float32)
    # gate codes are the activation codes (csrc/activations.h); NONE (0) and unknown codes are refused
    assert _plan.GATES == {k: v for k, v in fg._linalg.ACTIVATIONS.items() if k is not None}
    for code in (fg._linalg.ACTIVATIONS[None], max(_plan.GATES.values()) + 1, -1):
        with pytest.raises(ValueError, match=f"unknown gate {code}"):
            _plan.Program([{"kind": "gate", "op": code, "a": f, "c": np.zeros(4, np.float32), "n": 4}],
                          np.float32)
    y = np.zeros(4, np.float32)
    x = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    _plan.Program([{"kind": "gate", "op": _plan.GATES["tanh"], "a": x, "c": y, "n": 4, "p": 0.0}], np.float32).run()
    np.testing.assert_array_equal(y, fg._kernels.tanh_forward(x))  # the eager gate's bits
    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-6)  # and tanh's values


def test_train_fit_uses_the_captured_step_with_the_eager_numbers():
    splits = fg.data.load("digits")
    runs = []
    for eager in (False, True):
        model = fg.nn.MLP([64, 32, 10], seed=0)
        history = fg.train.fit(model, splits, optimizer="adam", lr=1e-3, epochs=2, batch_size=50, reg=1e-3,
                               seed=0, eager=eager)
        runs.append((history.loss, [p.data.copy() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_a_batch_of_another_dtype_replays_through_the_models_conversion():
    """A float64 batch given to a float32 model is converted by the model (a copy): the replay
    writes each new batch into that copy with the same cast."""
    eager_model, _, eager = make_step([5, 8, 3])
    model, _, step = make_step([5, 8, 3])
    replay = fg.capture(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CaptureWarning)
        for X, y in batches(10, [5, 8, 3], 6, np.float64):
            assert replay(X, y.astype(np.int32)).item() == eager(X, y.astype(np.int32)).item()
    assert replay.replays == 9
    for p, q in zip(eager_model.parameters(), model.parameters()):
        assert np.array_equal(p.data, q.data)


@pytest.mark.parametrize("l2_first", [False, True])
@pytest.mark.parametrize("flat", [False, True])
def test_the_l2_gradient_is_summed_in_the_eager_order(l2_first, flat):
    """The penalty's gradient 2 (s W) meets the data gradient in the order of the walk: added
    after it when the penalty was computed first (its nodes are older), before it otherwise; the
    fused pass must do the same additions in the same order."""
    def make():
        model = fg.nn.MLP([6, 9, 4], seed=3)
        if flat:
            model.flatten_parameters()
        opt = fg.optim.SGD(model.parameters(), lr=0.3)

        def step(X, y):
            opt.zero_grad()
            if l2_first:
                penalty = model.l2(0.37)
                L = penalty + fg.softmax_cross_entropy(model(X), y)
            else:
                L = fg.softmax_cross_entropy(model(X), y) + model.l2(0.37)
            L.backward()
            opt.step()
            return L

        return model, step

    (m1, eager), (m2, step) = make(), make()
    replay = fg.capture(step)
    for X, y in batches(40, [6, 9, 4], 5, np.float32):
        assert replay(X, y).item() == eager(X, y).item()
    assert replay.replays == 39
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(p.data, q.data) and np.array_equal(p.grad, q.grad)


def test_switching_momentum_on_or_replacing_optimizer_state_records_again():
    def make():
        model = fg.nn.MLP([4, 6, 3], seed=0)
        opt = fg.optim.SGD(model.parameters(), lr=0.1)
        return model, opt, plain_step(model, opt)

    (m1, o1, eager), (m2, o2, step) = make(), make()
    replay = fg.capture(step)
    data = list(batches(9, [4, 6, 3], 5, np.float32))
    for k, (X, y) in enumerate(data):
        if k == 3:
            for o in (o1, o2):
                o.param_groups[0]["momentum"] = 0.9  # the rule changes: the plan must not run
        assert replay(X, y).item() == eager(X, y).item()
    assert replay.captures == 2
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(p.data, q.data)


def test_an_optimizer_with_its_own_rule_steps_after_the_program():
    class HalfSGD(fg.optim.SGD):
        def _update(self, i, w, dw, buf, group, state):
            w -= 0.5 * group["lr"] * dw

    def make():
        model = fg.nn.MLP([4, 6, 3], seed=0)
        return model, plain_step(model, HalfSGD(model.parameters(), lr=0.1))

    (m1, eager), (m2, step) = make(), make()
    replay = fg.capture(step)
    for X, y in batches(6, [4, 6, 3], 5, np.float32):
        assert replay(X, y).item() == eager(X, y).item()
    assert replay.replays == 5
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(p.data, q.data)


def test_replays_on_one_and_two_threads_give_the_same_bits():
    """The products are split into blocks fixed by the shape alone (see _linalg._gemm), and the
    other instructions are serial: the thread setting changes no result."""
    before = fg.get_num_threads()
    params = []
    try:
        for threads in (1, 2):
            fg.set_num_threads(threads)
            model, _, step = make_step([784, 256, 10], optimizer="adam")
            replay = fg.capture(step)
            for X, y in batches(6, [784, 256, 10], 128, np.float32):
                replay(X, y)
            params.append([p.data.copy() for p in model.parameters()])
    finally:
        fg.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(*params))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", [None, "batch"])
def test_dropout_replays_with_new_masks_from_the_same_stream(norm, dtype):
    """Each replay draws its masks from the generator as the eager forward does (the same numbers
    in the same order): run from the same seed, the twins drop the same units at every step."""
    runs = []
    for capture in (False, True):
        model, _, step = make_step([7, 12, 9, 5], norm=norm, optimizer="adam", dtype=dtype, dropout=0.3)
        run = fg.capture(step) if capture else step
        fg.manual_seed(3)  # MLP's dropout draws from fastgrad's generator
        with warnings.catch_warnings():
            warnings.simplefilter("error", fg.CaptureWarning)
            losses = [run(X, y).item() for X, y in batches(30, [7, 12, 9, 5], 8, dtype)]
        runs.append((losses, [p.data.copy() for p in model.parameters()]))
    assert run.replays == 29
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_dropout_through_fastgrads_own_generator_replays_too():
    def make():
        fg.manual_seed(5)
        model = fg.nn.Sequential(fg.nn.Linear(4, 8), fg.nn.ReLU(), fg.nn.Dropout(0.4), fg.nn.Linear(8, 3))
        return model, plain_step(model, fg.optim.SGD(model.parameters(), lr=0.1))

    (m1, eager), (m2, step) = make(), make()
    replay = fg.capture(step)
    data = list(batches(12, [4, 8, 3], 6, np.float32))
    fg.manual_seed(11)
    expected = [eager(X, y).item() for X, y in data]
    fg.manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CaptureWarning)
        got = [replay(X, y).item() for X, y in data]
    assert got == expected and replay.replays == 11
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(p.data, q.data)


def test_two_lazy_gradients_meeting_in_one_slot_add_in_the_eager_order():
    """v1 gets s w first (from (v1 * w).sum(), the later op) and then s v1 twice (from (v1 * v1).sum()):
    eager adds ((s w + s v1) + s v1), which the fused pass must repeat (found by the fuzzer: it
    had added s w + (s v1 + s v1), one ulp off)."""
    def make():
        x = fg.tensor(np.array([-0.82, -0.21, 1.13, 1.02]), requires_grad=True)
        a = fg.tensor(np.array(-0.29), requires_grad=True)
        w = fg.tensor(np.array([-1.10, -0.95, 1.34, -0.04]))
        opt = fg.optim.SGD([x, a], lr=1e-3)

        def step():
            opt.zero_grad()
            v1 = x * (a * x)
            loss = (v1 * v1).sum() + (v1 * w).sum()
            loss.backward()
            opt.step()
            return loss

        return (x, a), step

    (p1, eager), (p2, step) = make(), make()
    replay = fg.capture(step)
    for _ in range(6):
        assert replay().item() == eager().item()
    assert replay.replays == 5
    for s, t in zip(p1, p2):
        assert np.array_equal(s.grad, t.grad) and np.array_equal(s.data, t.data)


def _bad_steps():
    """(step, reason) pairs for records a replay could not reproduce, one per reason."""
    model = fg.nn.MLP([4, 6, 3], seed=0)
    opt = fg.optim.SGD(model.parameters(), lr=0.1)

    def twice(X, y):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward(retain_graph=True)
        L.backward()
        return L

    def after(X, y):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward()
        return L + 1.0

    def early(X, y):
        opt.zero_grad()
        opt.step()
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward()
        return L

    def seeded(X, y):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(X), y)
        L.backward(gradient=np.float32(2.0))
        return L

    def fresh_generator(X, y):
        opt.zero_grad()
        h = fg.functional.dropout(model(X), 0.5, generator=np.random.default_rng(0))
        L = fg.softmax_cross_entropy(h, y)
        L.backward()
        return L

    def view(X, y):
        opt.zero_grad()
        L = fg.softmax_cross_entropy(model(fg.tensor(X[:, ::-1])), y)
        L.backward()
        return L

    return [(twice, "backward() runs more than once"), (after, "runs after backward()"),
            (early, "an optimizer steps before backward()"), (seeded, "explicit gradient"),
            (fresh_generator, "a generator made inside the step"),
            (view, "a view or a part of an argument")]


@pytest.mark.parametrize("index", range(6))
def test_each_reason_to_run_eagerly_is_named(index):
    step, reason = _bad_steps()[index]
    replay = fg.capture(step)
    X, y = next(batches(1, [4, 6, 3], 5, np.float32))
    with pytest.warns(fg.CaptureWarning, match=re.escape(reason)) as caught:
        for _ in range(3):
            replay(X, y)
    assert len(caught) == 1 and replay.replays == 0 and reason in replay.last_reason
