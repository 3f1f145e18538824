"""``logs/<stage>/metrics.csv``, written alike by both engines, in Lightning's CSVLogger layout:
one row per log call, the columns sorted (``step`` among them), an empty cell where a row has no
value.

The file is appended to, a row at a time, and nothing but its header is kept in memory, however
long the run. A key never seen before (``val/nrmse`` at the first validation) changes the header:
then, and only then, the file is rewritten, streamed into a temporary file renamed over it
(``ups.atomic``), so that a kill at any moment leaves the old file or the new one whole.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ups.atomic import atomic_path


def metrics_row(metrics: dict, step: int) -> dict:
    """The row of ``metrics`` logged at ``step`` (the run's axis), tensors as numbers."""
    row = {key: (value.item() if torch.is_tensor(value) else value) for key, value in metrics.items()}
    row["step"] = step
    return row


class MetricsCSV:
    """``path`` afresh (``append=False``: a previous file is removed) or continued (a resume: its
    rows and header are kept, and a last row cut short by a kill is dropped)."""

    def __init__(self, path: Path, *, append: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keys: list[str] = []
        if not append:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            drop_torn_row(self.path)
            with self.path.open(newline="") as f:
                self.keys = next(csv.reader(f), [])

    def log(self, row: dict) -> None:
        """Append ``row`` (``{column: value}``), after a rewrite under a wider header if it has a
        new column."""
        if any(key not in self.keys for key in row) or not self.path.is_file():
            self.keys = sorted({*self.keys, *row})
            self._write_header()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    def _write_header(self) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as new:
            writer = csv.DictWriter(new, fieldnames=self.keys)
            writer.writeheader()
            if self.path.is_file():
                with self.path.open(newline="") as old:
                    writer.writerows(csv.DictReader(old))


def drop_torn_row(path: Path) -> None:
    """Cut ``path`` after its last line break: what a kill in the middle of an append left."""
    with path.open("rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        tail = min(size, 1 << 16)
        while True:
            f.seek(size - tail)
            cut = f.read(tail).rfind(b"\n")
            if cut >= 0 or tail == size:
                f.truncate(size - tail + cut + 1)
                return
            tail = min(size, tail * 2)
