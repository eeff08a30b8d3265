"""Writing files so that they are never half-written: `atomic_write`, and `check_writable_dir`.

Every file fastgrad writes (nn.save, the training script's outputs, viz drawings) goes through
`atomic_write`: the bytes go to a temporary file in the target's folder, are flushed to disk (fsync),
and only then renamed over the target with `os.replace`, which is atomic on POSIX and Windows. An
exception or a KeyboardInterrupt inside (or before the rename) removes the temporary file and leaves
the previous file, if any, untouched: a reader sees the old file or the new one, never a mixture.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_write", "check_writable_dir"]


def _temp_name(path: Path) -> Path:
    # a hidden name in the target's folder; not ending in .npz (np.savez(name) would add .npz to any
    # other name, which is why callers hand NumPy the open file instead)
    return path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"


_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file next to `path` for writing; rename it to `path` when the block ends.

    mode: "wb" (bytes) or "w" (text, `encoding` defaults to UTF-8). Yields the open file object.
    The new file gets the permissions a plain open() would give it (0o666 less the umask). On any
    exception (including KeyboardInterrupt) the temporary file is deleted and the exception
    propagates; `path` is then exactly as it was before.

    >>> with atomic_write("history.json", "w") as f:      # doctest: +SKIP
    ...     f.write("{}")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp, fd, f = None, -1, None
    try:
        # not tempfile.mkstemp: the name is chosen before the file exists, so a KeyboardInterrupt
        # arriving just after the file is created still finds the name to delete
        while fd < 0:
            tmp = _temp_name(path)
            try:
                fd = os.open(tmp, _FLAGS, 0o666)
            except FileExistsError:  # someone else's file: try another name, never delete it
                tmp = None
            except OSError as e:  # name the file asked for, not the temporary one
                tmp = None
                raise OSError(e.errno, e.strerror, str(path)) from None  # OSError picks the subclass
        f = os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if f is None and fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable_dir(folder, names=()) -> None:
    """Raise OSError unless files can be created in `folder` and each of `names` in it can be replaced.

    Probes by creating and removing a temporary file (permission bits alone do not tell: root, ACLs,
    read-only mounts); a name that exists as something other than a regular file (a folder) is refused.
    """
    folder = Path(folder)
    probe = _temp_name(folder / "fastgrad-probe")
    try:
        os.close(os.open(probe, _FLAGS, 0o666))
    except OSError as e:  # name the folder, not the probe
        raise OSError(e.errno, e.strerror, str(folder)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    for name in names:
        target = folder / name
        if target.exists() and not target.is_file():
            raise IsADirectoryError(21, "exists and is not a regular file", str(target))
