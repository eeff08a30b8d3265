"""fastgrad's random generator: one NumPy Generator behind randn/rand, dropout and nn's initialisation.

`manual_seed(s)` reseeds it in place (every holder of `default_generator()` sees the new stream), as
`torch.manual_seed` does. Code that wants its own stream passes a Generator (`rng=`, `generator=`) or
a seed (nn's `seed=`) instead and does not touch this one.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

__all__ = ["manual_seed", "seed", "default_generator", "get_rng_state", "set_rng_state"]

_generator = np.random.Generator(np.random.PCG64())


def default_generator() -> np.random.Generator:
    """The generator that fastgrad draws from when no generator or seed is given."""
    return _generator


def manual_seed(seed) -> np.random.Generator:
    """Reseed fastgrad's generator with the integer `seed` (>= 0) and return it.

    Afterwards fg.randn, fg.rand, F.dropout and nn layers built without rng=/seed= repeat exactly.

    >>> import fastgrad as fg
    >>> _ = fg.manual_seed(0); a = fg.randn(3)
    >>> _ = fg.manual_seed(0); b = fg.randn(3)
    >>> bool((a.data == b.data).all())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"manual_seed: the seed must be an int >= 0, got {seed!r}")
    _generator.bit_generator.state = np.random.PCG64(int(seed)).state
    return _generator


def seed() -> int:
    """Reseed fastgrad's generator from the operating system's entropy; returns the seed used."""
    s = int(np.random.SeedSequence().entropy % 2**63)
    manual_seed(s)
    return s


def get_rng_state() -> dict:
    """A copy of the generator's state (a dict of ints: picklable, JSON-able), for checkpoints."""
    return copy.deepcopy(_generator.bit_generator.state)


def set_rng_state(state: dict) -> None:
    """Restore a state from `get_rng_state()`: the draws that followed it repeat."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("set_rng_state: expected a state returned by fastgrad.get_rng_state()")
    _generator.bit_generator.state = copy.deepcopy(state)
