"""Capture and replay of a whole training step: `fastgrad.capture`.

    @fg.capture
    def train_step(X, y):
        opt.zero_grad()
        loss = fg.softmax_cross_entropy(model(X), y) + model.l2(reg)
        loss.backward()
        opt.step()
        return loss

    for X, y in batches:
        loss = train_step(X, y)      # the first call with these shapes records, later calls replay

The first call with a given signature (the shapes and dtypes of the array and tensor arguments, the
values of the other arguments, the grad mode) runs the function eagerly, as it would run without
the decorator, while a recorder watches every op, `zero_grad()`, `backward()` and optimizer step.
From that record it builds a *plan*: every buffer of the step allocated once (the forward outputs
and saved buffers of that first call, the gradients, scratch) and a program of C instructions over
them (fastgrad/_plan.pyx) that computes the forward pass, the loss and the backward pass with the
same kernels, in the same order, as the eager ops do. Later calls with the same signature copy the
arguments into the plan's input buffers, run the program without Python per op, then run the
recorded optimizer steps (which read the learning rate and every hyperparameter at each call, so
a scheduler keeps working). A new signature (the last partial batch, another dtype) records again:
up to `cache_size` plans are kept, oldest dropped first.

What the replay gives is what the eager step gives, bit for bit (tests/test_capture.py runs both
for 100 steps), with one contract that CUDA graphs and tinygrad's TinyJit share:
  - the tensors the step returns are the plan's own buffers, overwritten by the next call: take
    `.item()` or `.clone()` of what you keep;
  - the step's Python runs once, at capture: Python control flow, side effects (printing,
    appending to a list) and values read from outside the arguments (a global `reg`) are frozen
    then. Pass what changes as an argument (a change records a new plan), or change it in an
    optimizer's param_groups.
A step that cannot be replayed exactly is never replayed: it runs eagerly every time, and the
first such call warns once, in one line, why (`CaptureWarning`; also `step.last_reason`). That
covers ops without a replay rule (dropout draws new masks each step; batch norm updates running
statistics), random draws, in-place changes of tensors outside the optimizer, gradients that are
not zeroed in the step (accumulation across calls), arguments that reach the graph only through a
NumPy conversion, and return values that are not tensors.
"""
from __future__ import annotations

import functools
import sys
import warnings
from heapq import heappop, heappush

import numpy as np

from . import _linalg as L
from . import _plan
from . import autograd
from .autograd import Constant
from . import flat as _flat
from .tensor import Tensor

__all__ = ["capture", "Captured", "CaptureWarning"]


class CaptureWarning(UserWarning):
    """A captured step runs eagerly (the message says why)."""


class _Unsupported(Exception):
    """The record cannot become a plan; the message is the one-line reason."""


# --- the recorder: what the eager run of the step did ------------------------------------------


