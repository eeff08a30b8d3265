"""fastgrad: reverse-mode autodiff on the CPU, CS231n lecture 4 made real and fast.

>>> import fastgrad as fg
>>> x, y, z = (fg.tensor(v, requires_grad=True) for v in (-2.0, 5.0, -4.0))
>>> f = (x + y) * z
>>> f.backward()
>>> x.grad, y.grad, z.grad
(array(-4., dtype=float32), array(-4., dtype=float32), array(3., dtype=float32))
"""
import numpy as np

from . import viz
from .autograd import is_debug, is_grad_enabled, no_grad, set_debug
from .functional import (
    affine,
    as_tensor,
    elu,
    exp,
    from_numpy,
    leaky_relu,
    log,
    maximum,
    maxout,
    relu,
    sigmoid,
    softmax_cross_entropy,
    svm_loss,
    tanh,
    tensor,
)
from .functional import (  # the PyTorch surface
    abs,
    argmax,
    argmin,
    cat,
    clamp,
    clip,
    concat,
    flatten,
    log_softmax,
    max,
    mean,
    min,
    minimum,
    pow,
    softmax,
    sqrt,
    stack,
    sum,
    where,
)
from .factories import (
    arange,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    rand_like,
    randn,
    randn_like,
    zeros,
    zeros_like,
)
from .random import get_rng_state, manual_seed, seed, set_rng_state
from .tensor import ValuesIndices
from .gradcheck import GradcheckError, gradcheck
from .tensor import BoolArray, Tensor, get_default_dtype, set_default_dtype
from .threads import get_num_threads, set_num_threads
from .generator import Generator
from . import checkpoint, data, nn, optim
from .capture import CaptureWarning, capture
from . import functional, random

float32, float64 = np.float32, np.float64  # dtype=fg.float64, as torch.float64

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "as_tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
    "maximum", "exp", "log", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "maxout", "affine",
    "softmax_cross_entropy", "svm_loss", "viz", "nn", "optim", "data", "set_num_threads",
    "get_num_threads", "set_debug", "is_debug", "set_default_dtype", "get_default_dtype",
    "from_numpy", "BoolArray",
    # the PyTorch surface
    "functional", "random", "float32", "float64", "ValuesIndices",
    # (fg.abs, fg.pow, fg.max, fg.min, fg.sum exist but stay out of __all__: `from fastgrad import *`
    # must not shadow Python's builtins)
    "sqrt", "clamp", "clip", "cat", "concat", "stack", "where", "softmax", "log_softmax",
    "minimum", "mean", "argmax", "argmin", "flatten",
    "zeros", "ones", "full", "empty", "eye", "arange", "randn", "rand", "zeros_like", "ones_like",
    "full_like", "empty_like", "randn_like", "rand_like",
    "manual_seed", "seed", "get_rng_state", "set_rng_state",
    "Generator", "checkpoint", "capture", "CaptureWarning",
]


def __getattr__(name):
    """`fastgrad.train` is imported on first use, so that `python -m fastgrad.train` runs it only once."""
    if name == "train":
        import importlib

        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module 'fastgrad' has no attribute {name!r}")
