"""Tensor: a C-contiguous float32/float64 array, its gradient, and the node that produced it."""
from __future__ import annotations

import numbers

import numpy as np

from . import ops
from .autograd import Node, _memory_owner, is_grad_enabled, mark_modified, run_backward, version_counter

_DTYPES = {np.dtype(np.float32), np.dtype(np.float64)}


class _Default:
    dtype = np.dtype(np.float32)  # process-wide, as torch.set_default_dtype


_default = _Default()


def set_default_dtype(dtype) -> None:
    """The dtype of new tensors made from Python numbers, lists, ints and bools: float32 or float64.

    NumPy float32/float64 arrays keep their own dtype whatever the default (as in PyTorch).
    """
    if dtype is None:
        raise TypeError("set_default_dtype: expected float32 or float64, got None")
    _default.dtype = resolve_dtype(dtype)


def get_default_dtype() -> np.dtype:
    """The current default dtype (float32 unless `set_default_dtype` changed it)."""
    return _default.dtype


def resolve_dtype(dtype) -> np.dtype:
    """The default dtype for None; float32 or float64 as asked; TypeError for anything else."""
    if dtype is None:
        return _default.dtype
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _DTYPES:
        raise TypeError(f"fastgrad tensors are float32 or float64, not {dtype!r}")
    return dt


def to_array(data, dtype=None) -> np.ndarray:
    """`data` (array-like, number, Tensor) as a fresh C-contiguous array.

    dtype None infers it as PyTorch does: a float32/float64 NumPy array (or NumPy float scalar, or
    Tensor) keeps its dtype; Python numbers, lists, ints, bools and other arrays take the default.
    """
    if isinstance(data, Tensor):
        data = data.data
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"cannot make a {resolve_dtype(dtype)} tensor from {type(data).__name__}: {e}"
        ) from None
    if arr.dtype.kind not in "biuf":  # NumPy would parse strings and turn None into nan
        raise TypeError(
            f"cannot make a {resolve_dtype(dtype)} tensor from {type(data).__name__} of {arr.dtype} "
            "values: expected numbers (bool, int or float)"
        )
    if dtype is None and arr.dtype in _DTYPES and isinstance(data, (np.ndarray, np.generic)):
        dt = arr.dtype
    else:
        dt = resolve_dtype(dtype)
    return np.array(arr, dtype=dt, order="C")


