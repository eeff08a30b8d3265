"""The plain-NumPy reference of every primitive: forward and backward, CS231n layer style.

Written independently of the op table and the C kernels (this module imports neither), so that
tests and benchmarks can hold the engine against it. Every primitive `name` has

    out, cache = name_forward(*arrays, **attrs)
    grads = name_backward(dout, cache)        # a tuple: one gradient per array input

with the same keyword attributes as the op table's rows. Gradients have the shape of their input
(broadcasting is summed back) and the dtype of `dout`. `REFERENCE` maps each name to its pair.

The documented conventions hold here too: ReLU'(0) = 0; Leaky ReLU'(0) = negative_slope;
ELU'(0) = alpha; `maximum(a, b)` routes the gradient to `a` where a >= b; `max(axis)` and `maxout`
route it to the first maximal entry; the sigmoid never overflows (it is computed as
(1 + tanh(x / 2)) / 2); the softmax loss uses a log-sum-exp shifted by the row max.

>>> out, cache = affine_forward(np.ones((2, 3)), np.ones((3, 4)), np.zeros(4))
>>> dx, dW, db = affine_backward(np.ones((2, 4)), cache)
>>> out.shape, dx.shape, dW.shape, db.shape
((2, 4), (2, 3), (3, 4), (4,))
"""
from __future__ import annotations

import numpy as np

__all__ = ["REFERENCE"]


def _reduce_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient of the broadcast shape back down to an input of `shape`."""
    grad = np.asarray(grad)
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad.reshape(shape)


# ---------------------------------------------------------------------------------------------
# arithmetic


def add_forward(a, b):
    """out = a + b, broadcasting. a, b: any broadcast-compatible shapes."""
    return a + b, (np.shape(a), np.shape(b))


def add_backward(dout, cache):
    """da = dout, db = dout, each summed to its input's shape."""
    a_shape, b_shape = cache
    return _reduce_to(dout, a_shape), _reduce_to(dout, b_shape)


def sub_forward(a, b):
    """out = a - b, broadcasting."""
    return a - b, (np.shape(a), np.shape(b))


def sub_backward(dout, cache):
    """da = dout, db = -dout, each summed to its input's shape."""
    a_shape, b_shape = cache
    return _reduce_to(dout, a_shape), _reduce_to(-dout, b_shape)


def mul_forward(a, b):
    """out = a * b, broadcasting."""
    return a * b, (a, b)


def mul_backward(dout, cache):
    """da = dout * b, db = dout * a, each summed to its input's shape."""
    a, b = cache
    return _reduce_to(dout * b, np.shape(a)), _reduce_to(dout * a, np.shape(b))


def div_forward(a, b):
    """out = a / b, broadcasting."""
    return a / b, (a, b)


def div_backward(dout, cache):
    """da = dout / b, db = -dout * a / b**2, each summed to its input's shape."""
    a, b = cache
    return _reduce_to(dout / b, np.shape(a)), _reduce_to(-dout * a / (b * b), np.shape(b))


def neg_forward(x):
    """out = -x."""
    return -x, None


def neg_backward(dout, cache):
    """dx = -dout."""
    return (-dout,)


def pow_forward(x, exponent=2):
    """out = x ** exponent for a Python-number exponent."""
    return np.power(x, exponent), (x, exponent)


def pow_backward(dout, cache):
    """dx = dout * exponent * x ** (exponent - 1); 0 for exponent 0 (also at x = 0)."""
    x, exponent = cache
    if exponent == 0:  # x ** -1 would be inf at x = 0, and 0 * inf is nan
        return (np.zeros_like(dout),)
    return (dout * exponent * np.power(x, exponent - 1),)


# ---------------------------------------------------------------------------------------------
# elementwise gates


def exp_forward(x):
    """out = e ** x."""
    out = np.exp(x)
    return out, out


def exp_backward(dout, cache):
    """dx = dout * e ** x."""
    return (dout * cache,)


def log_forward(x):
    """out = ln x (x > 0)."""
    return np.log(x), x


def log_backward(dout, cache):
    """dx = dout / x."""
    return (dout / cache,)


