"""On-disk cache of the latents a frozen encoder gives every frame of a task's trajectories.

What is keyed: one entry per (task, key) holds float16/float32 latents [N, T, L, D] of
every trajectory of the task's file (all splits, the whole down-sampled time axis). The
key is the sha256 of the canonical JSON of everything the latents depend on: the format
version, the encoder's architecture and weights (``encoder_digest``), the data file's identity (resolved
path, size, mtime_ns) and that of each other file its data is read from (``FileInfo.sources``: external
links, virtual and external storage, read with ``data.allow_external_storage``), layout, spatial
and temporal down-sampling, the normaliser statistics, the cache dtype and the shapes. Change any of
them and the key, hence the file name, changes: a stale entry is never read, only left behind for ``clear``.

File format (``<task>-<key[:20]>.latents``): the raw C-order array at offset 0, so
``np.memmap(path, dtype, mode="r", offset=0, shape=shape)`` reads it page-aligned; then a
UTF-8 JSON header {format, key, key_fields, task, shape, dtype, crc32 (of the data
bytes), created}; then the header length as little-endian uint64; then ``MAGIC``.

Atomicity and locking: an entry is written trajectory by trajectory into a temp file
beside it and renamed into place once fsynced (``ups.atomic.atomic_path``), so readers
see a whole entry or none. Writers (DDP ranks, other runs; DataLoader workers only read) hold an
exclusive ``flock`` on ``<root>/.<entry name>.lock`` while checking and building it: the
second one waits, then finds a hit. Without ``fcntl`` there is no lock; the rename alone
still keeps files whole (two writers then both encode, and the last rename wins).
A killed writer leaves its temp file (``.<entry name>.<random>.tmp``): ``ensure`` removes those
whose entry lock is free, ``LatentCache.leftovers`` lists them. The disk's free space is checked
against an entry's size before it is written; a full disk is one ``UPSError`` (``atomic.room_for``).

Verification: ``ensure`` checks magic, header length, header JSON, key (and that the
header's key fields hash to it), task, shape, dtype, data size and the crc32 of the data
(streamed through the memmap in chunks). A failing entry is logged once, removed and
rebuilt. Only the header's ``created`` time is not covered; it does not affect the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ups.atomic import atomic_path, room_for
from ups.data.tasks import TaskData
from ups.errors import DataError

try:
    import fcntl
except ImportError:  # not on Windows: writers then rely on the atomic rename alone
    fcntl = None

FORMAT_VERSION = 1
SUFFIX = ".latents"
MAGIC = b"UPSLAT01"
DTYPES = ("float16", "float32")
_TRAILER = struct.Struct("<Q8s")  # header length, magic
_MAX_HEADER = 16 << 20
_CRC_CHUNK = 16 << 20
_HEADER_ROOM = 1 << 16  # bytes a header and trailer take at most, as a disk needs them (about 1 KB)
_FLOAT16_MAX = float(np.finfo(np.float16).max)

log = logging.getLogger("ups")


class _Corrupt(Exception):
    """An entry file that must not be trusted; the message is the reason."""


def encoder_digest(module: torch.nn.Module) -> str:
    """sha256 hex over what the encoder is: its architecture (the module tree as PyTorch prints it:
    classes, sizes, activations) and its state_dict (sorted names, dtype, shape and raw bytes).
    Its source code is not hashed, so an edit that computes the same is no miss; an edit that
    changes what a layer computes must raise ``FORMAT_VERSION``."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def entry_key(task: TaskData, *, encoder: str, dtype: str, latent_shape: tuple[int, int]) -> tuple[str, dict]:
    """(sha256 hex of the canonical JSON of the key fields, the key fields) of a task's entry."""
    fields = {
        "format": FORMAT_VERSION,
        "encoder": encoder,
        "data_file": _file_identity(Path(task.file.path).resolve()),
        "layout": task.file.layout,
        "reduced_resolution": task.file.reduced_resolution,
        "reduced_resolution_t": task.file.reduced_resolution_t,
        "normalizer": task.normalizer.to_dict(),
        "input_normalizer": task.input_normalizer.to_dict() if task.input_normalizer else None,
        "dtype": dtype,
        "latent_shape": [int(s) for s in latent_shape],
        "shape": [task.info.n_samples, task.info.n_times],
    }
    if task.info.sources:  # only then, so the keys of files without sources stay as they were
        fields["sources"] = [_file_identity(path) for path in task.info.sources]
    return _sha256_json(fields), fields


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class LatentEntry:
    """One task's cached latents [N, T, L, D], memory-mapped lazily once per process.

    The map is never pickled (``__getstate__`` drops it), so DataLoader workers reopen it.
    ``status`` is "hit", "built" or "rebuilt" (a corrupt entry was removed and re-encoded).
    """

    path: Path
    task: str
    shape: tuple[int, int, int, int]
    dtype: str
    status: str
    _map: np.memmap | None = field(default=None, init=False, repr=False, compare=False)
    _pid: int | None = field(default=None, init=False, repr=False, compare=False)

    def frames(self, trajectory: int, frames: slice = slice(None)) -> np.ndarray:
        """float32 copy [F, L, D] of the selected frames (any slice) of one trajectory."""
        if not -self.shape[0] <= trajectory < self.shape[0]:
            raise IndexError(
                f"task '{self.task}': trajectory {trajectory} is out of range; the "
                f"cache entry {self.path} holds {self.shape[0]} trajectories."
            )
        return np.array(self._latents()[trajectory, frames], dtype=np.float32)

    def _latents(self) -> np.memmap:
        if self._map is None or self._pid != os.getpid():
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", offset=0, shape=self.shape)
            self._pid = os.getpid()
        return self._map

    def __getstate__(self):
        return {**self.__dict__, "_map": None, "_pid": None}


