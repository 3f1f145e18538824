"""The content check of checkpoints: a sha256 seal in the zip that ``torch.save`` writes.

``seal`` sets the zip's archive comment (empty as torch writes it; the last bytes of the file) to
``ups-sha256:<hex>``, the sha256 of every byte before the comment's length field; ``verify``
recomputes it. The hash lives in the file: a rename or a copy keeps it, and an atomic write
(``ups.checkpoint.save_checkpoint``) makes both appear at once, so no kill leaves a good checkpoint
beside a stale hash. Any flipped byte is found — a tensor's data, ``data.pkl``, a zip header or
its padding (which the zip's own CRCs do not cover, and ``torch.load`` checks no CRC), the seal
itself. torch and ``zipfile`` read the seal as an ordinary zip comment. A checkpoint written
before seals (no comment) passes unchecked; so does a file that is no zip at all, which
``torch.load`` refuses. No torch here: ``RunDir`` checks the kept checkpoints with it.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from pathlib import Path

from ups.errors import CheckpointError

SEAL_PREFIX = b"ups-sha256:"
SEAL_BYTES = len(SEAL_PREFIX) + 64  # the archive comment: the prefix and the sha256's hex digits
ZIP_START = b"PK\x03\x04"  # a zip's first local file header
END_OF_ZIP = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes + the comment
log = logging.getLogger("ups")


def seal(path: Path) -> None:
    """Set the zip's archive comment (empty as torch writes it) to the sha256 of the bytes before
    the comment's length field."""
    with open(path, "rb+") as handle:
        handle.seek(-22, 2)
        if handle.read(22)[:4] != END_OF_ZIP:
            raise CheckpointError(f"{path}: not a zip archive (as torch.save writes); UPS cannot seal it.")
        digest = _sha256(handle, path.stat().st_size - 2)
        handle.seek(-2, 2)
        handle.write(struct.pack("<H", SEAL_BYTES) + SEAL_PREFIX + digest.encode())


def _sha256(handle, size: int) -> str:
    """sha256 of the first ``size`` bytes of the open file ``handle``."""
    handle.seek(0)
    digest, left = hashlib.sha256(), size
    while left:
        block = handle.read(min(left, 1 << 22))
        if not block:  # shorter than its size said: the file changed while being read
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def verify(path: str | Path) -> None:
    """Raise ``CheckpointError`` unless ``path``'s bytes are those it was written with (its seal).
    Passed unchecked, when no seal ends the file: a checkpoint from before seals (its zip ends
    without a comment) and a file that is no zip at all (``torch.load`` refuses it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(size - 22 - SEAL_BYTES, 0))
        tail = handle.read()
        handle.seek(0)
        if tail[-SEAL_BYTES:-64] != SEAL_PREFIX:  # no seal at the end: a damaged one, or none written
            if handle.read(4) != ZIP_START:
                return
            if tail[-22:-18] == END_OF_ZIP and tail[-2:] == b"\0\0":
                return  # unsealed: written before UPS sealed checkpoints
        sealed = (
            len(tail) == 22 + SEAL_BYTES
            and tail[:4] == END_OF_ZIP
            and tail[20:22] == struct.pack("<H", SEAL_BYTES)
            and tail[22 : 22 + len(SEAL_PREFIX)] == SEAL_PREFIX
        )
        if not sealed or _sha256(handle, size - SEAL_BYTES - 2) != tail[-64:].decode("ascii", "replace"):
            raise CheckpointError(
                f"checkpoint {path} is damaged: its bytes differ from those it was written with "
                f"(its sha256 seal {'does not match' if sealed else 'is unreadable'}); it was not loaded. "
                f"Use an earlier checkpoint of the stage, or train it again."
            )


def newest_intact(paths: Sequence[Path]) -> Path:
    """The first of ``paths`` (newest first: ``RunDir.last_checkpoints``) that passes
    ``verify``; a damaged one is passed over with a warning naming it and the one used.
    ``CheckpointError`` when none is left."""
    damaged: list[str] = []
    for path in paths:
        try:
            verify(path)
        except CheckpointError as exc:
            damaged.append(str(exc))
            continue
        if damaged:
            log.warning("%s\nUsing the previous kept checkpoint %s instead.", "\n".join(damaged), path)
        return path
    if not damaged:
        raise CheckpointError("no checkpoint to read: none of " + ", ".join(map(str, paths)) + " exists.")
    raise CheckpointError(
        "every kept checkpoint is damaged:\n  - " + "\n  - ".join(damaged) + "\nTrain the stage again "
        "(or restore the files from a copy of the run folder)."
    )
