"""The op-table test: every primitive, every sample, gradcheck in float64 and reference.py in both dtypes.

`OPS` pairs each row of `fastgrad.ops.TABLE` with how the public API calls it and a sample generator
(like PyTorch's OpInfo). Samples cover 0-d, one element, an empty batch where the op is defined for
one, odd sizes and, for binary ops, broadcasting. Values are drawn away from kinks and ties (and
redrawn when they land near one), so that central differences are valid.
"""
from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastgrad as fg
import fastgrad.functional as F
from fastgrad import ops, reference
from fastgrad.tensor import apply

# forward output and gradients against reference.py
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


@dataclass
class Sample:
    arrays: tuple  # float64 inputs of the op
    attrs: dict = field(default_factory=dict)  # keyword attributes, as the op table's forward takes them
    needs: tuple | None = None  # which inputs require grad (default: all)
    label: str = ""

    def requires(self):
        return self.needs or (True,) * len(self.arrays)


@dataclass
class OpInfo:
    name: str  # the row of ops.TABLE
    call: Callable  # call(*tensors, **attrs) -> Tensor, through the public API
    samples: Callable  # samples(rng) -> list[Sample]


# ---------------------------------------------------------------------------------------------
# value generators


def away(rng, shape, lo=0.2, hi=2.0):
    """Random values with |x| in [lo, hi]: away from the kink at 0."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape)


def normal(rng, shape):
    return rng.normal(size=shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def distinct(rng, shape):
    """Values at least 0.1 apart (no ties), in random order."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.1 - 0.05 * n + rng.uniform(-0.02, 0.02, size=n)).reshape(shape)


def untied_pair(rng, sa, sb, gap=0.05):
    """a, b with |a - b| > gap everywhere after broadcasting (redrawn until so)."""
    while True:
        a, b = rng.normal(size=sa), rng.normal(size=sb)
        if np.all(np.abs(np.subtract(a, b)) > gap):
            return a, b


def svm_scores(rng, n, c, delta, gap=0.05):
    """Scores and labels whose hinge margins s_j - s_y + delta are all more than `gap` from 0."""
    while True:
        s, y = rng.normal(size=(n, c)), rng.integers(0, c, size=n)
        margins = s - s[np.arange(n), y][:, None] + delta
        margins[np.arange(n), y] = 1.0
        if np.all(np.abs(margins) > gap):
            return s, y


# ---------------------------------------------------------------------------------------------
# sample generators

UNARY_SHAPES = [(), (1,), (0, 3), (3, 5), (2, 3, 4)]

BROADCAST = [
    ((), ()),  # 0-d
    ((1,), (1,)),  # one element
    ((0, 3), (0, 3)),  # empty batch
    ((3, 5), (3, 5)),  # odd sizes
    ((3, 5), ()),  # scalar
    ((), (3, 5)),
    ((3, 5), (5,)),  # row
    ((5,), (3, 5)),
    ((3, 5), (3, 1)),  # column
    ((3, 1), (1, 5)),  # outer
    ((2, 3, 5), (3, 5)),  # 3-D against 2-D
    ((3, 1), (2, 1, 5)),
    ((0, 3), (3,)),  # empty batch against a row
]


def unary(draw=away, attrs=({},)):
    def samples(rng):
        return [Sample((draw(rng, s),), dict(a), label=f"{s}{a or ''}") for s in UNARY_SHAPES for a in attrs]

    return samples


def binary(draw_b=None):
    """Pairs over BROADCAST; draw_b(rng, shape) for the second input (default: normal)."""

    def samples(rng):
        out = []
        for sa, sb in BROADCAST:
            b = draw_b(rng, sb) if draw_b else rng.normal(size=sb)
            out.append(Sample((rng.normal(size=sa), b), label=f"{sa}-{sb}"))
        return out

    return samples


def maximum_samples(rng):
    return [Sample(untied_pair(rng, sa, sb), label=f"{sa}-{sb}") for sa, sb in BROADCAST]


