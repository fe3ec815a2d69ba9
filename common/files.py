"""Atomic file writes: a file appears under its name complete, or not at all (standard library only).

Every writer writes to a unique temporary file in the target's folder (`.<name>.<random>.part`, so the
rename stays on one filesystem and is atomic), which is flushed to disk and renamed over the target.
On any failure, an exception or Ctrl-C alike, the temporary file is deleted and the target, old or
absent, is left as it was.

    with atomic_path(target) as tmp:      # for writers that take a path (safetensors, torch.save, PIL)
        save_file(state, tmp)
    with atomic_file(target) as handle:   # for streamed writes; check the data inside the block
        stream_into(handle)
    write_bytes(target, data)             # for data already in memory
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

StrPath = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; written files get the mode a plain open() would give.
# Read once, at import: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(target: StrPath) -> Iterator[str]:
    """Yield a temporary path beside `target`; when the block ends normally, move it to `target`.

    The writer may open, truncate or replace the temporary file as it likes; it must leave a file there.
    """
    folder, name = os.path.split(os.fspath(target))
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder or ".")
    os.close(handle)
    try:
        yield tmp
        _sync(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_file(target: StrPath) -> Iterator[BinaryIO]:
    """Yield a binary file open for writing (its `name` is the temporary path); moved to `target` as above.

    Checks of the written data (a checksum) belong inside the block, after `handle.flush()`: an error raised
    there deletes the file before it ever appears under its name.
    """
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        yield handle


def write_bytes(target: StrPath, data: bytes) -> None:
    """`data` as the whole content of `target`, atomically."""
    with atomic_file(target) as handle:
        handle.write(data)


def _sync(path: str) -> None:
    """Flush the file's data to disk, so a crash after the rename cannot leave a named but empty file."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
