"""fastgrad.train: accuracy targets, reproducibility, flat memory, and the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import data, nn, optim, train


def run_cli(capsys, *argv):
    status = train.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_default_run_on_digits_reaches_97_percent_and_writes_its_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the run without the [plot] extra
    status, out, err = run_cli(capsys, "--out", str(tmp_path))
    assert status == 0, err
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["final_accuracy"]["test"] >= 0.97
    assert saved["final_accuracy"]["train"] >= 0.99
    assert f"test {saved['final_accuracy']['test']:.4f}" in out
    assert "loss=" in err and "val=" in err  # the progress bar shows loss and accuracy
    assert 'no plot: matplotlib is not installed (pip install "fastgrad[plot]")' in out
    assert not (tmp_path / "curves.png").exists()
    model = nn.load(tmp_path / "model.npz")
    splits = data.load("digits", seed=0)
    assert train.accuracy(model, splits.X_test, splits.y_test) == saved["final_accuracy"]["test"]
    assert len(saved["loss"]) == 20 * 40 and len(saved["val_acc"]) == 20


def test_curves_png_with_matplotlib(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the optional [plot] extra
    status, out, _ = run_cli(capsys, "--epochs", "2", "--no-progress", "--out", str(tmp_path))
    assert status == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {tmp_path / 'curves.png'}" in out


def test_same_command_twice_gives_the_same_losses(tmp_path, capsys):
    histories = []
    for run in ("a", "b"):
        argv = ["--epochs", "2", "--hidden", "32", "16", "--optimizer", "momentum", "--reg", "0.01",
                "--no-progress", "--out", str(tmp_path / run)]
        assert run_cli(capsys, *argv)[0] == 0
        histories.append(json.loads((tmp_path / run / "history.json").read_text()))
    assert histories[0]["loss"] == histories[1]["loss"]  # to the last digit
    assert histories[0]["val_acc"] == histories[1]["val_acc"]
    other = ["--epochs", "2", "--hidden", "32", "16", "--optimizer", "momentum", "--reg", "0.01", "--seed", "1",
             "--no-progress", "--out", str(tmp_path / "c")]
    assert run_cli(capsys, *other)[0] == 0
    assert json.loads((tmp_path / "c" / "history.json").read_text())["loss"] != histories[0]["loss"]


@pytest.mark.parametrize("sizes", [[64, 100, 100, 10], [64, 100, 100, 100, 100, 10]], ids=["3-layer", "5-layer"])
def test_overfits_50_examples_within_20_epochs(sizes):
    """CS231n's sanity check: a net that cannot fit 50 examples has a bug."""
    X, y = data.digits()
    X, y = data.normalize(X[:50])[0], y[:50]
    model = nn.MLP(sizes, seed=0)
    history = train.fit(model, (X, y), optimizer="sgd", lr=0.1, epochs=20, batch_size=25, seed=0)
    assert history.train_acc[-1] == 1.0
    assert history.epoch_loss[-1] < 0.1 * history.epoch_loss[0]


def test_spiral_needs_a_hidden_layer():
    X, y = data.spiral(K=3, N=100, seed=0)
    net = nn.MLP([2, 100, 3], seed=0)
    train.fit(net, (X, y), optimizer="adam", lr=1e-2, epochs=300, batch_size=300, reg=1e-3, seed=0)
    linear = nn.MLP([2, 3], seed=0)
    train.fit(linear, (X, y), optimizer="adam", lr=1e-1, epochs=300, batch_size=300, reg=1e-3, seed=0)
    assert train.accuracy(net, X, y) >= 0.98
    assert train.accuracy(linear, X, y) < 0.60


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_memory_stays_flat_over_10000_steps():
    X, y = data.spiral(K=3, N=20, seed=0)
    model = nn.MLP([2, 16, 3], seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [(X[i], y[i]) for i in (rng.integers(0, len(y), 16) for _ in range(50))]
    rss = {}
    for step in range(1, 10_001):
        Xb, yb = batches[step % 50]
        opt.zero_grad()
        loss = fg.softmax_cross_entropy(model(Xb), yb) + model.l2(1e-3)
        loss.backward()
        opt.step()
        if step in (100, 10_000):
            rss[step] = _resident_bytes()
    growth = rss[10_000] - rss[100]
    assert growth < 2 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MB"


def test_fit_accepts_an_optimizer_and_decays_the_lr():
    X, y = data.spiral(K=3, N=20, seed=0)
    model = nn.MLP([2, 8, 3], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.5)
    history = train.fit(model, (X, y, X[:10], y[:10]), optimizer=opt, epochs=3, batch_size=20, lr_decay=0.5)
    assert opt.lr == pytest.approx(0.5 * 0.5**3)
    assert len(history.loss) == 9 and len(history.train_acc) == len(history.val_acc) == 3


def test_fit_rejects_bad_arguments():
    X, y = data.spiral(K=3, N=5, seed=0)
    model = nn.MLP([2, 3], seed=0)
    for kwargs, match in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"reg": -1}, "reg"),
                          ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"), ({"loss": "l1"}, "unknown loss"),
                          ({"lr": 0.0}, "lr must be")]:
        with pytest.raises(ValueError, match=match):
            train.fit(model, (X, y), **kwargs)