def _read_header(path: Path) -> tuple[dict, int]:
    """(header, data bytes) of an entry file, from its trailer; no checksum."""
    size = path.stat().st_size
    if size < _TRAILER.size:
        raise _Corrupt(f"file is {size} bytes, shorter than its {_TRAILER.size}-byte trailer")
    with open(path, "rb") as handle:
        handle.seek(size - _TRAILER.size)
        length, magic = _TRAILER.unpack(handle.read(_TRAILER.size))
        if magic != MAGIC:
            raise _Corrupt(f"bad magic {magic!r} (expected {MAGIC!r}; truncated or not an entry)")
        if not 0 < length <= min(_MAX_HEADER, size - _TRAILER.size):
            raise _Corrupt(f"header length {length} does not fit a {size}-byte file")
        handle.seek(size - _TRAILER.size - length)
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Corrupt(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _Corrupt("header is not a JSON object")
    return header, size - _TRAILER.size - length


def _verify(path: Path, key: str, task: str, shape: tuple, dtype: str) -> None:
    """Raise ``_Corrupt`` unless the entry at ``path`` is whole and holds exactly this key."""
    header, data_bytes = _read_header(path)
    expected = {"format": FORMAT_VERSION, "key": key, "task": task, "shape": list(shape), "dtype": dtype}
    for name, value in expected.items():
        if header.get(name) != value:
            raise _Corrupt(f"header {name} is {header.get(name)!r}, expected {value!r}")
    if _sha256_json(header.get("key_fields")) != key:
        raise _Corrupt("header key_fields do not hash to the key")
    if data_bytes != math.prod(shape) * np.dtype(dtype).itemsize:
        raise _Corrupt(f"data region is {data_bytes} bytes, expected {shape} {dtype}")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=0, shape=(data_bytes,))
    crc = 0
    for start in range(0, data_bytes, _CRC_CHUNK):
        crc = zlib.crc32(data[start : start + _CRC_CHUNK], crc)
    del data
    if crc != header.get("crc32"):
        raise _Corrupt(f"crc32 of the data is {crc}, the header says {header.get('crc32')!r}")


def _checked_block(block, task: TaskData, trajectory: int, shape: tuple, dtype: str) -> np.ndarray:
    """``encode``'s output [T, L, D] as ``dtype``, or an error naming task and trajectory."""
    block = np.asarray(block, dtype=np.float32)
    where = f"task '{task.name}' ({task.file.path}), trajectory {trajectory}"
    if block.shape != shape:
        raise ValueError(
            f"{where}: encode returned latents of shape {block.shape}; expected [T, L, D] = {list(shape)}."
        )
    if not np.isfinite(block).all():
        raise DataError(
            f"{where}: the encoder gave non-finite latents (NaN or inf); nothing was "
            f"cached. Check the data file and the encoder checkpoint."
        )
    if dtype == "float16" and np.abs(block).max() > _FLOAT16_MAX:
        raise DataError(
            f"{where}: latents reach {np.abs(block).max():.4g}, beyond float16's "
            f"{_FLOAT16_MAX:.0f}; cache them as float32 "
            f"(training.latent_cache_dtype=float32)."
        )
    return block.astype(dtype)


