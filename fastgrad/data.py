"""Datasets, seeded splits, normalisation and a shuffling mini-batch iterator.

- `digits()`: the real 8x8 UCI handwritten digits, shipped with fastgrad (no network);
- `spiral()`: CS231n's K-arm spiral toy set, generated;
- `mnist(data_dir)` / `cifar10(data_dir)`: read from files you downloaded yourself;
- `load(name, ...)`: any of them as normalised train/val/test `Splits`, as the training script uses.

Images come back flattened to rows: X (N, D) float32, y (N,) int64 class labels.

>>> splits = load("digits", seed=0)
>>> splits.X_train.shape, splits.num_classes
((1258, 64), 10)
>>> for Xb, yb in minibatches(splits.X_train, splits.y_train, 64, rng=np.random.default_rng(0)):
...     pass
"""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError", "Splits", "digits", "spiral", "mnist", "cifar10", "split", "normalize", "minibatches",
    "load", "DATASETS", "TensorDataset", "DataLoader",
]

DATASETS = ("digits", "spiral", "mnist", "cifar10")
_HERE = Path(__file__).resolve().parent


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


# ---------------------------------------------------------------------------------------------
# the datasets


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI "Optical Recognition of Handwritten Digits" test set: X (1797, 64) float32, y (1797,).

    Each row is an 8x8 image of pixel counts in 0..16 (as floats), each label a digit 0..9.
    E. Alpaydin, C. Kaynak (1998), UCI Machine Learning Repository, CC BY 4.0; the copy is
    scikit-learn's (see tools/convert_digits.py).
    """
    path = _HERE / "datasets" / "digits.npz"
    if not path.is_file():
        raise DataError(f"the bundled digits file is missing: {path} (reinstall fastgrad)")
    with np.load(path, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    return images.reshape(len(images), -1).astype(np.float32), labels.astype(np.int64)


def spiral(K: int = 3, N: int = 100, seed: int = 0, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """CS231n's spiral: K arms of N points each in 2-D; X (N*K, 2) float32, y (N*K,) in 0..K-1.

    Arm k has radius r = t in [0, 1] and angle 4(k + t) + noise * standard normal (radians).
    Not linearly separable: a linear classifier gets about 50% for K = 3.

    >>> X, y = spiral(K=3, N=100, seed=0); X.shape
    (300, 2)
    """
    if K < 2 or N < 1:
        raise ValueError(f"spiral: need K >= 2 arms and N >= 1 points per arm, got K={K}, N={N}")
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, N), K)
    k = np.repeat(np.arange(K), N)
    theta = 4.0 * (k + r) + noise * rng.standard_normal(N * K)
    X = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return X.astype(np.float32), k.astype(np.int64)


_MNIST_FILES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find(data_dir: Path, name: str, dataset: str, gz: bool = False, subfolder: str | None = None) -> Path:
    """`name` (or `name`.gz when gz) in data_dir or data_dir/subfolder; DataError naming it if absent."""
    folders = [data_dir] + ([data_dir / subfolder] if subfolder else [])
    for folder in folders:
        for candidate in (folder / name, folder / (name + ".gz")) if gz else (folder / name,):
            if candidate.is_file():
                return candidate
    also = f" or {name}.gz" if gz else ""
    where = f" (also looked in {folders[1]})" if subfolder else ""
    raise DataError(f"{dataset}: missing file {data_dir / name}{also}{where}")


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not) as a uint8 array of its stated shape.

    The header is two zero bytes, a type byte (0x08 = unsigned byte), the number of dims, and one
    big-endian int32 per dim; the data follows in row-major order. Gzip is recognised by its first
    bytes, whatever the name. Anything else (a bad header, negative or inconsistent sizes, a
    truncated or corrupt file) raises DataError naming the file.
    """
    path = Path(path)
    gzipped = False
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a bad deflate stream, zlib.error
        what = "a damaged gzip file" if gzipped else "unreadable"
        raise DataError(f"cannot read {path}: {what} ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] < 1:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad header {raw[:4].hex() or 'empty'}, "
                        "expected 000008 and a dimension count)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise DataError(f"{path}: header gives a negative size, shape {shape}")
    size = math.prod(shape)  # Python ints: no overflow
    if len(raw) - header != size:
        raise DataError(f"{path}: header says shape {shape} ({size} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def mnist(data_dir) -> dict[str, np.ndarray]:
    """MNIST from the four IDX files (gzipped or not) in `data_dir`.

    Returns X_train (60000, 784), y_train, X_test (10000, 784), y_test as float32 pixels in 0..255
    and int64 labels. Files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte (each optionally with .gz), from http://yann.lecun.com/exdb/mnist/ or a mirror.
    """
    data_dir = Path(data_dir)
    paths = {k: _find(data_dir, name, "mnist", gz=True) for k, name in _MNIST_FILES.items()}
    out = {k: read_idx(path) for k, path in paths.items()}
    for part in ("train", "test"):
        X, y = out[f"X_{part}"], out[f"y_{part}"]
        X_path, y_path = paths[f"X_{part}"], paths[f"y_{part}"]
        if X.ndim != 3:
            raise DataError(f"mnist: {X_path} holds shape {X.shape}, expected images (n, rows, cols)")
        if y.ndim != 1:
            raise DataError(f"mnist: {y_path} holds shape {y.shape}, expected labels (n,)")
        if len(X) == 0 or X.shape[1] == 0 or X.shape[2] == 0:
            raise DataError(f"mnist: {X_path} holds no images (shape {X.shape})")
        if len(X) != len(y):
            raise DataError(f"mnist: {X_path} holds {len(X)} images but {y_path} holds {len(y)} labels")
        if y.max(initial=0) > 9:
            raise DataError(f"mnist: {y_path} has labels up to {y.max()}, expected 0..9")
    if out["X_train"].shape[1:] != out["X_test"].shape[1:]:
        raise DataError(f"mnist: the images of {paths['X_train']} are {out['X_train'].shape[1:]} but those of "
                        f"{paths['X_test']} are {out['X_test'].shape[1:]}")
    for part in ("train", "test"):
        X, y = out[f"X_{part}"], out[f"y_{part}"]
        out[f"X_{part}"] = X.reshape(len(X), -1).astype(np.float32)
        out[f"y_{part}"] = y.astype(np.int64)
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only: a downloaded pickle cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),  # protocol-2 bytes
    }

    def find_class(self, module, name):
        if module.startswith("numpy.core."):  # pickles written by NumPy 1 (the CIFAR batches)
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a malformed file
        raise DataError(f"cifar10: cannot read {path}: {e}") from None
    if not isinstance(batch, dict):
        raise DataError(f"cifar10: {path} does not hold a dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"cifar10: {path} lacks 'data' or 'labels'")
    try:
        X = np.asarray(batch["data"])
        y = np.asarray(batch["labels"])
    except (ValueError, TypeError) as e:  # ragged lists and the like
        raise DataError(f"cifar10: {path} holds malformed data or labels ({e})") from None
    if X.dtype.kind not in "uif" or y.dtype.kind not in "ui":
        raise DataError(f"cifar10: {path} has data of type {X.dtype} and labels of type {y.dtype}; "
                        "expected numbers and integer labels")
    if X.ndim != 2 or X.shape[1] != 3072 or y.shape != (len(X),) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"cifar10: {path} has data {X.shape} and labels {y.shape}; expected (n, 3072) and (n,) in 0..9")
    return X, y