# --- command-line mistakes: one line on stderr, status 2, no traceback --------------------------


def write_bad_idx(folder):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # says 5 bytes, has 3


@pytest.mark.parametrize("argv, fragment", [
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
    (["--activation", "swish"], "argument --activation: invalid choice: 'swish'"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["--lr", "0"], "argument --lr: must be positive, got 0"),
    (["--lr", "-0.1"], "argument --lr: must be positive"),
    (["--lr", "fast"], "argument --lr: expected a number"),
    (["--batch-size", "0"], "argument --batch-size: must be positive, got 0"),
    (["--batch-size", "-4"], "argument --batch-size: must be positive"),
    (["--epochs", "two"], "argument --epochs: expected an integer"),
    (["--hidden", "64", "0"], "argument --hidden: must be positive"),
    (["--reg", "-1"], "argument --reg: must be >= 0"),
    (["--threads", "0"], "argument --threads: must be positive"),
    (["--lr-decay", "2"], "--lr-decay: must be in (0, 1]"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--dataset", "mnist"], "mnist: give the folder"),
    (["--dataset", "mnist", "--data-dir", "MISSING"], "mnist: data directory MISSING does not exist"),
    (["--dataset", "mnist", "--data-dir", "EMPTY"], "mnist: missing file "),
    (["--dataset", "mnist", "--data-dir", "BAD"], "train-images-idx3-ubyte: header says shape (5,)"),
    (["--dataset", "cifar10", "--data-dir", "EMPTY"], "cifar10: missing file "),
    (["--optimizer", "sgd", "--lr", "1e30", "--epochs", "1"], "lower the learning rate"),
    (["--out", "A_FILE"], "argument --out: cannot create the output folder"),
])
def test_user_mistakes_print_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    write_bad_idx(tmp_path / "bad")
    (tmp_path / "a_file").write_text("x")
    places = {"MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty", "BAD": tmp_path / "bad",
              "A_FILE": tmp_path / "a_file"}
    argv = [str(places.get(a, a)) for a in argv]
    fragment = fragment.replace("MISSING", str(places["MISSING"]))
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "runs")]
    status, out, err = run_cli(capsys, "--no-progress", *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgrad-train: error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err + out


def test_module_entry_point_reports_mistakes_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "fastgrad.train", "--lr", "0"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "fastgrad-train: error: argument --lr: must be positive, got 0"


def test_threads_flag_and_other_datasets_run(tmp_path, capsys, monkeypatch):
    before = fg.get_num_threads()
    calls = []
    monkeypatch.setattr(train, "set_num_threads", lambda n: (calls.append(n), fg.set_num_threads(n)))
    status, out, err = run_cli(capsys, "--dataset", "spiral", "--threads", "1", "--hidden", "20",
                               "--activation", "tanh", "--optimizer", "rmsprop", "--loss", "svm",
                               "--epochs", "2", "--no-progress", "--out", str(tmp_path))
    assert status == 0, err
    assert "spiral: 210 train / 30 val / 60 test, 2 features, 3 classes" in out
    assert nn.load(tmp_path / "model.npz").config["activation"] == "tanh"
    assert calls == [1, before] and fg.get_num_threads() == before  # set for the run, then restored
