"""Atomic writes: a file or a directory appears whole, or not at all, whatever moment a process dies.

One helper for every writer in the project (checkpoints, manifests, wavs, tokenizer models, codec caches):

- `atomic_open(path, "wb")`: a context manager yielding a file object on a temp file beside `path`; on a clean exit
  the bytes are flushed, fsynced and renamed over `path` (`os.replace`, atomic on POSIX); on an exception the temp
  file is removed and `path` is untouched. A process killed mid-write leaves at most a `.<name>.*.tmp` file, never
  a half-written `path`.
- `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: the one-call forms.
- `atomic_write_dir(target, write)`: a directory (e.g. a checkpoint) written under a temp name, then swapped in.
  The swap takes two renames (old aside, new in); `recover_dir(target)` finishes or undoes a swap cut between them,
  and `atomic_write_dir` runs it first, so no crash point loses both the old and the new directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems refuse to open directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside `path` for writing; rename it to `path` only if the block exits cleanly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write file {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """JSON with `allow_nan=False`: a NaN or inf is refused (ValueError) instead of written as bare `NaN`."""
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"cannot write {path}: {e} (a value is NaN or infinite)") from e
    atomic_write_text(path, text)


def _new_name(target: Path) -> Path:
    return target.parent / f".{target.name}.new"


def _old_name(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def recover_dir(target: str | os.PathLike) -> None:
    """Finish (or clean up after) an `atomic_write_dir` swap that a crash cut short.

    States a crash can leave, and what is kept: a complete `.new` is the newest whole copy and is moved in (the
    target, if still there, is the older copy and is dropped); otherwise a lone `.old` (target already moved aside)
    is moved back; a stale `.old` next to a present target is removed.
    """
    target = Path(target)
    new, old = _new_name(target), _old_name(target)
    if new.is_dir():
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(new, target)
    elif old.is_dir() and not target.exists():
        os.replace(old, target)
    if old.exists() and target.exists():
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def atomic_write_dir(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)`, make its files durable, then swap the directory in for `target`.

    Steps: write into a fresh temp dir; rename it to `.<name>.new` (complete from here on); move the current target
    to `.<name>.old`; move `.new` to target; remove `.old`. A crash before `.new` exists keeps the old target; after,
    `recover_dir` (run by the next `atomic_write_dir` and by the writer that resumes, e.g. the Trainer) completes the
    swap. Readers never call it: a writer may be in the middle of a swap.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cannot write directory {target}: a file of that name exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        write(tmp)
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                if f.stat().st_mode & 0o777 == 0o600:  # a file the writer made with mkstemp
                    os.chmod(f, 0o666 & ~_umask())
        _fsync_dir(tmp)
        os.replace(tmp, _new_name(target))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    recover_dir(target)  # the swap itself: target -> .old, .new -> target, drop .old
    return target