def cifar10(data_dir) -> dict[str, np.ndarray]:
    """CIFAR-10 from the python-pickle batches in `data_dir` (or `data_dir/cifar-10-batches-py`).

    Returns X_train (50000, 3072), y_train, X_test (10000, 3072), y_test: float32 pixels in 0..255
    (each row is the 32x32 red plane, then green, then blue) and int64 labels. Files: data_batch_1 ...
    data_batch_5 and test_batch from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz.
    """
    data_dir = Path(data_dir)

    paths = [_find(data_dir, name, "cifar10", subfolder="cifar-10-batches-py")
             for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]]
    train = [_cifar_batch(path) for path in paths[:5]]
    X_test, y_test = _cifar_batch(paths[5])
    return {
        "X_train": np.concatenate([X for X, _ in train]).astype(np.float32),
        "y_train": np.concatenate([y for _, y in train]).astype(np.int64),
        "X_test": X_test.astype(np.float32),
        "y_test": y_test.astype(np.int64),
    }


# ---------------------------------------------------------------------------------------------
# splits, normalisation, batches


@dataclass
class Splits:
    """Train/validation/test arrays of one dataset: X_* (n, D) float32, y_* (n,) int64."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str = ""

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    def __repr__(self):
        return (f"Splits({self.name!r}: train {self.X_train.shape}, val {self.X_val.shape}, "
                f"test {self.X_test.shape}, {self.num_classes} classes)")


def split(X, y, fractions=(0.2, 0.1), seed: int = 0) -> tuple:
    """Shuffle (X, y) with `seed` and cut off test and validation parts.

    fractions: (test, val) as fractions of len(X), each rounded to whole examples (at least one
    each when the fraction is positive). Returns X_train, y_train, X_val, y_val, X_test, y_test.
    The same seed always gives the same split.
    """
    test_frac, val_frac = fractions
    if not (0 <= test_frac < 1 and 0 <= val_frac < 1 and test_frac + val_frac < 1):
        raise ValueError(f"split: fractions (test, val) = {fractions} must be in [0, 1) and sum to < 1")
    n = len(X)
    n_test = max(1, round(n * test_frac)) if test_frac else 0
    n_val = max(1, round(n * val_frac)) if val_frac else 0
    if n - n_test - n_val < 1:
        raise ValueError(f"split: {n} examples leave nothing to train on")
    order = np.random.default_rng(seed).permutation(n)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return X[train], y[train], X[val], y[val], X[test], y[test]


def normalize(X_train, *others):
    """Centre features on the training set's per-feature mean and scale by one overall std.

    x <- (x - mean_train) / std_train, where mean_train (D,) is the mean image and std_train the std of
    all centred training values (a scalar, so nearly constant pixels, e.g. MNIST's borders, are not
    blown up). Returns the transformed X_train followed by each of `others`, all float32.
    """
    mean = X_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    out = [np.subtract(X, mean, dtype=np.float32) for X in (X_train, *others)]
    std = float(np.sqrt(np.mean(np.square(out[0]), dtype=np.float64))) or 1.0
    for X in out:
        X /= np.float32(std)
    return tuple(out)


def minibatches(X, y, batch_size: int, shuffle: bool = True, rng=None, drop_last: bool = False):
    """Yield (X_batch, y_batch) pairs covering (X, y) once, in a fresh random order if `shuffle`.

    rng: a numpy Generator (it advances, so successive epochs differ but a seeded run repeats).
    The last batch is smaller unless `drop_last`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"minibatches: batch_size must be a positive integer, got {batch_size!r}")
    if len(X) != len(y):
        raise ValueError(f"minibatches: X has {len(X)} rows but y has {len(y)}")
    n = len(X)
    order = (rng if rng is not None else np.random.default_rng()).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield X[idx], y[idx]


