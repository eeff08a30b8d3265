"""Files: nn.save and every other writer are atomic; nn.load turns any damaged or foreign file into one error."""
import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastgrad import nn
from fastgrad._io import atomic_write, check_writable_dir

ROOT = Path(__file__).resolve().parents[1]


def files_in(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def saved_model(folder, name="m.npz", seed=0):
    model = nn.MLP([5, 7, 3], seed=seed)
    return model, nn.save(model, Path(folder) / name)


# --- atomic writes ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, OSError])
def test_a_save_that_fails_half_way_keeps_the_previous_file(tmp_path, monkeypatch, error):
    _, path = saved_model(tmp_path)
    good = path.read_bytes()
    real_savez = np.savez

    def half_then_fail(f, **arrays):
        buffer = io.BytesIO()
        real_savez(buffer, **arrays)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half a zip reached the disk...
        raise error("interrupted while saving")  # ... then Ctrl-C, a bug, a full disk

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(error, match="interrupted while saving"):
        nn.save(nn.MLP([5, 7, 3], seed=1), path)
    assert path.read_bytes() == good
    assert files_in(tmp_path) == ["m.npz"]  # no temporary file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(nn.load(path).W1.data, nn.MLP([5, 7, 3], seed=0).W1.data)


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", lambda f, **a: (f.write(b"PK\x03\x04 half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz")
    assert files_in(tmp_path) == []


def test_save_replaces_a_file_uses_the_name_as_given_and_plain_permissions(tmp_path):
    _, path = saved_model(tmp_path, "model")  # no .npz suffix: NumPy would append one to a name
    assert files_in(tmp_path) == ["model"]
    new, _ = saved_model(tmp_path, "model", seed=5)
    np.testing.assert_array_equal(nn.load(path).W1.data, new.W1.data)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # what open() gives, not mkstemp's 0o600
    assert files_in(tmp_path) == ["model"]


def test_save_into_a_missing_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*m.npz"):
        nn.save(nn.MLP([2, 2], seed=0), tmp_path / "nowhere" / "m.npz")


def test_atomic_write_text_and_modes(tmp_path):
    with atomic_write(tmp_path / "a.json", "w") as f:
        f.write("{\"\u00e9\": 1}\n")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == "{\"\u00e9\": 1}\n"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "b", "a"):
            pass
    assert files_in(tmp_path) == ["a.json"]


def test_check_writable_dir(tmp_path):
    check_writable_dir(tmp_path, ["model.npz"])
    assert files_in(tmp_path) == []  # the probe is removed
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="model.npz"):
        check_writable_dir(tmp_path, ["model.npz"])
    with pytest.raises(FileNotFoundError):
        check_writable_dir(tmp_path / "missing")


