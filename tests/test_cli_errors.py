"""The command line under abuse: malformed data files, absurd flags, an unwritable --out, Ctrl-C and a
closed stdout. Every user mistake is one line `fastgrad-train: error: ...` naming the file or flag, exit
status 2, no traceback; nothing is ever half-written."""
import gzip
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastgrad import train
from test_data import make_cifar, make_mnist, write_idx

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(status, out, err):
    assert status == 2, (status, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgrad-train: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def run_cli(capsys, *argv):
    status = train.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def idx_header(*shape, type_byte=0x08):
    return bytes([0, 0, type_byte, len(shape)]) + np.asarray(shape, dtype=">i4").tobytes()


# each case: (what it does to a folder of good MNIST files (plain, uncompressed), file named, message)
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
MNIST_CASES = {
    "wrong magic": (lambda d: (d / TRAIN_IMAGES).write_bytes(idx_header(30, 28, 28, type_byte=0x0D) + bytes(30 * 784)),
                    TRAIN_IMAGES, "bad header"),
    "not idx at all": (lambda d: (d / TRAIN_IMAGES).write_bytes(b"P5\n28 28\n255\n" + bytes(784)), TRAIN_IMAGES,
                       "bad header"),
    "empty file": (lambda d: (d / TRAIN_LABELS).write_bytes(b""), TRAIN_LABELS, "bad header"),
    "header cut short": (lambda d: (d / TRAIN_IMAGES).write_bytes(idx_header(30, 28, 28)[:9]), TRAIN_IMAGES,
                         "truncated (header)"),
    "negative size": (lambda d: (d / TRAIN_IMAGES).write_bytes(idx_header(-1, 28, 28) + bytes(784)), TRAIN_IMAGES,
                      "negative size"),
    "overflowing sizes": (lambda d: (d / TRAIN_IMAGES).write_bytes(idx_header(2**31 - 1, 2**31 - 1, 2**31 - 1)
                                                                   + bytes(100)), TRAIN_IMAGES, "bytes follow"),
    "truncated data": (lambda d: (d / TRAIN_IMAGES).write_bytes((d / TRAIN_IMAGES).read_bytes()[:-100]), TRAIN_IMAGES,
                       "bytes follow"),
    "zero images": (lambda d: write_idx(d / TRAIN_IMAGES, np.zeros((0, 28, 28))), TRAIN_IMAGES, "holds no images"),
    "images not 3-d": (lambda d: write_idx(d / TRAIN_IMAGES, np.zeros((30, 784))), TRAIN_IMAGES, "expected images"),
    "labels not 1-d": (lambda d: write_idx(d / TRAIN_LABELS, np.zeros((30, 2))), TRAIN_LABELS, "expected labels"),
    "fewer labels": (lambda d: write_idx(d / TRAIN_LABELS, np.arange(29) % 10), TRAIN_LABELS,
                     "holds 30 images but"),
    "labels above 9": (lambda d: write_idx(d / TRAIN_LABELS, np.arange(30) % 12), TRAIN_LABELS, "labels up to 11"),
    "mismatched image sizes": (lambda d: write_idx(d / "t10k-images-idx3-ubyte", np.zeros((10, 20, 20))),
                               "t10k-images-idx3-ubyte", "are (28, 28) but"),
    "not gzip but named .gz": (lambda d: (d / (TRAIN_IMAGES + ".gz")).write_bytes(b"\x1f\x8b junk"),
                               TRAIN_IMAGES + ".gz", "damaged gzip"),
}


def _gzip_corrupt_stream(d):
    payload = gzip.compress((d / TRAIN_IMAGES).read_bytes())
    (d / TRAIN_IMAGES).unlink()
    middle = bytearray(payload)
    middle[len(middle) // 2:len(middle) // 2 + 64] = os.urandom(64)  # deflate data garbled
    (d / (TRAIN_IMAGES + ".gz")).write_bytes(bytes(middle))


def _gzip_truncated(d):
    payload = gzip.compress((d / TRAIN_IMAGES).read_bytes())
    (d / TRAIN_IMAGES).unlink()
    (d / (TRAIN_IMAGES + ".gz")).write_bytes(payload[: len(payload) // 2])


MNIST_CASES["corrupt gzip stream"] = (_gzip_corrupt_stream, TRAIN_IMAGES + ".gz", "damaged gzip")
MNIST_CASES["truncated gzip"] = (_gzip_truncated, TRAIN_IMAGES + ".gz", "damaged gzip")


@pytest.mark.parametrize("case", MNIST_CASES, ids=list(MNIST_CASES))
def test_malformed_mnist_is_one_line_naming_the_file(tmp_path, capsys, case):
    data = tmp_path / "mnist"
    data.mkdir()
    make_mnist(data, gz=False)
    damage, name, fragment = MNIST_CASES[case]
    if case == "not gzip but named .gz":
        (data / TRAIN_IMAGES).unlink()
    damage(data)
    line = one_error_line(*run_cli(capsys, "--dataset", "mnist", "--data-dir", data, "--no-progress",
                                   "--out", tmp_path / "runs"))
    assert str(data / name) in line and fragment in line, line
    assert not (tmp_path / "runs").exists()  # found before anything was created or trained


def test_gzip_is_recognised_by_content_not_by_name(tmp_path, capsys):
    make_mnist(tmp_path, gz=False)
    payload = gzip.compress((tmp_path / TRAIN_LABELS).read_bytes())
    (tmp_path / TRAIN_LABELS).write_bytes(payload)  # gzipped, named as plain
    from fastgrad import data
    np.testing.assert_array_equal(data.mnist(tmp_path)["y_train"], np.arange(30) % 10)


def _pickle_to(name, obj):
    return lambda d: (d / name).write_bytes(pickle.dumps(obj, protocol=2))


CIFAR_CASES = {
    "truncated pickle": (lambda d: (d / "data_batch_2").write_bytes((d / "data_batch_2").read_bytes()[:500]),
                         "data_batch_2", "cannot read"),
    "random bytes": (lambda d: (d / "data_batch_2").write_bytes(np.random.default_rng(1).bytes(4000)),
                     "data_batch_2", "cannot read"),
    "empty file": (lambda d: (d / "test_batch").write_bytes(b""), "test_batch", "cannot read"),
    "a list, not a dict": (_pickle_to("data_batch_4", [1, 2, 3]), "data_batch_4", "does not hold a dict"),
    "string labels": (_pickle_to("data_batch_1", {b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}),
                      "data_batch_1", "labels of type <U3"),
    "ragged labels": (_pickle_to("data_batch_1", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1], [2, 3]]}),
                      "data_batch_1", "malformed data or labels"),
    "string data": (_pickle_to("data_batch_1", {b"data": "pixels", b"labels": [1]}), "data_batch_1", "data of type"),
    "labels out of range": (_pickle_to("data_batch_3", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}),
                            "data_batch_3", "in 0..9"),
    "wrong image size": (_pickle_to("data_batch_3", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [3, 1]}),
                         "data_batch_3", "(2, 1024)"),
}