def pow_samples(rng):
    out = []
    for e in (2, 3, -1, 0, 1):  # integer exponents: any sign of x (kept away from 0)
        out += [Sample((away(rng, s),), {"exponent": e}, label=f"{s}**{e}") for s in UNARY_SHAPES]
    for e in (0.5, -1.5, 2.5):  # fractional exponents: positive x
        out += [Sample((positive(rng, s),), {"exponent": e}, label=f"{s}**{e}") for s in UNARY_SHAPES]
    return out


MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4,)),
    ((3, 4), (4,)),  # the lecture's W·x
    ((4,), (4, 5)),
    ((1, 1), (1, 1)),
    ((0, 4), (4, 3)),  # empty batch
    ((3, 0), (0, 2)),  # empty inner dimension
    ((5, 3), (3, 7)),
]


def matmul_samples(rng):
    out = [Sample((rng.normal(size=sa), rng.normal(size=sb)), label=f"{sa}@{sb}") for sa, sb in MATMUL_SHAPES]
    for needs in ((False, True), (True, False)):
        arrays = (rng.normal(size=(5, 3)), rng.normal(size=(3, 2)))
        out.append(Sample(arrays, needs=needs, label=f"needs{needs}"))
    return out


def affine_samples(rng):
    out = []
    for n, d, m in ((3, 4, 5), (1, 1, 1), (0, 4, 3), (5, 3, 7)):
        arrays = (rng.normal(size=(n, d)), rng.normal(size=(d, m)), rng.normal(size=m))
        out.append(Sample(arrays, label=f"{n}x{d}x{m}"))
    for needs in ((False, True, True), (True, False, False)):
        arrays = (rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2))
        out.append(Sample(arrays, needs=needs, label=f"needs{needs}"))
    for attrs in (  # fused activations
        {"activation": "relu"}, {"activation": "leaky_relu", "negative_slope": 0.2},
        {"activation": "sigmoid"}, {"activation": "tanh"}, {"activation": "elu", "alpha": 0.5},
    ):
        while True:  # keep x @ W + b off the kink at 0
            arrays = (rng.normal(size=(5, 3)), rng.normal(size=(3, 4)), rng.normal(size=4))
            if np.all(np.abs(arrays[0] @ arrays[1] + arrays[2]) > 0.05):
                break
        out.append(Sample(arrays, attrs, label=attrs["activation"]))
    return out


REDUCTIONS = [
    ((), None, False),
    ((), None, True),
    ((1,), None, False),
    ((1,), 0, True),
    ((3, 5), None, False),
    ((3, 5), 0, False),
    ((3, 5), 1, True),
    ((3, 5), -1, False),
    ((3, 5), (0, 1), True),
    ((2, 3, 4), (0, 2), False),
    ((2, 3, 4), (2, 0), True),
    ((2, 3, 4), -2, False),
    ((0, 3), 1, False),  # empty batch, reduced per row
]


def reduction(draw, empty_ok):
    def samples(rng):
        out = []
        for shape, axis, keepdims in REDUCTIONS + [((0, 3), 0, False), ((0, 3), None, True)] * empty_ok:
            attrs = {"axis": axis, "keepdims": keepdims}
            out.append(Sample((draw(rng, shape),), attrs, label=f"{shape}-axis{axis}-keep{keepdims}"))
        return out

    return samples


def maxout_samples(rng):
    cases = [((3, 6), 2), ((1, 3), 3), ((0, 4), 2), ((5, 9), 3), ((2, 4), 1), ((1, 1), 1)]
    return [Sample((distinct(rng, s),), {"pieces": p}, label=f"{s}/{p}") for s, p in cases]


def reshape_samples(rng):
    cases = [
        ((), (1, 1)), ((1,), ()), ((3, 4), (2, 6)), ((3, 4), (4, -1)), ((2, 3, 4), (6, 4)), ((0, 3), (3, 0)),
    ]
    return [Sample((rng.normal(size=s),), {"shape": t}, label=f"{s}->{t}") for s, t in cases]


