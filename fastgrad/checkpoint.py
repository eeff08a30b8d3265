"""Training checkpoints: model (parameters and buffers) + optimizer + scheduler + RNG states + step,
in one .npz written atomically (a temporary file in the same folder, then os.replace), so that a
run killed at any moment leaves either the old checkpoint or the new one, never half a file.

Resuming restores everything a run's future depends on, so N steps, a checkpoint, a fresh process
and M more steps give the same numbers as N + M straight:

>>> save(path, model, opt, sched, step=10, generators={"data": rng})      # doctest: +SKIP
>>> meta = load(path, model, opt, sched, generators={"data": rng})        # doctest: +SKIP
>>> meta["step"]                                                          # doctest: +SKIP
10

Layout: "model/<name>" arrays (the model's state_dict), "optim/<i>/<entry>" arrays (per parameter
state), and "__meta__", one JSON string: format version, step, the optimizer's type, groups and
step counts, the scheduler's state, the generators' states (fastgrad.random's always) and
`extra` (anything JSON-serialisable the caller adds, e.g. the training history).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import generator as _gen
from . import random as _random
from ._io import atomic_write

__all__ = ["save", "load", "atomic_savez"]

FORMAT = 1
_META = "__meta__"


def atomic_savez(path, arrays: dict) -> Path:
    """np.savez(path, **arrays) through fastgrad's atomic_write (temporary file, fsync, os.replace)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _generator_state(g):
    if isinstance(g, _gen.Generator):
        return {"kind": "fastgrad", **g.get_state()}
    if isinstance(g, np.random.Generator):
        return {"kind": "numpy", "bit_generator": g.bit_generator.state}
    raise TypeError(f"checkpoint: generators must be fastgrad or numpy Generators, got {type(g).__name__}")


def _set_generator_state(g, state, name):
    if isinstance(g, _gen.Generator):
        g.set_state(state)
    elif isinstance(g, np.random.Generator):
        g.bit_generator.state = state["bit_generator"]
    else:
        raise TypeError(f"checkpoint: generator {name!r} is a {type(g).__name__}")


def save(path, model, optimizer=None, scheduler=None, step: int = 0, generators: dict | None = None,
         extra=None) -> Path:
    """Write a checkpoint of `model` (and optimizer, scheduler, generators) at `step`; returns path."""
    arrays = {}
    for k, v in model.state_dict().items():
        arrays[f"model/{k}"] = v
    meta = {"format": FORMAT, "step": int(step), "extra": extra}
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        meta["model_config"] = config
    if optimizer is not None:
        sd = optimizer.state_dict()
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
        steps = {}
        for i, s in sd["state"].items():
            for k, v in s.items():
                if isinstance(v, np.ndarray):
                    arrays[f"optim/{i}/{k}"] = v
                elif k == "step":
                    steps[str(i)] = int(v)
        meta["optimizer"] = {"type": type(optimizer).__name__, "param_groups": groups, "steps": steps}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__, "state": scheduler.state_dict()}
    gens = {"fastgrad.random": _random.default_generator(), **(generators or {})}
    meta["generators"] = {name: _generator_state(g) for name, g in gens.items()}
    arrays[_META] = np.array(json.dumps(meta))
    return atomic_savez(path, arrays)


def load(path, model, optimizer=None, scheduler=None, generators: dict | None = None) -> dict:
    """Restore a checkpoint written by `save` into the given objects; returns its metadata
    (with "step" and "extra"). Everything is read and checked before the objects change where the
    objects themselves check (load_state_dict); a checkpoint without the optimizer or scheduler
    asked for raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint: {path} is not a readable checkpoint ({e})") from None
    if _META not in data:
        raise ValueError(f"checkpoint: {path} has no {_META} entry (not written by fastgrad.checkpoint.save)")
    meta = json.loads(str(data.pop(_META)))
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} has format {meta.get('format')}, expected {FORMAT}")
    model_state = {k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")}
    if optimizer is not None:
        o = meta.get("optimizer")
        if o is None:
            raise ValueError(f"checkpoint: {path} holds no optimizer state")
        if o["type"] != type(optimizer).__name__:
            raise ValueError(f"checkpoint: {path} holds a {o['type']} state, not a {type(optimizer).__name__} one")
        state = {}
        for i in range(len(optimizer.params)):
            entry = {"step": o["steps"].get(str(i), 0)}
            prefix = f"optim/{i}/"
            entry.update({k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)})
            state[i] = entry
        optim_state = {"state": state, "param_groups": o["param_groups"]}
    if scheduler is not None:
        s = meta.get("scheduler")
        if s is None:
            raise ValueError(f"checkpoint: {path} holds no scheduler state")
        if s["type"] != type(scheduler).__name__:
            raise ValueError(f"checkpoint: {path} holds a {s['type']} state, not a {type(scheduler).__name__} one")
    gens = {"fastgrad.random": _random.default_generator(), **(generators or {})}
    saved_gens = meta.get("generators", {})
    missing = [name for name in gens if name not in saved_gens]
    if missing:
        raise ValueError(f"checkpoint: {path} holds no state for the generators {missing}")
    model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(optim_state)
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"]["state"])
    for name, g in gens.items():
        _set_generator_state(g, saved_gens[name], name)
    return meta