def load(name: str, data_dir=None, seed: int = 0, val: float = 0.1, test: float = 0.2,
         spiral_points: int = 100) -> Splits:
    """A dataset by name as normalised `Splits`.

    digits, spiral: split (test, val) with `seed`; mnist, cifar10: read from `data_dir`, keeping
    their own test set and holding out the fraction `val` of the training set. Features are
    standardised with the training split's statistics.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name in ("digits", "spiral"):
        X, y = digits() if name == "digits" else spiral(K=3, N=spiral_points, seed=seed)
        Xtr, ytr, Xva, yva, Xte, yte = split(X, y, (test, val), seed)
    else:
        if data_dir is None:
            raise DataError(f"{name}: give the folder holding the downloaded files (--data-dir)")
        if not Path(data_dir).exists():
            raise DataError(f"{name}: data directory {data_dir} does not exist")
        if not Path(data_dir).is_dir():
            raise DataError(f"{name}: data directory {data_dir} is not a folder")
        raw = mnist(data_dir) if name == "mnist" else cifar10(data_dir)
        Xtr, ytr, Xva, yva, _, _ = split(raw["X_train"], raw["y_train"], (0.0, val), seed)
        Xte, yte = raw["X_test"], raw["y_test"]
    Xtr, Xva, Xte = normalize(Xtr, Xva, Xte)
    num_classes = int(max(ytr.max(), yva.max(initial=0), yte.max(initial=0))) + 1
    return Splits(Xtr, ytr, Xva, yva, Xte, yte, num_classes, name)


# ---------------------------------------------------------------------------------------------
# PyTorch-style datasets and loader


class TensorDataset:
    """Rows of equally long tensors or arrays: dataset[i] = (t0[i], t1[i], ...), as torch's.

    >>> ds = TensorDataset(np.zeros((10, 3)), np.arange(10))
    >>> len(ds), ds[2][1]
    (10, 2)
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: give at least one tensor or array")
        from .tensor import Tensor

        self.tensors = tuple(t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors)
        lengths = [len(t) if t.ndim else None for t in self.tensors]
        if None in lengths or len(set(lengths)) != 1:
            shapes = [t.shape for t in self.tensors]
            raise ValueError(f"TensorDataset: every tensor needs the same first dimension, got shapes {shapes}")

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)


