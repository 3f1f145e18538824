"""One writer per folder: a lock file naming its holder (process id, host, command, start time,
SLURM job), taken before a command writes anything in a run folder or a latent cache folder.

The lock is a file made by ``os.link`` of a fully written temporary file: the link either makes
the name or fails because it exists, atomically, also on NFS (which has made ``link`` atomic
since version 2; ``O_EXCL`` only since version 3), so a reader never sees a half-written record
(on a file system without hard links, ``O_EXCL`` creation instead).
``flock`` was not chosen: on NFS it depends on the lock daemon, on Lustre it is off or local to
one node unless mounted with ``-o flock``, and a lock that vanishes with its process names no
holder for the message.

A lock file outlives a killed holder (SIGKILL, a node lost). It is stale, and taken over with a
warning, when its holder ran on this host and that process is gone, or when it was taken under
the SLURM job this process runs in (a requeue of the same job: the earlier attempt is gone). A
holder on another host cannot be checked from here: ``break_lock`` (``--break-lock``) takes it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ups.errors import UPSError

log = logging.getLogger("ups")


class FolderLocked(UPSError):
    """Another process holds the folder's lock."""


def holder_record(command: str) -> dict:
    """Who takes a lock: this process, its host, its command, now, its SLURM job (or None)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "token": secrets.token_hex(8),
    }


def describe(holder: dict) -> str:
    """``pid 12 on host n1 (`ups train …`, started …, SLURM job 7)``."""
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')} "
        f"(`{holder.get('command')}`, started {holder.get('started')}{job})"
    )


def read_holder(lock: Path) -> dict | None:
    """The record of the lock at ``lock``; None when there is none; {} when it cannot be read."""
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def stale_reason(holder: dict) -> str | None:
    """Why ``holder`` can be taken over without asking (see the module docstring), or None."""
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        return None if isinstance(pid, int) and _alive(pid) else "that process is no longer running"
    job = os.environ.get("SLURM_JOB_ID")
    if job and holder.get("slurm_job_id") == job:
        return f"it was taken earlier in this SLURM job ({job}), which has been requeued"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def folder_lock(lock: Path, command: str, *, what: str, break_lock: bool = False) -> Iterator[dict]:
    """Hold the lock file ``lock`` (in the folder ``what`` names) while the block runs; yields the
    holder record. Folders made for the lock are removed again when they end up empty (a command
    refused later leaves nothing). Raises ``FolderLocked`` naming the holder."""
    try:
        made = _make_folders(lock.parent)
    except OSError as exc:
        raise UPSError(f"{what} {lock.parent} cannot be made ({exc.strerror}); choose another.") from None
    try:
        me = holder_record(command)
        _take(lock, me, what, break_lock)
        try:
            yield me
        finally:
            if read_holder(lock) == me:  # not a lock broken and taken by another process since
                lock.unlink(missing_ok=True)
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # not empty: the command wrote into it
                break


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the folders made, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _take(lock: Path, me: dict, what: str, break_lock: bool) -> None:
    record = lock.with_name(f"{lock.name}.{me['host']}.{me['pid']}.{me['token']}.tmp")
    try:
        record.write_text(json.dumps(me, indent=2) + "\n")
    except OSError as exc:
        raise UPSError(f"{what} {lock.parent}: its lock cannot be written ({exc.strerror}).") from None
    try:
        for _ in range(3):  # a stale lock set aside, then taken: a rival may take it first
            if _create(lock, record):
                return
            holder = read_holder(lock)
            if holder is None:  # released meanwhile
                continue
            why = stale_reason(holder) or ("--break-lock" if break_lock else None)
            if why is None:
                raise FolderLocked(_in_use(lock, holder, what))
            log.warning("%s %s: taking over the lock of %s: %s", what, lock.parent, describe(holder), why)
            _set_aside(lock, holder)
        raise FolderLocked(_in_use(lock, read_holder(lock) or {}, what))
    finally:
        record.unlink(missing_ok=True)


def _create(lock: Path, record: Path) -> bool:
    """Make ``lock`` from the written ``record``, unless it exists: by ``link``, or on a file
    system without hard links by exclusive creation (a reader may then see it half written)."""
    try:
        os.link(record, lock)
        return True
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(record.read_text())
        return True


def _set_aside(lock: Path, holder: dict) -> None:
    """Remove the lock file if it still holds ``holder``: renamed first, so that of two processes
    taking over the same stale lock only one removes it, and a lock taken meanwhile is put back."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}.broken")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    if read_holder(aside) != holder:
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def _in_use(lock: Path, holder: dict, what: str) -> str:
    if not holder:
        return (
            f"{what} {lock.parent} is locked by {lock}, whose record cannot be read; if no UPS command "
            f"is writing there, run again with --break-lock."
        )
    here = holder.get("host") == socket.gethostname()
    then = (
        f"wait for it to finish, or stop it (kill {holder.get('pid')})"
        if here
        else "wait for it to finish; if it is no longer running (a job killed on that host), "
        "run again with --break-lock"
    )
    return f"{what} {lock.parent} is in use by {describe(holder)}; {then}."
