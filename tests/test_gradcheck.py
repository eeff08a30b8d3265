"""gradcheck itself: it passes correct rules and names what is wrong with a broken one."""
import re

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import ops
from fastgrad.tensor import apply

# A deliberately wrong row, never registered in ops.TABLE: d(x*x)/dx given as x instead of 2x.
BAD_SQUARE = ops.Op("bad_square", lambda x: (x * x, (x,)))
BAD_SQUARE.defbackward(lambda g, x: (g * x,))

NUMBER = r"(-?[0-9.e+-]+)"


def test_passes_a_correct_function_and_leaves_the_inputs_alone():
    x = fg.tensor([[0.5, -1.0], [2.0, 0.3]], requires_grad=True)  # float32: checked on a float64 copy
    W = fg.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0]], requires_grad=True)
    assert fg.gradcheck(lambda x, W: fg.tanh(x @ W).sum(), [x, W]) is True
    assert x.grad is None and W.grad is None and x.dtype == np.float32


def test_names_the_input_the_worst_element_and_both_values():
    a = fg.tensor([[1.0, -2.0]], requires_grad=True, name="a")
    W = fg.tensor([[0.5, 1.5, -1.0], [2.0, -0.5, 1.0]], requires_grad=True, name="W")
    with pytest.raises(fg.GradcheckError) as info:
        fg.gradcheck(lambda a, W: a @ apply(BAD_SQUARE, W), [a, W])
    msg = str(info.value)
    assert "input 1 'W' of shape (2, 3)" in msg  # input 0 is fine: its rule is right
    found = re.search(rf"index \((\d), (\d)\): analytic gradient {NUMBER} but numeric {NUMBER}", msg)
    assert found, msg
    i, j, analytic, numeric = int(found[1]), int(found[2]), float(found[3]), float(found[4])
    # the broken rule gives exactly half the true gradient, element by element
    assert analytic == pytest.approx(numeric / 2, rel=1e-6)
    assert 0 <= i < 2 and 0 <= j < 3
    assert "bad_square" not in ops.TABLE


def test_the_worst_element_is_the_largest_violation():
    x = fg.tensor([0.1, 0.2, 3.0, 0.3], dtype="float64", requires_grad=True)
    with pytest.raises(fg.GradcheckError, match=re.escape("index (2,)")):
        fg.gradcheck(lambda x: apply(BAD_SQUARE, x).sum(), [x])


def test_an_unnamed_input_is_named_by_position():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    c = fg.tensor([3.0, 4.0])  # not checked
    with pytest.raises(fg.GradcheckError, match=r"input 1 of shape \(2,\)"):
        fg.gradcheck(lambda c, x: (c * apply(BAD_SQUARE, x)).sum(), [c, x])


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        fg.gradcheck(lambda x: x * 2, [fg.tensor([1.0])])
