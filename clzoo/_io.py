"""Durable file writes: a file is either absent or complete, also after a crash or power loss.

Writing in place leaves a truncated file when the process dies mid-write, and `os.replace` alone is
not enough: after a power loss the rename can reach the disk before the data, leaving a complete-looking
name over an empty or partial file. So every file clzoo writes goes to a temp file beside it, which is
fsync'ed, renamed over the target, and the folder fsync'ed so that the rename itself is on disk.

    atomic_write(path, lambda f: f.write(data))   # writer(f): f is the temp file, open for binary writing

    with atomic_write(path) as tmp:                # tmp: a Path beside `path`, not yet created
        save_file(tensors, str(tmp))               # for writers that take a path (safetensors, torch.save)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator, Optional, Union, overload

__all__ = ["atomic_write", "fsync_dir", "write_json"]

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_path(path: Path) -> None:
    # O_RDWR rather than O_RDONLY: Windows refuses to flush a file opened read-only.
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where unsupported (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_beside(path: Path, suffix: str) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name in the target's folder (same file system, so the rename is atomic); the writer creates
    # the file, so it gets the umask's permissions, not tempfile.mkstemp's 0600 (unreadable to a shared cache)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
    while tmp.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write({path}): nothing was written to {tmp}")
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@overload
def atomic_write(path: PathLike, writer: None = None, suffix: str = ".tmp") -> ContextManager[Path]: ...
@overload
def atomic_write(path: PathLike, writer: Callable[[BinaryIO], object], suffix: str = ".tmp") -> Path: ...


def atomic_write(path, writer: Optional[Callable[[BinaryIO], object]] = None, suffix: str = ".tmp"):
    """Write `path` durably: through a temp file beside it that is fsync'ed, renamed onto `path`, and the
    folder fsync'ed. If writing fails the temp file is removed and `path` is left as it was.

    `atomic_write(path, writer)`: calls `writer(f)` with the temp file open for binary writing; returns `path`.
    `with atomic_write(path) as tmp:`: yields the temp file's Path for the block to create (for writers that
    take a file name); the rename happens when the block exits without an exception.
    """
    path = Path(path)
    if writer is None:
        return _temp_beside(path, suffix)
    with _temp_beside(path, suffix) as tmp:
        with open(tmp, "wb") as f:
            writer(f)
    return path


def write_json(path: PathLike, data) -> Path:
    """`data` as indented JSON at `path`, durably (atomic_write)."""
    return atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
