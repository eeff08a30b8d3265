"""train: --dropout/--norm/--weight-decay/--scheduler, per-epoch atomic checkpoints, and --resume giving
the same losses as a run that never stopped (a real kill -9 of a training process, then a fresh one)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import data, nn, train

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--hidden", "48", "32", "--dropout", "0.2", "--norm", "batch", "--weight-decay", "1e-4",
        "--scheduler", "step", "--optimizer", "adamw", "--batch-size", "64", "--no-progress"]


def cli(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "fastgrad.train", *argv], env


def checkpoint_epoch(path) -> int:
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["__meta__"]))["step"]


@pytest.mark.parametrize("scheduler", ["step", "cosine"])
def test_killed_run_resumed_in_a_fresh_process_gives_the_same_losses(tmp_path, scheduler):
    args = [a if a != "step" else scheduler for a in ARGS] + ["--epochs", "6"]
    cmd, env = cli(*args, "--out", str(tmp_path / "straight"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())

    cmd, env = cli(*args, "--out", str(tmp_path / "killed"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 3:"):  # printed before epoch 3's checkpoint: epoch 2's is on disk
                proc.send_signal(signal.SIGKILL)  # no chance to clean up: only the atomic write protects the file
                break
    finally:
        proc.wait(timeout=60)
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    k = checkpoint_epoch(ckpt)
    assert 2 <= k < 6, k
    # (a kill during epoch 3's write leaves at worst a stray *.tmp beside the intact checkpoint)
    cmd, env = cli(*args, "--out", str(tmp_path / "killed"), "--resume", str(ckpt))
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"epoch {k + 1}:" in resumed.stdout and "epoch 1:" not in resumed.stdout
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert len(history["loss"]) == len(straight["loss"]) == 6 * 20
    assert history["loss"] == straight["loss"]  # bit for bit
    assert history["val_acc"] == straight["val_acc"]
    assert history["final_accuracy"] == straight["final_accuracy"]


def test_fit_resume_after_an_interruption_in_process(tmp_path):
    """The same through fit(): stopped by on_epoch at the end of epoch 3 (before its checkpoint), resumed
    from epoch 2's checkpoint into fresh objects."""
    splits = data.load("digits", seed=0)

    def setup():
        return nn.MLP([64, 32, 10], norm="layer", dropout=0.3, seed=0, generator=fg.Generator(1))

    kwargs = dict(optimizer="momentum", lr=0.05, epochs=4, batch_size=128, seed=3, weight_decay=1e-3,
                  scheduler="exponential")
    straight = train.fit(setup(), splits, **kwargs)

    class Stop(Exception):
        pass

    def stop_after_2(epoch, history):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):  # on_epoch(3) runs before epoch 3's checkpoint: epoch 2's stays
        train.fit(setup(), splits, checkpoint=tmp_path / "c.npz", on_epoch=stop_after_2, **kwargs)
    resumed = train.fit(setup(), splits, checkpoint=tmp_path / "c.npz", resume=tmp_path / "c.npz", **kwargs)
    assert resumed.loss == straight.loss and resumed.val_acc == straight.val_acc
    assert checkpoint_epoch(tmp_path / "c.npz") == 4


@pytest.mark.parametrize("argv, fragment", [
    (["--dropout", "1"], "argument --dropout: must be in [0, 1)"),
    (["--norm", "group"], "argument --norm: invalid choice"),
    (["--scheduler", "cyclic"], "argument --scheduler: invalid choice"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be >= 0"),
    (["--resume", "NOWHERE.npz"], "--resume: no such checkpoint"),
])
def test_new_flags_reject_mistakes_in_one_line(tmp_path, capsys, argv, fragment):
    status = train.main(["--no-progress", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_resume_with_other_arguments_is_a_clear_error(tmp_path, capsys):
    assert train.main(["--epochs", "1", "--hidden", "16", "--no-progress", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    status = train.main(["--epochs", "2", "--hidden", "20", "--no-progress", "--out", str(tmp_path),
                         "--resume", str(tmp_path / "checkpoint.npz")])
    err = capsys.readouterr().err
    assert status == 2 and "--resume" in err and "shape" in err and err.count("\n") == 1
