"""Bad input never crashes or lies: every public op (fg.* functions, Tensor operators and methods,
nn layers, losses) and every raw kernel binding (_kernels, _linalg) on each class of bad input.

Each case expects either a Python exception of a named class (with a message) or a correct result
(checked against NumPy or fastgrad/reference.py, which never calls the kernels). The cases run in
ONE child process (fast), which reports every case before and after running it; a case that kills
the child (a signal: segfault, abort) or hangs it fails by name, and the child is restarted after
it, so one crash does not hide the others. Warnings are errors in the child (as in the test suite);
only the cases whose inputs are NaN or infinite let NumPy's floating-point RuntimeWarnings pass,
since IEEE specials in give IEEE specials out there, as NumPy computes them.

Run the table by hand: python tests/test_bad_input.py --child 0
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
nan, inf = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------------
# the table: Case(name, run, expect); expect is an exception class (or tuple) or OK(check)


class OK:
    """The call must return; check(result) raises AssertionError when the result is wrong."""

    def __init__(self, check=None):
        self.check = check


class Case:
    def __init__(self, name, run, expect, fp=False):
        self.name, self.run, self.expect, self.fp = name, run, expect, fp


def close(actual, expected, rtol=1e-5, atol=1e-6):
    actual = np.asarray(getattr(actual, "data", actual), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def unaligned(shape, dtype=np.float32):
    """A C-contiguous array of `shape` whose data pointer is off by one byte, holding 0, 1, 2..."""
    n = int(np.prod(shape))
    raw = np.zeros(n * np.dtype(dtype).itemsize + 1, dtype=np.uint8)
    out = np.ndarray(shape, dtype=dtype, buffer=raw, offset=1)
    assert not out.flags.aligned and out.flags.c_contiguous
    out[...] = np.arange(n).reshape(shape)
    return out


def float32_tensor(fg):
    """fg.tensor with float32 as the default even for float64 arrays (the cases below build their
    float32 tensors from float64 NumPy values, which fg.tensor itself keeps float64, as PyTorch)."""
    return lambda data, dtype="float32", **kw: fg.tensor(data, dtype=dtype, **kw)


def base(shape=(2, 3)):
    return np.linspace(-1.5, 1.7, int(np.prod(shape))).reshape(shape)


# Values that are bad or awkward for an op taking one array: name -> (make, kind), where kind is
# "ok" (a correct result expected), "fp" (NaN/inf values: correct IEEE result) or an exception.
def x_classes():
    return {
        "int": (lambda: np.arange(-3, 3).reshape(2, 3), "ok"),
        "bool": (lambda: np.array([[True, False, True]]), "ok"),
        "float16": (lambda: base().astype(np.float16), "ok"),
        "list": (lambda: [[1.5, -2.0], [0.0, 3.0]], "ok"),
        "complex": (lambda: np.ones((2, 2), dtype=complex), TypeError),
        "object": (lambda: np.array([1.0, None], dtype=object), TypeError),
        "str": (lambda: "1.5", TypeError),
        "str-array": (lambda: np.array([["1", "2"]]), TypeError),
        "None": (lambda: None, TypeError),
        "dict": (lambda: {"a": 1}, TypeError),
        "ragged": (lambda: [[1.0, 2.0], [3.0]], TypeError),
        "nan-inf": (lambda: np.array([[nan, inf, -inf], [1.0, -1.0, 0.0]]), "fp"),
        "strided": (lambda: base((3, 6))[:, ::2], "ok"),
        "fortran": (lambda: np.asfortranarray(base((3, 4))), "ok"),
        "reversed": (lambda: base((3, 4))[::-1, ::-1], "ok"),
        "big-endian": (lambda: base().astype(">f4"), "ok"),
        "unaligned": (lambda: unaligned((2, 3)), "ok"),
        "empty": (lambda: np.zeros((0, 3)), "ok"),
        "empty-wide": (lambda: np.zeros((3, 0)), "ok"),
        "0-d": (lambda: np.array(-0.7), "ok"),
        "scalar": (lambda: 2.5, "ok"),
    }


def unary_cases(fg, reference):
    """fg.<op>(x) and, for the ok classes, Tensor input with backward against reference.py."""
    ops = {
        "exp": (fg.exp, {}), "log": (fg.log, {}), "relu": (fg.relu, {}), "sigmoid": (fg.sigmoid, {}),
        "tanh": (fg.tanh, {}), "leaky_relu": (fg.leaky_relu, {"negative_slope": 0.1}),
        "elu": (fg.elu, {"alpha": 0.5}), "abs": (fg.abs, {}), "sqrt": (fg.sqrt, {}),
    }
    cases = []
    for name, (fn, attrs) in ops.items():
        ref_fwd, ref_bwd = reference.REFERENCE[name]
        for label, (make, kind) in x_classes().items():
            if kind in ("ok", "fp"):
                def run(fn=fn, make=make, attrs=attrs, kind=kind, ref_fwd=ref_fwd, ref_bwd=ref_bwd, name=name):
                    x = make()
                    with np.errstate(all="ignore"):
                        arr = f64(np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x.astype(np.float64))
                        if name in ("log", "sqrt"):
                            arr = np.abs(arr) + (kind != "fp")  # of positive values (and of NaN/inf/0)
                        expected, cache = ref_fwd(arr, **attrs)
                        expected = np.where(np.isnan(arr), nan, expected)  # NaN in, NaN out
                    y = fn(arr if name in ("log", "sqrt") else x, **attrs)
                    close(y, expected, rtol=2e-3 if label == "float16" else 1e-5)
                    if kind == "ok":  # the gradient through a tensor of the same values
                        t = fg.tensor(arr, dtype="float64", requires_grad=True)
                        out = fn(t, **attrs)
                        out.backward(np.ones(out.shape))
                        close(t.grad, ref_bwd(np.ones(np.shape(expected)), cache)[0], rtol=1e-10)
                    return y
                cases.append(Case(f"fg.{name}({label})", run, OK(), fp=kind == "fp"))
            else:
                cases.append(Case(f"fg.{name}({label})", lambda fn=fn, make=make, attrs=attrs: fn(make(), **attrs), kind))
    cases += [
        Case("fg.leaky_relu(slope=None)", lambda: fg.leaky_relu(base(), None), TypeError),
        Case("fg.leaky_relu(slope='a')", lambda: fg.leaky_relu(base(), "a"), ValueError),
        Case("fg.elu(alpha=nan)", lambda: close(fg.elu(np.array([-1.0, 2.0]), nan), [nan, 2.0]), OK()),
        Case("fg.tensor(dtype=int32)", lambda: fg.tensor([1, 2], dtype="int32"), TypeError),
        Case("fg.tensor(dtype=float16)", lambda: fg.tensor([1, 2], dtype=np.float16), TypeError),
        Case("fg.tensor(dtype='bogus')", lambda: fg.tensor([1, 2], dtype="bogus"), TypeError),
        Case("fg.tensor(str)", lambda: fg.tensor("abc"), TypeError),
        Case("fg.tensor(ragged)", lambda: fg.tensor([[1], [1, 2]]), TypeError),
        Case("fg.tensor(big-endian)", lambda: close(fg.tensor(base().astype(">f8")), base()), OK()),
        Case("fg.tensor(unaligned)", lambda: close(fg.tensor(unaligned((2, 3))), np.arange(6.0).reshape(2, 3)), OK()),
        Case("fg.tensor(huge-empty)", lambda: fg.tensor(np.zeros((2**40, 0))).relu().shape == (2**40, 0) or _fail(), OK()),
    ]
    return cases


def _fail(msg="wrong result"):
    raise AssertionError(msg)


def binary_cases(fg, reference):
    ops = {
        "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b, "maximum": fg.maximum,
    }
    cases = []
    T = float32_tensor(fg)
    for name, fn in ops.items():
        ref_fwd, ref_bwd = reference.REFERENCE[name]

        def against_ref(a, b, fn=fn, ref_fwd=ref_fwd, ref_bwd=ref_bwd, grads=True):
            ta, tb = T(a, dtype="float64", requires_grad=True), T(b, dtype="float64", requires_grad=True)
            y = fn(ta, tb)
            with np.errstate(all="ignore"):
                expected, cache = ref_fwd(f64(a), f64(b))
                close(y, expected, rtol=1e-12)
                if grads:
                    y.backward(np.ones(y.shape))
                    ga, gb = ref_bwd(np.ones(np.shape(expected)), cache)
                    close(ta.grad, ga, rtol=1e-12)
                    close(tb.grad, gb, rtol=1e-12)

        x = lambda: T(base())  # noqa: E731
        cases += [
            Case(f"{name}(shapes (2,3) (4,))", lambda fn=fn: fn(T(np.ones((2, 3))), T(np.ones(4))), ValueError),
            Case(f"{name}(float32, float64 tensors)", lambda fn=fn: fn(T([1.0]), T([1.0], dtype="float64")), TypeError),
            Case(f"{name}(x, None)", lambda fn=fn, x=x: fn(x(), None), TypeError),
            Case(f"{name}(x, 'a')", lambda fn=fn, x=x: fn(x(), "a"), TypeError),
            Case(f"{name}(x, complex)", lambda fn=fn, x=x: fn(x(), np.ones(3, dtype=complex)), TypeError),
            Case(f"{name}(x, object array)", lambda fn=fn, x=x: fn(x(), np.array([1, None, 2], dtype=object)), TypeError),
            Case(f"{name}(x, dict)", lambda fn=fn, x=x: fn(x(), {}), TypeError),
            Case(f"{name}(nan-inf)", lambda f=against_ref: f(np.array([nan, inf, -inf, 1.0, nan, 2.0]),
                                                            np.array([1.0, -inf, -inf, nan, nan, 0.5]), grads=False),
                 OK(), fp=True),
            Case(f"{name}(empty, broadcast)", lambda f=against_ref: f(np.zeros((0, 3)), base((1, 3))), OK()),
            Case(f"{name}(empty, empty)", lambda f=against_ref: f(np.zeros((3, 0)), np.zeros((3, 0))), OK()),
            Case(f"{name}(0-d, 0-d)", lambda f=against_ref: f(np.array(1.5), np.array(-0.5)), OK()),
            Case(f"{name}(0-d, matrix)", lambda f=against_ref: f(np.array(0.25), base()), OK()),
            Case(f"{name}(strided, fortran)", lambda f=against_ref: f(base((3, 6))[:, ::2], np.asfortranarray(base((3, 3)) + 2)), OK()),
            Case(f"{name}(reversed, int)", lambda f=against_ref: f(base((2, 3))[::-1], np.arange(1, 7).reshape(2, 3)), OK()),
        ]
    # matmul
    mm_ref = reference.REFERENCE["matmul"][0]
    cases += [
        Case("matmul(0-d)", lambda: T(2.0) @ T(base()), ValueError),
        Case("matmul(3-d)", lambda: T(np.ones((2, 2, 2))) @ T(np.ones((2, 2))), ValueError),
        Case("matmul(mismatch)", lambda: T(np.ones((2, 3))) @ T(np.ones((2, 3))), ValueError),
        Case("matmul(x, None)", lambda: T(base()) @ None, TypeError),
        Case("matmul(empty inner)", lambda: close(T(np.ones((2, 0))) @ T(np.ones((0, 3))), np.zeros((2, 3))), OK()),
        Case("matmul(empty outer)", lambda: close(T(np.ones((0, 2))) @ T(np.ones((2, 3))), np.zeros((0, 3))), OK()),
        Case("matmul(nan-inf)", lambda: close(T([[nan, 1.0], [inf, 0.0]], dtype="float64") @ T(np.eye(2), dtype="float64"),
                                              mm_ref(np.array([[nan, 1.0], [inf, 0.0]]), np.eye(2))[0]), OK(), fp=True),
        Case("matmul(1-d, 1-d)", lambda: close(T([1.0, 2.0]) @ T([3.0, 4.0]), 11.0), OK()),
        Case("matmul(fortran, reversed)", lambda: close(T(np.asfortranarray(base((3, 4)))) @ base((4, 2))[::-1],
                                                       base((3, 4)) @ base((4, 2))[::-1]), OK()),
        Case("matmul(int arrays)", lambda: close(fg.as_tensor(np.arange(6).reshape(2, 3)) @ np.arange(3),
                                                 np.arange(6).reshape(2, 3) @ np.arange(3)), OK()),
    ]
    # pow and unary minus
    cases += [
        Case("pow(exponent None)", lambda: T(base()) ** None, TypeError),
        Case("pow(exponent 'a')", lambda: T(base()) ** "a", TypeError),
        Case("pow(exponent tensor)", lambda: close(T(base()) ** T(2.0), base() ** 2), OK()),
        Case("pow(tensor exponent, shapes (2,3) (4,))", lambda: T(base()) ** T(np.ones(4)), ValueError),
        Case("pow(tensor exponent, mixed dtypes)", lambda: T(base()) ** T(2.0, dtype="float64"), TypeError),
        Case("pow(exponent nan)", lambda: close(T([1.0, 2.0]) ** nan, [1.0, nan]), OK(), fp=True),
        Case("pow(empty)", lambda: close(T(np.zeros((0, 2))) ** 3, np.zeros((0, 2))), OK()),
        Case("pow(0-d)", lambda: close(T(-2.0) ** 3, -8.0), OK()),
        Case("neg(nan-inf)", lambda: close(-T([nan, inf]), [nan, -inf]), OK()),
        Case("neg(empty)", lambda: close(-T(np.zeros((3, 0))), np.zeros((3, 0))), OK()),
    ]
    return cases


def reduction_cases(fg, reference):
    T = float32_tensor(fg)
    cases = []
    for name in ("sum", "mean", "max"):
        ref_fwd, ref_bwd = reference.REFERENCE[name]

        def method(x, name=name, **kw):
            return getattr(x, name)(**kw)

        def good(arr, kw, name=name, ref_fwd=ref_fwd, ref_bwd=ref_bwd):
            t = T(arr, dtype="float64", requires_grad=True)
            y = getattr(t, name)(**kw)
            expected, cache = ref_fwd(f64(arr), **kw)
            close(y, expected, rtol=1e-12)
            y.backward(np.ones(y.shape))
            close(t.grad, ref_bwd(np.ones(np.shape(expected)), cache)[0], rtol=1e-12)

        cases += [
            Case(f"{name}(axis=2 of 2-d)", lambda m=method: m(T(base()), axis=2), ValueError),
            Case(f"{name}(axis=-3 of 2-d)", lambda m=method: m(T(base()), axis=-3), ValueError),
            Case(f"{name}(axis=10**20)", lambda m=method: m(T(base()), axis=10**20), ValueError),
            Case(f"{name}(axis=-2**70)", lambda m=method: m(T(base()), axis=-(2**70)), ValueError),
            Case(f"{name}(axis=1.5)", lambda m=method: m(T(base()), axis=1.5), TypeError),
            Case(f"{name}(axis='a')", lambda m=method: m(T(base()), axis="a"), TypeError),
            Case(f"{name}(axis=(0, 0))", lambda m=method: m(T(base()), axis=(0, 0)), ValueError),
            Case(f"{name}(axis=0 of 0-d)", lambda m=method: m(T(1.0), axis=0), ValueError),
            Case(f"{name}(0-d)", lambda g=good: g(np.array(2.5), {}), OK()),
            Case(f"{name}(axis=-1)", lambda g=good: g(base((2, 3, 4)), {"axis": -1}), OK()),
            Case(f"{name}(axis=(0, 2), keepdims)", lambda g=good: g(base((2, 3, 4)), {"axis": (0, 2), "keepdims": True}), OK()),
            Case(f"{name}(empty, axis=1)", lambda g=good: g(np.zeros((0, 3)), {"axis": 1}), OK()),
            Case(f"{name}(nan-inf)", lambda m=method, name=name: close(m(T([[nan, 1.0], [inf, 2.0]], dtype="float64"), axis=0),
                                                                      [nan, {"mean": 1.5, "sum": 3.0, "max": 2.0}[name]]),
                 OK(), fp=True),
            Case(f"{name}(inf, -inf)", lambda m=method, name=name: close(m(T([inf, -inf, 1.0], dtype="float64")),
                                                                        {"mean": nan, "sum": nan, "max": inf}[name]),
                 OK(), fp=True),
        ]
        empty_all = {"sum": OK(lambda y: close(y, 0.0)), "mean": ValueError, "max": ValueError}[name]
        empty_axis0 = {"sum": OK(lambda y: close(y, [0.0] * 3)), "mean": ValueError, "max": ValueError}[name]
        cases += [
            Case(f"{name}(empty, axis=None)", lambda m=method: m(T(np.zeros((0, 3)))), empty_all),
            Case(f"{name}(empty, axis=0)", lambda m=method: m(T(np.zeros((0, 3))), axis=0), empty_axis0),
        ]
    cases += [
        Case("max(nan) first nan", lambda: close(T([1.0, nan, 3.0, nan]).max(), nan), OK()),
        Case("reshape(2.5)", lambda: T(base()).reshape(2.5), TypeError),
        Case("reshape(4, 4)", lambda: T(base()).reshape(4, 4), ValueError),
        Case("reshape(None)", lambda: T(base()).reshape(None), TypeError),
        Case("reshape(empty, 0, -1)", lambda: T(np.zeros((0, 3))).reshape(0, -1), ValueError),
        Case("reshape(empty, 3, 0)", lambda: close(T(np.zeros((0, 3))).reshape(3, 0), np.zeros((3, 0))), OK()),
        Case("reshape(0-d, 1, 1)", lambda: close(T(2.0).reshape(1, 1), [[2.0]]), OK()),
        Case("transpose(0,)", lambda: T(base()).transpose(0), ValueError),
        Case("transpose(0, 0)", lambda: close(T(base()).transpose(0, 0), base()), OK()),  # a swap with itself, as torch
        Case("permute(0, 0)", lambda: T(base()).permute(0, 0), ValueError),
        Case("transpose(0, 5)", lambda: T(base()).transpose(0, 5), ValueError),
        Case("transpose(0-d).T", lambda: close(T(3.0).T, 3.0), OK()),
        Case("transpose(empty).T", lambda: close(T(np.zeros((0, 3))).T, np.zeros((3, 0))), OK()),
    ]
    return cases


def index_cases(fg, reference):
    T = float32_tensor(fg)
    from fastgrad.tensor import Tensor

    def good(index, shape=(4, 5), as_given=None):
        arr = base(shape)
        t = T(arr, dtype="float64", requires_grad=True)
        y = t[as_given if as_given is not None else index]
        expected, cache = reference.REFERENCE["getitem"][0](arr, index)
        close(y, expected, rtol=0)
        g = np.arange(1.0, 1.0 + y.data.size).reshape(y.shape)
        y.backward(g)
        close(t.grad, reference.REFERENCE["getitem"][1](g, cache)[0], rtol=0)

    mask = np.array([True, False, True, True])
    return [
        Case("x[1.5]", lambda: T(base())[1.5], IndexError),
        Case("x[np.float64(1)]", lambda: T(base())[np.float64(1.0)], IndexError),
        Case("x[float array]", lambda: T(base())[np.array([0.0, 1.0])], IndexError),
        Case("x[float list]", lambda: T(base())[[0.0, 1.0]], IndexError),
        Case("x[float tensor]", lambda: T(base())[T([0.0, 1.0])], IndexError),
        Case("x[:, float tensor]", lambda: T(base())[:, T([1.0])], IndexError),
        Case("x[10]", lambda: T(base())[10], IndexError),
        Case("x[-10]", lambda: T(base())[-10], IndexError),
        Case("x[2**70]", lambda: T(base())[2**70], IndexError),
        Case("x['a']", lambda: T(base())["a"], IndexError),
        Case("x[0, 0, 0] of 2-d", lambda: T(base())[0, 0, 0], IndexError),
        Case("x[mask of wrong length]", lambda: T(base((4, 5)))[np.array([True, False])], IndexError),
        Case("x[int array out of range]", lambda: T(base((4, 5)))[np.array([0, 4])], IndexError),
        Case("x[::0]", lambda: T(base())[::0], ValueError),
        Case("x[0] of 0-d", lambda: T(2.0)[0], IndexError),
        Case("x[0] of empty", lambda: T(np.zeros((0, 3)))[0], IndexError),
        Case("x[bool tensor mask]", lambda: good(mask, as_given=Tensor._wrap(mask.copy())), OK()),
        Case("x[bool tensor 2-d mask]", lambda: good(base((4, 5)) > 0, as_given=Tensor._wrap(base((4, 5)) > 0)), OK()),
        Case("x[int tensor, repeats]", lambda: good(np.array([3, 0, 3]), as_given=Tensor._wrap(np.array([3, 0, 3]))), OK()),
        Case("x[bool list]", lambda: good(mask, as_given=[True, False, True, True]), OK()),
        Case("x[bool ndarray]", lambda: good(mask), OK()),
        Case("x[:, bool tensor]", lambda: good((slice(None), np.array([1, 0, 1, 0, 1], bool)),
                                              as_given=(slice(None), Tensor._wrap(np.array([1, 0, 1, 0, 1], bool)))), OK()),
        Case("x[int list, repeats]", lambda: good(np.array([3, 3, -1, 0]), as_given=[3, 3, -1, 0]), OK()),
        Case("x[[]]", lambda: good(np.array([], dtype=np.intp), as_given=[]), OK()),
        Case("x[None, ..., ::-2]", lambda: good((None, Ellipsis, slice(None, None, -2))), OK()),
        Case("x[()] of 0-d", lambda: good((), shape=()), OK()),
        Case("x[..., None] of 0-d", lambda: good((Ellipsis, None), shape=()), OK()),
        Case("x[:, 1] of empty", lambda: good((slice(None), 1), shape=(0, 3)), OK()),
        Case("x[nan tensor]", lambda: T(base())[T([nan])], IndexError),
    ]


def loss_cases(fg, reference):
    T = float32_tensor(fg)
    S = lambda: base((3, 4))  # noqa: E731
    y = lambda: np.array([0, 3, 1])  # noqa: E731
    cases = []
    for name, fn in (("softmax_cross_entropy", fg.softmax_cross_entropy), ("svm_loss", fg.svm_loss)):
        ref_fwd, ref_bwd = reference.REFERENCE[name]

        def good(scores, labels, fn=fn, ref_fwd=ref_fwd, ref_bwd=ref_bwd, fp=False):
            t = T(f64(scores), dtype="float64", requires_grad=True)
            loss = fn(t, labels)
            expected, cache = ref_fwd(f64(scores), np.asarray(getattr(labels, "data", labels)).astype(np.intp))
            close(loss, expected, rtol=1e-12)
            loss.backward()
            close(t.grad, ref_bwd(np.asarray(1.0), cache)[0], rtol=1e-12)

        cases += [
            Case(f"{name}(labels out of range)", lambda fn=fn: fn(S(), [0, 4, 1]), ValueError),
            Case(f"{name}(labels negative)", lambda fn=fn: fn(S(), [0, -1, 1]), ValueError),
            Case(f"{name}(labels 2**62)", lambda fn=fn: fn(S(), [0, 2**62, 1]), ValueError),
            Case(f"{name}(labels uint64 huge)", lambda fn=fn: fn(S(), np.array([0, 2**63, 1], dtype=np.uint64)), ValueError),
            Case(f"{name}(labels wrong length)", lambda fn=fn: fn(S(), [0, 1]), ValueError),
            Case(f"{name}(labels too long)", lambda fn=fn: fn(S(), [0, 1, 2, 3]), ValueError),
            Case(f"{name}(labels 2-d)", lambda fn=fn: fn(S(), [[0], [1], [2]]), ValueError),
            Case(f"{name}(labels 0-d)", lambda fn=fn: fn(S(), 1), ValueError),
            Case(f"{name}(labels float 1.5)", lambda fn=fn: fn(S(), [0.0, 1.5, 1.0]), ValueError),
            Case(f"{name}(labels nan)", lambda fn=fn: fn(S(), [0.0, nan, 1.0]), ValueError),
            Case(f"{name}(labels inf)", lambda fn=fn: fn(S(), [0.0, inf, 1.0]), ValueError),
            Case(f"{name}(labels 1e300)", lambda fn=fn: fn(S(), [0.0, 1e300, 1.0]), ValueError),
            Case(f"{name}(labels bool)", lambda fn=fn: fn(S(), [True, False, True]), ValueError),
            Case(f"{name}(labels None)", lambda fn=fn: fn(S(), None), TypeError),
            Case(f"{name}(labels str)", lambda fn=fn: fn(S(), ["a", "b", "c"]), TypeError),
            Case(f"{name}(labels complex)", lambda fn=fn: fn(S(), np.array([0, 1, 2], dtype=complex)), TypeError),
            Case(f"{name}(labels object)", lambda fn=fn: fn(S(), np.array([0, None, 1], dtype=object)), TypeError),
            Case(f"{name}(scores 1-d)", lambda fn=fn: fn(T([1.0, 2.0]), [0]), ValueError),
            Case(f"{name}(scores 0-d)", lambda fn=fn: fn(T(1.0), [0]), ValueError),
            Case(f"{name}(scores 3-d)", lambda fn=fn: fn(T(np.ones((1, 2, 2))), [0]), ValueError),
            Case(f"{name}(empty batch)", lambda fn=fn: fn(T(np.zeros((0, 4))), np.zeros(0, dtype=int)), ValueError),
            Case(f"{name}(no classes)", lambda fn=fn: fn(T(np.zeros((2, 0))), [0, 0]), ValueError),
            Case(f"{name}(scores None)", lambda fn=fn: fn(None, [0]), TypeError),
            Case(f"{name}(scores str)", lambda fn=fn: fn("abc", [0]), TypeError),
            Case(f"{name}(scores nan)", lambda fn=fn: close(fn(np.array([[0.0, nan], [1.0, 2.0]]), [0, 1]), nan), OK()),
            Case(f"{name}(scores -inf)", lambda fn=fn: None if np.isfinite(fn(np.array([[0.0, -inf], [1.0, 2.0]]), [0, 1]).item()) else _fail(), OK()),
            Case(f"{name}(labels float integral)", lambda g=good: g(S(), [0.0, 3.0, 1.0]), OK()),
            Case(f"{name}(labels int8)", lambda g=good: g(S(), np.array([0, 3, 1], dtype=np.int8)), OK()),
            Case(f"{name}(labels big-endian)", lambda g=good: g(S(), y().astype(">i8")), OK()),
            Case(f"{name}(labels unaligned)", lambda g=good: g(S(), unaligned((3,), np.intp)), OK()),
            Case(f"{name}(labels strided)", lambda g=good: g(S(), np.array([0, 9, 3, 9, 1])[::2]), OK()),
            Case(f"{name}(labels tensor)", lambda g=good: g(S(), T([0.0, 3.0, 1.0])), OK()),
            Case(f"{name}(scores fortran)", lambda g=good: g(np.asfortranarray(S()), y()), OK()),
            Case(f"{name}(scores reversed)", lambda g=good: g(S()[::-1], y()), OK()),
            Case(f"{name}(scores int)", lambda g=good: g(np.arange(12).reshape(3, 4) % 5, y()), OK()),
            Case(f"{name}(one class)", lambda g=good: g(np.array([[2.0], [-1.0]]), [0, 0]), OK()),
        ]
    cases += [
        Case("svm_loss(delta=nan)", lambda: close(fg.svm_loss(S(), y(), delta=nan), nan), OK()),
        Case("svm_loss(delta=None)", lambda: fg.svm_loss(S(), y(), delta=None), TypeError),
        Case("svm_loss(delta='a')", lambda: fg.svm_loss(S(), y(), delta="a"), ValueError),
    ]
    return cases


def maxout_affine_cases(fg, reference):
    T = float32_tensor(fg)
    Z = lambda: base((2, 6))  # noqa: E731

    def good_maxout(z, pieces):
        t = T(f64(z), dtype="float64", requires_grad=True)
        out = fg.maxout(t, pieces)
        expected, cache = reference.REFERENCE["maxout"][0](f64(z), pieces)
        close(out, expected, rtol=0)
        out.backward(np.ones(out.shape))
        close(t.grad, reference.REFERENCE["maxout"][1](np.ones(np.shape(expected)), cache)[0], rtol=0)

    x, W, b = (lambda: base((2, 3))), (lambda: base((3, 4))), (lambda: base((4,)))

    def good_affine(x, W, b, **kw):
        ts = [T(f64(a), dtype="float64", requires_grad=True) for a in (x, W, b)]
        out = fg.affine(*ts, **kw)
        expected, cache = reference.REFERENCE["affine"][0](f64(x), f64(W), f64(b), **kw)
        close(out, expected, rtol=1e-12)
        out.backward(np.ones(out.shape))
        for t, g in zip(ts, reference.REFERENCE["affine"][1](np.ones(np.shape(expected)), cache)):
            close(t.grad, g, rtol=1e-12)

    return [
        Case("maxout(pieces=2.5)", lambda: fg.maxout(Z(), 2.5), TypeError),
        Case("maxout(pieces=2.0)", lambda: fg.maxout(Z(), 2.0), TypeError),
        Case("maxout(pieces=True)", lambda: fg.maxout(Z(), True), TypeError),
        Case("maxout(pieces='2')", lambda: fg.maxout(Z(), "2"), TypeError),
        Case("maxout(pieces=None)", lambda: fg.maxout(Z(), None), TypeError),
        Case("maxout(pieces=0)", lambda: fg.maxout(Z(), 0), ValueError),
        Case("maxout(pieces=-2)", lambda: fg.maxout(Z(), -2), ValueError),
        Case("maxout(pieces=2**70)", lambda: fg.maxout(Z(), 2**70), ValueError),
        Case("maxout(pieces=2**62, width 0)", lambda: close(fg.maxout(np.zeros((2, 0)), 2**62), np.zeros((2, 0))), OK()),
        Case("maxout(pieces=4 of 6)", lambda: fg.maxout(Z(), 4), ValueError),
        Case("maxout(1-d)", lambda: fg.maxout(np.ones(4), 2), ValueError),
        Case("maxout(0-d)", lambda: fg.maxout(np.array(1.0), 1), ValueError),
        Case("maxout(np.int64(3))", lambda: good_maxout(Z(), np.int64(3)), OK()),
        Case("maxout(empty batch)", lambda: good_maxout(np.zeros((0, 6)), 3), OK()),
        Case("maxout(pieces=1)", lambda: good_maxout(Z(), 1), OK()),
        Case("maxout(strided)", lambda: good_maxout(base((2, 12))[:, ::2], 2), OK()),
        Case("maxout(nan)", lambda: close(fg.maxout(np.array([[nan, 1.0, 2.0, nan]]), 2), [[nan, nan]]), OK()),
        Case("affine(x 1-d)", lambda: fg.affine(np.ones(3), W(), b()), ValueError),
        Case("affine(x 0-d)", lambda: fg.affine(np.array(1.0), W(), b()), ValueError),
        Case("affine(W mismatch)", lambda: fg.affine(x(), base((2, 4)), b()), ValueError),
        Case("affine(b mismatch)", lambda: fg.affine(x(), W(), base((3,))), ValueError),
        Case("affine(b 2-d)", lambda: fg.affine(x(), W(), base((1, 4))), ValueError),
        Case("affine(activation bogus)", lambda: fg.affine(x(), W(), b(), activation="bogus"), ValueError),
        Case("affine(activation 1)", lambda: fg.affine(x(), W(), b(), activation=1), ValueError),
        Case("affine(leaky slope nan)", lambda: good_affine(x(), W(), b(), activation="leaky_relu", negative_slope=nan), OK(), fp=True),
        Case("affine(elu alpha -1)", lambda: good_affine(x(), W(), b(), activation="elu", alpha=-1.0), OK()),
        Case("affine(mixed dtypes)", lambda: fg.affine(T(x()), T(W(), dtype="float64"), b()), TypeError),
        Case("affine(W None)", lambda: fg.affine(x(), None, b()), TypeError),
        Case("affine(x str)", lambda: fg.affine("abc", W(), b()), TypeError),
        Case("affine(empty N)", lambda: good_affine(np.zeros((0, 3)), W(), b(), activation="tanh"), OK()),
        Case("affine(empty D)", lambda: good_affine(np.zeros((2, 0)), np.zeros((0, 4)), b()), OK()),
        Case("affine(empty M)", lambda: good_affine(x(), np.zeros((3, 0)), np.zeros(0), activation="sigmoid"), OK()),
        Case("affine(fortran W, reversed x)", lambda: good_affine(x()[::-1], np.asfortranarray(W()), b()), OK()),
        Case("affine(int arrays)", lambda: close(fg.affine(np.ones((2, 3), int), np.ones((3, 2), int), np.arange(2)), [[3, 4], [3, 4]]), OK()),
        Case("affine(nan, tanh)", lambda: close(fg.affine([[nan, 1.0]], np.eye(2), [0.0, 0.0], activation="tanh"), [[nan, nan]]), OK()),  # nan * 0 is nan
    ]


def tensor_cases(fg, reference):
    T = float32_tensor(fg)

    def twice():
        x = T([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()
        y.backward()
        y.backward()

    return [
        Case("backward(gradient wrong shape)", lambda: (T(base(), requires_grad=True) * 2).backward(np.ones(3)), ValueError),
        Case("backward(no gradient, non-scalar)", lambda: (T(base(), requires_grad=True) * 2).backward(), RuntimeError),
        Case("backward(gradient str)", lambda: (T(base(), requires_grad=True) * 2).backward("a"), TypeError),
        Case("backward(gradient None array)", lambda: (T(base(), requires_grad=True) * 2).backward(np.array([None] * 6).reshape(2, 3)), TypeError),
        Case("backward(no requires_grad)", lambda: T(1.0).backward(), RuntimeError),
        Case("backward twice", twice, RuntimeError),
        Case("backward(nan gradient)", lambda: _nan_grad(T), OK()),
        Case("backward(empty)", lambda: _empty_grad(T), OK()),
        Case("item(multi)", lambda: T([1.0, 2.0]).item(), ValueError),
        Case("item(empty)", lambda: T(np.zeros(0)).item(), ValueError),
        Case("len(0-d)", lambda: len(T(1.0)), TypeError),
        Case("item(0-d)", lambda: T(2.5).item() == 2.5 or _fail(), OK()),
    ]


def _nan_grad(T):
    x = T([1.0, 2.0], requires_grad=True)
    (x * 3).backward(np.array([nan, 1.0]))
    close(x.grad, [nan, 3.0])


def _empty_grad(T):
    x = T(np.zeros((0, 3)), requires_grad=True)
    (x * 3).sum().backward()
    close(x.grad, np.zeros((0, 3)))


def nn_cases(fg, reference):
    nn = fg.nn
    T = float32_tensor(fg)

    def linear_ok(x):
        layer = nn.Linear(3, 2, seed=0)
        with np.errstate(all="ignore"):
            expected = np.asarray(x, dtype=np.float64) @ layer.weight.data.astype(np.float64) + layer.bias.data
        close(layer(x), expected, rtol=1e-5)

    cases = [
        Case("Linear(2.5, 3)", lambda: nn.Linear(2.5, 3), ValueError),
        Case("Linear(0, 3)", lambda: nn.Linear(0, 3), ValueError),
        Case("Linear(-1, 3)", lambda: nn.Linear(-1, 3), ValueError),
        Case("Linear('a', 3)", lambda: nn.Linear("a", 3), ValueError),
        Case("Linear(3, 2, dtype=int)", lambda: nn.Linear(3, 2, dtype=int), TypeError),
        Case("Linear(x wrong width)", lambda: nn.Linear(3, 2, seed=0)(np.ones((4, 5))), ValueError),
        Case("Linear(x 1-d)", lambda: nn.Linear(3, 2, seed=0)(np.ones(3)), ValueError),
        Case("Linear(x 0-d)", lambda: nn.Linear(3, 2, seed=0)(np.array(1.0)), ValueError),
        Case("Linear(x None)", lambda: nn.Linear(3, 2, seed=0)(None), TypeError),
        Case("Linear(x str array)", lambda: nn.Linear(3, 2, seed=0)(np.array([["1", "2", "3"]])), TypeError),
        Case("Linear(x object array)", lambda: nn.Linear(3, 2, seed=0)(np.array([[None, 1, 2]], dtype=object)), TypeError),
        Case("Linear(x complex)", lambda: nn.Linear(3, 2, seed=0)(np.ones((1, 3), complex)), TypeError),
        Case("Linear(x float64 tensor)", lambda: nn.Linear(3, 2, seed=0)(T(np.ones((1, 3)), dtype="float64")), TypeError),
        Case("Linear(x int)", lambda: linear_ok(np.arange(6).reshape(2, 3)), OK()),
        Case("Linear(x list)", lambda: linear_ok([[1.0, 2.0, 3.0]]), OK()),
        Case("Linear(x big-endian)", lambda: linear_ok(base().astype(">f4")), OK()),
        Case("Linear(x unaligned)", lambda: linear_ok(unaligned((2, 3))), OK()),
        Case("Linear(x fortran)", lambda: linear_ok(np.asfortranarray(base((4, 3)))), OK()),
        Case("Linear(x strided)", lambda: linear_ok(base((2, 6))[:, ::2]), OK()),
        Case("Linear(x empty)", lambda: linear_ok(np.zeros((0, 3))), OK()),
        Case("Linear(x nan)", lambda: linear_ok(np.array([[nan, 1.0, 2.0]])), OK()),
        Case("Linear(bias=False, x wrong width)", lambda: nn.Linear(3, 2, bias=False, seed=0)(np.ones((1, 4))), ValueError),
        Case("Maxout(pieces=2.5)", lambda: nn.Maxout(3, 2, pieces=2.5), ValueError),
        Case("Maxout(pieces=0)", lambda: nn.Maxout(3, 2, pieces=0), ValueError),
        Case("Maxout(x wrong width)", lambda: nn.Maxout(3, 2, seed=0)(np.ones((1, 2))), ValueError),
        Case("Maxout(x empty)", lambda: nn.Maxout(3, 2, seed=0)(np.zeros((0, 3))).shape == (0, 2) or _fail(), OK()),
        Case("MLP([])", lambda: nn.MLP([]), ValueError),
        Case("MLP([4])", lambda: nn.MLP([4]), ValueError),
        Case("MLP([4, 2.5])", lambda: nn.MLP([4, 2.5]), ValueError),
        Case("MLP([4, 0, 2])", lambda: nn.MLP([4, 0, 2]), ValueError),
        Case("MLP(activation bogus)", lambda: nn.MLP([4, 3], activation="bogus"), ValueError),
        Case("MLP(pieces=2.5)", lambda: nn.MLP([4, 3, 2], activation="maxout", pieces=2.5), ValueError),
        Case("MLP(x wrong width)", lambda: nn.MLP([4, 3, 2], seed=0)(np.ones((2, 5))), ValueError),
        Case("MLP(x None)", lambda: nn.MLP([4, 3, 2], seed=0)(None), TypeError),
        Case("MLP(x empty)", lambda: nn.MLP([4, 3, 2], seed=0)(np.zeros((0, 4))).shape == (0, 2) or _fail(), OK()),
        Case("MLP(x nan, tanh)", lambda: None if np.isnan(nn.MLP([4, 3, 2], activation="tanh", seed=0)(np.full((1, 4), nan)).data).all() else _fail(), OK()),
        Case("LeakyReLU('a')", lambda: nn.LeakyReLU("a"), ValueError),
        Case("LeakyReLU(None)", lambda: nn.LeakyReLU(None), TypeError),
        Case("ELU(None)", lambda: nn.ELU(None), TypeError),
        Case("ReLU()(str)", lambda: nn.ReLU()("abc"), TypeError),
        Case("Sigmoid()(None)", lambda: nn.Sigmoid()(None), TypeError),
        Case("Tanh()(empty)", lambda: close(nn.Tanh()(np.zeros((0, 2))), np.zeros((0, 2))), OK()),
        Case("Sequential(3)", lambda: nn.Sequential(3), TypeError),
        Case("Sequential(x wrong width)", lambda: nn.Sequential(nn.Linear(3, 2, seed=0), nn.ReLU())(np.ones((1, 4))), ValueError),
        Case("load_state_dict(wrong shape)", lambda: nn.Linear(3, 2, seed=0).load_state_dict({"weight": np.ones((2, 3)), "bias": np.ones(2)}), ValueError),
    ]
    return cases


# --- the raw bindings, called directly: validation lives in them, not in ops.py ----------------------


def _against(fg, reference, row, call, arrays, attrs=None, ref_attrs=None):
    """call(*float64 tensors) against reference.py's row: output and every input gradient."""
    attrs = attrs or {}
    ts = [fg.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
    y = call(*ts, **attrs)
    forward, backward = reference.REFERENCE[row]
    expected, cache = forward(*[f64(a) for a in arrays], **(attrs if ref_attrs is None else ref_attrs))
    close(y, expected, rtol=1e-12)
    y.backward(np.ones(y.shape))
    for t, g in zip(ts, backward(np.ones(np.shape(expected)), cache)):
        close(t.grad, g, rtol=1e-12)


def more_surface_cases(fg, reference):
    """More of the PyTorch-style surface: clamp, cat/stack, where, softmax/log_softmax, dropout,
    casts, cross_entropy, factories and shape methods, with results against reference.py."""
    T = float32_tensor(fg)
    F = fg.functional
    x = lambda: T(base())  # noqa: E731
    A = lambda: _against  # noqa: E731
    cases = [
        Case("clamp(min tensor)", lambda: x().clamp(T(0.0)), TypeError),
        Case("clamp(min array)", lambda: x().clamp(np.zeros(3)), TypeError),
        Case("clamp(no bounds)", lambda: x().clamp(), ValueError),
        Case("clamp(nan-inf values)", lambda: close(fg.clamp(np.array([nan, inf, -inf]), -1.0, 1.0), [nan, 1.0, -1.0]), OK()),
        Case("cat([])", lambda: fg.cat([]), ValueError),
        Case("cat(tensor)", lambda: fg.cat(x()), TypeError),
        Case("cat(None item)", lambda: fg.cat([x(), None]), TypeError),
        Case("cat(str item)", lambda: fg.cat(["a", x()]), TypeError),
        Case("cat(shapes differ)", lambda: fg.cat([x(), T(np.ones((2, 4)))]), ValueError),
        Case("cat(dim 1.5)", lambda: fg.cat([x(), x()], dim=1.5), TypeError),
        Case("cat(float32, float64)", lambda: fg.cat([x(), T(np.ones((2, 3)), dtype="float64")]), TypeError),
        Case("cat(empty part)", lambda: A()(fg, reference, "cat", lambda a, b: fg.cat([a, b]), [np.zeros((0, 3)), base()], ref_attrs={"dim": 0}), OK()),
        Case("cat(all empty, dim 1)", lambda: A()(fg, reference, "cat", lambda a, b: fg.cat([a, b], dim=1), [np.zeros((0, 3)), np.zeros((0, 1))], ref_attrs={"dim": 1}), OK()),
        Case("stack(dim 5)", lambda: fg.stack([x(), x()], dim=5), ValueError),
        Case("stack([])", lambda: fg.stack([]), ValueError),
        Case("stack(0-d)", lambda: close(fg.stack([T(1.0), T(2.0)]), [1.0, 2.0]), OK()),
        Case("where(shapes)", lambda: fg.where(np.ones(4, bool), x(), 0.0), ValueError),
        Case("where(cond float)", lambda: fg.where(np.array([0.5, 0.0, 1.0]), x(), 0.0), TypeError),
        Case("where(cond str)", lambda: fg.where(np.array(["a", "b", "c"]), x(), 0.0), TypeError),
        Case("where(b str)", lambda: fg.where(np.ones(3, bool), x(), "a"), TypeError),
        Case("where(float32, float64)", lambda: fg.where(np.ones(3, bool), x(), T(np.ones(3), dtype="float64")), TypeError),
        Case("where(empty)", lambda: A()(fg, reference, "where", lambda a, b: fg.where(np.ones((0, 3), bool), a, b), [np.ones((0, 3)), np.ones((1, 3))], ref_attrs={"cond": np.ones((0, 3), bool)}), OK()),
        Case("where(nan in the other branch)", lambda: A()(fg, reference, "where", lambda a, b: fg.where(np.array([True, False]), a, b), [np.array([1.0, nan]), np.array([nan, 2.0])], ref_attrs={"cond": np.array([True, False])}), OK()),
    ]
    for name in ("softmax", "log_softmax"):
        fn = getattr(fg, name)
        cases += [
            Case(f"{name}(dim 5)", lambda fn=fn: fn(x(), 5), ValueError),
            Case(f"{name}(dim 1.5)", lambda fn=fn: fn(x(), 1.5), TypeError),
            Case(f"{name}(dim None)", lambda fn=fn: fn(x(), None), TypeError),
            Case(f"{name}(dim (0, 1))", lambda fn=fn: fn(x(), (0, 1)), TypeError),
            Case(f"{name}(0-d)", lambda fn=fn: fn(T(1.0), 0), ValueError),
            Case(f"{name}(x str)", lambda fn=fn: fn("abc", 0), TypeError),
            Case(f"{name}(empty batch)", lambda fn=fn, name=name: A()(fg, reference, name, lambda t: fn(t, 1), [np.zeros((0, 3))], ref_attrs={"dim": 1}), OK()),
            Case(f"{name}(empty axis)", lambda fn=fn: close(fn(T(np.zeros((2, 0))), 1), np.zeros((2, 0))), OK()),
            Case(f"{name}(nan row)", lambda fn=fn: None if (lambda y: np.isnan(y[0]).all() and np.isfinite(y[1]).all())(fn(T([[nan, 1.0], [0.0, 1.0]]), 1).data) else _fail(), OK()),
            Case(f"{name}(strided, dim -1)", lambda fn=fn, name=name: A()(fg, reference, name, lambda t: fn(t, -1), [base((3, 8))[:, ::2]], ref_attrs={"dim": -1}), OK()),
        ]
    cases += [
        Case("dropout(p=1)", lambda: F.dropout(x(), 1.0), ValueError),
        Case("dropout(p=None)", lambda: F.dropout(x(), None), (ValueError, TypeError)),
        Case("dropout(0-d)", lambda: F.dropout(T(1.0), 0.5, generator=np.random.default_rng(0)).shape == () or _fail(), OK()),
        Case("dropout(x None)", lambda: F.dropout(None, 0.5), TypeError),
        Case("cast(to int32)", lambda: x().to("int32"), TypeError),
        Case("cast(to 'bogus')", lambda: x().to("bogus"), TypeError),
        Case("cast(double, 0-d)", lambda: A()(fg, reference, "cast", lambda t: t.float().double(), [np.array(0.5)], ref_attrs={"dtype": "float64"}), OK()),
        Case("cast(float, empty)", lambda: x()[:0].double().dtype == np.float64 or _fail(), OK()),
        Case("cross_entropy(reduction bogus)", lambda: F.cross_entropy(x(), [0, 1], reduction="bogus"), ValueError),
        Case("cross_entropy(labels out of range)", lambda: F.cross_entropy(x(), [0, 3]), ValueError),
        Case("cross_entropy(labels nan)", lambda: F.cross_entropy(x(), [0, nan]), ValueError),
        Case("cross_entropy(labels None)", lambda: F.cross_entropy(x(), None), TypeError),
        Case("cross_entropy(reduction none, nan)", lambda: None if (lambda v: np.isnan(v[0]) and np.isfinite(v[1]))(F.cross_entropy(T([[nan, 0.0], [0.0, 1.0]]), [0, 1], reduction="none").data) else _fail(), OK()),
        Case("zeros(-1)", lambda: fg.zeros(-1), ValueError),
        Case("zeros(2.5)", lambda: fg.zeros(2.5), TypeError),
        Case("zeros('a')", lambda: fg.zeros("a"), TypeError),
        Case("zeros(2**70)", lambda: fg.zeros(2**70), (ValueError, OverflowError)),
        Case("zeros(dtype int32)", lambda: fg.zeros(3, dtype="int32"), TypeError),
        Case("zeros(0, 3)", lambda: close(fg.zeros(0, 3), np.zeros((0, 3))), OK()),
        Case("zeros(())", lambda: close(fg.zeros(()), 0.0), OK()),
        Case("full('a')", lambda: fg.full((2,), "a"), TypeError),
        Case("full(None)", lambda: fg.full((2,), None), TypeError),
        Case("full(nan)", lambda: close(fg.full((2,), nan), [nan, nan]), OK()),
        Case("arange(step 0)", lambda: fg.arange(0, 10, 0), ValueError),
        Case("arange(nan)", lambda: fg.arange(0, nan), ValueError),
        Case("arange(inf)", lambda: fg.arange(0, inf), ValueError),
        Case("arange(empty)", lambda: close(fg.arange(3, 0), np.zeros(0)), OK()),
        Case("eye(-1)", lambda: fg.eye(-1), ValueError),
        Case("eye(2.5)", lambda: fg.eye(2.5), TypeError),
        Case("randn(-1)", lambda: fg.randn(-1), ValueError),
        Case("rand(2.5)", lambda: fg.rand(2.5), TypeError),
        Case("ones_like('a')", lambda: fg.ones_like("a"), TypeError),
        Case("manual_seed(-1)", lambda: fg.manual_seed(-1), ValueError),
        Case("view(4, 4)", lambda: x().view(4, 4), ValueError),
        Case("flatten(5)", lambda: x().flatten(5), ValueError),
        Case("unsqueeze(5)", lambda: x().unsqueeze(5), ValueError),
        Case("argmax(empty)", lambda: T(np.zeros((0, 3))).argmax(), ValueError),
        Case("argmax(nan) is the first nan", lambda: int(T([1.0, nan, 3.0, nan]).argmax()) == 1 or _fail(), OK()),
        Case("min(empty)", lambda: T(np.zeros((0, 3))).min(), ValueError),
        Case("min(nan)", lambda: close(T([1.0, nan, -3.0]).min(), nan), OK()),
    ]
    return cases


def binding_cases(K, L):
    f32 = lambda shape=(2, 3): base(shape).astype(np.float32)  # noqa: E731
    bad_buffers = {  # name -> (make, exception)
        "int64": (lambda: np.arange(6).reshape(2, 3), TypeError),
        "float16": (lambda: f32().astype(np.float16), TypeError),
        "complex": (lambda: f32().astype(complex), TypeError),
        "object": (lambda: f32().astype(object), TypeError),
        "bool": (lambda: f32() > 0, TypeError),
        "list": (lambda: [[1.0, 2.0, 3.0]] * 2, TypeError),
        "None": (lambda: None, TypeError),
        "big-endian": (lambda: f32().astype(">f4"), TypeError),
        "unaligned": (lambda: unaligned((2, 3)), ValueError),
        "strided": (lambda: f32((2, 6))[:, ::2], ValueError),
        "fortran": (lambda: np.asfortranarray(f32((3, 3))), ValueError),
        "reversed": (lambda: f32((2, 3))[::-1], ValueError),
    }
    cases = []
    unary = {"relu_forward": K.relu_forward, "sigmoid_forward": K.sigmoid_forward, "tanh_forward": K.tanh_forward,
             "leaky_relu_forward": lambda x: K.leaky_relu_forward(x, 0.1), "elu_forward": lambda x: K.elu_forward(x, 1.0)}
    binary = {"relu_backward": K.relu_backward, "sigmoid_backward": K.sigmoid_backward,
              "tanh_backward": K.tanh_backward, "maximum_forward": K.maximum_forward,
              "leaky_relu_backward": lambda a, b: K.leaky_relu_backward(a, b, 0.1),
              "elu_backward": lambda a, b: K.elu_backward(a, b, 1.0),
              "maximum_backward(dy, a)": lambda a, b: K.maximum_backward(a, b, f32()),
              "maximum_backward(a, b)": lambda a, b: K.maximum_backward(f32(), a, b)}
    for name, fn in unary.items():
        for label, (make, exc) in bad_buffers.items():
            cases.append(Case(f"K.{name}({label})", lambda fn=fn, make=make: fn(make()), exc))
        cases += [
            Case(f"K.{name}(0-d)", lambda fn=fn: fn(np.array(0.5, np.float32)).shape == () or _fail(), OK()),
            Case(f"K.{name}(empty)", lambda fn=fn: fn(np.zeros((0, 5), np.float64)).shape == (0, 5) or _fail(), OK()),
            Case(f"K.{name}(huge empty)", lambda fn=fn: fn(np.zeros((2**40, 0), np.float32)).shape == (2**40, 0) or _fail(), OK()),
        ]
    for name, fn in binary.items():
        for label, (make, exc) in bad_buffers.items():
            cases.append(Case(f"K.{name}(second {label})", lambda fn=fn, make=make: fn(f32(), make()), exc))
        cases += [
            Case(f"K.{name}(shape mismatch)", lambda fn=fn: fn(f32((2, 3)), f32((3, 2))), ValueError),
            Case(f"K.{name}(size mismatch)", lambda fn=fn: fn(f32((2, 3)), f32((2, 2))), ValueError),
            Case(f"K.{name}(f32, f64)", lambda fn=fn: fn(f32(), base()), TypeError),
            Case(f"K.{name}(first None)", lambda fn=fn: fn(None, f32()), TypeError),
        ]
    cases += [
        Case("K.leaky_relu_forward(slope 'a')", lambda: K.leaky_relu_forward(f32(), "a"), TypeError),
        Case("K.maximum_backward(dy shape)", lambda: K.maximum_backward(f32((3, 2)), f32(), f32()), ValueError),
    ]
    idx = lambda shape, hi, dtype=np.intp: np.zeros(shape, dtype=dtype) + min(hi, 1)  # noqa: E731
    X = lambda: f32((2, 3, 4))  # noqa: E731
    cases += [
        Case("K.max_forward(stop > ndim)", lambda: K.max_forward(X(), 1, 4), ValueError),
        Case("K.max_forward(start = stop)", lambda: K.max_forward(X(), 1, 1), ValueError),
        Case("K.max_forward(negative start)", lambda: K.max_forward(X(), -1, 2), ValueError),
        Case("K.max_forward(0-d)", lambda: K.max_forward(np.array(1.0), 0, 1), ValueError),
        Case("K.max_forward(empty axis)", lambda: K.max_forward(np.zeros((2, 0)), 1, 2), ValueError),
        Case("K.max_forward(start 2**70)", lambda: K.max_forward(X(), 2**70, 2**71), OverflowError),
        Case("K.max_forward(int64)", lambda: K.max_forward(np.ones((2, 2), int), 0, 1), TypeError),
        Case("K.max_forward(strided)", lambda: K.max_forward(f32((2, 6))[:, ::2], 1, 2), ValueError),
        Case("K.max_forward(empty outer)", lambda: K.max_forward(np.zeros((0, 3)), 1, 2)[0].shape == (0,) or _fail(), OK()),
        Case("K.max_backward(idx int32)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 2, np.int32), (2, 3, 4), 1, 2), TypeError),
        Case("K.max_backward(idx float)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 2, np.float64), (2, 3, 4), 1, 2), TypeError),
        Case("K.max_backward(idx list)", lambda: K.max_backward(f32((2, 4)), [[0] * 4] * 2, (2, 3, 4), 1, 2), TypeError),
        Case("K.max_backward(idx out of range)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1) * 3, (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(idx negative)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1) * -1, (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(idx huge)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1) * 2**62, (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(idx wrong shape)", lambda: K.max_backward(f32((2, 4)), idx((4, 2), 1), (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(idx strided)", lambda: K.max_backward(f32((2, 4)), idx((2, 8), 1)[:, ::2], (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(idx big-endian)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1).astype(">i8"), (2, 3, 4), 1, 2), TypeError),
        Case("K.max_backward(dy wrong shape)", lambda: K.max_backward(f32((4, 2)), idx((2, 4), 1), (2, 3, 4), 1, 2), ValueError),
        Case("K.max_backward(shape overflows)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1), (2, 2**62, 4), 1, 2), ValueError),
        Case("K.max_backward(shape negative)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1), (2, -3, 4), 1, 2), ValueError),
        Case("K.max_backward(shape float)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1), (2, 3.5, 4), 1, 2), ValueError),
        Case("K.max_backward(shape list)", lambda: K.max_backward(f32((2, 4)), idx((2, 4), 1), [2, 3, 4], 1, 2), TypeError),
        Case("K.maxout_forward(pieces 0)", lambda: K.maxout_forward(f32((2, 4)), 0), ValueError),
        Case("K.maxout_forward(pieces -2)", lambda: K.maxout_forward(f32((2, 4)), -2), ValueError),
        Case("K.maxout_forward(pieces 3 of 4)", lambda: K.maxout_forward(f32((2, 4)), 3), ValueError),
        Case("K.maxout_forward(1-d)", lambda: K.maxout_forward(f32((4,)), 2), ValueError),
        Case("K.maxout_forward(pieces 2**70)", lambda: K.maxout_forward(f32((2, 4)), 2**70), OverflowError),
        Case("K.maxout_forward(bool)", lambda: K.maxout_forward(f32((2, 4)) > 0, 2), TypeError),
        Case("K.maxout_backward(idx == pieces)", lambda: K.maxout_backward(f32((2, 3)), idx((2, 3), 1) * 2, 2), ValueError),
        Case("K.maxout_backward(idx negative)", lambda: K.maxout_backward(f32((2, 3)), idx((2, 3), 1) * -1, 2), ValueError),
        Case("K.maxout_backward(idx shape)", lambda: K.maxout_backward(f32((2, 3)), idx((3, 2), 0), 2), ValueError),
        Case("K.maxout_backward(idx int32)", lambda: K.maxout_backward(f32((2, 3)), idx((2, 3), 0, np.int32), 2), TypeError),
        Case("K.maxout_backward(pieces 0)", lambda: K.maxout_backward(f32((2, 3)), idx((2, 3), 0), 0), ValueError),
        Case("K.maxout_backward(h * pieces overflows)", lambda: K.maxout_backward(f32((2, 4)), idx((2, 4), 0), 2**62), ValueError),
        Case("K.maxout_backward(n * h * pieces overflows)", lambda: K.maxout_backward(f32((4, 1)), idx((4, 1), 0), 2**62), ValueError),
        Case("K.maxout_backward(dy 1-d)", lambda: K.maxout_backward(f32((3,)), idx((3,), 0), 2), ValueError),
    ]
    labels = lambda *v, dtype=np.intp: np.array(v, dtype=dtype)  # noqa: E731
    for name in ("softmax_cross_entropy", "svm_loss"):
        fn = getattr(K, name)
        call = (lambda s, y, fn=fn: fn(s, y)) if name == "softmax_cross_entropy" else (lambda s, y, fn=fn: fn(s, y, 1.0))
        S = lambda: f32((3, 4))  # noqa: E731
        cases += [
            Case(f"K.{name}(labels out of range)", lambda c=call: c(S(), labels(0, 4, 1)), ValueError),
            Case(f"K.{name}(labels negative)", lambda c=call: c(S(), labels(0, -1, 1)), ValueError),
            Case(f"K.{name}(labels int32)", lambda c=call: c(S(), labels(0, 1, 1, dtype=np.int32)), TypeError),
            Case(f"K.{name}(labels uint64)", lambda c=call: c(S(), labels(0, 1, 1, dtype=np.uint64)), TypeError),
            Case(f"K.{name}(labels float)", lambda c=call: c(S(), labels(0, 1, 1, dtype=np.float64)), TypeError),
            Case(f"K.{name}(labels list)", lambda c=call: c(S(), [0, 1, 1]), TypeError),
            Case(f"K.{name}(labels None)", lambda c=call: c(S(), None), TypeError),
            Case(f"K.{name}(labels wrong length)", lambda c=call: c(S(), labels(0, 1)), ValueError),
            Case(f"K.{name}(labels 2-d)", lambda c=call: c(S(), labels(0, 1, 1).reshape(3, 1)), ValueError),
            Case(f"K.{name}(labels strided)", lambda c=call: c(S(), labels(0, 0, 1, 0, 1, 0)[::2]), ValueError),
            Case(f"K.{name}(labels big-endian)", lambda c=call: c(S(), labels(0, 1, 1).astype(">i8")), TypeError),
            Case(f"K.{name}(labels unaligned)", lambda c=call: c(S(), unaligned((3,), np.intp)), ValueError),
            Case(f"K.{name}(scores 1-d)", lambda c=call: c(f32((3,)), labels(0, 1, 1)), ValueError),
            Case(f"K.{name}(scores 3-d)", lambda c=call: c(f32((3, 2, 2)), labels(0, 1, 1)), ValueError),
            Case(f"K.{name}(scores 0-d)", lambda c=call: c(np.array(1.0), labels(0)), ValueError),
            Case(f"K.{name}(empty batch)", lambda c=call: c(np.zeros((0, 4)), labels()), ValueError),
            Case(f"K.{name}(no classes)", lambda c=call: c(np.zeros((3, 0)), labels(0, 0, 0)), ValueError),
            Case(f"K.{name}(scores int)", lambda c=call: c(np.ones((3, 4), int), labels(0, 1, 1)), TypeError),
            Case(f"K.{name}(scores fortran)", lambda c=call: c(np.asfortranarray(S()), labels(0, 1, 1)), ValueError),
            Case(f"K.{name}(scores big-endian)", lambda c=call: c(S().astype(">f4"), labels(0, 1, 1)), TypeError),
        ]
    A = lambda shape=(2, 3): f32(shape)  # noqa: E731
    cases += [
        Case("L.matmul(int64)", lambda: L.matmul(np.ones((2, 3), int), A((3, 2))), TypeError),
        Case("L.matmul(float16)", lambda: L.matmul(A().astype(np.float16), A((3, 2))), TypeError),
        Case("L.matmul(f32, f64)", lambda: L.matmul(A(), base((3, 2))), TypeError),
        Case("L.matmul(list)", lambda: L.matmul([[1.0]], A((1, 1))), TypeError),
        Case("L.matmul(None)", lambda: L.matmul(A(), None), TypeError),
        Case("L.matmul(1-d)", lambda: L.matmul(A((3,)), A((3, 2))), ValueError),
        Case("L.matmul(0-d)", lambda: L.matmul(np.array(1.0, np.float32), A((1, 2))), ValueError),
        Case("L.matmul(3-d)", lambda: L.matmul(A((2, 3, 1)), A((3, 2))), ValueError),
        Case("L.matmul(strided)", lambda: L.matmul(A((2, 6))[:, ::2], A((3, 2))), ValueError),
        Case("L.matmul(reversed)", lambda: L.matmul(A((2, 3))[::-1], A((3, 2))), ValueError),
        Case("L.matmul(big-endian)", lambda: L.matmul(A().astype(">f4"), A((3, 2))), TypeError),
        Case("L.matmul(unaligned)", lambda: L.matmul(unaligned((2, 3)), A((3, 2))), ValueError),
        Case("L.matmul(mismatch)", lambda: L.matmul(A((2, 3)), A((2, 3))), ValueError),
        Case("L.matmul(mismatch, trans_a)", lambda: L.matmul(A((2, 3)), A((3, 2)), trans_a=True), ValueError),
        Case("L.matmul(rows > INT_MAX)", lambda: L.matmul(np.zeros((2**31, 0), np.float32), A((0, 2))), ValueError),
        Case("L.matmul(cols > INT_MAX)", lambda: L.matmul(A((1, 0)), np.zeros((0, 2**31), np.float32)), ValueError),
        Case("L.matmul(fortran)", lambda: close(L.matmul(np.asfortranarray(A((3, 4))), A((4, 2))), A((3, 4)) @ A((4, 2))), OK()),
        Case("L.matmul(empty inner)", lambda: close(L.matmul(A((2, 0)), A((0, 3))), np.zeros((2, 3))), OK()),
        Case("L.affine_forward(b 2-d)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), A((1, 4))), ValueError),
        Case("L.affine_forward(b wrong length)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), A((3,))), ValueError),
        Case("L.affine_forward(b strided)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), A((8,))[::2]), ValueError),
        Case("L.affine_forward(b f64)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), base((4,))), TypeError),
        Case("L.affine_forward(b None)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), None), TypeError),
        Case("L.affine_forward(W mismatch)", lambda: L.affine_forward(A((2, 3)), A((2, 4)), A((4,))), ValueError),
        Case("L.affine_forward(x strided)", lambda: L.affine_forward(A((2, 6))[:, ::2], A((3, 4)), A((4,))), ValueError),
        Case("L.affine_forward(activation bogus)", lambda: L.affine_forward(A((2, 3)), A((3, 4)), A((4,)), "bogus"), ValueError),
        Case("L.affine_forward(leaky param -1)", lambda: close(L.affine_forward(A((2, 3)), A((3, 4)), A((4,)), "leaky_relu", -1.0)[0],
                                                              np.where(f64(A((2, 3))) @ f64(A((3, 4))) + f64(A((4,))) > 0, 1, -1)
                                                              * (f64(A((2, 3))) @ f64(A((3, 4))) + f64(A((4,))))), OK()),
        Case("L.affine_backward(dy 1-d)", lambda: L.affine_backward(A((4,)), None, A((2, 3)), A((3, 4))), ValueError),
        Case("L.affine_backward(dy strided)", lambda: L.affine_backward(A((2, 8))[:, ::2], None, A((2, 3)), A((3, 4))), ValueError),
        Case("L.affine_backward(dy int)", lambda: L.affine_backward(np.ones((2, 4), int), None, A((2, 3)), A((3, 4))), TypeError),
        Case("L.affine_backward(y None, relu)", lambda: L.affine_backward(A((2, 4)), None, A((2, 3)), A((3, 4)), "relu"), TypeError),
        Case("L.affine_backward(y wrong shape)", lambda: L.affine_backward(A((2, 4)), A((4, 2)), A((2, 3)), A((3, 4)), "relu"), ValueError),
        Case("L.affine_backward(y strided)", lambda: L.affine_backward(A((2, 4)), A((2, 8))[:, ::2], A((2, 3)), A((3, 4)), "tanh"), ValueError),
        Case("L.affine_backward(x wrong N)", lambda: L.affine_backward(A((2, 4)), None, A((3, 3)), A((3, 4))), ValueError),
        Case("L.affine_backward(W wrong M)", lambda: L.affine_backward(A((2, 4)), None, A((2, 3)), A((3, 5))), ValueError),
        Case("L.affine_backward(x, W differ in D)", lambda: L.affine_backward(A((2, 4)), None, A((2, 2)), A((3, 4))), ValueError),
        Case("L.affine_backward(x f64)", lambda: L.affine_backward(A((2, 4)), None, base((2, 3)), A((3, 4))), TypeError),
        Case("L.affine_backward(empty N)", lambda: [g.shape for g in L.affine_backward(A((0, 4)), None, A((0, 3)), A((3, 4)))] == [(0, 3), (3, 4), (4,)] or _fail(), OK()),
    ]
    return cases


def surface_more_cases(fg, reference):
    """More of the PyTorch surface (api's cases not in more_surface_cases): casts, stack, softmax, ..."""
    T, F = float32_tensor(fg), fg.functional
    x = lambda: T(base())  # noqa: E731
    nanf = lambda: T([[nan, inf, -inf], [1.0, -1.0, 0.0]], dtype="float64")  # noqa: E731
    return [
        Case("clamp()", lambda: x().clamp(), ValueError),
        Case("clamp(min='a')", lambda: x().clamp(min="a"), TypeError),
        Case("clamp(min=tensor)", lambda: x().clamp(min=x()), TypeError),
        Case("clamp(nan-inf)", lambda: close(nanf().clamp(-0.5, 0.5), [[nan, 0.5, -0.5], [0.5, -0.5, 0.0]]), OK()),
        Case("pow_tensor(shapes)", lambda: x() ** T(np.ones(4)), ValueError),
        Case("pow_tensor(dtype mix)", lambda: x() ** T([2.0], dtype="float64"), TypeError),
        Case("pow_tensor(nan-inf)", lambda: close(2.0 ** nanf(), 2.0 ** nanf().data), OK(), fp=True),
        Case("cat(shapes)", lambda: fg.cat([x(), T(np.ones((3, 2)))]), ValueError),
        Case("cat(None)", lambda: fg.cat(None), TypeError),
        Case("cat([x, 'a'])", lambda: fg.cat([x(), "a"]), TypeError),
        Case("cat(dim=1.5)", lambda: fg.cat([x(), x()], dim=1.5), TypeError),
        Case("cat(dim=5)", lambda: fg.cat([x(), x()], dim=5), ValueError),
        Case("cat(empty)", lambda: close(fg.cat([T(np.zeros((0, 3))), x()]), base()), OK()),
        Case("stack(shapes)", lambda: fg.stack([x(), T(np.ones(3))]), ValueError),
        Case("stack(dim=4)", lambda: fg.stack([x(), x()], dim=4), ValueError),
        Case("where(float cond)", lambda: fg.where(np.ones((2, 3)), x(), 0.0), TypeError),
        Case("where(b None)", lambda: fg.where(np.ones((2, 3), bool), x(), None), TypeError),
        Case("softmax(dim=5)", lambda: F.softmax(x(), 5), ValueError),
        Case("softmax(dim=None)", lambda: F.softmax(x(), None), TypeError),
        Case("softmax(nan-inf)", lambda: close(F.softmax(nanf(), 1)[1], reference.REFERENCE["softmax"][0](f64([[1.0, -1.0, 0.0]]), 1)[0][0]),
             OK(), fp=True),
        Case("softmax(empty)", lambda: close(F.softmax(T(np.zeros((0, 3))), 1), np.zeros((0, 3))), OK()),
        Case("log_softmax(dim=1.0)", lambda: F.log_softmax(x(), 1.0), TypeError),
        Case("log_softmax(empty row)", lambda: close(F.log_softmax(T(np.zeros((3, 0))), 1), np.zeros((3, 0))), OK()),
        Case("dropout(generator='a')", lambda: F.dropout(x(), 0.5, generator="a"), TypeError),
        Case("cast(nan-inf)", lambda: close(nanf().float(), nanf().data), OK()),
    ]


def norm_cases(fg, reference):
    """batchnorm/layernorm rows (F.batch_norm, F.layer_norm), the nn layers and the _norm bindings."""
    from fastgrad import _norm as N

    F, nn = fg.functional, fg.nn
    x, g, b = (lambda: base((4, 3))), (lambda: np.ones(3)), (lambda: np.zeros(3))

    def good_bn(xa, training=True):
        t = fg.tensor(f64(xa), dtype="float64", requires_grad=True)
        out = F.batch_norm(t, np.zeros(xa.shape[1]), np.ones(xa.shape[1]), None, None, training)
        expected, cache = reference.REFERENCE["batchnorm"][0](f64(xa), np.ones(xa.shape[1]), np.zeros(xa.shape[1]),
                                                              training=training, running_mean=np.zeros(xa.shape[1]),
                                                              running_var=np.ones(xa.shape[1]))
        close(out, expected, rtol=1e-12, atol=1e-12)

    def ro(a):
        a.flags.writeable = False
        return a

    def z32(n):
        return np.zeros(n, np.float32)

    def o32(n):
        return np.ones(n, np.float32)

    return [
        Case("batchnorm(ok)", lambda: good_bn(base((4, 3))), OK()),
        Case("batchnorm(strided x)", lambda: good_bn(base((4, 6))[:, ::2]), OK()),
        Case("batchnorm(eval)", lambda: good_bn(base((4, 3)), training=False), OK()),
        Case("batchnorm(nan)", lambda: close(F.batch_norm(np.array([[nan], [1.0]]), None, None, training=True),
                                             [[nan], [nan]]), OK(), fp=True),
        Case("batchnorm(x 1-d)", lambda: F.batch_norm(np.ones(3), None, None, training=True), ValueError),
        Case("batchnorm(x 3-d)", lambda: F.batch_norm(np.ones((2, 3, 4)), None, None, training=True), ValueError),
        Case("batchnorm(empty batch)", lambda: F.batch_norm(np.zeros((0, 3)), None, None, training=True), ValueError),
        Case("batchnorm(one row, running stats)", lambda: F.batch_norm(np.ones((1, 3)), z32(3), o32(3),
                                                                       training=True), ValueError),
        Case("batchnorm(float64 stats, float32 x)", lambda: F.batch_norm(fg.tensor(x(), dtype="float32"), np.zeros(3), np.ones(3), training=True),
             TypeError),
        Case("batchnorm(gamma shape)", lambda: F.batch_norm(x(), None, None, np.ones(4), None, True), ValueError),
        Case("batchnorm(running_mean shape)", lambda: F.batch_norm(x(), z32(4), o32(4), training=True),
             ValueError),
        Case("batchnorm(eval without stats)", lambda: F.batch_norm(x(), None, None, training=False), ValueError),
        Case("batchnorm(eps 0)", lambda: F.batch_norm(x(), None, None, training=True, eps=0.0), ValueError),
        Case("batchnorm(eps nan)", lambda: F.batch_norm(x(), None, None, training=True, eps=nan), ValueError),
        Case("batchnorm(momentum 2)", lambda: F.batch_norm(x(), z32(3), o32(3), training=True, momentum=2.0),
             ValueError),
        Case("batchnorm(read-only stats)", lambda: F.batch_norm(x(), ro(z32(3)), ro(o32(3)), training=True),
             ValueError),
        Case("batchnorm(dtype mix)", lambda: F.batch_norm(fg.tensor(x(), dtype="float32"), None, None,
                                                          fg.tensor(g(), dtype="float64"), None, True), TypeError),
        Case("batchnorm(x strings)", lambda: F.batch_norm([["a"]], None, None, training=True), TypeError),
        Case("layernorm(ok)", lambda: close(F.layer_norm(x(), 3),
                                            reference.REFERENCE["layernorm"][0](x().astype(np.float32),
                                                                                 np.ones(3, np.float32),
                                                                                 np.zeros(3, np.float32))[0]), OK()),
        Case("layernorm(empty batch)", lambda: close(F.layer_norm(np.zeros((0, 3)), 3), np.zeros((0, 3))), OK()),
        Case("layernorm(nan)", lambda: close(F.layer_norm(np.array([[nan, 1.0]]), 2), [[nan, nan]]), OK(), fp=True),
        Case("layernorm(shape mismatch)", lambda: F.layer_norm(x(), 4), ValueError),
        Case("layernorm(0-d x)", lambda: F.layer_norm(np.array(1.0), 1), ValueError),
        Case("layernorm(zero features)", lambda: F.layer_norm(np.zeros((2, 0)), (0,), np.ones(0), np.zeros(0)),
             ValueError),
        Case("layernorm(eps -1)", lambda: F.layer_norm(x(), 3, eps=-1.0), ValueError),
        Case("BatchNorm1d(0 features)", lambda: nn.BatchNorm1d(0), ValueError),
        Case("BatchNorm1d(2.5 features)", lambda: nn.BatchNorm1d(2.5), ValueError),
        Case("BatchNorm1d(momentum -1)", lambda: nn.BatchNorm1d(3, momentum=-1), ValueError),
        Case("BatchNorm1d(wrong width)", lambda: nn.BatchNorm1d(3)(np.ones((4, 2))), ValueError),
        Case("BatchNorm1d(one example)", lambda: nn.BatchNorm1d(3)(np.ones((1, 3))), ValueError),
        Case("LayerNorm(shape 0)", lambda: nn.LayerNorm(0), ValueError),
        Case("LayerNorm(wrong width)", lambda: nn.LayerNorm(3)(np.ones((2, 4))), ValueError),
        Case("Dropout(p 1)", lambda: nn.Dropout(1.0), ValueError),
        Case("Dropout(p nan)", lambda: nn.Dropout(nan), ValueError),
        Case("Dropout(generator str)", lambda: nn.Dropout(0.5, generator="seed")(np.ones(3)), TypeError),
        Case("N.batchnorm_forward(list)", lambda: N.batchnorm_forward([[1.0]], np.ones(1), np.zeros(1), 1e-5),
             TypeError),
        Case("N.batchnorm_forward(int64)", lambda: N.batchnorm_forward(np.ones((2, 1), np.int64), np.ones(1),
                                                                       np.zeros(1), 1e-5), TypeError),
        Case("N.batchnorm_forward(strided)", lambda: N.batchnorm_forward(np.ones((2, 4))[:, ::2], np.ones(2),
                                                                         np.zeros(2), 1e-5), ValueError),
        Case("N.batchnorm_forward(gamma float32)", lambda: N.batchnorm_forward(np.ones((2, 2)), np.ones(2, np.float32),
                                                                               np.zeros(2), 1e-5), TypeError),
        Case("N.batchnorm_forward(one running stat)", lambda: N.batchnorm_forward(np.ones((2, 2)), np.ones(2),
                                                                                  np.zeros(2), 1e-5, np.zeros(2)),
             ValueError),
        Case("N.batchnorm_backward(dy shape)", lambda: N.batchnorm_backward(np.ones((3, 2)), np.ones((2, 2)),
                                                                            np.ones(2), np.ones(2), np.ones(2)),
             ValueError),
        Case("N.layernorm_backward(mean shape)", lambda: N.layernorm_backward(np.ones((2, 2)), np.ones((2, 2)),
                                                                              np.ones(3), np.ones(2), np.ones(2)),
             ValueError),
        Case("N.layernorm_forward(1-d)", lambda: N.layernorm_forward(np.ones(3), np.ones(3), np.zeros(3), 1e-5),
             ValueError),
    ]


def sumsq_cases(fg, reference):
    """fg.functional.sumsq(x) (the L2 penalty's row) over the same awkward inputs as the gates."""
    sumsq = fg.functional.sumsq
    cases = []
    for label, (make, kind) in x_classes().items():
        if kind in ("ok", "fp"):
            def run(make=make, kind=kind, label=label):
                x = make()
                with np.errstate(all="ignore"):
                    arr = f64(np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x.astype(np.float64))
                    expected = np.sum(arr * arr)  # NaN in, NaN out; an inf gives inf
                y = sumsq(x)
                close(y, expected, rtol=2e-3 if label == "float16" else 1e-5)
                if kind == "ok":
                    t = fg.tensor(arr, dtype="float64", requires_grad=True)
                    sumsq(t).backward()
                    close(t.grad, 2 * arr, rtol=1e-12)
                return y
            cases.append(Case(f"fg.sumsq({label})", run, OK(), fp=kind == "fp"))
        else:
            cases.append(Case(f"fg.sumsq({label})", lambda make=make: sumsq(make()), kind))
    return cases


def all_cases():
    import fastgrad as fg
    from fastgrad import _kernels as K
    from fastgrad import _linalg as L
    from fastgrad import reference

    cases = []
    for build in (unary_cases, binary_cases, reduction_cases, index_cases, loss_cases, maxout_affine_cases,
                  tensor_cases, nn_cases, more_surface_cases, surface_more_cases, norm_cases, sumsq_cases):
        cases += build(fg, reference)
    cases += binding_cases(K, L)
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"
    return cases


# ---------------------------------------------------------------------------------------------
# the child: run the cases from `start` on, one JSON line before and after each


def run_case(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if case.fp:
            warnings.simplefilter("ignore", RuntimeWarning)
        try:
            result = case.run()
        except BaseException as e:  # noqa: BLE001 - the verdict names whatever came out
            if isinstance(e, AssertionError):
                return "fail", f"wrong result: {e}"
            if isinstance(case.expect, OK):
                return "fail", f"raised {type(e).__name__}: {e}"
            if isinstance(e, case.expect) and str(e):
                return "pass", f"{type(e).__name__}: {e}"
            want = getattr(case.expect, "__name__", case.expect)
            return "fail", f"raised {type(e).__name__}: {e!s} (expected {want} with a message)"
        if not isinstance(case.expect, OK):
            return "fail", f"returned {result!r:.200} (expected {case.expect.__name__})"
        if case.expect.check is not None:
            try:
                case.expect.check(result)
            except AssertionError as e:
                return "fail", f"wrong result: {e}"
        return "pass", "ok"


def child(start):
    import faulthandler

    faulthandler.enable()  # a crash prints the C-level traceback to stderr
    cases = all_cases()
    out = sys.stdout
    for i in range(start, len(cases)):
        out.write(json.dumps({"start": i, "name": cases[i].name}) + "\n")
        out.flush()
        status, detail = run_case(cases[i])
        out.write(json.dumps({"done": i, "status": status, "detail": detail}) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------
# the parent: pytest


def run_table(timeout=300):
    """{case name: (status, detail)} for every case; a crash or hang is recorded against the case
    that was running, and the child restarts after it."""
    results, start, names = {}, 0, None
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(50):
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(start)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr, rc = "timeout", "hang"
        running = None
        for line in stdout.splitlines():
            msg = json.loads(line)
            if "start" in msg:
                running = (msg["start"], msg["name"])
            else:
                results[running[1]] = (msg["status"], msg["detail"])
                running = None
        if running is None:
            assert rc == 0, f"the child failed outside any case (status {rc}):\n{stderr[-3000:]}"
            return results
        how = f"killed by signal {-rc}" if isinstance(rc, int) and rc < 0 else f"exit status {rc}"
        results[running[1]] = ("crash", f"the child died in this case ({how}):\n{stderr[-3000:]}")
        start = running[0] + 1
    raise AssertionError("more than 50 crashes")


def case_names():
    # the table is built (not run) in the parent too, so that every case is its own test
    return [c.name for c in all_cases()]


@pytest.fixture(scope="module")
def table():
    return run_table()


@pytest.mark.parametrize("name", case_names())
def test_bad_input(table, name):
    assert name in table, f"case {name!r} did not run"
    status, detail = table[name]
    assert status == "pass", f"{name}: {status}: {detail}"


def test_the_table_covers_every_public_op():
    import fastgrad as fg

    import fastgrad.ops  # noqa: F401

    names = " ".join(case_names())
    public = ["exp", "log", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "maximum", "maxout", "affine",
              "softmax_cross_entropy", "svm_loss", "tensor", "add", "sub", "mul", "div", "matmul", "pow",
              "neg", "sum", "mean", "max", "reshape", "transpose", "x[", "backward", "item", "Linear",
              "Maxout", "MLP", "LeakyReLU", "ELU", "ReLU", "Sigmoid", "Tanh", "Sequential"]
    missing = [p for p in public if p not in names]
    assert not missing, f"ops without bad-input cases: {missing}"
    starts = {n.split("(")[0].removeprefix("fg.").removeprefix("K.") for n in case_names()}
    uncovered = [row for row in fg.ops.TABLE if row != "getitem" and row.rstrip("_") not in starts]
    assert not uncovered, f"op-table rows without cases in tests/test_bad_input.py: {uncovered}"


def test_a_crash_is_reported_by_name(tmp_path):
    """The harness itself: a case that kills the child is reported as a crash, and the cases after
    it still run."""
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, sys, signal\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import test_bad_input as T\n"
        "T.all_cases = lambda: [T.Case('fine', lambda: 1, T.OK()),\n"
        "    T.Case('boom', lambda: os.kill(os.getpid(), signal.SIGSEGV), T.OK()),\n"
        "    T.Case('after', lambda: 1 / 0, ZeroDivisionError)]\n"
        "T.child(int(sys.argv[2]))\n"
    )
    saved = __file__
    try:
        globals()["__file__"] = str(script)
        results = run_table(timeout=60)
    finally:
        globals()["__file__"] = saved
    assert results["fine"][0] == "pass" and results["after"][0] == "pass"
    assert results["boom"][0] == "crash" and "signal 11" in results["boom"][1]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.path.insert(0, ROOT)
        child(int(sys.argv[2]))
    else:
        print(__doc__)