SLOW_SAVE = textwrap.dedent("""
    import sys
    import numpy as np
    from fastgrad import nn
    path = sys.argv[1]
    model = nn.MLP([2000, 3000, 10], seed=0)      # 24 MB of float32: each save takes a while
    nn.save(model, path)
    for p in model.parameters():
        p.data += 1.0
    print("saved", flush=True)
    try:
        while True:                               # save the second state until SIGINT arrives
            nn.save(model, path)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def test_sigint_during_a_real_save_leaves_a_whole_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.npz"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        deadline = time.monotonic() + 60
        while not any(name.endswith(".tmp") for name in files_in(tmp_path)):  # a save is under way
            assert time.monotonic() < deadline, "no temporary file ever appeared"
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert files_in(tmp_path) == ["model.npz"]
    loaded = nn.load(path)  # whole: either the first state or the second, never a mixture
    first = nn.MLP([2000, 3000, 10], seed=0)
    offset = float(loaded.b1.data[0])
    assert offset in (0.0, 1.0)
    np.testing.assert_array_equal(loaded.W1.data, first.W1.data + np.float32(offset))
    np.testing.assert_array_equal(loaded.W2.data, first.W2.data + np.float32(offset))


# --- nn.load on damaged and foreign files -------------------------------------------------------


def _zip_with(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)


def _flip_middle(path):
    """Flip a byte in the middle of the first array's data (a byte in a zip header's date field, which
    no reader checks, is not damage anyone could see)."""
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\x93NUMPY")
    header = int.from_bytes(raw[start + 8:start + 10], "little") + 10  # npy 1.0: magic, version, length
    raw[start + header + 20] ^= 0xFF
    path.write_bytes(bytes(raw))


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


DAMAGED = {
    "empty": (lambda p: p.write_bytes(b""), "not an .npz"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), "not an .npz"),
    "text": (lambda p: p.write_text("W1,b1\n1,2\n"), "not an .npz"),
    "an .npy": (lambda p: p.write_bytes(_npy_bytes(np.zeros(3))), "not an .npz"),
    "a pickle": (lambda p: p.write_bytes(pickle.dumps({"W1": np.zeros(3)})), "not an .npz"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged"),
    "zip header only": (lambda p: p.write_bytes(p.read_bytes()[:40]), "damaged"),
    "one flipped byte": (_flip_middle, "damaged"),
    "a zip of text": (lambda p: _zip_with(p, {"W1.npy": "hello"}), "damaged"),
    "pickled objects": (lambda p: _npz(p, W1=np.array([{"a": 1}], dtype=object)), "Python objects"),
    "no config": (lambda p: _npz(p, W1=np.zeros((5, 7))), "holds no MLP config"),
    "bad config json": (lambda p: _npz(p, __config__=np.array("{sizes: [5")), "damaged MLP config"),
    "config not a dict": (lambda p: _npz(p, __config__=np.array("[5, 3]")), "damaged MLP config"),
    "config missing a key": (lambda p: _npz(p, __config__=np.array('{"sizes": [5, 3]}')), "missing 'activation'"),
    "config with bad sizes": (lambda p: _npz(p, __config__=np.array(
        '{"sizes": [5, -3], "activation": "relu", "pieces": 2, "dtype": "float32"}')), "damaged MLP config"),
    "config as numbers": (lambda p: _npz(p, __config__=np.zeros(3)), "damaged MLP config"),
    "wrong keys": (lambda p: _npz(p, __config__=np.array(
        '{"sizes": [5, 3], "activation": "relu", "pieces": 2, "dtype": "float32"}'), W9=np.zeros((5, 3))),
        "missing keys"),
    "wrong shapes": (lambda p: _npz(p, __config__=np.array(
        '{"sizes": [5, 3], "activation": "relu", "pieces": 2, "dtype": "float32"}'), W1=np.zeros((3, 5)),
        b1=np.zeros(3)), "shape"),
    "strings as weights": (lambda p: _npz(p, __config__=np.array(
        '{"sizes": [5, 3], "activation": "relu", "pieces": 2, "dtype": "float32"}'), W1=np.full((5, 3), "x"),
        b1=np.zeros(3)), "non-numeric"),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_load_of_a_damaged_or_foreign_file_raises_one_clear_error(tmp_path, damage):
    _, path = saved_model(tmp_path)
    corrupt, reason = DAMAGED[damage]
    corrupt(path)
    with pytest.raises(nn.LoadError) as info:
        nn.load(path)
    message = str(info.value)
    assert str(path) in message and reason in message, message
    assert isinstance(info.value, ValueError)
    e = info.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)  # no chained traceback


def test_load_into_a_model_that_does_not_fit_changes_nothing(tmp_path):
    _, path = saved_model(tmp_path)
    other = nn.MLP([5, 8, 3], seed=3)
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(nn.LoadError, match="does not fit the MLP.*W1"):
        nn.load(path, other)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="Module"):
        nn.load(path, {"W1": 0})


def test_load_of_a_missing_file_or_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file.*missing.npz"):
        nn.load(tmp_path / "missing.npz")
    with pytest.raises(nn.LoadError, match="is not a file"):
        nn.load(tmp_path)


# --- the other writers ------------------------------------------------------------------------


def _fake_dot(folder, script):
    dot = Path(folder) / "dot"
    dot.write_text("#!/bin/sh\n" + script)
    dot.chmod(0o755)
    return dot


@pytest.mark.skipif(os.name != "posix", reason="a shell-script stand-in for Graphviz")
def test_viz_draw_writes_the_rendering_atomically(tmp_path, monkeypatch):
    import fastgrad as fg

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    f = (x * 2.0).sum()
    _fake_dot(bin_dir, 'cat > /dev/null; printf "<svg>%s</svg>" "$1"\n')  # dot -Tsvg, reading DOT on stdin
    assert fg.viz.draw(f, out / "g.svg") == out / "g.svg"
    assert (out / "g.svg").read_text() == "<svg>-Tsvg</svg>"
    _fake_dot(bin_dir, 'cat > /dev/null; printf "<svg>half"; echo "dot: out of memory" >&2; exit 3\n')
    with pytest.raises(RuntimeError, match="exit 3.*out of memory"):
        fg.viz.draw(f, out / "g.svg")
    assert (out / "g.svg").read_text() == "<svg>-Tsvg</svg>"  # the failed render replaced nothing
    fg.viz.draw(f, out / "g.dot")
    assert (out / "g.dot").read_text().startswith("digraph")
    assert files_in(out) == ["g.dot", "g.svg"]


def test_training_outputs_survive_a_failed_rewrite(tmp_path, monkeypatch, capsys):
    from fastgrad import train

    assert train.main(["--epochs", "1", "--hidden", "8", "--no-progress", "--out", str(tmp_path)]) == 0
    before = {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)}
    assert sorted(before) == ["checkpoint.npz", "curves.png", "history.json", "model.npz"] or sorted(before) == [
        "checkpoint.npz", "history.json", "model.npz"]  # curves.png needs matplotlib

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    status = train.main(["--epochs", "1", "--hidden", "8", "--seed", "1", "--no-progress", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    # the first write of the run, the checkpoint after epoch 1, is the one that fails
    assert status == 2 and err == f"fastgrad-train: error: cannot write {tmp_path / 'checkpoint.npz'}: No space left on device\n"
    assert {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)} == before
