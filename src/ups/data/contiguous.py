"""Reads of contiguous, unfiltered HDF5 datasets by file offset, without h5py's selection machinery.

A contiguous dataset without filters stores its elements in C order from one offset of the file
(``H5Dget_offset``, which counts a user block), so ``dataset[(*lead, rows, *keep)]`` is one
``pread`` of the rows' bytes (or one per row, for rows far apart) and a NumPy view for ``keep``.
A 1,024-point float32 frame read so takes about 10 µs from the page cache (the ``pread`` itself
3 µs) against about 20 µs through h5py's selection machinery; a training step of the autoencoder
pays one such read per snapshot. From the disk, the wait for the disk (~120 µs) dominates either way.

``ContiguousDataset.probe`` says whether a dataset can be read so: contiguous layout, no filters
(compression, shuffle, checksums), no external files, storage allocated and inside the file,
a plain numeric type, and ``os.preadv`` available. Otherwise it returns None and the caller
reads through h5py as before. The values are the stored ones in the stored dtype (byte order
included), exactly what h5py returns for the same selection.

The file descriptor is the one h5py's default driver holds for its open file, so the offsets
and the bytes come from the same file even if the path is replaced meanwhile; a reader is only
valid while that h5py file stays open, in the process that opened it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import h5py
import numpy as np

from ups.errors import DataError

# Bytes read by one pread at most: a down-sampled read of a long trajectory holds one block at a
# time at full resolution, not the whole selection.
BLOCK_BYTES = 16 << 20
# Rows selected with a step and at least this large are read one by one instead of as one span
# (the span would carry the rows in between for nothing).
ROW_READ_BYTES = 64 << 10


@dataclass(frozen=True)
class ContiguousDataset:
    """One dataset read by offset from file descriptor ``fd``: ``shape`` and ``dtype`` as stored."""

    fd: int
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str  # "<file>: '<key>'", for errors

    @classmethod
    def probe(cls, dataset: h5py.Dataset, fd: int | None, where: str) -> ContiguousDataset | None:
        """A reader for ``dataset`` through ``fd`` (its file's descriptor), or None when the
        dataset must be read by h5py (see the module docstring)."""
        if fd is None or not hasattr(os, "preadv") or dataset.dtype.kind not in "fiu":
            return None
        plist = dataset.id.get_create_plist()
        if (
            plist.get_layout() != h5py.h5d.CONTIGUOUS
            or plist.get_nfilters()
            or plist.get_external_count()
            or dataset.id.get_type().get_size() != dataset.dtype.itemsize
        ):
            return None
        nbytes = math.prod(dataset.shape) * dataset.dtype.itemsize
        offset = dataset.id.get_offset()
        # an unallocated dataset (never written: h5py reads its fill value) has no storage and a
        # meaningless offset
        if (
            offset is None
            or dataset.id.get_storage_size() != nbytes
            or offset + nbytes > os.fstat(fd).st_size
        ):
            return None
        return cls(fd, int(offset), tuple(int(s) for s in dataset.shape), dataset.dtype, where)

    def read(self, lead: tuple[int, ...], rows: slice, keep: tuple[slice, ...] = ()) -> np.ndarray:
        """``dataset[(*lead, rows, *keep)]`` as h5py returns it: the stored dtype, shape
        [n_rows, *kept]. ``lead`` are non-negative indices of the first axes; ``rows`` selects along
        the next axis; ``keep`` slices the axes after it (the rest are read whole)."""
        axis = len(lead)
        row_shape = self.shape[axis + 1 :]
        row_bytes = math.prod(row_shape) * self.dtype.itemsize
        first_row = int(np.ravel_multi_index(lead, self.shape[:axis])) * self.shape[axis] if lead else 0
        picked = range(*rows.indices(self.shape[axis]))
        if picked.step < 1:
            raise ValueError(f"{self.where}: step must be >= 1 (got {picked.step}), as in h5py.")
        if not picked:
            return np.empty((0, *row_shape), dtype=self.dtype)[(slice(None), *keep)]
        shrink = bool(keep) or picked.step > 1  # copy each block's selection, so its full buffer goes
        parts = []
        for start, count in self._runs(picked, row_bytes):
            block = self._block(first_row + start, count, row_shape, row_bytes)[
                :: picked.step if count > 1 else 1
            ]
            block = block[(slice(None), *keep)]
            parts.append(np.ascontiguousarray(block) if shrink else block)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _runs(self, picked: range, row_bytes: int) -> list[tuple[int, int]]:
        """(first row, rows spanned) of each pread: spans of at most ``BLOCK_BYTES`` whose
        ``picked.step``-th rows are the selection, or single rows when those are large and apart."""
        if picked.step > 1 and row_bytes >= ROW_READ_BYTES:
            return [(row, 1) for row in picked]
        per_block = max(1, BLOCK_BYTES // (row_bytes * picked.step))  # selected rows per span
        spans = (picked[i : i + per_block] for i in range(0, len(picked), per_block))
        return [(span[0], span[-1] - span[0] + 1) for span in spans]

    def _block(self, row: int, count: int, row_shape: tuple[int, ...], row_bytes: int) -> np.ndarray:
        """``count`` whole consecutive rows from flat row ``row``: [count, *row_shape]."""
        buffer = bytearray(count * row_bytes)
        view, done, start = memoryview(buffer), 0, self.offset + row * row_bytes
        while done < len(buffer):
            n = os.preadv(self.fd, [view[done:]], start + done)
            if n == 0:
                raise DataError(
                    f"{self.where}: the file ended at byte {start + done} inside the dataset's "
                    f"data (it says {len(buffer)} bytes from {start}); the file is truncated or "
                    f"being rewritten."
                )
            done += n
        return np.frombuffer(buffer, dtype=self.dtype).reshape(count, *row_shape)