@pytest.mark.parametrize("case", CIFAR_CASES, ids=list(CIFAR_CASES))
def test_malformed_cifar_is_one_line_naming_the_file(tmp_path, capsys, case):
    data = tmp_path / "cifar"
    data.mkdir()
    make_cifar(data)
    damage, name, fragment = CIFAR_CASES[case]
    damage(data)
    line = one_error_line(*run_cli(capsys, "--dataset", "cifar10", "--data-dir", data, "--no-progress",
                                   "--out", tmp_path / "runs"))
    assert str(data / name) in line and fragment in line, line


@pytest.mark.parametrize("argv, fragment", [
    (["--threads", "0"], "argument --threads: must be positive, got 0"),
    (["--threads", "-1"], "argument --threads: must be positive, got -1"),
    (["--threads", str(10**9)], "argument --threads: must be at most 1024, got 1000000000"),
    (["--threads", "two"], "argument --threads: expected an integer, got 'two'"),
    (["--threads", "1.5"], "argument --threads: expected an integer, got '1.5'"),
    (["--threads", ""], "argument --threads: expected an integer, got ''"),
    (["--seed", "-3"], "argument --seed: must be >= 0, got -3"),
    (["--seed", "abc"], "argument --seed: expected an integer"),
    (["--lr", "nan"], "argument --lr: must be positive, got nan"),
    (["--lr", "inf"], "argument --lr: must be positive, got inf"),
    (["--hidden", str(10**12)], "argument --hidden: cannot build an MLP [64, 1000000000000, 10]"),
    (["--dataset", "mnist", "--data-dir", "A_FILE"], "is not a folder"),
])
def test_absurd_flags_are_one_line_naming_the_flag(tmp_path, capsys, argv, fragment):
    (tmp_path / "a_file").write_text("x")
    argv = [str(tmp_path / "a_file") if a == "A_FILE" else a for a in argv]
    status, out, err = run_cli(capsys, "--no-progress", "--epochs", "1", "--out", tmp_path / "runs", *argv)
    assert fragment in one_error_line(status, out, err)
    assert "accuracy" not in out