def transpose_samples(rng):
    cases = [
        ((), None), ((1,), None), ((3, 4), None), ((0, 3), None),
        ((2, 3, 4), (1, 2, 0)), ((2, 3, 4), (-1, 0, 1)),  # negative axes
    ]
    return [Sample((rng.normal(size=s),), {"axes": a}, label=f"{s}-{a}") for s, a in cases]


def getitem_samples(rng):
    cases = [
        ((5,), 2),  # -> 0-d
        ((5,), -1),
        ((1,), 0),
        ((), ()),
        ((4, 5), (slice(1, 3),)),
        ((4, 5), (slice(None), slice(None, None, 2))),  # strided
        ((4, 5), np.array([0, 2, 0])),  # repeated rows: scatter-add
        ((4, 5), (np.array([0, 3, 3]), np.array([1, 1, 4]))),  # repeated element
        ((4, 5), (np.array([1, 1]), slice(1, 4))),
        ((4, 5), np.array([True, False, True, True])),
        ((2, 3, 4), (Ellipsis, 1)),
        ((2, 3, 4), (1, None, slice(None, None, -1))),
        ((0, 3), (slice(None), 1)),  # empty batch
        # boolean masks: every entry picked at most once
        ((3, 4), np.array([[True, False, True, True], [False, False, True, False], [True] * 4])),
        ((4, 5), (slice(None), np.array([True, False, True, False, True]))),
        ((4, 5), (np.array([False, True, True, False]), slice(None, None, -2))),
        ((4, 5), (np.array([3, 0, 3]), np.array([False, False, False, True, False]))),  # (3, 3) twice
        ((4, 5), np.zeros(4, dtype=bool)),  # picks nothing
        ((2, 3, 4), (Ellipsis, np.array([True, False, True, True]))),
        # negative steps, repeats with negative integers, Ellipsis and None together
        ((6, 5), (slice(None, None, -2), slice(4, 0, -1))),
        ((6,), slice(-1, -7, -3)),
        ((4, 5), np.array([-1, 3, 0, -1, -1])),
        ((4, 5), (np.array([[0, 0], [3, -4]]), Ellipsis)),  # a 2-D integer array, repeats
        ((2, 3, 4), (None, Ellipsis, None, np.array([1, 1, 0]))),
        ((2, 3, 4), (1, Ellipsis, None)),
    ]
    return [Sample((rng.normal(size=s),), {"index": i}, label=f"{s}[{i!r}]") for s, i in cases]


def softmax_samples(rng):
    out = []
    for n, c in ((1, 1), (1, 3), (4, 5), (7, 3)):
        labels = rng.integers(0, c, size=n)
        out.append(Sample((rng.normal(size=(n, c)) * 2,), {"labels": labels}, label=f"{n}x{c}"))
    return out


def svm_samples(rng):
    out = []
    for n, c, delta in ((1, 3, 1.0), (4, 5, 1.0), (7, 3, 0.5), (2, 2, 2.0)):
        s, y = svm_scores(rng, n, c, delta)
        out.append(Sample((s,), {"labels": y, "delta": delta}, label=f"{n}x{c}-delta{delta}"))
    return out


def clamp_samples(rng):
    out = []
    for attrs in ({"min": -0.5, "max": 0.5}, {"min": -0.3}, {"max": 0.2}, {"min": 0.4, "max": 0.1}):
        for s in UNARY_SHAPES:
            while True:  # keep x off the bounds, where the gradient jumps
                x = rng.normal(size=s)
                if all(np.all(np.abs(x - v) > 0.05) for v in attrs.values()):
                    break
            out.append(Sample((x,), attrs, label=f"{s}{attrs}"))
    return out


def pow_tensor_samples(rng):
    out = [Sample((positive(rng, sa), rng.normal(size=sb)), label=f"{sa}-{sb}") for sa, sb in BROADCAST]
    out.append(Sample((np.full((), 2.0), rng.normal(size=(3, 4))), needs=(False, True), label="2**t"))
    ints = rng.integers(-2, 4, size=(3, 4)).astype(float)  # negative bases, integer exponents (and 0)
    out.append(Sample((away(rng, (3, 4)), ints), needs=(True, False), label="x**ints"))
    return out