def maximum_forward(a, b):
    """out = max(a, b) elementwise, broadcasting; ties go to `a`, a NaN wins (`a` if both are)."""
    a_b, b_b = np.broadcast_arrays(a, b)
    first = (a_b >= b_b) | np.isnan(a_b)
    return np.where(first, a_b, b_b), (first, np.shape(a), np.shape(b))


def maximum_backward(dout, cache):
    """da = dout where a won (a >= b or a is NaN), db = dout elsewhere, each summed to its input's shape."""
    first, a_shape, b_shape = cache
    zero = np.zeros_like(dout)
    return _reduce_to(np.where(first, dout, zero), a_shape), _reduce_to(np.where(first, zero, dout), b_shape)


def relu_forward(x):
    """out = max(0, x)."""
    return np.where(x > 0, x, np.zeros_like(x)), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (ReLU'(0) = 0)."""
    return (dout * (cache > 0),)


def leaky_relu_forward(x, negative_slope=0.01):
    """out = x where x > 0, else negative_slope * x."""
    slope = np.where(x > 0, 1.0, negative_slope).astype(np.result_type(x), copy=False)
    return x * slope, slope


def leaky_relu_backward(dout, cache):
    """dx = dout where x > 0, else negative_slope * dout (the slope at 0 is negative_slope)."""
    return (dout * cache,)


def elu_forward(x, alpha=1.0):
    """out = x where x > 0, else alpha * (e ** x - 1)."""
    negative = x <= 0
    safe = np.where(negative, x, np.zeros_like(x))  # e ** x only where it is used
    out = np.where(negative, alpha * np.expm1(safe), x)
    return out, (negative, safe, alpha)


def elu_backward(dout, cache):
    """dx = dout where x > 0, else dout * alpha * e ** x (alpha at 0)."""
    negative, safe, alpha = cache
    local = np.where(negative, alpha * np.exp(safe), 1.0)
    return ((dout * local).astype(dout.dtype, copy=False),)


def sigmoid_forward(x):
    """out = 1 / (1 + e ** -x), computed as (1 + tanh(x / 2)) / 2 so no input overflows."""
    out = 0.5 * np.tanh(0.5 * x) + 0.5
    return out, out


def sigmoid_backward(dout, cache):
    """dx = dout * s * (1 - s) with s the saved output."""
    s = cache
    return (dout * s * (1 - s),)


def tanh_forward(x):
    """out = tanh(x)."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """dx = dout * (1 - tanh(x) ** 2)."""
    return (dout * (1 - cache * cache),)


# ---------------------------------------------------------------------------------------------
# the PyTorch surface


def cast_forward(x, dtype="float64"):
    """out = x converted to `dtype` (float32 or float64)."""
    return x.astype(dtype), x.dtype


def cast_backward(dout, cache):
    """dx = dout converted back to x's dtype."""
    return (dout.astype(cache),)


def abs_forward(x):
    """out = |x|."""
    return np.where(x < 0, -x, x), x


def abs_backward(dout, cache):
    """dx = dout * sign(x): +1 for x > 0, -1 for x < 0, 0 at x = 0."""
    x = cache
    return (dout * ((x > 0).astype(np.int8) - (x < 0).astype(np.int8)),)


def sqrt_forward(x):
    """out = x ** 0.5 (x >= 0)."""
    return np.power(x, 0.5), x


def sqrt_backward(dout, cache):
    """dx = dout * 0.5 * x ** -0.5."""
    return (dout * 0.5 * np.power(cache, -0.5),)


def clamp_forward(x, min=None, max=None):
    """out = min(max(x, min), max), a missing bound not applied."""
    out = x
    if min is not None:
        out = np.maximum(out, np.asarray(min, dtype=x.dtype))
    if max is not None:
        out = np.minimum(out, np.asarray(max, dtype=x.dtype))
    return out, (x, min, max)


def clamp_backward(dout, cache):
    """dx = dout where min <= x <= max (bounds included), else 0."""
    x, lo, hi = cache
    passes = np.ones(x.shape, dtype=bool)
    if lo is not None:
        passes = passes & (x >= lo)
    if hi is not None:
        passes = passes & (x <= hi)
    return (np.where(passes, dout, np.zeros_like(dout)),)


def pow_tensor_forward(a, b):
    """out = a ** b elementwise, broadcasting."""
    out = np.power(a, b)
    return out, (a, b, out)


def pow_tensor_backward(dout, cache):
    """da = dout * b * a ** (b - 1) (0 where b = 0); db = dout * a ** b * ln a (0 where a = 0, b >= 0)."""
    a, b, out = cache
    zero = np.zeros_like(dout)
    with np.errstate(all="ignore"):
        da = np.where(np.broadcast_to(b == 0, dout.shape), zero, dout * b * np.power(a, b - 1))
        log_a = np.log(np.where(a == 0, np.ones_like(a), a))
        db = np.where(np.broadcast_to((a == 0) & (b >= 0), dout.shape), zero, dout * out * log_a)
    return _reduce_to(da, np.shape(a)), _reduce_to(db, np.shape(b))


def cat_forward(*xs, dim=0):
    """out = the inputs concatenated along `dim`."""
    axis = dim % xs[0].ndim
    return np.concatenate(xs, axis=axis), (axis, [x.shape[axis] for x in xs])


def cat_backward(dout, cache):
    """d input k = the slice of dout along `dim` that input k filled."""
    axis, sizes = cache
    grads, start = [], 0
    for n in sizes:
        grads.append(np.take(dout, np.arange(start, start + n), axis=axis))
        start += n
    return tuple(grads)


def where_forward(a, b, cond):
    """out = a where cond else b, broadcasting all three."""
    return np.where(cond, a, b), (cond, np.shape(a), np.shape(b))


def where_backward(dout, cache):
    """da = dout where cond, db = dout where not cond, each summed to its input's shape."""
    cond, a_shape, b_shape = cache
    return _reduce_to(dout * cond, a_shape), _reduce_to(dout * ~np.asarray(cond), b_shape)


def _softmax_jacobian_product(dout, jac, axis):
    """dx_j = sum_i dout_i J_ij along `axis`, J of shape (..., n, n) with `axis` moved last."""
    d = np.moveaxis(dout, axis, -1)
    return np.moveaxis(np.einsum("...i,...ij->...j", d, jac), -1, axis)


def softmax_forward(x, dim):
    """out = e**(x - max) / sum e**(x - max) along `dim`."""
    axis = dim % x.ndim
    e = np.exp(x - np.max(x, axis=axis, keepdims=True)) if x.size else x.copy()
    out = e / np.sum(e, axis=axis, keepdims=True)
    return out, (out, axis)


def softmax_backward(dout, cache):
    """dx = J^T dout with the softmax Jacobian J_ij = s_i (delta_ij - s_j)."""
    s, axis = cache
    sl = np.moveaxis(s, axis, -1)
    jac = sl[..., :, None] * (np.eye(sl.shape[-1], dtype=s.dtype) - sl[..., None, :])
    return (_softmax_jacobian_product(dout, jac, axis),)


def log_softmax_forward(x, dim):
    """out = x - logsumexp(x) along `dim`, the logsumexp shifted by the max."""
    axis = dim % x.ndim
    if x.size == 0:
        return x.copy(), (x.copy(), axis)
    m = np.max(x, axis=axis, keepdims=True)
    out = x - (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)))
    return out, (np.exp(out), axis)