def test_an_unwritable_out_is_found_before_training(tmp_path, capsys):
    (tmp_path / "runs" / "model.npz").mkdir(parents=True)  # a folder where the checkpoint should go
    status, out, err = run_cli(capsys, "--no-progress", "--out", tmp_path / "runs")
    line = one_error_line(status, out, err)
    assert f"argument --out: cannot write {tmp_path / 'runs' / 'model.npz'}: exists and is not a regular file" == \
        line.removeprefix("fastgrad-train: error: ")
    assert out == ""  # no training started
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["model.npz"]  # the probe is gone


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_out_where_nothing_can_be_created_is_found_before_training(capsys):
    # /proc exists but takes no new files, whoever we are (root ignores permission bits, so a
    # chmod'ed folder would not do here); /proc/x cannot even be created
    line = one_error_line(*run_cli(capsys, "--no-progress", "--out", "/proc"))
    assert line.startswith("fastgrad-train: error: argument --out: cannot write files in /proc: ")
    line = one_error_line(*run_cli(capsys, "--no-progress", "--out", "/proc/fastgrad-runs"))
    assert "argument --out: cannot create the output folder /proc/fastgrad-runs" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_read_only_out_is_found_before_training(tmp_path, capsys):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    out_dir.chmod(0o555)
    try:
        status, out, err = run_cli(capsys, "--no-progress", "--out", out_dir)
    finally:
        out_dir.chmod(0o755)
    assert f"cannot write files in {out_dir}: Permission denied" in one_error_line(status, out, err)
    assert out == ""


# --- real processes: exit status, stderr, signals, pipes ---------------------------------------


def cli(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fastgrad.train", *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_data_mistake_in_a_real_process_is_one_line_and_status_2(tmp_path):
    make_mnist(tmp_path, gz=False)
    write_idx(tmp_path / TRAIN_LABELS, np.arange(29) % 10)
    proc = cli("--dataset", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "runs")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err == (f"fastgrad-train: error: mnist: {tmp_path / TRAIN_IMAGES} holds 30 images but "
                   f"{tmp_path / TRAIN_LABELS} holds 29 labels\n")
    assert out == ""


def _interrupt_while_training(tmp_path, *flags):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "model.npz").write_bytes(b"the previous run's checkpoint")
    proc = cli("--epochs", "100000", "--out", runs, *flags)
    try:
        assert proc.stdout.readline().startswith("digits: ")
        assert proc.stdout.readline().startswith("MLP ")  # training starts right after this line
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    # the outputs are untouched; only the checkpoint of the last finished epoch (to --resume from) is new
    assert sorted(p.name for p in runs.iterdir()) in (["model.npz"], ["checkpoint.npz", "model.npz"])
    assert (runs / "model.npz").read_bytes() == b"the previous run's checkpoint"
    if (runs / "checkpoint.npz").exists():
        with np.load(runs / "checkpoint.npz", allow_pickle=False) as archive:
            assert "__meta__" in archive.files  # whole, never half-written
    assert "Traceback" not in out + err
    return err


def test_ctrl_c_during_training_is_one_line_status_130_and_writes_nothing(tmp_path):
    assert _interrupt_while_training(tmp_path, "--no-progress") == "fastgrad-train: interrupted\n"


def test_ctrl_c_with_the_progress_bar_ends_with_the_one_line(tmp_path):
    err = _interrupt_while_training(tmp_path)
    assert err.endswith("\nfastgrad-train: interrupted\n") and "loss=" not in err.splitlines()[-1]


def test_a_closed_stdout_ends_the_run_quietly(tmp_path):
    """`fastgrad-train | head -1`: no BrokenPipeError traceback, no 'Exception ignored', status 141."""
    proc = cli("--epochs", "3", "--no-progress", "--out", tmp_path / "runs")
    try:
        assert proc.stdout.readline().startswith("digits: ")
        proc.stdout.close()  # as head does after its line
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert err == ""
    assert proc.returncode == 128 + signal.SIGPIPE
    assert not any((tmp_path / "runs").iterdir())  # stopped at the line it could not print: nothing written


def test_a_closed_stderr_under_the_progress_bar_ends_the_run_quietly(tmp_path):
    """`fastgrad-train 2>&1 | head -1`: the bar itself hits the closed pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "fastgrad.train", "--epochs", "3", "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().startswith(b"digits: ")
        proc.stdout.close()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGPIPE  # a traceback would end with status 1 or 120


def test_running_out_of_memory_while_training_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(train, "fit", no_memory)
    line = one_error_line(*run_cli(capsys, "--no-progress", "--out", tmp_path))
    assert line == "fastgrad-train: error: out of memory while training: lower --batch-size or --hidden"
    assert list(tmp_path.iterdir()) == []