def cat_samples(rng):
    cases = [
        ([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 0)], 1), ([(2, 3, 4), (2, 3, 1)], -1),
        ([(5,)], 0), ([(0, 3), (2, 3)], 0), ([(1,), (1,), (1,)], 0),
    ]
    return [Sample(tuple(rng.normal(size=s) for s in shapes), {"dim": d}, label=f"{shapes}-dim{d}")
            for shapes, d in cases]


def where_samples(rng):
    cases = [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), ()), ((3, 1), (1, 4), (3, 4)), ((), (), ()),
             ((0, 3), (0, 3), (3,)), ((2, 3, 4), (3, 4), (2, 1, 4))]
    return [Sample((rng.normal(size=sa), rng.normal(size=sb)), {"cond": rng.random(sc) < 0.5},
                   label=f"{sc}?{sa}:{sb}") for sc, sa, sb in cases]


def softmax_samples_dim(rng):
    cases = [((3, 5), 1), ((3, 5), 0), ((3, 5), -1), ((2, 3, 4), 1), ((1, 1), 1), ((0, 3), 1), ((4,), 0),
             ((2, 3), 0), ((3, 0), 1)]
    return [Sample((rng.normal(size=s) * 3,), {"dim": d}, label=f"{s}-dim{d}") for s, d in cases]


def dropout_samples(rng):
    out = []
    for s in UNARY_SHAPES:
        for p in (0.5, 0.2):
            out.append(Sample((rng.normal(size=s),), {"keep": rng.random(s) >= p, "p": p}, label=f"{s}-p{p}"))
    return out


OPS = {
    info.name: info
    for info in [
        OpInfo("add", lambda a, b: a + b, binary()),
        OpInfo("sub", lambda a, b: a - b, binary()),
        OpInfo("mul", lambda a, b: a * b, binary()),
        OpInfo("div", lambda a, b: a / b, binary(draw_b=away)),
        OpInfo("neg", lambda x: -x, unary(normal)),
        OpInfo("pow", lambda x, exponent: x**exponent, pow_samples),
        OpInfo("exp", lambda x: x.exp(), unary()),
        OpInfo("log", lambda x: fg.log(x), unary(positive)),
        OpInfo("maximum", fg.maximum, maximum_samples),
        OpInfo("relu", lambda x: x.relu(), unary()),
        OpInfo("leaky_relu", fg.leaky_relu, unary(attrs=({}, {"negative_slope": 0.2}))),
        OpInfo("elu", fg.elu, unary(attrs=({}, {"alpha": 0.5}))),
        OpInfo("sigmoid", fg.sigmoid, unary(lambda rng, s: rng.normal(size=s) * 3)),
        OpInfo("tanh", lambda x: x.tanh(), unary(lambda rng, s: rng.normal(size=s) * 2)),
        OpInfo("matmul", lambda a, b: a @ b, matmul_samples),
        OpInfo("affine", fg.affine, affine_samples),
        OpInfo("sum", lambda x, **kw: x.sum(**kw), reduction(normal, empty_ok=True)),
        OpInfo("sumsq", lambda x: F.sumsq(x), unary(normal)),
        OpInfo("mean", lambda x, **kw: x.mean(**kw), reduction(normal, empty_ok=False)),
        OpInfo("max", lambda x, **kw: x.max(**kw), reduction(distinct, empty_ok=False)),
        OpInfo("maxout", fg.maxout, maxout_samples),
        OpInfo("reshape", lambda x, shape: x.reshape(shape), reshape_samples),
        OpInfo("transpose", lambda x, axes: x.T if axes is None else x.transpose(axes), transpose_samples),
        OpInfo("getitem", lambda x, index: x[index], getitem_samples),
        OpInfo("softmax_cross_entropy", fg.softmax_cross_entropy, softmax_samples),
        OpInfo("svm_loss", fg.svm_loss, svm_samples),
        # the PyTorch surface
        OpInfo("cast", lambda x, dtype: x.to(dtype, copy=True), unary(normal, attrs=({"dtype": "float64"},))),
        OpInfo("abs", lambda x: x.abs(), unary()),
        OpInfo("sqrt", fg.sqrt, unary(positive)),
        OpInfo("clamp", lambda x, **kw: x.clamp(**kw), clamp_samples),
        OpInfo("pow_tensor", lambda a, b: a**b, pow_tensor_samples),
        OpInfo("cat", lambda *xs, dim: fg.cat(list(xs), dim=dim), cat_samples),
        OpInfo("where", lambda a, b, cond: fg.where(cond, a, b), where_samples),
        OpInfo("softmax", F.softmax, softmax_samples_dim),
        OpInfo("log_softmax", lambda x, dim: x.log_softmax(dim), softmax_samples_dim),
        # the public F.dropout draws its own mask (tests/test_api.py); here the row gets the sample's
        OpInfo("dropout", lambda x, keep, p: apply(ops.dropout, x, keep=keep, p=p), dropout_samples),
    ]
}

