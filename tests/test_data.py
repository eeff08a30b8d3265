"""fastgrad.data: the bundled digits, spiral, MNIST/CIFAR-10 readers on tiny files, splits and batches."""
import gzip
import pickle

import numpy as np
import pytest

from fastgrad import data


def test_digits_is_the_uci_test_set():
    X, y = data.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.sum() == 1797 and counts.min() >= 170
    # the first row of the source CSV (a zero), as published with the data set
    first = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
             0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
    assert X[0].tolist() == first and y[0] == 0


def test_spiral_is_seeded_balanced_and_in_the_unit_disc():
    X, y = data.spiral(K=3, N=50, seed=1)
    assert X.shape == (150, 2) and X.dtype == np.float32
    assert np.bincount(y).tolist() == [50, 50, 50]
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 1 + 1e-6)
    X2, y2 = data.spiral(K=3, N=50, seed=1)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, data.spiral(K=3, N=50, seed=2)[0])
    with pytest.raises(ValueError, match="K >= 2"):
        data.spiral(K=1)


def test_split_is_seeded_disjoint_and_complete():
    X = np.arange(100, dtype=np.float32).reshape(50, 2)
    y = np.arange(50)
    parts = data.split(X, y, (0.2, 0.1), seed=3)
    Xtr, ytr, Xva, yva, Xte, yte = parts
    assert (len(ytr), len(yva), len(yte)) == (35, 5, 10)
    assert sorted(np.concatenate([ytr, yva, yte]).tolist()) == list(range(50))
    assert np.array_equal(Xtr[:, 0], 2 * ytr)  # rows stay with their labels
    again = data.split(X, y, (0.2, 0.1), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(data.split(X, y, (0.2, 0.1), seed=4)[1], ytr)
    with pytest.raises(ValueError, match="fractions"):
        data.split(X, y, (0.6, 0.5))


def test_normalize_uses_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(200, 4)).astype(np.float32)
    train[:, 3] = 7.0  # a constant feature is centred, not blown up
    other = train[:10] + 1.0
    ntrain, nother = data.normalize(train, other)
    np.testing.assert_allclose(ntrain.mean(axis=0), 0, atol=1e-5)
    assert np.sqrt(np.mean(ntrain.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
    assert np.all(ntrain[:, 3] == 0)
    scale = ntrain[1, 0] - ntrain[0, 0]
    np.testing.assert_allclose(nother - ntrain[:10], (1.0 / (train[1, 0] - train[0, 0])) * scale, rtol=1e-3)
    assert ntrain.dtype == nother.dtype == np.float32


def test_minibatches_cover_everything_once_in_a_seeded_order():
    X = np.arange(23, dtype=np.float32)[:, None]
    y = np.arange(23)
    rng = np.random.default_rng(0)
    epoch1 = list(data.minibatches(X, y, 5, rng=rng))
    epoch2 = list(data.minibatches(X, y, 5, rng=rng))
    assert [len(b) for b, _ in epoch1] == [5, 5, 5, 5, 3]
    for epoch in (epoch1, epoch2):
        seen = np.concatenate([yb for _, yb in epoch])
        assert sorted(seen.tolist()) == list(range(23))
        assert all(np.array_equal(Xb[:, 0], yb) for Xb, yb in epoch)
    assert not np.array_equal(np.concatenate([b for _, b in epoch1]), np.concatenate([b for _, b in epoch2]))
    replay = list(data.minibatches(X, y, 5, rng=np.random.default_rng(0)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(epoch1, replay))
    assert [len(b) for _, b in data.minibatches(X, y, 5, shuffle=False, drop_last=True)] == [5, 5, 5, 5]
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            list(data.minibatches(X, y, bad))


# --- MNIST from IDX files ---------------------------------------------------------------------


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(folder, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for i, (name, a) in enumerate(arrays.items()):
        write_idx(folder / name, a, gz=gz and i % 2 == 0)  # a mix of gzipped and plain files
    return arrays


def test_mnist_reads_gzipped_and_plain_idx(tmp_path):
    arrays = make_mnist(tmp_path)
    m = data.mnist(tmp_path)
    assert m["X_train"].shape == (30, 784) and m["X_train"].dtype == np.float32
    np.testing.assert_array_equal(m["X_train"], arrays["train-images-idx3-ubyte"].reshape(30, 784))
    np.testing.assert_array_equal(m["y_train"], arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(m["X_test"][3], arrays["t10k-images-idx3-ubyte"][3].ravel())
    np.testing.assert_array_equal(m["y_test"], arrays["t10k-labels-idx1-ubyte"])
    splits = data.load("mnist", data_dir=tmp_path, seed=0, val=0.1)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (27, 3, 10)
    assert splits.num_classes == 10 and splits.num_features == 784


def test_mnist_missing_file_is_named(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="missing file .*t10k-images-idx3-ubyte"):
        data.mnist(tmp_path)


@pytest.mark.parametrize("corrupt, match", [
    (lambda p: p.write_bytes(b"\x00\x00\x0d\x03" + bytes(12)), "bad header"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "bytes follow"),
    (lambda p: p.write_bytes(b"\x00\x00"), "bad header"),
])
def test_mnist_malformed_file_is_named(tmp_path, corrupt, match):
    make_mnist(tmp_path, gz=False)
    corrupt(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(data.DataError, match=f"train-labels-idx1-ubyte.*{match}"):
        data.mnist(tmp_path)


def test_mnist_bad_gzip_is_a_data_error(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
        data.mnist(tmp_path)


# --- CIFAR-10 from python pickles -------------------------------------------------------------


def make_cifar(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"labels": list(rng.integers(0, 10, n)), b"filenames": [b"x.png"] * n}
        payload = pickle.dumps(batch, protocol=2)
        if name == "data_batch_1":  # as the real batches, written by NumPy 1
            payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(payload)
        batches[name] = batch
    return batches


def test_cifar10_reads_the_pickled_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"  # the folder the tarball unpacks to is found too
    folder.mkdir()
    batches = make_cifar(folder)
    c = data.cifar10(tmp_path)
    assert c["X_train"].shape == (20, 3072) and c["X_test"].shape == (4, 3072)
    np.testing.assert_array_equal(c["X_train"][4:8], batches["data_batch_2"][b"data"])
    np.testing.assert_array_equal(c["y_train"][16:], batches["data_batch_5"][b"labels"])
    np.testing.assert_array_equal(c["y_test"], batches["test_batch"][b"labels"])
    assert c["y_test"].dtype == np.int64
    splits = data.load("cifar10", data_dir=tmp_path, val=0.25)
    assert splits.X_train.shape == (15, 3072) and len(splits.y_val) == 5


def test_cifar10_missing_batch_is_named(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(data.DataError, match="missing file .*test_batch"):
        data.cifar10(tmp_path)


def test_cifar10_malformed_or_hostile_batches_are_refused(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(data.DataError, match="refusing to load builtins.print"):
        data.cifar10(tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(data.DataError, match=r"data_batch_3 has data \(2, 100\)"):
        data.cifar10(tmp_path)


def test_load_names_unknown_datasets_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet")
    with pytest.raises(data.DataError, match="--data-dir"):
        data.load("mnist")
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("cifar10", data_dir=tmp_path / "nope")


def test_load_digits_is_normalised_and_seeded():
    a, b = data.load("digits", seed=0), data.load("digits", seed=0)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (1258, 180, 359)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    np.testing.assert_allclose(a.X_train.mean(axis=0), 0, atol=1e-5)
    assert not np.array_equal(data.load("digits", seed=1).y_test, a.y_test)
