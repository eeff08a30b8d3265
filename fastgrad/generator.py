"""Seeded random numbers: `fastgrad.Generator`, like `torch.Generator`, over NumPy's PCG64.

Everything random in fastgrad that is not given a generator (dropout masks, DataLoader shuffles)
draws from `fastgrad.default_generator`, which `fastgrad.manual_seed(s)` reseeds. A generator's
state is a plain dict (`get_state`/`set_state`), so a training checkpoint can hold it.

>>> g = Generator().manual_seed(0)
>>> a = g.random((2,)); g.manual_seed(0); bool((g.random((2,)) == a).all())
True
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Generator", "default_generator", "manual_seed", "as_numpy_generator"]


class Generator:
    """A seedable random source. `Generator().manual_seed(s)` returns the generator, as in PyTorch.

    seed: an int, or None for fresh entropy. `.numpy` is the underlying numpy.random.Generator.
    """

    def __init__(self, seed=None):
        self.manual_seed(seed)

    def manual_seed(self, seed) -> "Generator":
        """Restart from `seed` (a non-negative int, or None for fresh entropy); returns self."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"manual_seed: the seed must be a non-negative integer, got {seed!r}")
        self._seed = None if seed is None else int(seed)
        self.numpy = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def initial_seed(self):
        """The seed given to the last manual_seed (None when drawn from entropy)."""
        return self._seed

    def get_state(self) -> dict:
        """The generator's full state as a plain dict of ints and strings (JSON-serialisable)."""
        return {"seed": self._seed, "bit_generator": self.numpy.bit_generator.state}

    def set_state(self, state: dict) -> "Generator":
        """Restore a state returned by get_state; returns self."""
        try:
            bit = state["bit_generator"]
            self.numpy.bit_generator.state = bit
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"set_state: not a fastgrad Generator state ({e})") from None
        self._seed = state.get("seed")
        return self

    def random(self, shape, dtype=np.float64) -> np.ndarray:
        """Uniform draws in [0, 1) of `shape` and `dtype` (float32 or float64)."""
        return self.numpy.random(shape, dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        """A random permutation of range(n) as an intp array."""
        return self.numpy.permutation(n)

    def __repr__(self):
        return f"fastgrad.Generator(seed={self._seed})"


default_generator = Generator()


def manual_seed(seed) -> Generator:
    """Reseed `fastgrad.default_generator` (dropout masks, shuffles without a generator); returns it."""
    return default_generator.manual_seed(seed)


def as_numpy_generator(generator) -> np.random.Generator:
    """A numpy Generator for `generator`: None (the default generator), a fastgrad.Generator, a
    numpy.random.Generator, or an int seed (a new generator seeded with it)."""
    if generator is None:
        return default_generator.numpy
    if isinstance(generator, Generator):
        return generator.numpy
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(
        f"generator must be a fastgrad.Generator, a numpy.random.Generator, an int seed or None, "
        f"got {type(generator).__name__}"
    )