class _Recorder:
    """Watches one eager call of the step (installed as autograd._recording.active and in the
    compiled tape while it runs; the hooks are no-ops otherwise)."""

    def __init__(self):
        self.ops = []  # (op, inputs, attrs, result, node, saved), in the order they ran
        self.zeroed = {}  # id -> tensor whose gradient zero_grad() dropped or zeroed
        self.root = None  # the tensor backward() ran from
        self.steps = []  # optimizers whose step() ran, in order
        self.stepping = 0  # inside an optimizer's step()
        self.conversions = []  # (source array, its converted copy), in order
        self.draws = {}  # id(keep mask) -> (generator, shape, mask): functional.dropout's draws
        self.reason = None

    def fail(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    # hooks --------------------------------------------------------------------------------------
    def op(self, op, inputs, attrs, result):
        if self.stepping:
            return
        if self.root is not None:
            self.fail(f"op '{op.name}' runs after backward()")
        node = result._node
        self.ops.append((op, inputs, dict(attrs) if attrs else {}, result, node,
                         node.saved if node is not None else None))

    def backward(self, root, gradient, retain_graph, keep_grads):
        if self.root is not None:
            self.fail("backward() runs more than once in the step")
        elif gradient is not None:
            self.fail("backward() is given an explicit gradient")
        elif keep_grads:
            self.fail("backward(keep_grads=True) keeps the inner gradients (for drawings)")
        elif root._node is None:
            self.fail("backward() runs from a leaf tensor")
        self.root = root

    def zero(self, params):
        if self.root is not None:
            self.fail("zero_grad() runs after backward()")
        for p in params:
            self.zeroed[id(p)] = p

    def step_begin(self, optimizer):
        if self.root is None:
            self.fail("an optimizer steps before backward()")
        self.steps.append(optimizer)
        self.stepping += 1

    def step_end(self, optimizer):
        self.stepping -= 1

    def modified(self, t):
        if not self.stepping:
            self.fail(f"a tensor of shape {t.shape} is changed in place outside the optimizer")

    def drew(self, generator, shape, keep):
        self.draws[id(keep)] = (generator, tuple(shape), keep)

    def converted(self, source, copy):
        self.conversions.append((source, copy))

    def random(self, where):
        self.fail(f"{where} draws random numbers (a replay would repeat them)")


def _install(recorder):
    autograd._recording.active = recorder
    if autograd._tape is not None:
        autograd._tape.set_recorder(recorder)


# --- the plan -------------------------------------------------------------------------------------


_STALE = object()  # what a replay returns when the plan no longer fits the model


class _Plan:
    """Buffers, the C program over them, and what a replay does around it."""

    def __init__(self):
        self.inputs = []  # (argument index, buffer, labels checks [(classes, op)])
        self.draws = []  # (generator, float64 buffer): dropout's draws, made before each run
        self.instrs = []
        self.params = []  # (tensor, its data array at capture)
        self.grads = []  # (tensor, gradient buffer): .grad is set to it after each replay
        self.cleared = []  # (tensor, pinned view or None): zeroed by the step, given no gradient
        self.optimizers = []  # optimizers without a C rule: their step() runs after the program
        self.rows = None  # _plan.OptimizerRows of the optimizer updates in the program
        self.updated = []  # parameters the program's optimizer updates change (mark_modified)
        self.no_grad = []  # optimizer parameters the step leaves without a gradient: must stay so
        self.output = None
        self.program = None
        self.keep = []  # scratch buffers (the program holds them too)

    def new(self, shape, dtype):
        a = np.empty(shape, dtype)
        self.keep.append(a)
        return a

    def valid(self) -> bool:
        for p, data in self.params:
            if p.data is not data:
                return False
        for p in self.no_grad:
            if p.grad is not None:
                return False
        return True

    def replay(self, args):
        """One step; _STALE (having changed nothing the step owns) when the plan no longer fits."""
        for i, buf, checks in self.inputs:
            a = args[i]
            np.copyto(buf, a.data if type(a) is Tensor else a, casting="unsafe")
            for classes, op in checks:
                _plan.check_labels(buf, classes, op)
        if self.rows is not None and not self.rows.prepare():  # advances the steps, reads the lr
            return _STALE
        for generator, buf in self.draws:  # in the order the eager forward draws
            if type(generator) is np.random.Generator:
                generator.random(out=buf)  # the same stream as generator.random(shape)
            else:
                np.copyto(buf, generator.random(buf.shape))
        for p, view in self.cleared:
            if view is None:
                p.grad = None
            else:
                view.fill(0)
                p.grad = view
        self.program.run()
        for p, g in self.grads:
            if p.grad is not g:
                p.grad = g
        for p in self.updated:
            autograd.mark_modified(p)  # as step() does: a stale graph's backward raises
        for opt in self.optimizers:
            opt.step()
        return self.output


def _signature(args, kwargs):
    """A hashable key of the arguments (shapes and dtypes of arrays, values of the rest), or a
    reason string when an argument cannot be part of one."""
    parts = []
    for i, a in enumerate(args):
        if type(a) is np.ndarray:
            parts.append((0, a.shape, a.dtype))
        elif type(a) is Tensor:
            parts.append((1, a.data.shape, a.data.dtype, a.requires_grad))
        elif a is None or type(a) in (bool, int, float, str):
            parts.append((2, type(a), a))
        else:
            return f"argument {i} is a {type(a).__name__} (arrays, tensors, numbers and strings can be captured)"
    if kwargs:
        return "keyword arguments are not captured (pass them positionally)"
    return (tuple(parts), autograd._state.enabled)


class Captured:
    """A step function with its plans (see the module docstring). Call it as the function."""

    def __init__(self, fn, cache_size: int = 8):
        if not callable(fn):
            raise TypeError(f"capture: expected a function, got {type(fn).__name__}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"capture: cache_size must be an integer >= 1, got {cache_size!r}")
        self.fn = fn
        self.cache_size = cache_size
        self.plans = {}  # signature -> _Plan
        self.eager = {}  # signature -> reason it runs eagerly
        self.last_reason = None  # why the last call ran eagerly (None: it replayed or captured)
        self.captures = 0  # how many plans were built
        self.replays = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        key = _signature(args, kwargs)
        if type(key) is str:
            return self._eager(key, None, args, kwargs)
        plan = self.plans.get(key)
        if plan is not None:
            if plan.valid():
                out = plan.replay(args)
                if out is not _STALE:
                    self.last_reason = None
                    self.replays += 1
                    return out
            del self.plans[key]  # a parameter or an optimizer's state was replaced: record again
        reason = self.eager.get(key)
        if reason is not None:
            return self._eager(reason, key, args, kwargs)
        return self._capture(key, args)

    def _eager(self, reason, key, args, kwargs):
        if self.last_reason != reason:
            warnings.warn(f"fastgrad.capture: {reason}; the step runs eagerly", CaptureWarning, stacklevel=3)
        self.last_reason = reason
        return self.fn(*args, **kwargs)

    def _capture(self, key, args):
        buffers, call_args = [], []
        for i, a in enumerate(args):
            if type(a) is np.ndarray:
                kind = a.dtype.kind
                if kind in "iub":
                    buf = np.array(a, dtype=np.intp, order="C")
                elif kind == "f":
                    buf = np.array(a, order="C")
                else:
                    buf = None
                if buf is not None:
                    buffers.append((i, buf))
                call_args.append(a if buf is None else buf)
            elif type(a) is Tensor:
                if a.requires_grad:
                    return self._refuse(key, f"argument {i} is a tensor that requires grad", args)
                buf = np.array(a.data, order="C")
                buffers.append((i, buf))
                call_args.append(Tensor._wrap(buf))
            else:
                call_args.append(a)
        recorder = _Recorder()
        _install(recorder)
        try:
            result = self.fn(*call_args)
        finally:
            _install(None)
        try:
            if recorder.reason is not None:
                raise _Unsupported(recorder.reason)
            plan = _compile(recorder, buffers, result)
        except _Unsupported as e:
            self._refuse(key, str(e), None)
            return result
        if len(self.plans) >= self.cache_size:
            del self.plans[next(iter(self.plans))]
        self.plans[key] = plan
        self.captures += 1
        self.last_reason = None
        return result

    def _refuse(self, key, reason, args):
        self.eager[key] = reason
        if args is not None:
            return self._eager(reason, key, args, {})
        warnings.warn(f"fastgrad.capture: {reason}; the step runs eagerly", CaptureWarning, stacklevel=4)
        self.last_reason = reason
        return None

    def __repr__(self):
        return f"<fastgrad.capture of {getattr(self.fn, '__qualname__', self.fn)}: {len(self.plans)} plan(s)>"


def capture(fn=None, *, cache_size: int = 8):
    """Record a training step once per signature and replay it in C (see the module docstring).

    >>> @capture                                                          # doctest: +SKIP
    ... def train_step(X, y):
    ...     opt.zero_grad()
    ...     loss = softmax_cross_entropy(model(X), y)
    ...     loss.backward()
    ...     opt.step()
    ...     return loss
    """
    if fn is None:
        return lambda f: Captured(f, cache_size)
    return Captured(fn, cache_size)


# --- from a record to a plan ---------------------------------------------------------------------


class _Bcast:
    """A gradient not yet written out: the 0-d buffer s broadcast to `shape` (what sum's backward
    returns, np.broadcast_to in ops.py)."""

    __slots__ = ("s", "shape")

    def __init__(self, s, shape):
        self.s, self.shape = s, shape


class _Scaled:
    """A gradient not yet written out: s * w (count 1), or s w + s w as two terms (count 2:
    mul's backward of w * w) or as one doubled term (count 3: sumsq's backward). Written by one
    SCALED pass, fused with the next addition into its slot where there is one."""

    __slots__ = ("s", "w", "count", "shape")

    def __init__(self, s, w, count):
        self.s, self.w, self.count, self.shape = s, w, count, w.shape


def _shape_str(a) -> str:
    return "x".join(map(str, a.shape)) or "scalar"


class _Compiler:
    """Turns a record into a plan: forward instructions op by op, then the backward walk
    simulated exactly as autograd.run_backward runs it (the same order, the same sums)."""

    def __init__(self, recorder, buffers, plan):
        self.rec = recorder
        self.plan = plan
        self.dtype = None
        self.placeholders = {id(buf): (i, buf) for i, buf in buffers}
        # a copy of an argument made by the tensor constructors (fg.tensor(X), X combined with a
        # tensor, a batch of another dtype given to a model) is an input too: a replay writes the
        # argument into it with the same cast
        for source, copy in recorder.conversions:
            entry = self.placeholders.get(id(source))
            if entry is not None:
                if copy.shape == source.shape and copy.flags.c_contiguous:
                    self.placeholders[id(copy)] = (entry[0], copy)
            elif any(np.shares_memory(source, buf) for _, buf in buffers):
                raise _Unsupported("a tensor is made from a view or a part of an argument outside the tape")
        self.produced = {}  # id(result tensor) -> its op record
        self.leaves = {}  # id(leaf tensor) -> tensor (parameters: leaves that require grad)
        self.label_checks = {}  # id(buffer) -> [(classes, op)]

    # buffers --------------------------------------------------------------------------------------
    def check_dtype(self, a, what):
        if self.dtype is None:
            self.dtype = a.dtype
        elif a.dtype != self.dtype:
            raise _Unsupported(f"{what} is {a.dtype} while the step computes in {self.dtype}")

    def check_buffer(self, a, what):
        if type(a) is not np.ndarray:
            raise _Unsupported(f"{what} is a {type(a).__name__}, not an array")
        if not (a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative):
            raise _Unsupported(f"{what} ({_shape_str(a)}) is not a C-contiguous native array")
        self.check_dtype(a, what)
        return a

    def value(self, t, op_name, k):
        """The buffer holding input k of an op: an earlier op's output, an argument's buffer, a
        parameter's data, or a constant."""
        what = f"input {k} of op '{op_name}'"
        data = t.data
        if id(t) in self.produced:
            return self.check_buffer(data, what)
        if t.requires_grad:
            self.leaves[id(t)] = t
            self.check_buffer(data, what)
            return data
        if id(data) in self.placeholders:
            return self.check_buffer(data, what)
        for _, buf in self.placeholders.values():
            if np.shares_memory(data, buf):
                raise _Unsupported(f"{what} is a view of an argument made outside the tape")
        return self.check_buffer(data, what)

    def out(self, result, op_name, inputs):
        a = result.data
        if type(a) is not np.ndarray or a.base is not None and any(np.shares_memory(a, t.data) for t in inputs):
            raise _Unsupported(f"op '{op_name}' returns a view of its input")
        return self.check_buffer(a, f"the output of op '{op_name}'")

    def emit(self, kind, **fields):
        fields["kind"] = kind
        self.plan.instrs.append(fields)

    def new(self, shape):
        return self.plan.new(shape, self.dtype)

    # forward ----------------------------------------------------------------------------------------
    def forward(self, returned):
        uses = {}  # id(tensor) -> how many op inputs and return values it is
        for record in self.rec.ops:
            for t in record[1]:
                uses[id(t)] = uses.get(id(t), 0) + 1
        for t in returned:
            uses[id(t)] = uses.get(id(t), 0) + 1
        self.squares = set()  # ids of the outputs of w * w read only by a full sum: never written
        by_output = {id(r[3]): r for r in self.rec.ops}
        for record in self.rec.ops:
            op, inputs, attrs, result, node, saved = record
            if op.name == "sum" and uses.get(id(inputs[0])) == 1 and id(inputs[0]) in by_output:
                source = by_output[id(inputs[0])]
                if (source[0].name == "mul" and source[1][0] is source[1][1] and inputs[0].data.ndim
                        and result.data.size == 1):
                    self.squares.add(id(inputs[0]))
        for record in self.rec.ops:
            op, inputs, attrs, result, node, saved = record
            if id(result) in self.squares:  # sum(w * w): one SUMSQ pass at the sum
                self.value(inputs[0], op.name, 0)
                self.produced[id(result)] = record
                continue
            rule = getattr(self, "fwd_" + op.name, None)
            if rule is None:
                raise _Unsupported(f"op '{op.name}' has no replay rule")
            arrays = [t.data if type(t) is Constant or id(t) in self.squares else self.value(t, op.name, k)
                      for k, t in enumerate(inputs)]  # a Constant (labels): its op's rule reads it
            rule(record, arrays, self.out(result, op.name, inputs))
            self.produced[id(result)] = record

    def fwd_affine(self, record, arrays, y):
        op, inputs, attrs, result, node, saved = record
        x, W, b = arrays
        if x.ndim != 2 or W.ndim != 2 or b.ndim != 1 or 0 in x.shape or 0 in W.shape:
            raise _Unsupported(f"op 'affine' with shapes {x.shape}, {W.shape}, {b.shape}")
        act = L.ACTIVATIONS[attrs.get("activation")]
        param = {"negative_slope": attrs.get("negative_slope", 0.01), "alpha": attrs.get("alpha", 1.0)}.get(
            L.ACTIVATION_PARAMS[attrs.get("activation")], 0.0)
        from_input = L._FROM_INPUT[act]
        if from_input:
            z = saved[0] if saved is not None else self.new(y.shape)
            self.check_buffer(z, "the saved input of op 'affine'")
        else:
            z = y
        n, d = x.shape
        m = W.shape[1]
        self.emit("gemm", m=n, n=m, k=d, a=x, b=W, c=z)
        self.emit("bias_act", a=z, b=b, c=y if from_input else None, n=n, m=m, act=act, p=float(param))

    def fwd_matmul(self, record, arrays, out):
        a, b = arrays
        if a.ndim != 2 or b.ndim != 2 or 0 in a.shape or 0 in b.shape:
            raise _Unsupported(f"op 'matmul' of shapes {a.shape} and {b.shape} (2-D, non-empty only)")
        self.emit("gemm", m=a.shape[0], n=b.shape[1], k=a.shape[1], a=a, b=b, c=out)

    @staticmethod
    def mode(shape, out_shape, op_name):
        if shape == out_shape:
            return "full"
        if shape == ():
            return "scalar"
        if len(out_shape) == 2 and shape == out_shape[1:] and out_shape[1] >= 2:
            return "row"
        raise _Unsupported(f"op '{op_name}' broadcasts {shape} to {out_shape}")

    def fwd_binary(self, record, arrays, out):
        op = record[0]
        a, b = arrays
        ma, mb = self.mode(a.shape, out.shape, op.name), self.mode(b.shape, out.shape, op.name)
        if ma != "full" and mb != "full" and not (ma == mb == "scalar"):
            raise _Unsupported(f"op '{op.name}' of shapes {a.shape} and {b.shape}")
        self.emit("binary", op=op.name, a=a, b=b, c=out, ma=ma, mb=mb, n=out.size,
                  m=out.shape[-1] if out.ndim else 1)

    fwd_add = fwd_sub = fwd_mul = fwd_div = fwd_binary

    def fwd_neg(self, record, arrays, out):
        self.emit("neg", a=arrays[0], c=out, n=out.size)

    def fwd_sum(self, record, arrays, out):
        x = arrays[0]
        if x.ndim == 0:  # nothing to reduce: NumPy copies the value
            self.emit("copy", a=x, c=out, n=1)
            return
        if out.size != 1 or x.size == 0:
            raise _Unsupported(f"op 'sum' of shape {x.shape} to {out.shape} (full sums of non-empty tensors only)")
        square = record[1][0]
        if id(square) in self.squares:
            w = self.produced[id(square)][1][0].data
            self.emit("sumsq", a=w, c=out, n=w.size)
        else:
            self.emit("sum", a=x, c=out, n=x.size)

    def fwd_maxout(self, record, arrays, out):
        z = arrays[0]
        idx, pieces = record[5] if record[5] is not None else (None, record[2].get("pieces"))
        if idx is None:
            idx = np.empty(out.shape, np.intp)
            self.plan.keep.append(idx)
        if z.ndim != 2 or out.ndim != 2 or 0 in z.shape:
            raise _Unsupported(f"op 'maxout' of shape {z.shape}")
        self.emit("maxout", a=z, b=idx, c=out, n=out.shape[0], m=out.shape[1], k=int(pieces))

    def fwd_sumsq(self, record, arrays, out):
        x = arrays[0]
        self.emit("sumsq", a=x, c=out, n=x.size)

    def fwd_gate(self, record, arrays, out):
        op, inputs, attrs, result, node, saved = record
        param = attrs.get("negative_slope", attrs.get("alpha", 0.0))
        self.emit("gate", op=_plan.GATES[op.name], a=arrays[0], c=out, n=out.size, p=float(param))

    fwd_relu = fwd_leaky_relu = fwd_elu = fwd_sigmoid = fwd_tanh = fwd_gate

    def bwd_gate(self, record, g):
        op, inputs, attrs, result, node, saved = record
        param = saved[1] if len(saved) > 1 else 0.0
        out = self.dest(record, 0, g.shape)
        self.emit("gate_bwd", op=_plan.GATES[op.name], a=g, b=saved[0], c=out, n=g.size, p=float(param))
        return [(0, out, True)]

    bwd_relu = bwd_leaky_relu = bwd_elu = bwd_sigmoid = bwd_tanh = bwd_gate

    def fwd_batchnorm(self, record, arrays, out):
        op, inputs, attrs, result, node, saved = record
        x, gamma, beta = arrays
        if not attrs.get("training", True):
            raise _Unsupported("op 'batchnorm' in evaluation mode (it computes with NumPy, not a kernel)")
        if x.ndim != 2 or 0 in x.shape:
            raise _Unsupported(f"op 'batchnorm' of shape {x.shape}")
        n, d = x.shape
        rm, rv = attrs.get("running_mean"), attrs.get("running_var")
        for a, what in ((rm, "running mean"), (rv, "running variance")):
            if a is not None:
                self.check_buffer(a, f"the {what} of op 'batchnorm'")
        if saved is not None:
            mean, invstd = saved[2], saved[3]
        else:
            mean, invstd = self.new((d,)), self.new((d,))
        acc = np.empty(d, np.float64)
        self.plan.keep.append(acc)
        self.emit("batchnorm", a=x, b=gamma, f=beta, c=out, d=mean, e=invstd, g=rm, h=rv, i=acc, n=n, m=d,
                  p=float(attrs.get("eps", 1e-5)), q=float(attrs.get("momentum", 0.1)))

    def bwd_batchnorm(self, record, g):
        training, x, mean, invstd, gamma, needs_x = record[5]
        return self.norm_backward("batchnorm_bwd", record, g, x, mean, invstd, gamma, needs_x)

    def norm_backward(self, kind, record, g, x2, mean, invstd, gamma, needs_x):
        """dx (if needed), dgamma, dbeta of batch or layer norm: one instruction (x2 is x as (n, d))."""
        d = gamma.size
        dx = self.dest(record, 0, record[1][0].data.shape) if needs_x else None
        dgamma = self.dest(record, 1, gamma.shape)
        dbeta = self.dest(record, 2, gamma.shape)
        acc = np.empty(2 * d, np.float64)
        self.plan.keep.append(acc)
        self.emit(kind, a=g, b=x2, c=dx, d=mean, e=invstd, f=gamma, g=dgamma, h=dbeta, i=acc,
                  n=x2.shape[0], m=d)
        return ([(0, dx, True)] if dx is not None else []) + [(1, dgamma, True), (2, dbeta, True)]

    def fwd_layernorm(self, record, arrays, out):
        op, inputs, attrs, result, node, saved = record
        x, gamma, beta = arrays
        d = gamma.size
        if x.size == 0 or d == 0 or x.size % d:
            raise _Unsupported(f"op 'layernorm' of shape {x.shape}")
        n = x.size // d
        if saved is not None:
            mean, invstd = saved[1], saved[2]
        else:
            mean, invstd = self.new((n,)), self.new((n,))
        self.emit("layernorm", a=x, b=gamma, f=beta, c=out, d=mean, e=invstd, n=n, m=d,
                  p=float(attrs.get("eps", 1e-5)))

    def fwd_dropout(self, record, arrays, out):
        op, inputs, attrs, result, node, saved = record
        keep, p = attrs["keep"], attrs["p"]
        entry = self.rec.draws.get(id(keep))
        if entry is None or entry[2] is not keep:
            raise _Unsupported("op 'dropout' with a mask not drawn by functional.dropout")
        generator, shape, _ = entry
        # held by the record alone (entry, this name, getrefcount's argument): the step made it and
        # dropped it, so each eager call starts a new stream where a replay would continue one
        if sys.getrefcount(generator) <= 3:
            raise _Unsupported("op 'dropout' draws from a generator made inside the step (each eager call "
                               "starts it afresh)")
        draws = np.empty(shape, np.float64)
        self.plan.keep.append(draws)
        self.plan.draws.append((generator, draws))
        mask = saved[0] if saved is not None else self.new(out.shape)
        self.check_buffer(mask, "the mask of op 'dropout'")
        self.emit("dropout", a=arrays[0], b=draws, c=out, d=mask, n=out.size, p=float(p),
                  q=float(1.0 / (1.0 - p)))

    def bwd_dropout(self, record, g):
        mask = record[5][0]
        out = self.dest(record, 0, g.shape)
        self.emit("binary", op="mul", a=g, b=mask, c=out, n=g.size)
        return [(0, out, True)]

    def fwd_loss(self, record, arrays, out):
        op, inputs, attrs, result, node, saved = record
        scores = arrays[0]
        # the labels are the node's second input, a Constant (functional.py checked them: an intp
        # array); traced by identity: an argument's buffer changes each call, anything else is fixed
        labels = inputs[1].data if len(inputs) == 2 and type(inputs[1]) is Constant else None
        if type(labels) is not np.ndarray or scores.ndim != 2:
            raise _Unsupported(f"op '{op.name}' with labels of type {type(labels).__name__}")
        if id(labels) not in self.placeholders:
            for _, buf in self.placeholders.values():
                if np.shares_memory(labels, buf):
                    raise _Unsupported(f"the labels of op '{op.name}' are converted from an argument outside "
                                       "the tape (pass integer labels as they are)")
            # frozen at capture, as any value from outside the arguments: a copy, so that changing
            # the caller's array later cannot hand the program labels that were never range-checked
            labels = np.array(labels, dtype=np.intp, order="C")
            self.plan.keep.append(labels)
        elif labels.dtype != np.intp:
            raise _Unsupported(f"the labels of op '{op.name}' are {labels.dtype}")
        n, c = scores.shape
        if id(labels) in self.placeholders:
            self.label_checks.setdefault(id(labels), []).append((c, op.name))
        grad = saved[0] if saved is not None else None
        if grad is not None:
            self.check_buffer(grad, f"the saved gradient of op '{op.name}'")
        loss_n = np.empty(n, np.float64)
        self.plan.keep.append(loss_n)
        kind = "sce" if op.name == "softmax_cross_entropy" else "svm"
        self.emit(kind, a=scores, b=labels, c=grad, d=loss_n, e=out, n=n, m=c,
                  p=float(attrs.get("delta", 1.0)))

    fwd_softmax_cross_entropy = fwd_svm_loss = fwd_loss

    # backward ---------------------------------------------------------------------------------------
    def backward(self):
        root = self.rec.root
        root_node = root._node
        seed = np.ones(root.data.shape, root.data.dtype)  # what backward() seeds: ones
        self.plan.keep.append(seed)
        records = {id(r[4]): r for r in self.rec.ops if r[4] is not None}
        self.pinned = {}
        for t in self.leaves.values():
            view = _flat.pinned_grad(t)
            if view is not None:
                self.pinned[id(t)] = view
        pending = {root_node: [seed, False]}
        heap = [(-root_node.seq, root_node)]
        while heap:
            node = heappop(heap)[1]
            g, _ = pending.pop(node)
            record = records.get(id(node))
            if record is None:
                raise _Unsupported(f"backward reaches op '{node.op.name}', which ran before the step")
            name = node.op.name
            if type(g) is not np.ndarray and not (name == "mul" and type(g) is _Bcast):
                g = self.materialize(g, self.new(g.shape))
            rule = getattr(self, "bwd_" + name)
            inputs = node.inputs
            for k, gi, exclusive in rule(record, g):
                t = inputs[k]
                if not t.requires_grad:
                    continue
                parent = t._node
                key = t if parent is None else parent
                slot = pending.get(key)
                if slot is None:
                    pending[key] = [gi, exclusive]
                    if parent is not None:
                        heappush(heap, (-parent.seq, parent))
                else:
                    pending[key] = self.accumulate(slot[0], slot[1], gi, exclusive)
        for t, (gi, exclusive) in pending.items():  # only leaves are left
            if id(t) not in self.rec.zeroed:
                raise _Unsupported(f"the gradient of a tensor of shape {t.shape} is not zeroed in the step "
                                   "(it would accumulate across calls)")
            view = self.pinned.get(id(t))
            if type(gi) is not np.ndarray:
                gi = self.materialize(gi, view if view is not None else self.new(gi.shape))
                exclusive = True
            if view is not None:
                if gi is not view:
                    self.emit("copy", a=gi, c=view, n=view.size)
                self.plan.grads.append((t, view))
            else:
                if not exclusive:
                    owned = self.new(gi.shape)
                    self.emit("copy", a=gi, c=owned, n=gi.size)
                    gi = owned
                self.plan.grads.append((t, gi))
        given = {id(t) for t in pending}
        for t in self.rec.zeroed.values():
            if id(t) not in given:
                self.plan.cleared.append((t, _flat.pinned_grad(t)))

    def materialize(self, v, out):
        """Write a lazy gradient (_Bcast, _Scaled) into `out` and return it."""
        if type(v) is _Bcast:
            self.emit("fill", a=v.s, c=out, n=out.size)
        else:
            self.emit("scaled", a=v.w, b=v.s, k=v.count, c=out, n=out.size)
        return out

    def accumulate(self, slot, slot_owned, gi, gi_owned):
        """slot + gi as the eager engine adds them (in place into an owned slot, else into a new
        buffer); a _Scaled term is added in the same pass that writes it. Returns [value, owned]."""
        if type(slot) is _Bcast or (type(slot) is _Scaled and type(gi) is _Scaled):
            # the slot is written first: its sum with gi's terms then follows the eager order,
            # ((slot + t) + t), not slot + (t + t)
            slot, slot_owned = self.materialize(slot, self.new(slot.shape)), True
        if type(gi) is _Bcast:
            gi, gi_owned = self.materialize(gi, self.new(gi.shape)), True
        if type(gi) is _Scaled:  # slot + t (+ t)
            out = slot if slot_owned else self.new(slot.shape)
            self.emit("scaled", a=gi.w, b=gi.s, k=gi.count, d=slot, ta=1, c=out, n=out.size)
            return [out, True]
        if type(slot) is _Scaled:  # (t (+ t)) + gi
            out = gi if gi_owned else self.new(gi.shape)
            self.emit("scaled", a=slot.w, b=slot.s, k=slot.count, d=gi, ta=0, c=out, n=out.size)
            return [out, True]
        if slot_owned:
            self.emit("binary", op="add", a=slot, b=gi, c=slot, n=slot.size)
            return [slot, True]
        total = self.new(slot.shape)
        self.emit("binary", op="add", a=slot, b=gi, c=total, n=total.size)
        return [total, True]

    # optimizers --------------------------------------------------------------------------------------
    def optimizer(self, opt, rows, stepped):
        """The optimizer's updates as OPTIM instructions (rows: ((rule, group, state, arrays), spec)),
        or its step() after the program when its rule is not one of fastgrad's own."""
        from . import optim

        update = type(opt)._update
        rule = None
        if update is optim.SGD._update:
            rule = "sgd"
        elif update is optim.RMSProp._update:
            rule = "rmsprop"
        elif update is optim.Adam._update:
            rule = {optim._optim.adam: "adam", optim._optim.adamw: "adamw"}.get(type(opt)._pass)
        if rule is None or type(opt).step is not optim.Optimizer.step or type(opt)._step is not optim.Optimizer._step:
            self.plan.optimizers.append(opt)
            return
        grads = {id(t): g for t, g in self.plan.grads}
        grads.update((id(t), view) for t, view in self.plan.cleared if view is not None)
        i = 0
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state[i]
                i += 1
                g = grads.get(id(p))
                if g is None:
                    if p.grad is not None:
                        raise _Unsupported(f"an optimizer parameter of shape {p.shape} keeps a gradient the "
                                           "step does not compute")
                    self.plan.no_grad.append(p)
                    continue
                if id(p) in stepped:
                    raise _Unsupported(f"a parameter of shape {p.shape} is stepped by two optimizers")
                stepped.add(id(p))
                self.check_buffer(p.data, "an optimizer parameter")
                r = rule
                if r == "sgd" and group["momentum"]:
                    r = "sgd_momentum"
                arrays = {"sgd": [], "sgd_momentum": [state.get("momentum_buffer")],
                          "rmsprop": [state.get("square_avg")],
                          "adam": [state.get("exp_avg"), state.get("exp_avg_sq")],
                          "adamw": [state.get("exp_avg"), state.get("exp_avg_sq")]}[r]
                for a in arrays:
                    self.check_buffer(a, "an optimizer's state")
                spec = {"kind": "optim", "op": _plan.RULES[r], "a": p.data, "b": g, "n": p.data.size}
                if arrays:
                    spec["c"] = arrays[0]
                if len(arrays) > 1:
                    spec["d"] = arrays[1]
                rows.append(((_plan.RULES[r], group, state, arrays), spec))
                self.plan.updated.append(p)

    def dest(self, record, k, shape):
        """A new buffer for the gradient of input k, or the leaf's pinned gradient view when the
        gradient goes straight to a leaf in a flat buffer (no copy at the end)."""
        t = record[1][k]
        view = self.pinned.get(id(t)) if t._node is None else None
        if view is not None and view.shape == shape and id(view) not in self.used_views:
            self.used_views.add(id(view))
            return view
        return self.new(shape)

    def reduce_to(self, g, shape, record, k):
        """unbroadcast(g, shape) of ops.py: g itself, its full sum, or its column sums."""
        if g.shape == shape:
            return g, False
        if shape == ():
            out = self.dest(record, k, ())
            self.emit("sum", a=g, c=out, n=g.size)
            return out, True
        out = self.dest(record, k, shape)
        self.emit("colsum", a=g, d=out, n=g.size // shape[0], m=shape[0])
        return out, True

    def bwd_affine(self, record, g):
        op, inputs, attrs, result, node, saved = record
        s, x, W, activation, slope, alpha, needs_b = saved
        act = L.ACTIVATIONS[activation]
        param = {"negative_slope": slope, "alpha": alpha}.get(L.ACTIVATION_PARAMS[activation], 0.0)
        n, m = g.shape
        needs = attrs["needs"]
        if needs_b and m == 1:
            raise _Unsupported("op 'affine' with one output column (its bias gradient is summed pairwise)")
        db = self.dest(record, 2, (m,)) if needs_b else None
        if act != 0:
            dz = self.new(g.shape)
            self.emit("act_bwd", a=g, b=s, c=dz, d=db, n=n, m=m, act=act, p=float(param))
        else:
            dz = g
            if db is not None:
                self.emit("colsum", a=g, d=db, n=n, m=m)
        out = []
        if W is not None and needs[0]:
            d = W.shape[0]
            dx = self.dest(record, 0, (n, d))
            self.emit("gemm", ta=0, tb=1, m=n, n=d, k=m, a=dz, b=W, c=dx)
            out.append((0, dx, True))
        if x is not None and needs[1]:
            d = x.shape[1]
            dW = self.dest(record, 1, (d, m))
            self.emit("gemm", ta=1, tb=0, m=d, n=m, k=n, a=x, b=dz, c=dW)
            out.append((1, dW, True))
        if db is not None:
            out.append((2, db, True))
        return out

    def bwd_matmul(self, record, g):
        op, inputs, attrs, result, node, saved = record
        a, b = saved[0], saved[1]
        out = []
        m, n = g.shape
        if b is not None:
            ga = self.dest(record, 0, (m, b.shape[0]))
            self.emit("gemm", ta=0, tb=1, m=m, n=b.shape[0], k=n, a=g, b=b, c=ga)
            out.append((0, ga, True))
        if a is not None:
            gb = self.dest(record, 1, (a.shape[1], n))
            self.emit("gemm", ta=1, tb=0, m=a.shape[1], n=n, k=m, a=a, b=g, c=gb)
            out.append((1, gb, True))
        return out

    def shapes(self, record):
        return [t.data.shape for t in record[1]]

    def bwd_add(self, record, g):
        sa, sb = self.shapes(record)
        out = []
        for k, shape in ((0, sa), (1, sb)):
            if record[1][k].requires_grad:
                out.append((k, *self.reduce_to(g, shape, record, k)))
        return out

    def bwd_sub(self, record, g):
        sa, sb = self.shapes(record)
        out = []
        if record[1][0].requires_grad:
            out.append((0, *self.reduce_to(g, sa, record, 0)))
        if record[1][1].requires_grad:
            neg = self.new(g.shape)
            self.emit("neg", a=g, c=neg, n=g.size)
            gb, _ = self.reduce_to(neg, sb, record, 1)
            out.append((1, gb, True))
        return out

    def bwd_mul(self, record, g):
        a, b = record[5]
        inputs = record[1]
        if type(g) is _Bcast:  # g * b and g * a with g = s everywhere: s * b, s * a, written lazily
            if inputs[0] is inputs[1] and a.shape == g.shape:  # w * w: one term counted twice
                return [(0, _Scaled(g.s, a, 2), True)] if inputs[0].requires_grad else []
            if a.shape == b.shape == g.shape:
                return [(k, _Scaled(g.s, other, 1), True) for k, other in ((0, b), (1, a))
                        if inputs[k].requires_grad]
            g = self.materialize(g, self.new(g.shape))
        out = []
        for k, other in ((0, b), (1, a)):
            if record[1][k].requires_grad:
                shape = record[1][k].data.shape
                full = self.dest(record, k, g.shape) if shape == g.shape else self.new(g.shape)
                self.emit("binary", op="mul", a=g, b=other, c=full, n=g.size,
                          mb=self.mode(other.shape, g.shape, "mul"), m=g.shape[-1] if g.ndim else 1)
                gk, _ = self.reduce_to(full, shape, record, k)
                out.append((k, gk, True))
        return out

    def bwd_div(self, record, g):
        a, b = record[5]
        mode_b = self.mode(b.shape, g.shape, "div")
        cols = g.shape[-1] if g.ndim else 1
        out = []
        ga = self.new(g.shape)
        self.emit("binary", op="div", a=g, b=b, c=ga, n=g.size, mb=mode_b, m=cols)
        if record[1][0].requires_grad:
            out.append((0, *self.reduce_to(ga, a.shape, record, 0)))
        if record[1][1].requires_grad:
            t1 = self.new(g.shape)
            self.emit("neg", a=ga, c=t1, n=g.size)
            t2 = self.new(g.shape)
            self.emit("binary", op="mul", a=t1, b=a, c=t2, n=g.size, mb=self.mode(a.shape, g.shape, "div"), m=cols)
            t3 = self.new(g.shape)
            self.emit("binary", op="div", a=t2, b=b, c=t3, n=g.size, mb=mode_b, m=cols)
            gb, _ = self.reduce_to(t3, b.shape, record, 1)
            out.append((1, gb, True))
        return out

    def bwd_neg(self, record, g):
        out = self.dest(record, 0, g.shape)
        self.emit("neg", a=g, c=out, n=g.size)
        return [(0, out, True)]

    def bwd_sum(self, record, g):
        shape = record[1][0].data.shape
        if shape == ():  # the gradient passes through
            return [(0, g, False)]
        return [(0, _Bcast(g, shape), True)]

    def bwd_sumsq(self, record, g):
        return [(0, _Scaled(g, record[5][0], 3), True)]  # t + t, t = g x: one term, doubled

    def bwd_layernorm(self, record, g):
        x2, mean, invstd, gamma, needs_x = record[5]
        return self.norm_backward("layernorm_bwd", record, g, x2, mean, invstd, gamma, needs_x)

    def bwd_maxout(self, record, g):
        idx, pieces = record[5]
        shape = record[1][0].data.shape
        out = self.dest(record, 0, shape)
        self.emit("maxout_bwd", a=g, b=idx, c=out, n=g.shape[0], m=g.shape[1], k=int(pieces))
        return [(0, out, True)]

    def bwd_loss(self, record, g):
        grad = record[5][0]
        out = self.dest(record, 0, grad.shape)
        self.emit("binary", op="mul", a=grad, b=g, c=out, n=grad.size, mb="scalar")
        return [(0, out, True)]

    bwd_softmax_cross_entropy = bwd_svm_loss = bwd_loss


def _compile(rec, buffers, result) -> _Plan:
    plan = _Plan()
    c = _Compiler(rec, buffers, plan)
    c.used_views = set()
    returned = result if isinstance(result, (tuple, list)) else (result,)
    c.forward([t for t in returned if type(t) is Tensor])
    if c.dtype is None:
        raise _Unsupported("the step runs no op")
    used = set()
    for record in rec.ops:
        for t in record[1]:
            used.add(id(t.data))
        used.update(id(a) for a in record[2].values() if type(a) is np.ndarray)
    reached = set()
    for key, (i, buf) in c.placeholders.items():
        if key in used:
            reached.add(i)
            plan.inputs.append((i, buf, c.label_checks.get(key, [])))
    for i, buf in buffers:
        if i not in reached:
            raise _Unsupported(f"argument {i} does not reach the step's ops as it is (converted "
                               f"outside the tape? pass {c.dtype} arrays for data, integers for labels)")
    if rec.root is not None:
        if id(rec.root) not in c.produced:
            raise _Unsupported("backward() runs from a tensor the step did not compute")
        c.backward()
    elif rec.steps:
        raise _Unsupported("an optimizer steps without backward()")
    plan.params = [(t, t.data) for t in c.leaves.values()]
    if len({id(o) for o in rec.steps}) != len(rec.steps):
        raise _Unsupported("an optimizer steps more than once")
    rows, stepped = [], set()
    for opt in rec.steps:
        c.optimizer(opt, rows, stepped)
    if rows:
        plan.rows = _plan.OptimizerRows([r[0] for r in rows])
        for k, (_, spec) in enumerate(rows):
            spec["e"] = plan.rows.hyper[k]
            plan.instrs.append(spec)
    items = result if isinstance(result, (tuple, list)) else (result,)
    for k, r in enumerate(items):
        if r is not None and not (type(r) is Tensor and (id(r) in c.produced or id(r) in c.leaves)):
            what = type(r).__name__
            raise _Unsupported(f"the step returns a {what} (return tensors it computes, and call .item() "
                               "outside the step)")
    plan.output = result
    plan.program = _plan.Program(plan.instrs, c.dtype)
    return plan
