"""Tensor: a C-contiguous float32/float64 array, its gradient, and the node that produced it."""
from __future__ import annotations

import collections
import math
import numbers

import numpy as np

from . import ops
from . import autograd
from .autograd import (Constant, Node, _memory_owner, _recording, is_grad_enabled, mark_modified, run_backward,
                       version_counter)

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
    out = np.array(arr, dtype=dt, order="C")
    if _recording.active is not None:  # fastgrad.capture follows arguments through copies
        _recording.active.converted(arr, out)
    return out


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
    shape = property(lambda self: self.data.shape, doc="The shape, a tuple of ints (also `size()`).")
    ndim = property(lambda self: self.data.ndim, doc="The number of dimensions (also `dim()`).")
    dtype = property(lambda self: self.data.dtype, doc="The NumPy dtype: float32 or float64.")

    @property
    def grad_fn(self):
        """The node of the op that computed this tensor (PyTorch's `grad_fn`), None for a leaf.

        `grad_fn.name()` is the op's name and `grad_fn.next_functions` one `(node, 0)` pair per
        input of the op, node None for a leaf or a constant: enough to walk the graph.
        """
        return self._node

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
        if _recording.active is not None:  # fastgrad.capture is recording a step
            _recording.active.backward(self, gradient, retain_graph, keep_grads)
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
        return _apply2(ops.add, self, coerce(other, self))

    def __radd__(self, other):
        return _apply2(ops.add, coerce(other, self), self)

    def __sub__(self, other):
        return _apply2(ops.sub, self, coerce(other, self))

    def __rsub__(self, other):
        return _apply2(ops.sub, coerce(other, self), self)

    def __mul__(self, other):
        return _apply2(ops.mul, self, coerce(other, self))

    def __rmul__(self, other):
        return _apply2(ops.mul, coerce(other, self), self)

    def __truediv__(self, other):
        return _apply2(ops.div, self, coerce(other, self))

    def __rtruediv__(self, other):
        return _apply2(ops.div, coerce(other, self), self)

    def __matmul__(self, other):
        return _apply2(ops.matmul, self, coerce(other, self))

    def __rmatmul__(self, other):
        return _apply2(ops.matmul, coerce(other, self), self)

    def __neg__(self):
        return _apply1(ops.neg, self)

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
        if isinstance(exponent, (Tensor, np.ndarray)):  # a tensor exponent: gradients to both sides
            return apply(ops.pow_tensor, self, coerce(exponent, self))
        if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
            raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
        # a Python int or float: a NumPy scalar (np.float64(2)) would upcast float32 data to float64
        exponent = int(exponent) if isinstance(exponent, numbers.Integral) else float(exponent)
        return apply(ops.pow_, self, exponent=exponent)

    def __getitem__(self, index):
        return apply(ops.getitem, self, index=_plain_index(index))

    # --- methods -----------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """The sum over `axis` (None: every axis), as a tensor; d/dx = 1 broadcast back.

        axis/dim: None, an int or a tuple of ints (negative counts from the end); `dim` is PyTorch's
        spelling of `axis` and `keepdim` of `keepdims` (give one of each pair, not both).
        keepdims/keepdim: keep the reduced axes as size 1.

        >>> tensor([[1.0, 2.0], [3.0, 4.0]]).sum(dim=1)
        tensor([3., 7.])
        """
        axis, keepdims = _reduce_args("sum", axis, keepdims, dim, keepdim)
        return apply(ops.sum_, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """The mean over `axis` (None: every axis); d/dx = 1/count broadcast back.

        Arguments as `sum`; averaging over an empty axis raises ValueError.

        >>> tensor([[1.0, 2.0], [3.0, 4.0]]).mean(axis=0)
        tensor([2., 3.])
        """
        axis, keepdims = _reduce_args("mean", axis, keepdims, dim, keepdim)
        return apply(ops.mean, self, axis=axis, keepdims=keepdims)

    def max(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """The maximum over an axis; the gradient goes to the first maximal entry.

        Two conventions, chosen by how the axis is spelled:
        - `x.max()` and the lecture's `x.max(axis=a, keepdims=False)` (a: None, an int or a tuple)
          return the values only, a tensor;
        - PyTorch's `x.max(d)` / `x.max(dim=d, keepdim=False)` (d: an int) return a namedtuple
          `(values, indices)`: the values tensor and a NumPy int64 array of the position of the
          first maximum along d (so `_, pred = out.max(1)` works as in PyTorch);
        - `x.max(other)` with a tensor `other` is `fastgrad.maximum(x, other)`, as in PyTorch.
        A NaN counts as larger than any number (the first NaN wins, as in numpy.max).

        >>> x = tensor([[1.0, 5.0], [7.0, 2.0]])
        >>> x.max(axis=1)
        tensor([5., 7.])
        >>> x.max(1).indices
        array([1, 0])
        """
        if isinstance(dim, Tensor):
            return apply(ops.maximum, self, coerce(dim, self))
        return _max_or_min(self, "max", dim, keepdim, axis, keepdims)

    def exp(self):
        """e**x elementwise; d/dx = e**x (the saved output).

        >>> tensor([0.0, 1.0]).exp()
        tensor([1.      , 2.718282])
        """
        return _apply1(ops.exp, self)

    def log(self):
        """The natural logarithm elementwise; d/dx = 1/x.

        >>> tensor([1.0, 4.0]).log()
        tensor([0.       , 1.3862944])
        """
        return _apply1(ops.log, self)

    def relu(self):
        """max(0, x) elementwise; the gradient is 0 where x <= 0 (ReLU'(0) = 0).

        >>> tensor([-1.0, 0.0, 2.0]).relu()
        tensor([0., 0., 2.])
        """
        return _apply1(ops.relu, self)

    def sigmoid(self):
        """1 / (1 + e**-x) elementwise (never overflows); d/dx = s (1 - s).

        >>> tensor([0.0]).sigmoid()
        tensor([0.5])
        """
        return _apply1(ops.sigmoid, self)

    def tanh(self):
        """tanh(x) elementwise; d/dx = 1 - tanh(x)**2.

        >>> tensor([0.0]).tanh()
        tensor([0.])
        """
        return _apply1(ops.tanh, self)

    def reshape(self, *shape):
        """The same elements (C order) in a new shape: `x.reshape(2, 3)` or `x.reshape((2, -1))`.

        >>> tensor([1.0, 2.0, 3.0, 4.0]).reshape(2, 2)
        tensor([[1., 2.],
                [3., 4.]])
        """
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return apply(ops.reshape, self, shape=shape)

    def transpose(self, *axes):
        """The axes permuted: reversed when no axes are given; with one sequence `axes`, axis i of
        the result is axis axes[i] (NumPy's meaning); with two ints `transpose(d0, d1)`, axes d0 and
        d1 swapped (PyTorch's meaning; NumPy's reading of (0, 1) on a matrix, the identity, is
        never what such code means).

        >>> tensor([[1.0, 2.0]]).transpose().shape, tensor(np.zeros((2, 3, 4))).transpose(0, 2).shape
        ((2, 1), (4, 3, 2))
        """
        if len(axes) == 2 and all(isinstance(a, (int, np.integer)) for a in axes):
            d0, d1 = (_one_axis("transpose", d, self.ndim) for d in axes)
            perm = list(range(self.ndim))
            perm[d0], perm[d1] = d1, d0
            axes = tuple(perm)
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        return apply(ops.transpose, self, axes=axes or None)

    @property
    def T(self):
        """The transpose (axes reversed), as `transpose()`."""
        return apply(ops.transpose, self)

    # --- PyTorch surface: reductions with indices --------------------------------------------
    def min(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """The minimum over an axis, as `-(-x).max(...)`: the gradient goes to the first minimal entry.

        The same conventions as `max`: `x.min()` and `x.min(axis=a)` return the values;
        `x.min(d)` / `x.min(dim=d)` return a namedtuple `(values, indices)` (indices: a NumPy int64
        array); `x.min(other)` with a tensor is the elementwise minimum `-maximum(-x, -other)`.

        >>> tensor([[1.0, 5.0], [7.0, 2.0]]).min(dim=0)
        ValuesIndices(values=tensor([1., 2.]), indices=array([0, 1]))
        """
        if isinstance(dim, Tensor):
            return -apply(ops.maximum, -self, -coerce(dim, self))
        return _max_or_min(self, "min", dim, keepdim, axis, keepdims)

    def argmax(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """The index of the first maximum along `dim` (None: of the flattened tensor).

        Returns a NumPy int64 array (fastgrad tensors hold floats only), not a tensor: it has no
        gradient, indexes tensors and compares with label arrays, e.g. `(out.argmax(1) == y).mean()`.

        >>> tensor([[1.0, 5.0], [7.0, 2.0]]).argmax(dim=1)
        array([1, 0])
        """
        axis, keepdims = _reduce_args("argmax", axis, keepdims, dim, keepdim)
        return _arg_index("argmax", self.data, axis, keepdims)

    def argmin(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """The index of the first minimum along `dim` (None: of the flattened tensor), int64 NumPy.

        >>> tensor([[1.0, 5.0], [7.0, 2.0]]).argmin(1)
        array([0, 1])
        """
        axis, keepdims = _reduce_args("argmin", axis, keepdims, dim, keepdim)
        return _arg_index("argmin", self.data, axis, keepdims)

    def tolist(self):
        """The data as (nested) Python lists of floats; a 0-d tensor gives a float.

        >>> tensor([[1.0, 2.0]]).tolist()
        [[1.0, 2.0]]
        """
        return self.data.tolist()

    def requires_grad_(self, requires_grad=True):
        """Set `requires_grad` on this leaf in place and return it (PyTorch's `w.requires_grad_()`).

        >>> tensor([1.0]).requires_grad_().requires_grad
        True
        """
        if self._node is not None and not requires_grad:
            raise RuntimeError(
                "requires_grad_(False) on a tensor computed by a recorded op: use detach() to cut it from the graph"
            )
        self.requires_grad = bool(requires_grad) or self._node is not None
        return self

    # --- PyTorch surface: sizes and shapes ----------------------------------------------------
    def size(self, dim=None):
        """The shape as a tuple, or the length of axis `dim` as an int (PyTorch's `x.size()`).

        >>> tensor([[1.0, 2.0, 3.0]]).size(), tensor([[1.0, 2.0, 3.0]]).size(-1)
        ((1, 3), 3)
        """
        if dim is None:
            return self.data.shape
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"size: dim must be an int or None, got {dim!r}")
        return self.data.shape[ops.normalize_axis(dim, self.ndim, "size")[0]]

    def numel(self) -> int:
        """The number of elements (the product of the shape; 1 for a 0-d tensor).

        >>> tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).numel()
        6
        """
        return self.data.size

    def dim(self) -> int:
        """The number of dimensions, as `ndim`.

        >>> tensor([[1.0, 2.0]]).dim()
        2
        """
        return self.data.ndim

    def view(self, *shape):
        """`reshape` under PyTorch's name (fastgrad data is always contiguous, so any view works).

        >>> tensor([1.0, 2.0, 3.0, 4.0]).view(2, -1).shape
        (2, 2)
        """
        return self.reshape(*shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """Axes start_dim..end_dim (inclusive) merged into one; a 0-d tensor becomes shape (1,).

        >>> tensor(np.zeros((2, 3, 4))).flatten(1).shape
        (2, 12)
        """
        if self.ndim == 0:
            return self.reshape(1)
        start, end = (_one_axis("flatten", d, self.ndim) for d in (start_dim, end_dim))
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
        shape = self.shape
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def unsqueeze(self, dim):
        """A new axis of size 1 inserted at `dim` (in [-ndim-1, ndim]; negative counts from the end).

        >>> tensor([1.0, 2.0]).unsqueeze(0).shape, tensor([1.0, 2.0]).unsqueeze(-1).shape
        ((1, 2), (2, 1))
        """
        axis = _one_axis("unsqueeze", dim, self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, dim=None):
        """Axes of size 1 removed: all of them (dim=None) or those among `dim` (an int or a tuple);
        an axis in `dim` whose size is not 1 is kept, as in PyTorch.

        >>> tensor(np.zeros((2, 1, 3, 1))).squeeze().shape, tensor(np.zeros((2, 1, 3, 1))).squeeze(1).shape
        ((2, 3), (2, 3, 1))
        """
        if dim is None:
            axes = range(self.ndim)
        else:
            dims = dim if isinstance(dim, (tuple, list)) else (dim,)
            axes = [_one_axis("squeeze", d, self.ndim) for d in dims] if self.ndim else []
        drop = {a for a in axes if self.shape[a] == 1}
        return self.reshape(tuple(n for a, n in enumerate(self.shape) if a not in drop))

    def permute(self, *dims):
        """The axes reordered: axis i of the result is axis dims[i] of self (a permutation).

        >>> tensor(np.zeros((2, 3, 4))).permute(2, 0, 1).shape
        (4, 2, 3)
        """
        if len(dims) == 1 and not isinstance(dims[0], (int, np.integer)):
            dims = tuple(dims[0])
        return apply(ops.transpose, self, axes=dims)

    # --- PyTorch surface: casts and copies -----------------------------------------------------
    def to(self, dtype, copy=False):
        """This tensor as `dtype` (float32 or float64, e.g. "float64", np.float64), differentiably:
        the gradient is cast back. Returns self when the dtype already matches, unless copy=True.
        `x.to("cpu")` returns self (fastgrad runs on the CPU only).

        >>> tensor([1.0, 2.0]).to("float64").dtype
        dtype('float64')
        """
        if isinstance(dtype, str) and dtype == "cpu":
            return self
        dt = resolve_dtype(dtype)
        if dt == self.data.dtype and not copy:
            return self
        return apply(ops.cast, self, dtype=dt.name)

    def float(self):
        """This tensor as float32 (self if it is float32 already); the gradient is cast back.

        >>> tensor([1.0], dtype="float64").float().dtype
        dtype('float32')
        """
        return self.to(np.float32)

    def double(self):
        """This tensor as float64 (self if it is float64 already); the gradient is cast back.

        >>> tensor([1.0]).double().dtype
        dtype('float64')
        """
        return self.to(np.float64)

    def cpu(self):
        """Self (fastgrad runs on the CPU); for PyTorch code that calls `.cpu()`."""
        return self

    def clone(self):
        """A copy of the data that stays in the graph (the gradient flows back), unlike `detach()`.

        >>> x = tensor([1.0, 2.0], requires_grad=True); y = x.clone(); y.sum().backward(); x.grad
        array([1., 1.], dtype=float32)
        """
        return apply(ops.cast, self, dtype=self.data.dtype.name)

    # --- PyTorch surface: elementwise -----------------------------------------------------------
    def abs(self):
        """|x| elementwise; d/dx = sign(x), 0 at x = 0.

        >>> tensor([-2.0, 0.0, 3.0]).abs()
        tensor([2., 0., 3.])
        """
        return apply(ops.abs_, self)

    def sqrt(self):
        """sqrt(x) elementwise (nan for x < 0); d/dx = 1 / (2 sqrt(x)), inf at 0.

        >>> tensor([4.0, 9.0]).sqrt()
        tensor([2., 3.])
        """
        return apply(ops.sqrt, self)

    def clamp(self, min=None, max=None):
        """x clipped to [min, max] (Python numbers; either may be None); the gradient is 1 where
        min <= x <= max (bounds included, as PyTorch) and 0 outside.

        >>> tensor([-2.0, 0.5, 3.0]).clamp(min=0.0, max=1.0)
        tensor([0. , 0.5, 1. ])
        """
        return apply(ops.clamp, self, min=_bound("clamp", min), max=_bound("clamp", max))

    def clip(self, min=None, max=None):
        """The same as `clamp` (PyTorch's and NumPy's other name)."""
        return self.clamp(min, max)

    def pow(self, exponent):
        """x ** exponent: a Python number (the `pow` row) or a tensor (gradients to both).

        >>> tensor([2.0, 3.0]).pow(2)
        tensor([4., 9.])
        """
        return self**exponent

    def __rpow__(self, base):
        """base ** x for a number or array base, e.g. `2 ** x`; d/dx = base**x ln(base)."""
        return apply(ops.pow_tensor, coerce(base, self), self)

    def softmax(self, dim):
        """softmax along `dim`, as `fastgrad.functional.softmax(x, dim)`.

        >>> tensor([[0.0, 0.0]]).softmax(1)
        tensor([[0.5, 0.5]])
        """
        return apply(ops.softmax, self, dim=dim)

    def log_softmax(self, dim):
        """log softmax along `dim` (stable), as `fastgrad.functional.log_softmax(x, dim)`.

        >>> tensor([[0.0, 0.0]]).log_softmax(1).exp()
        tensor([[0.5, 0.5]])
        """
        return apply(ops.log_softmax, self, dim=dim)


def _plain_index(index):
    """Tensors and lists inside an index become arrays (they index; they are not differentiated).

    As in NumPy and PyTorch, a boolean one is a mask and an integer one picks positions; a float
    one (a float tensor too) raises IndexError. An empty list picks nothing.
    """
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        data = index.data
        if data.dtype.kind not in "biu":
            raise IndexError(
                f"getitem: a tensor used as an index must hold booleans (a mask) or integers, "
                f"not {data.dtype}; index with a NumPy integer array or a list of ints instead"
            )
        return data
    if isinstance(index, list):
        arr = np.asarray(index)
        return arr.astype(np.intp) if arr.size == 0 and arr.dtype.kind == "f" else arr
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
        if data.dtype != dtype and type(t) is not Constant:  # a Constant (labels) is integer data
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
    if _recording.active is not None:  # fastgrad.capture is recording a step
        _recording.active.op(op, inputs, attrs, result)
    return result


def _apply1(op: ops.Op, x: Tensor) -> Tensor:
    return apply(op, x)


def _apply2(op: ops.Op, a: Tensor, b: Tensor) -> Tensor:
    return apply(op, a, b)


if autograd._tape is not None:  # the compiled tape (see autograd.py): the same apply, cheaper
    autograd._tape.bind(Tensor, autograd._state, autograd._debug, autograd._inplace, autograd._sequence,
                        autograd._DebugRecord, autograd._check_versions, version_counter, coerce, ops,
                        Tensor.backward, autograd._grad_off, autograd.Constant)
    apply = autograd._tape.apply  # noqa: F811
    _apply1 = autograd._tape.apply1  # noqa: F811
    _apply2 = autograd._tape.apply2  # noqa: F811
    # the arithmetic operators straight into the tape (one Python frame less per op)
    for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "neg"):
        setattr(Tensor, f"__{_name}__", getattr(autograd._tape, f"tensor_{_name}"))
    for _name in ("exp", "log", "relu", "sigmoid", "tanh"):  # the unary methods too, same docs
        _method = getattr(autograd._tape, f"tensor_{_name}")
        _method.__doc__ = getattr(Tensor, _name).__doc__
        setattr(Tensor, _name, _method)
    del _name, _method
    _python_backward = Tensor.backward
    Tensor.backward = autograd._tape.tensor_backward  # one-element roots by the short path
    Tensor.backward.__doc__ = _python_backward.__doc__


# ---------------------------------------------------------------------------------------------
# PyTorch surface: argument spellings and reductions with indices

ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])
ValuesIndices.__doc__ = """What `x.max(dim)` and `x.min(dim)` return: the values (a tensor) and the
indices (a NumPy int64 array), as PyTorch's `torch.return_types.max`."""


def _reduce_args(op: str, axis, keepdims, dim, keepdim):
    """(axis, keepdims) from either spelling: NumPy's axis/keepdims or PyTorch's dim/keepdim."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; they are one argument, give one")
        axis = dim
    if keepdim is not None:
        if keepdims is not None:
            raise TypeError(f"{op}: got both keepdims= and keepdim=; they are one argument, give one")
        keepdims = keepdim
    return axis, bool(keepdims)


def _arg_index(op: str, data: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """np.argmax/argmin as an int64 array, with fastgrad's errors (ValueError for empty or bad axes)."""
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{op}: dim must be an int or None, got {axis!r}")
        (axis,) = ops.normalize_axis(axis, data.ndim, op)
        if data.shape[axis] == 0:
            raise ValueError(f"{op}: cannot reduce an empty axis of a tensor of shape {data.shape}")
    elif data.size == 0:
        raise ValueError(f"{op}: the tensor is empty (shape {data.shape})")
    fn = np.argmax if op == "argmax" else np.argmin
    return np.asarray(fn(data, axis=axis, keepdims=keepdims), dtype=np.int64)


def _max_or_min(x: Tensor, op: str, dim, keepdim, axis, keepdims):
    """Values only for axis= (the lecture) or no axis; (values, indices) for PyTorch's dim."""
    if dim is not None and axis is not None:
        raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; give one")
    if keepdim is not None and keepdims is not None:
        raise TypeError(f"{op}: got both keepdims= and keepdim=; give one")
    keep = bool(keepdims if keepdim is None else keepdim)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))):
        raise TypeError(
            f"{op}(dim) takes one int dim and returns (values, indices), got {dim!r}; "
            f"for the values over several axes use {op}(axis={dim!r})"
        )
    reduce_axis = axis if dim is None else int(dim)
    if op == "max":
        values = apply(ops.max_, x, axis=reduce_axis, keepdims=keep)
    else:
        values = -apply(ops.max_, -x, axis=reduce_axis, keepdims=keep)
    if dim is None:
        return values
    return ValuesIndices(values, _arg_index("arg" + op, x.data, int(dim), keep))


def _one_axis(op: str, dim, ndim: int) -> int:
    """One int axis in [-ndim, ndim) as a non-negative int, else TypeError/ValueError naming the op."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    return ops.normalize_axis(dim, ndim, op)[0]


def _bound(op: str, value):
    """A clamp bound: None or a Python float (a NumPy scalar would upcast float32 data)."""
    if value is None:
        return None
    if isinstance(value, Tensor) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: min and max must be Python numbers or None, got {type(value).__name__}")
    return float(value)