def log_softmax_backward(dout, cache):
    """dx = J^T dout with the log-softmax Jacobian J_ij = delta_ij - s_j (s = softmax(x))."""
    s, axis = cache
    sl = np.moveaxis(s, axis, -1)
    jac = np.eye(sl.shape[-1], dtype=s.dtype) - sl[..., None, :]
    return (_softmax_jacobian_product(dout, jac, axis),)


def dropout_forward(x, keep, p):
    """out = x * keep / (1 - p): inverted dropout with the kept positions `keep` (bools)."""
    return x * keep / (1 - p), (keep, p)


def dropout_backward(dout, cache):
    """dx = dout * keep / (1 - p)."""
    keep, p = cache
    return (dout * keep / (1 - p),)


# ---------------------------------------------------------------------------------------------
# linear algebra


def matmul_forward(a, b):
    """out = a @ b for a (N, K) or (K,), b (K, M) or (K,): (N, M), (N,), (M,) or ()."""
    return np.matmul(a, b), (a, b)


def matmul_backward(dout, cache):
    """da = dout @ b.T, db = a.T @ dout, with vectors treated as a row (a) or a column (b)."""
    a, b = cache
    a2 = a.reshape(1, -1) if a.ndim == 1 else a  # (N, K)
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b  # (K, M)
    d2 = np.reshape(dout, (a2.shape[0], b2.shape[1]))  # (N, M)
    return (d2 @ b2.T).reshape(a.shape), (a2.T @ d2).reshape(b.shape)


