"""`fastgrad.Generator`: a seedable random stream of its own, like `torch.Generator`.

fastgrad's global stream is `fastgrad.random` (`fg.manual_seed`, `fg.get_rng_state`); a Generator
is for code that wants a separate, reproducible stream: `DataLoader(..., generator=g)`,
`nn.Dropout(p, generator=g)`, `nn.init.*(..., generator=g)`. `Generator().manual_seed(s)` returns
the generator, as PyTorch's does, so `generator=fg.Generator().manual_seed(0)` reads the same as
`generator=torch.Generator().manual_seed(0)`. Its state is a plain dict (`get_state`/`set_state`),
which a training checkpoint holds.

>>> g = Generator().manual_seed(0)
>>> a = g.random((2,)); _ = g.manual_seed(0); bool((g.random((2,)) == a).all())
True
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from . import random as _random

__all__ = ["Generator", "as_numpy_generator", "as_draws"]


class Generator:
    """A seedable random source over NumPy's PCG64. seed: an int >= 0, or None for fresh entropy.

    `.numpy` is the underlying numpy.random.Generator (manual_seed reseeds it in place).
    """

    def __init__(self, seed=None):
        self.numpy = np.random.Generator(np.random.PCG64())
        self.manual_seed(seed)

    def manual_seed(self, seed) -> "Generator":
        """Restart from `seed` (an int >= 0, or None for fresh entropy); returns self."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"manual_seed: the seed must be an int >= 0, got {seed!r}")
        self._seed = None if seed is None else int(seed)
        self.numpy.bit_generator.state = np.random.PCG64(self._seed).state
        return self

    def initial_seed(self):
        """The seed given to the last manual_seed (None when drawn from entropy)."""
        return self._seed

    def get_state(self) -> dict:
        """The full state as a plain dict of ints and strings (JSON-serialisable)."""
        return {"seed": self._seed, "bit_generator": copy.deepcopy(self.numpy.bit_generator.state)}

    def set_state(self, state: dict) -> "Generator":
        """Restore a state returned by get_state; returns self."""
        try:
            self.numpy.bit_generator.state = copy.deepcopy(state["bit_generator"])
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"set_state: not a fastgrad Generator state ({e})") from None
        self._seed = state.get("seed")
        return self

    def random(self, shape, dtype=np.float64) -> np.ndarray:
        """Uniform draws in [0, 1) of `shape` and `dtype` (float32 or float64)."""
        return self.numpy.random(shape, dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        """A random permutation of range(n)."""
        return self.numpy.permutation(n)

    def __repr__(self):
        return f"fastgrad.Generator(seed={self._seed})"


def as_numpy_generator(generator, where: str = "generator") -> np.random.Generator:
    """A numpy Generator for `generator`: None (fastgrad's global one, see fg.manual_seed), a
    fastgrad.Generator, a numpy.random.Generator, or an int seed (a new generator from it)."""
    if generator is None:
        return _random.default_generator()
    if isinstance(generator, Generator):
        return generator.numpy
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(
        f"{where}: expected a fastgrad.Generator, a numpy.random.Generator, an int seed or None, "
        f"got {type(generator).__module__}.{type(generator).__name__}"
    )


def as_draws(generator, where: str = "generator"):
    """Like as_numpy_generator, but any object with a random(shape) method is kept as it is (a
    test or a port can replay given dropout masks through it)."""
    if not isinstance(generator, (Generator, np.random.Generator, numbers.Integral)) and hasattr(generator, "random"):
        return generator
    return as_numpy_generator(generator, where)
