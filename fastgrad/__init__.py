"""fastgrad: reverse-mode autodiff on the CPU, CS231n lecture 4 made real and fast.

>>> import fastgrad as fg
>>> x, y, z = (fg.tensor(v, requires_grad=True) for v in (-2.0, 5.0, -4.0))
>>> f = (x + y) * z
>>> f.backward()
>>> x.grad, y.grad, z.grad
(array(-4., dtype=float32), array(-4., dtype=float32), array(3., dtype=float32))
"""
from . import viz
from .autograd import is_grad_enabled, no_grad
from .functional import (
    affine,
    as_tensor,
    elu,
    exp,
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
from .generator import Generator, default_generator, manual_seed
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor
from .threads import get_num_threads, set_num_threads
from . import checkpoint, data, nn, optim

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "as_tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
    "maximum", "exp", "log", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "maxout", "affine",
    "softmax_cross_entropy", "svm_loss", "viz", "nn", "optim", "data", "set_num_threads",
    "get_num_threads", "Generator", "default_generator", "manual_seed", "checkpoint",
]


def __getattr__(name):
    """`fastgrad.train` is imported on first use, so that `python -m fastgrad.train` runs it only once."""
    if name == "train":
        import importlib

        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module 'fastgrad' has no attribute {name!r}")