def affine_forward(x, W, b, activation=None, negative_slope=0.01, alpha=1.0):
    """out = act(x @ W + b) with x (N, D), W (D, M), b (M,) -> (N, M).

    activation: None, "relu", "leaky_relu" (with negative_slope), "sigmoid", "tanh" or "elu" (with
    alpha), each as its own reference gate above.
    """
    z = np.dot(x, W) + b
    if activation is None:
        return z, (x, W, None)
    attrs = {"leaky_relu": {"negative_slope": negative_slope}, "elu": {"alpha": alpha}}.get(activation, {})
    gate_forward, gate_backward = REFERENCE[activation]
    out, gate_cache = gate_forward(z, **attrs)
    return out, (x, W, (gate_backward, gate_cache))


def affine_backward(dout, cache):
    """dout (N, M) -> dz = dout act'(z); dx (N, D) = dz W^T, dW (D, M) = x^T dz, db (M,) = sum_n dz."""
    x, W, gate = cache
    dz = dout if gate is None else gate[0](dout, gate[1])[0]
    return np.dot(dz, W.T), np.dot(x.T, dz), np.sum(dz, axis=0)


# ---------------------------------------------------------------------------------------------
# reductions


def _axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if np.ndim(axis) == 0:
        axis = (axis,)
    return tuple(sorted(int(a) % ndim for a in axis)) if ndim else ()


def _unreduce(dout, axes: tuple, keepdims: bool) -> np.ndarray:
    """dout of a reduction over `axes`, with the reduced axes restored as size 1."""
    if keepdims:
        return np.asarray(dout)
    return np.expand_dims(dout, axes)


def sum_forward(x, axis=None, keepdims=False):
    """out = sum of x over `axis` (None: all), keeping reduced axes as 1 when keepdims."""
    axes = _axes(axis, x.ndim)
    return np.asarray(np.sum(x, axis=axes, keepdims=keepdims)), (x.shape, axes, keepdims)


def sum_backward(dout, cache):
    """dx = dout copied along the reduced axes."""
    shape, axes, keepdims = cache
    return (np.broadcast_to(_unreduce(dout, axes, keepdims), shape).copy(),)


def sumsq_forward(x):
    """out = sum of x**2 over every entry."""
    return np.asarray((x * x).sum()), x


def sumsq_backward(dout, cache):
    """dx = 2 x dout."""
    return (2 * cache * dout,)