class Tensor:
    """An n-dimensional array that records the ops applied to it, for reverse-mode autodiff.

    Create one with `fastgrad.tensor(data, dtype=None, requires_grad=False, name=None)`.
    `data` is always a C-contiguous float32 or float64 ndarray; `grad` is None until a backward
    pass reaches this tensor, then an array of the same shape and dtype.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "name", "_vc", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, dtype=None, requires_grad=False, name=None):
        self.data = to_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self.name = name
        self._vc = None  # version counter, created on first need (autograd.mark_modified)

    @classmethod
    def _wrap(cls, data: np.ndarray, requires_grad: bool = False) -> "Tensor":
        """A tensor around `data` as it is (already contiguous, float32/float64): no copy."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._node = None
        t.name = None
        t._vc = None
        return t

    # --- array facts -------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user (or under no_grad), False for recorded op outputs."""
        return self._node is None

    def __bool__(self):
        if self.data.size != 1:  # as NumPy: the truth of several values is ambiguous
            raise ValueError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                "use .any() or .all() on a comparison, e.g. (x > 0).all()"
            )
        return bool(self.data.reshape(()))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ", dtype=float64" if self.dtype == np.float64 else ""
        if self._node is not None:
            extra += f", grad_fn={self._node.op.name}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def numpy(self) -> np.ndarray:
        """The data array (shared, not copied)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut from the graph (a leaf not requiring grad).

        It shares the version counter too: an in-place change through either is seen by backward.
        """
        t = Tensor._wrap(self.data)
        t._vc = version_counter(self)
        return t

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's data has had (shared with views, as in PyTorch)."""
        return 0 if self._vc is None else self._vc[0]

    # --- backward ----------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph: bool = False, keep_grads: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

        gradient: the upstream gradient, of self's shape; may be omitted for a one-element tensor.
        retain_graph: keep the saved buffers so that backward can run through this graph again.
        keep_grads: also keep every inner node's gradient (for `fastgrad.viz` drawings).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: create the leaves with "
                "requires_grad=True (and not inside no_grad())"
            )
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() of a non-scalar tensor of shape {self.shape} needs a gradient "
                    "argument of that shape"
                )
            g = np.empty(self.data.shape, self.data.dtype)
            g.fill(1)  # np.ones costs twice as much for this one element (a Python-level wrapper)
        else:
            g = to_array(gradient, self.dtype)
            if g.shape != self.shape:
                raise ValueError(
                    f"backward: gradient has shape {g.shape} but the tensor has shape {self.shape}"
                )
        if self._node is None:
            self.grad = g if self.grad is None else self.grad + g
        else:
            run_backward(self, g, retain_graph, keep_grads)

    # --- operators ---------------------------------------------------------------------------
    def __add__(self, other):
        return apply(ops.add, self, coerce(other, self))

    def __radd__(self, other):
        return apply(ops.add, coerce(other, self), self)

    def __sub__(self, other):
        return apply(ops.sub, self, coerce(other, self))

    def __rsub__(self, other):
        return apply(ops.sub, coerce(other, self), self)

    def __mul__(self, other):
        return apply(ops.mul, self, coerce(other, self))

    def __rmul__(self, other):
        return apply(ops.mul, coerce(other, self), self)

    def __truediv__(self, other):
        return apply(ops.div, self, coerce(other, self))

    def __rtruediv__(self, other):
        return apply(ops.div, coerce(other, self), self)

    def __matmul__(self, other):
        return apply(ops.matmul, self, coerce(other, self))

    def __rmatmul__(self, other):
        return apply(ops.matmul, coerce(other, self), self)

    def __neg__(self):
        return apply(ops.neg, self)

    def __pos__(self):
        return self

    # comparisons: boolean results without gradient (see BoolArray); tensors stay hashable by identity
    __hash__ = object.__hash__

    def __eq__(self, other):
        return _compare(np.equal, self, other)

    def __ne__(self, other):
        return _compare(np.not_equal, self, other)

    def __lt__(self, other):
        return _compare(np.less, self, other)

    def __le__(self, other):
        return _compare(np.less_equal, self, other)

    def __gt__(self, other):
        return _compare(np.greater, self, other)

    def __ge__(self, other):
        return _compare(np.greater_equal, self, other)

    # in-place: update .data itself (views and detached copies see it), as PyTorch does
    def __iadd__(self, other):
        return self._inplace(np.add, other, "+=")

    def __isub__(self, other):
        return self._inplace(np.subtract, other, "-=")

    def __imul__(self, other):
        return self._inplace(np.multiply, other, "*=")

    def __itruediv__(self, other):
        return self._inplace(np.divide, other, "/=")

    def _inplace(self, ufunc, other, symbol):
        """self.data <- ufunc(self.data, other), broadcasting `other` into self's shape; not recorded.

        Allowed on tensors that do not require grad, and on any tensor inside `no_grad()`; a leaf
        that requires grad outside it raises (as in PyTorch), and so does a recorded output or an
        operand that requires grad: the tape does not record in-place ops, so the gradient would be
        lost. Every change bumps the version counter, so a backward that needs the old value raises.
        """
        if is_grad_enabled():
            if self.requires_grad:
                if self._node is None:
                    raise RuntimeError(
                        f"'{symbol}' on a leaf tensor that requires grad: update parameters inside "
                        f"`with fastgrad.no_grad():` (e.g. W -= lr * W.grad), or write `W = W {symbol[0]} ...` "
                        "to build a new tensor in the graph"
                    )
                raise RuntimeError(
                    f"'{symbol}' on a tensor that requires grad (the output of op '{self._node.op.name}'): "
                    f"in-place ops are not recorded on the tape; write `x = x {symbol[0]} y` instead"
                )
            if isinstance(other, Tensor) and other.requires_grad:
                raise RuntimeError(
                    f"'{symbol}' with an operand that requires grad: in-place ops are not recorded on "
                    f"the tape, so its gradient would be lost; write `x = x {symbol[0]} y` instead"
                )
        o = coerce(other, self).data
        data = self.data
        if o.shape != data.shape and ops.broadcast_shape(symbol, data.shape, o.shape) != data.shape:
            raise ValueError(
                f"{symbol}: an operand of shape {o.shape} cannot be broadcast into a tensor of shape "
                f"{data.shape} (in-place ops keep the target's shape)"
            )
        if not data.flags.writeable:
            raise ValueError(f"{symbol}: this tensor's data is read-only (a read-only NumPy array?)")
        ufunc(data, o, out=data)
        mark_modified(self)
        return self

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
            raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
        # a Python int or float: a NumPy scalar (np.float64(2)) would upcast float32 data to float64
        exponent = int(exponent) if isinstance(exponent, numbers.Integral) else float(exponent)
        return apply(ops.pow_, self, exponent=exponent)

    def __getitem__(self, index):
        return apply(ops.getitem, self, index=_plain_index(index))

    # --- methods -----------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return apply(ops.sum_, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return apply(ops.mean, self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return apply(ops.max_, self, axis=axis, keepdims=keepdims)

    def exp(self):
        return apply(ops.exp, self)

    def log(self):
        return apply(ops.log, self)

    def relu(self):
        return apply(ops.relu, self)

    def sigmoid(self):
        return apply(ops.sigmoid, self)

    def tanh(self):
        return apply(ops.tanh, self)

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return apply(ops.reshape, self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        return apply(ops.transpose, self, axes=axes or None)

    @property
    def T(self):
        return apply(ops.transpose, self)


def _plain_index(index):
    """Tensors inside an index become integer arrays (they index; they are not differentiated)."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data.astype(np.intp)
    if isinstance(index, list):
        return np.asarray(index)
    return index


class BoolArray(np.ndarray):
    """The result of comparing tensors (`x == y`, `x > 0`, ...): a NumPy bool array, never in the graph.

    It is an ndarray (index with it, `.sum()`, `.all()`, `.any()`, `.mean()`, `.item()` as NumPy) plus
    PyTorch's conversions, so `(pred == y).float().mean()` and `(pred == y).sum().item()` work.
    """

    def float(self) -> Tensor:
        """A float32 tensor of 0.0 and 1.0 (no gradient)."""
        return Tensor._wrap(np.array(self, dtype=np.float32, order="C"))

    def double(self) -> Tensor:
        """A float64 tensor of 0.0 and 1.0 (no gradient)."""
        return Tensor._wrap(np.array(self, dtype=np.float64, order="C"))

    def long(self) -> np.ndarray:
        """An int64 array of 0 and 1."""
        return np.asarray(self, dtype=np.int64)

    def numpy(self) -> np.ndarray:
        """The same values as a plain ndarray (shared)."""
        return self.view(np.ndarray)


def _compare(ufunc, t: Tensor, other):
    """ufunc(t.data, other) as a BoolArray; NotImplemented for non-numbers (so `t == None` is False)."""
    if isinstance(other, Tensor):
        o = other.data  # no gradient flows: float32 against float64 is fine here
    elif isinstance(other, (numbers.Number, np.ndarray, np.generic, list, tuple)):
        o = np.asarray(other)
        if o.dtype.kind not in "biuf":
            return NotImplemented
    else:
        return NotImplemented
    try:
        out = ufunc(t.data, o)
    except ValueError:
        raise ValueError(
            f"cannot compare a tensor of shape {t.shape} with shape {np.shape(o)}: they do not broadcast"
        ) from None
    return np.asarray(out).view(BoolArray)


def coerce(value, like: Tensor) -> Tensor:
    """`value` as a tensor of `like`'s dtype: Python numbers and arrays become constants.

    Two tensors of different dtypes raise TypeError: fastgrad never upcasts silently.
    """
    if isinstance(value, Tensor):
        if value.data.dtype != like.data.dtype:
            raise TypeError(
                f"cannot combine a {like.dtype} tensor with a {value.dtype} tensor; convert one "
                "explicitly, e.g. fastgrad.tensor(x.data, dtype='float64')"
            )
        return value
    if type(value) is int or type(value) is float:  # the common constant, by the shortest path
        return Tensor._wrap(np.array(value, dtype=like.data.dtype))
    if isinstance(value, (numbers.Number, np.ndarray, list, tuple)):
        return Tensor._wrap(to_array(value, like.data.dtype))
    raise TypeError(f"cannot combine a tensor with {type(value).__name__}")


def apply(op: ops.Op, *inputs: Tensor, **attrs) -> Tensor:
    """Run `op` forward on the inputs' data and, when a gradient is wanted, record its node."""
    # one plain loop, no comprehension: this runs once per op and dominates small graphs
    arrays = []
    requires_grad = False
    dtype = inputs[0].data.dtype
    for t in inputs:
        data = t.data
        if data.dtype != dtype:
            raise TypeError(f"{op.name}: inputs mix {dtype} and {data.dtype}; convert one explicitly")
        arrays.append(data)
        if t.requires_grad:
            requires_grad = True
    requires_grad = requires_grad and is_grad_enabled()
    if op.takes_needs:
        attrs["needs"] = tuple([requires_grad and t.requires_grad for t in inputs])
    out, saved = op.forward(*arrays, **attrs)
    if type(out) is not np.ndarray:  # NumPy returns scalars from 0-d arithmetic
        out = np.array(out)
    result = Tensor._wrap(out, requires_grad)
    if out.base is not None:  # a view of an input's data (reshape, basic indexing): one version counter
        owner = _memory_owner(out)
        for t in inputs:
            if _memory_owner(t.data) is owner:
                result._vc = version_counter(t)
                break
    if requires_grad:
        result._node = Node(op, inputs, saved, out, result._vc)  # out_vc is set when a counter is made
    return result