@contextmanager
def _locked(lock_path: Path, entry_name: str, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``lock_path``; log once when another process holds it. Yields
    whether it is held: without ``wait``, False at once when another process holds it (and
    always without ``fcntl``, where no lock can be taken)."""
    if fcntl is None:
        yield False
        return
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            log.info("latent cache: waiting for another process writing %s", entry_name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LatentCache:
    """The entries under one folder; see the module docstring for keys and format."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.lock_path = self.root / ".ups.lock"  # of a command writing it (build, clear): ``ups.locks``

    def ensure(
        self,
        tasks: Sequence[TaskData],
        encode: Callable[[int, int], np.ndarray],
        *,
        encoder: str,
        dtype: str,
        latent_shape: tuple[int, int],
        progress: bool = False,
    ) -> list[LatentEntry]:
        """An entry per task, in order: verified hits are reused; missing or corrupt ones are
        built with ``encode(task_index, trajectory)`` -> float32 [T, L, D] for every trajectory.

        Raises:
            ValueError: ``dtype`` is not float16/float32, or ``latent_shape`` is not [L, D] > 0.
            DataError: ``encode`` gave non-finite latents, or ones float16 cannot hold.
        """
        if dtype not in DTYPES:
            raise ValueError(f"latent cache dtype {dtype!r} is not supported; use one of {DTYPES}.")
        if len(latent_shape) != 2 or min(latent_shape) < 1:
            raise ValueError(f"latent_shape {tuple(latent_shape)} must be [L, D] with L, D >= 1.")
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        return [
            self._ensure_one(task, partial(encode, k), encoder, dtype, latent_shape, progress)
            for k, task in enumerate(tasks)
        ]

    def _ensure_one(
        self,
        task: TaskData,
        encode_one: Callable[[int], np.ndarray],
        encoder: str,
        dtype: str,
        latent_shape: tuple[int, int],
        progress: bool,
    ) -> LatentEntry:
        key, fields = entry_key(task, encoder=encoder, dtype=dtype, latent_shape=latent_shape)
        name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', task.name)}-{key[:20]}{SUFFIX}"
        path = self.root / name
        shape = (task.info.n_samples, task.info.n_times, *(int(s) for s in latent_shape))
        with _locked(self.root / f".{name}.lock", name):
            status = "built"
            if path.exists():
                try:
                    _verify(path, key, task.name, shape, dtype)
                    log.info("latent cache: hit for task '%s': %s", task.name, path)
                    return LatentEntry(path, task.name, shape, dtype, "hit")
                except _Corrupt as exc:
                    log.warning(
                        "latent cache: %s is corrupt (%s); removing it and re-encoding task '%s'.",
                        path,
                        exc,
                        task.name,
                    )
                    path.unlink()
                    status = "rebuilt"
            needed = math.prod(shape) * np.dtype(dtype).itemsize + _HEADER_ROOM
            fix = "or set training.latent_cache_dir to a folder on a disk with room"
            with room_for(path, needed, f"the latent cache entry of task '{task.name}'", fix):
                _write_entry(path, task, encode_one, key, fields, shape, dtype, progress)
            log.info("latent cache: %s task '%s': %s", status, task.name, path)
            return LatentEntry(path, task.name, shape, dtype, status)

    def entries(self) -> list[dict]:
        """Every entry file under root, by name: {"path", "bytes", "header"} or, for a file
        that cannot be read, {"path", "bytes", "error"}. Reads headers only (no checksum)."""
        out = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")):
            info = {"path": str(path), "bytes": path.stat().st_size}
            try:
                info["header"] = _read_header(path)[0]
            except _Corrupt as exc:
                info["error"] = str(exc)
            out.append(info)
        return out

    def leftovers(self) -> list[Path]:
        """Temporary files of entries whose writer was killed (or is writing now)."""
        return sorted(self.root.glob(f".*{SUFFIX}.*.tmp")) if self.root.is_dir() else []

    def remove_leftovers(self) -> list[Path]:
        """Remove the temp files of killed writers: those whose entry's flock no writer holds."""
        removed = []
        for tmp in self.leftovers():
            entry = tmp.name[1 : tmp.name.rindex(SUFFIX) + len(SUFFIX)]  # the random tail has no dot
            with _locked(self.root / f".{entry}.lock", entry, wait=False) as free:
                if free:
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        if removed:
            log.info("latent cache: removed temporary files of killed builds: %s", [p.name for p in removed])
        return removed

    def files(self) -> list[Path]:
        """The cache's own files under root: entries, their lock files, leftover temp files."""
        if not self.root.is_dir():
            return []
        return sorted({*self.root.glob(f"*{SUFFIX}"), *self.root.glob(f".*{SUFFIX}.lock"), *self.leftovers()})

    def clear(self) -> tuple[int, int]:
        """Remove entries, lock files and leftover temp files: (files removed, bytes freed).
        Do not clear while another process fills or trains from the cache (its DataLoader
        workers reopen entries)."""
        paths = self.files()
        freed = 0
        for path in paths:
            freed += path.stat().st_size
            path.unlink()
        return len(paths), freed


def _write_entry(
    path: Path,
    task: TaskData,
    encode_one: Callable[[int], np.ndarray],
    key: str,
    fields: dict,
    shape: tuple,
    dtype: str,
    progress: bool,
) -> None:
    """Encode trajectory by trajectory into a temp file beside ``path``, then rename it in."""
    crc = 0
    bar = tqdm(
        range(shape[0]), desc=f"encoding {task.name}", unit="traj", file=sys.stderr, disable=not progress
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as out, bar:
        for i in bar:
            raw = memoryview(_checked_block(encode_one(i), task, i, shape[1:], dtype)).cast("B")
            crc = zlib.crc32(raw, crc)
            out.write(raw)
        header = {
            "format": FORMAT_VERSION,
            "key": key,
            "key_fields": fields,
            "task": task.name,
            "shape": list(shape),
            "dtype": dtype,
            "crc32": crc,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        blob = json.dumps(header, sort_keys=True).encode("utf-8")
        out.write(blob + _TRAILER.pack(len(blob), MAGIC))