def mean_forward(x, axis=None, keepdims=False):
    """out = mean of x over `axis`; the reduced axes must not be empty."""
    axes = _axes(axis, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    return np.asarray(np.sum(x, axis=axes, keepdims=keepdims) / count), (x.shape, axes, keepdims, count)


def mean_backward(dout, cache):
    """dx = dout / count copied along the reduced axes (count = number of reduced entries)."""
    shape, axes, keepdims, count = cache
    return (np.broadcast_to(_unreduce(dout, axes, keepdims) / count, shape).copy(),)


def max_forward(x, axis=None, keepdims=False):
    """out = max of x over `axis`; the gradient will go to the first maximal entry (C order)."""
    axes = _axes(axis, x.ndim)
    kept = [a for a in range(x.ndim) if a not in axes]
    # (kept..., reduced...) -> (K, R): one row per output entry, the reduced entries in C order
    width = int(np.prod([x.shape[a] for a in axes]))
    rows = np.moveaxis(x, axes, range(len(kept), x.ndim)).reshape(-1, width)
    first = rows.argmax(axis=1)
    out = rows[np.arange(rows.shape[0]), first]
    if keepdims:
        out_shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    else:
        out_shape = tuple(x.shape[a] for a in kept)
    return out.reshape(out_shape), (x.shape, axes, first, rows.shape)


def max_backward(dout, cache):
    """dx = dout at the first maximal entry of each reduced group, 0 elsewhere."""
    shape, axes, first, rows_shape = cache
    drows = np.zeros(rows_shape, dtype=dout.dtype)
    drows[np.arange(rows_shape[0]), first] = np.reshape(dout, -1)
    kept = [a for a in range(len(shape)) if a not in axes]
    moved_shape = [shape[a] for a in kept] + [shape[a] for a in axes]
    return (np.moveaxis(drows.reshape(moved_shape), range(len(kept), len(shape)), axes),)


def maxout_forward(z, pieces=2):
    """z (N, H * pieces) -> out (N, H): out[n, h] = max_p z[n, h * pieces + p]."""
    n, width = z.shape
    groups = z.reshape(n, width // pieces, pieces)
    first = groups.argmax(axis=2)  # (N, H), first maximal piece
    out = np.take_along_axis(groups, first[:, :, None], axis=2)[:, :, 0]
    return out, (z.shape, first, pieces)


def maxout_backward(dout, cache):
    """dout (N, H) -> dz (N, H * pieces): dout at the first maximal piece of each group."""
    shape, first, pieces = cache
    onehot = first[:, :, None] == np.arange(pieces)  # (N, H, pieces)
    return ((onehot * dout[:, :, None]).astype(dout.dtype).reshape(shape),)


# ---------------------------------------------------------------------------------------------
# shape


def reshape_forward(x, shape):
    """out = x with a new shape of the same size (one entry may be -1)."""
    return np.reshape(x, shape), x.shape


def reshape_backward(dout, cache):
    """dx = dout reshaped to x's shape."""
    return (np.reshape(dout, cache),)


def transpose_forward(x, axes=None):
    """out = x with its axes permuted (reversed when axes is None)."""
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
    return np.transpose(x, axes), axes


def transpose_backward(dout, cache):
    """dx = dout permuted back: axis axes[i] of x is axis i of out."""
    axes = cache
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return (np.transpose(dout, inverse),)


def getitem_forward(x, index):
    """out = x[index] for basic (ints, slices, ...) and advanced (integer arrays) indices."""
    return np.asarray(x[index]), (x.shape, index)


def getitem_backward(dout, cache):
    """dx = zeros of x's shape with dout scatter-added at `index` (repeated entries add up)."""
    shape, index = cache
    # Differentiate by linearity: route every position of x through the same index and add dout
    # into the positions it picked, one picked element at a time.
    positions = np.arange(int(np.prod(shape)), dtype=np.intp).reshape(shape)[index]
    dx = np.zeros(int(np.prod(shape)), dtype=dout.dtype)
    np.add.at(dx, np.reshape(positions, -1), np.reshape(dout, -1))
    return (dx.reshape(shape),)


# ---------------------------------------------------------------------------------------------
# losses


def softmax_cross_entropy_forward(scores, labels):
    """loss = -(1/N) sum_i log softmax(scores_i)[y_i]; scores (N, C), labels (N,) ints in [0, C)."""
    n = scores.shape[0]
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = -np.sum(log_probs[np.arange(n), labels]) / n
    return np.asarray(loss, dtype=scores.dtype), (np.exp(log_probs), labels)


def softmax_cross_entropy_backward(dout, cache):
    """dscores (N, C) = dout * (softmax(scores) - onehot(labels)) / N."""
    probs, labels = cache
    n, c = probs.shape
    onehot = labels[:, None] == np.arange(c)
    return ((dout * (probs - onehot) / n).astype(np.result_type(dout), copy=False),)


def svm_loss_forward(scores, labels, delta=1.0):
    """loss = (1/N) sum_i sum_{j != y_i} max(0, s_ij - s_iy_i + delta); scores (N, C), labels (N,)."""
    n, c = scores.shape
    correct = scores[np.arange(n), labels][:, None]
    other = labels[:, None] != np.arange(c)
    margins = np.where(other, np.maximum(scores - correct + delta, 0), 0)  # max(0, NaN) = NaN
    return np.asarray(np.sum(margins) / n, dtype=scores.dtype), (other & ~(margins <= 0), other)


def svm_loss_backward(dout, cache):
    """dscores[i, j] = dout / N * (1[margin_ij > 0 or NaN] for j != y_i, -#such margins for j = y_i)."""
    positive, other = cache
    n = positive.shape[0]
    count = positive.sum(axis=1, keepdims=True)
    local = np.where(other, positive, -count)
    return ((dout * local / n).astype(np.result_type(dout), copy=False),)



# ---------------------------------------------------------------------------------------------
# normalisation (CS231n assignment 2)


def batchnorm_forward(x, gamma, beta, eps=1e-5, training=True, running_mean=None, running_var=None,
                      momentum=0.1):
    """out = gamma * (x - mu) / sqrt(var + eps) + beta per column of x (N, D); gamma, beta (D,).

    training: mu and var (biased) of the batch, and running_mean/running_var, when given, updated in
    place with momentum (the variance unbiased, N / (N - 1), as PyTorch). Otherwise mu, var are the
    running statistics.
    """
    if training:
        mu = x.mean(axis=0)
        var = ((x - mu) ** 2).mean(axis=0)
        if running_mean is not None:
            n = x.shape[0]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mu
            running_var[...] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    else:
        mu = np.asarray(running_mean, dtype=x.dtype)
        var = np.asarray(running_var, dtype=x.dtype)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    return gamma * xhat + beta, (training, xhat, std, gamma)


def batchnorm_backward(dout, cache):
    """The chain rule step by step through the graph mu -> var -> xhat (CS231n's slow version):
    dxhat = dout gamma; dvar = sum dxhat (x - mu) (-1/2) std^-3; dmu = -sum dxhat / std + dvar
    mean(-2 (x - mu)); dx = dxhat / std + dvar 2 (x - mu) / N + dmu / N. Evaluation: dx = dxhat / std.
    """
    training, xhat, std, gamma = cache
    n = xhat.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    if not training:
        return dxhat / std, dgamma, dbeta
    xc = xhat * std  # x - mu
    dvar = np.sum(dxhat * xc, axis=0) * -0.5 * std**-3
    dmu = -np.sum(dxhat, axis=0) / std + dvar * np.mean(-2.0 * xc, axis=0)
    dx = dxhat / std + dvar * 2.0 * xc / n + dmu / n
    return dx.astype(dout.dtype, copy=False), dgamma, dbeta


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """out = gamma * xhat + beta with xhat = x normalised over its trailing gamma.ndim dims."""
    axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    return gamma * xhat + beta, (xhat, std, gamma, axes)


def layernorm_backward(dout, cache):
    """Batch norm's step-by-step backward applied per example over the normalised dims."""
    xhat, std, gamma, axes = cache
    lead = tuple(range(xhat.ndim - gamma.ndim))
    d = gamma.size
    dbeta = dout.sum(axis=lead)
    dgamma = (dout * xhat).sum(axis=lead)
    dxhat = dout * gamma
    xc = xhat * std
    dvar = np.sum(dxhat * xc, axis=axes, keepdims=True) * -0.5 * std**-3
    dmu = -np.sum(dxhat, axis=axes, keepdims=True) / std + dvar * np.mean(-2.0 * xc, axis=axes, keepdims=True)
    dx = dxhat / std + dvar * 2.0 * xc / d + dmu / d
    return dx.astype(dout.dtype, copy=False), dgamma, dbeta


REFERENCE = {
    name: (globals()[f"{name}_forward"], globals()[f"{name}_backward"])
    for name in (
        "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "maximum", "relu", "leaky_relu",
        "elu", "sigmoid", "tanh", "matmul", "affine", "sum", "sumsq", "mean", "max", "maxout", "reshape",
        "transpose", "getitem", "softmax_cross_entropy", "svm_loss",
        "cast", "abs", "sqrt", "clamp", "pow_tensor", "cat", "where", "softmax", "log_softmax", "dropout",
    )
}
"""name -> (forward, backward) for every primitive of the op table."""
REFERENCE.update({name: (globals()[f"{name}_forward"], globals()[f"{name}_backward"])
                  for name in ("batchnorm", "layernorm")})
