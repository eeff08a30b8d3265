"""fastgrad.data.TensorDataset and DataLoader: coverage, order, seeds, drop_last, types, errors."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.data import DataLoader, TensorDataset


def dataset(n=10):
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return TensorDataset(X, np.arange(n)), X


def test_batches_in_order_without_shuffle():
    ds, X = dataset()
    batches = list(DataLoader(ds, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    Xb, yb = batches[1]
    assert isinstance(Xb, fg.Tensor) and Xb.dtype == np.float64 and not Xb.requires_grad
    assert isinstance(yb, np.ndarray) and yb.dtype.kind == "i"  # labels stay integers
    np.testing.assert_array_equal(Xb.data, X[4:8])
    np.testing.assert_array_equal(yb, [4, 5, 6, 7])
    assert len(DataLoader(ds, batch_size=4)) == 3 and len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    assert [len(y) for _, y in DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]


def test_shuffle_is_a_permutation_new_each_epoch_and_seeded():
    ds, X = dataset(50)
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=fg.Generator().manual_seed(3))
    epoch1 = np.concatenate([y for _, y in loader])
    epoch2 = np.concatenate([y for _, y in loader])
    assert sorted(epoch1) == list(range(50)) and sorted(epoch2) == list(range(50))
    assert not np.array_equal(epoch1, epoch2)
    again = DataLoader(ds, batch_size=8, shuffle=True, generator=fg.Generator().manual_seed(3))
    np.testing.assert_array_equal(np.concatenate([y for _, y in again]), epoch1)
    for Xb, yb in loader:  # rows stay paired with their labels
        np.testing.assert_array_equal(Xb.data, X[yb])
    seeded = DataLoader(ds, batch_size=8, shuffle=True, generator=np.random.default_rng(3))
    assert sorted(np.concatenate([y for _, y in seeded])) == list(range(50))
    fg.manual_seed(11)
    a = np.concatenate([y for _, y in DataLoader(ds, batch_size=8, shuffle=True)])
    fg.manual_seed(11)
    np.testing.assert_array_equal(np.concatenate([y for _, y in DataLoader(ds, batch_size=8, shuffle=True)]), a)


def test_sampler_and_generic_datasets():
    ds, X = dataset(6)
    order = [5, 0, 3, 1, 4, 2]
    ys = [y for _, y in DataLoader(ds, batch_size=4, sampler=order)]
    assert [list(y) for y in ys] == [[5, 0, 3, 1], [4, 2]]

    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), i

    (Xb, yb), = list(DataLoader(Squares(), batch_size=5))
    assert Xb.dtype == np.float32 and Xb.shape == (5, 2)
    np.testing.assert_array_equal(yb, np.arange(5))
    assert list(DataLoader(Squares(), batch_size=2, collate_fn=len)) == [2, 2, 1]


def test_errors():
    ds, _ = dataset()
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="exclusive"):
        DataLoader(ds, shuffle=True, sampler=[0])
    with pytest.raises(TypeError, match="fastgrad.Generator"):
        DataLoader(ds, shuffle=True, generator="seed")
    with pytest.raises(ValueError, match="same first dimension"):
        TensorDataset(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(IndexError, match="outside"):
        list(DataLoader(ds, sampler=[10]))