# normalisation (the nn layers' rows)


def _batch_norm(x, gamma, beta, eps=1e-5, training=True, running_mean=None, running_var=None, momentum=0.1):
    return fg.functional.batch_norm(x, running_mean, running_var, gamma, beta, training, momentum, eps)


def _layer_norm(x, gamma, beta, eps=1e-5):
    return fg.functional.layer_norm(x, gamma.shape, gamma, beta, eps)


def batchnorm_samples(rng):
    out = []
    for n, d in ((4, 3), (2, 1), (7, 5), (3, 6)):
        arrays = (rng.normal(size=(n, d)) * 2 + 1, rng.normal(size=d), rng.normal(size=d))
        out.append(Sample(arrays, label=f"{n}x{d}"))
    arrays = (rng.normal(size=(5, 4)), rng.normal(size=4), rng.normal(size=4))
    out.append(Sample(arrays, {"eps": 1e-3}, label="eps1e-3"))
    for needs in ((False, True, True), (True, False, False)):
        out.append(Sample(arrays, needs=needs, label=f"needs{needs}"))
    stats = {"training": False, "running_mean": rng.normal(size=4), "running_var": rng.uniform(0.5, 2, size=4)}
    out.append(Sample(arrays, stats, label="eval"))
    out.append(Sample(arrays, stats, needs=(True, False, True), label="eval-needs"))
    return out


def layernorm_samples(rng):
    out = []
    for xs, gs in (((4, 5), (5,)), ((2, 3, 4), (3, 4)), ((3, 1), (1,)), ((0, 4), (4,)), ((2, 3, 4), (4,))):
        arrays = (rng.normal(size=xs) * 2 - 1, rng.normal(size=gs), rng.normal(size=gs))
        out.append(Sample(arrays, label=f"{xs}/{gs}"))
    arrays = (rng.normal(size=(5, 6)), rng.normal(size=6), rng.normal(size=6))
    out.append(Sample(arrays, {"eps": 1e-3}, label="eps1e-3"))
    out.append(Sample(arrays, needs=(False, True, True), label="needs-params"))
    return out


OPS.update({
    info.name: info
    for info in [
        OpInfo("batchnorm", _batch_norm, batchnorm_samples),
        OpInfo("layernorm", _layer_norm, layernorm_samples),
    ]
})


CASES = [
    pytest.param(info, sample, id=f"{name}-{sample.label}")
    for name, info in OPS.items()
    for sample in info.samples(np.random.default_rng(zlib.crc32(name.encode())))
]


def make_tensors(sample, dtype):
    return [fg.tensor(a, dtype=dtype, requires_grad=r) for a, r in zip(sample.arrays, sample.requires())]


