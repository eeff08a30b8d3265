"""fastgrad.capture over whole random programs: a replayed step equals the eager step, bit for bit.

The programs are the fuzzer's (fastgrad/fuzz.py: every op-table row, broadcasting, values used
twice, constants, losses). Each becomes a training step over its leaves (zero_grad, the program,
backward, an SGD step with momentum); a captured twin and an eager twin start from the same leaves
and run five steps. Programs with an op the capture has no rule for run eagerly (after a
CaptureWarning) and must of course agree too; the test also counts how many really replayed, so
that it cannot pass by falling back everywhere.
"""
import warnings

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import fuzz

GRAPHS = 150
STEPS = 5
# the rows a capture has rules for (others make a program run eagerly)
REPLAYABLE = ["add", "sub", "mul", "div", "neg", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "matmul",
              "affine", "maxout", "sumsq", "softmax_cross_entropy", "svm_loss", "layernorm", "batchnorm",
              "dropout"]


def _twin(p, dtype, flat=False):
    """The program as a training step over its leaves; flat: the leaves in one flat buffer (their
    gradients pinned views, zeroed in place) and Adam instead of SGD with momentum."""
    leaves = {k: fg.tensor(v, dtype=dtype, requires_grad=p.wants_grad(k)) for k, v in p.leaves.items()}
    weights = {f"w{i}": fg.tensor(w, dtype=dtype) for i, (_, w) in enumerate(p.outputs) if w is not None}
    params = [t for t in leaves.values() if t.requires_grad]
    if flat and params:
        fg.flat.flatten(params)
    if not params:
        opt = None
    elif flat:
        opt = fg.optim.Adam(params, lr=1e-3)
    else:
        opt = fg.optim.SGD(params, lr=1e-3, momentum=0.5)
    fn = fuzz._compile(tuple(list(leaves) + list(weights)), tuple(fuzz.body_lines(p)))

    def step():
        if opt is not None:
            opt.zero_grad()
        loss, _ = fn(fg, np, **leaves, **weights)
        if loss.requires_grad:
            loss.backward()
        if opt is not None:
            opt.step()
        return loss

    return leaves, step


def _same(a, b):
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,flat", [("replayable", False), ("replayable", True), ("all", False)])
def test_random_programs_replay_as_they_run_eagerly(rows, flat, dtype):
    replayed, reasons = 0, {}
    for index in range(GRAPHS):
        p = fuzz.generate(fuzz.graph_rng(2026, index), ops=REPLAYABLE if rows == "replayable" else None)
        p.mode = "once"
        eager_leaves, eager = _twin(p, dtype, flat)
        leaves, step = _twin(p, dtype, flat)
        replay = fg.capture(step)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", fg.CaptureWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in range(STEPS):
                want = eager().data.copy()
                got = replay().data.copy()
                assert _same(got, want), f"graph {index}, step {k}: loss {got} != {want}\n" + fuzz.to_python(p, dtype)
        for name, t in leaves.items():
            other = eager_leaves[name]
            assert _same(t.data, other.data) and _same(t.grad, other.grad), (
                f"graph {index}: leaf {name}\n" + fuzz.to_python(p, dtype))
        replayed += replay.replays > 0
        if replay.last_reason:
            reasons[replay.last_reason] = reasons.get(replay.last_reason, 0) + 1
    if rows == "replayable":
        # (the fuzzer's shapes broadcast in ways the capture leaves to eager mode, and its dropout
        # makes a new generator in every call: about 40% of these programs replay)
        assert replayed >= GRAPHS // 4, f"only {replayed} of {GRAPHS} programs replayed: {reasons}"
