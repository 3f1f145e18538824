"""Atomic file writes: readers see the old file or the whole new one, never half of one."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ups.errors import UPSError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: reading it sets it for a moment


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is fsynced and renamed
    over ``path``, on any exception (Ctrl-C included) it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # what open() would give, not mkstemp's owner-only 0600
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str, encoding: str | None = None) -> None:
    """``Path.write_text`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself; folders cannot be opened for fsync on some platforms."""
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


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temporary files ``atomic_path`` left in ``folder`` (not below it) when its
    process was killed in the middle of a write, which skips the clean-up. Only for a folder
    that no other process is writing to: a resumed run's own folders."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def room_for(path: Path, needed: int, what: str, fix: str) -> Iterator[None]:
    """Run a block that writes ``what`` (``needed`` bytes) at ``path`` once the disk has room for
    it; a full disk or quota, found before or while it writes, is one ``UPSError`` naming the
    path, the bytes and ``fix`` (the block must leave nothing behind: ``atomic_path`` does not)."""
    free = shutil.disk_usage(Path(path).parent).free
    if free < needed:
        raise UPSError(
            f"{what} needs {needed:,} bytes at {path}, but only {free:,} are free on that disk; "
            f"free space there, {fix}."
        )
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UPSError(
            f"the disk (or quota) filled up while writing {what} ({needed:,} bytes) at {path}; nothing "
            f"of it was kept. Free space there, {fix}."
        ) from None


@contextmanager
def atomic_folder(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it is renamed to ``path`` (an
    existing ``path`` must be an empty folder, or any folder with ``replace``, which is removed only
    once the new one is in place), on any exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)  # what mkdir would give, not mkdtemp's owner-only 0700
    old = None
    try:
        yield tmp
        if replace and path.exists():
            old = path.rename(tmp.with_suffix(".old"))
        os.rename(tmp, path)  # replaces an empty folder, refuses a non-empty one
    except BaseException:
        if old is not None and not path.exists():
            old.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_folder(path.parent)