@pytest.mark.parametrize("info, sample", CASES)
def test_gradcheck_float64(info, sample):
    inputs = make_tensors(sample, "float64")
    assert fg.gradcheck(lambda *ts: info.call(*ts, **sample.attrs), inputs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("info, sample", CASES)
def test_against_reference(info, sample, dtype):
    forward, backward = reference.REFERENCE[info.name]
    inputs = make_tensors(sample, dtype)
    out = info.call(*inputs, **sample.attrs)
    assert out._node is not None and out._node.op is ops.TABLE[info.name]  # the public call runs this row
    out_dtype = sample.attrs.get("dtype", dtype)  # only cast changes the dtype
    assert out.dtype == out_dtype and out.data.flags.c_contiguous

    arrays = [t.data.copy() for t in inputs]
    expected, cache = forward(*arrays, **sample.attrs)
    assert out.shape == np.shape(expected) and np.result_type(expected) == out_dtype  # the reference keeps dtype
    np.testing.assert_allclose(out.data, expected, **TOL[dtype])

    rng = np.random.default_rng(zlib.crc32(sample.label.encode()))
    dout = rng.standard_normal(out.shape).astype(out_dtype)
    out.backward(dout.copy())
    expected_grads = backward(dout, cache)
    assert len(expected_grads) == len(inputs)
    for i, (t, g) in enumerate(zip(inputs, expected_grads)):
        if not t.requires_grad:
            assert t.grad is None
            continue
        assert t.grad.shape == t.shape and t.grad.dtype == dtype, f"input {i}"
        assert np.shape(g) == t.shape and np.result_type(g) == dtype, f"reference gradient of input {i}"
        np.testing.assert_allclose(t.grad, g, **TOL[dtype], err_msg=f"gradient of input {i}")


def test_every_row_is_covered():
    """A new op cannot land without a backward rule, a reference and samples here."""
    assert set(OPS) == set(ops.TABLE) == set(reference.REFERENCE)
    for name, op in ops.TABLE.items():
        assert op.backward is not None, name
        assert OPS[name].samples(np.random.default_rng(0)), name


@pytest.mark.parametrize("name", sorted(ops.TABLE))
def test_reference_takes_the_op_tables_arguments(name):
    """As many array inputs, and every keyword attribute of the row (benchmarks call both alike)."""

    def names(fn):
        return [p for p in inspect.signature(fn).parameters if p != "needs"]

    n_arrays = len(OPS[name].samples(np.random.default_rng(0))[0].arrays)
    engine = names(ops.TABLE[name].forward)
    ref = inspect.signature(reference.REFERENCE[name][0]).parameters
    assert len(ref) >= len(engine) and set(engine[n_arrays:]) <= set(list(ref)[n_arrays:])
    extras = set(list(ref)[n_arrays:]) - set(engine)
    assert all(ref[p].default is not inspect.Parameter.empty for p in extras)  # callable like the row


def test_reference_is_independent_of_the_engine():
    source = open(reference.__file__).read()
    assert "import" in source
    for forbidden in ("fastgrad", "_kernels", "from . ", "from .", "ops"):
        assert not any(
            line.lstrip().startswith(("import", "from")) and forbidden in line for line in source.splitlines()
        ), forbidden


def test_missing_backward_rule_names_the_op():
    double = ops.Op("double_without_rule", lambda x: (x * 2, ()))  # not registered in TABLE
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = apply(double, x)
    np.testing.assert_array_equal(y.data, [2.0, 4.0])
    with pytest.raises(NotImplementedError, match="double_without_rule"):
        y.sum().backward()


@pytest.mark.parametrize(
    "rule, wrong",
    [(lambda g, shape: (g,), r"shape \(2, 3\)"),  # forgot to sum the broadcast back to (3,)
     (lambda g, shape: (np.ones(shape),), "float64 gradient")],  # wrong dtype for a float32 input
)
def test_a_rule_returning_a_wrong_gradient_is_caught(rule, wrong):
    tile = ops.Op("tile_rows", lambda x: (np.tile(x, (2, 1)), (x.shape,)))  # not registered in TABLE
    tile.defbackward(rule)
    x = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = apply(tile, x) * 1.0
    with pytest.raises(RuntimeError, match=f"tile_rows.*{wrong}.*input of shape \\(3,\\)"):
        y.sum().backward()
    assert x.grad is None


BINARY = ["add", "sub", "mul", "div", "maximum"]


@settings(max_examples=40, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0, max_side=3),
    seed=st.integers(0, 2**32 - 1),
    op=st.sampled_from(BINARY),
)
def test_binary_ops_broadcast_any_shapes(shapes, seed, op):
    """Random broadcast-compatible shapes (empty axes included) against reference.py in float64."""
    rng = np.random.default_rng(seed)
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    a, b = rng.normal(size=sa), away(rng, sb)
    ta = fg.tensor(a, dtype="float64", requires_grad=True)
    tb = fg.tensor(b, dtype="float64", requires_grad=True)
    out = OPS[op].call(ta, tb)
    forward, backward = reference.REFERENCE[op]
    expected, cache = forward(a, b)
    assert out.shape == out_shape
    np.testing.assert_allclose(out.data, expected, **TOL["float64"])
    dout = rng.normal(size=out_shape)
    out.backward(dout)
    ga, gb = backward(dout, cache)
    np.testing.assert_allclose(ta.grad, ga, **TOL["float64"])
    np.testing.assert_allclose(tb.grad, gb, **TOL["float64"])