def _as_batch(a):
    """A gathered batch: float arrays become fastgrad Tensors (their dtype kept when float32/64),
    integer and bool arrays (labels, masks) stay NumPy arrays, since fastgrad tensors are floats."""
    from .tensor import Tensor

    a = np.asarray(a)
    if a.dtype == np.float32 or a.dtype == np.float64:
        return Tensor._wrap(np.ascontiguousarray(a))
    if a.dtype.kind == "f":
        return Tensor(a)
    return a


class DataLoader:
    """Mini-batches of a dataset, as torch.utils.data.DataLoader (single process):
    batch_size, shuffle (a new order every epoch), drop_last, and a seeded `generator`.

    generator: a fastgrad.Generator (`fg.Generator().manual_seed(0)`, the analogue of
    `torch.Generator().manual_seed(0)`), a numpy Generator or an int seed; default
    fastgrad's global generator (fastgrad.random, seeded by fastgrad.manual_seed). sampler: an iterable of indices
    (iterated anew every epoch) to use instead of shuffle. Each batch is a tuple with one entry per
    dataset field (a single entry when the dataset yields single items): float fields as fastgrad
    Tensors, integer fields (labels) as NumPy arrays.

    >>> loader = DataLoader(TensorDataset(np.zeros((10, 3)), np.arange(10)), batch_size=4, shuffle=True,
    ...                     generator=0)
    >>> [len(y) for X, y in loader]
    [4, 4, 2]
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None, sampler=None,
                 collate_fn=None):
        from .generator import Generator, as_numpy_generator

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True are exclusive")
        try:
            len(dataset)
        except TypeError:
            raise TypeError(f"DataLoader: the dataset ({type(dataset).__name__}) must have a length") from None
        if generator is not None and not isinstance(generator, (Generator, np.random.Generator, int, np.integer)):
            raise TypeError(
                f"DataLoader: generator must be a fastgrad.Generator, a numpy Generator or an int seed, got "
                f"{type(generator).__module__}.{type(generator).__name__} (for torch.Generator().manual_seed(s) "
                "use fastgrad.Generator().manual_seed(s))"
            )
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last, self.sampler, self.collate_fn = bool(shuffle), bool(drop_last), sampler, collate_fn
        if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            generator = Generator(int(generator))
        self.generator = generator
        self._rng = as_numpy_generator(generator) if generator is not None else None

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None and hasattr(self.sampler, "__len__") else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.dataset)
        if self.sampler is not None:
            order = np.fromiter((int(i) for i in self.sampler), dtype=np.intp)
            if order.size and (order.min() < -n or order.max() >= n):
                raise IndexError(f"DataLoader: the sampler gave an index outside [0, {n})")
            return order
        if self.shuffle:
            from .generator import as_numpy_generator

            rng = self._rng if self._rng is not None else as_numpy_generator(None)
            return rng.permutation(n)
        return np.arange(n)

    def __iter__(self):
        order = self._order()
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        fast = isinstance(self.dataset, TensorDataset) and self.collate_fn is None
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            if fast:
                yield tuple(_as_batch(t[idx]) for t in self.dataset.tensors)
                continue
            items = [self.dataset[int(i)] for i in idx]
            if self.collate_fn is not None:
                yield self.collate_fn(items)
            elif isinstance(items[0], tuple):
                yield tuple(_as_batch(np.stack([_plain(it[k]) for it in items])) for k in range(len(items[0])))
            else:
                yield _as_batch(np.stack([_plain(it) for it in items]))


def _plain(x):
    from .tensor import Tensor

    return x.data if isinstance(x, Tensor) else x
