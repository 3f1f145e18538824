"""Read what an offline W&B run wrote: the records of its ``run-<id>.wandb`` file.

The file is W&B's record log: a 7-byte header (``:W&B``, a 2-byte magic, a version byte), then
LevelDB-style blocks of 32 KiB, each record a 7-byte header (crc32c, little-endian length, type:
1 full, 2 first, 3 middle, 4 last) and a chunk of a serialised ``wandb.proto`` ``Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(run_dir: Path) -> list[dict]:
    """The logged rows (key -> value) of the offline run folder ``run_dir``."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    rows = []
    for record in records(log):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