@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu", "sigmoid", "tanh", "elu"])
def test_reference_affine_activations_match_finite_differences(activation):
    """The reference's fused affine, which the benchmarks and the affine row's samples compare against."""
    rng = np.random.default_rng(7)
    while True:  # keep x @ W + b off the kink at 0
        x, W, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=5)
        if np.all(np.abs(x @ W + b) > 0.05):
            break
    attrs = {"activation": activation, "negative_slope": 0.2, "alpha": 0.5}
    forward, backward = reference.REFERENCE["affine"]
    out, cache = forward(x, W, b, **attrs)
    dout = rng.normal(size=out.shape)
    grads = backward(dout, cache)
    eps = 1e-6
    for arr, grad in zip((x, W, b), grads):
        numeric = np.zeros_like(arr)
        for k in np.ndindex(arr.shape):
            orig = arr[k]
            arr[k] = orig + eps
            plus = np.sum(forward(x, W, b, **attrs)[0] * dout)
            arr[k] = orig - eps
            minus = np.sum(forward(x, W, b, **attrs)[0] * dout)
            arr[k] = orig
            numeric[k] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@settings(max_examples=60, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
    data=st.data(),
    op=st.sampled_from(["sum", "mean", "max"]),
)
def test_reductions_over_any_axes(shape, data, op):
    """Random shapes, axis subsets (as None, an int or a tuple, negative or not) and keepdims."""
    ndim = len(shape)
    axes = data.draw(st.lists(st.integers(0, max(ndim - 1, 0)), unique=True, max_size=ndim), label="axes")
    axes = [a - ndim if data.draw(st.booleans(), label="negative") else a for a in axes]
    spellings = [None, tuple(axes)] + ([axes[0]] if len(axes) == 1 else [])
    axis = data.draw(st.sampled_from(spellings), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    reduced = range(ndim) if axis is None else [a % ndim for a in np.atleast_1d(axis)]
    if op != "sum" and any(shape[a] == 0 for a in reduced):
        return  # mean and max of nothing are errors (tested elsewhere)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = distinct(rng, shape)  # no ties for max
    t = fg.tensor(x, dtype="float64", requires_grad=True)
    out = OPS[op].call(t, axis=axis, keepdims=keepdims)
    forward, backward = reference.REFERENCE[op]
    expected, cache = forward(x, axis=axis, keepdims=keepdims)
    numpy_reduction = {"sum": np.sum, "mean": np.mean, "max": np.amax}[op]
    assert out.shape == np.shape(expected) == numpy_reduction(x, axis=axis, keepdims=keepdims).shape
    np.testing.assert_allclose(out.data, expected, **TOL["float64"])
    dout = rng.normal(size=out.shape)
    out.backward(dout)
    np.testing.assert_allclose(t.grad, backward(dout, cache)[0], **TOL["float64"])
