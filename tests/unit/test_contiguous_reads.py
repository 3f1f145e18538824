"""ups.data.contiguous: reads by file offset equal h5py's, selection by selection and dtype by dtype;
datasets it cannot read so (chunked, filtered, unallocated, truncated) are left to h5py; PDEBenchFile
reads contiguous files without h5py's selections and the others through them, with the same values."""

from unittest import mock

import h5py
import numpy as np
import pytest

from ups.data import contiguous
from ups.data.contiguous import ContiguousDataset
from ups.data.pdebench import PDEBenchFile
from ups.errors import DataError


def _reader(h5: h5py.File, key: str) -> ContiguousDataset | None:
    return ContiguousDataset.probe(h5[key], h5.id.get_vfd_handle(), f"'{key}'")


def _write(path, data, **options):
    with h5py.File(path, "w", **options.pop("file", {})) as h5:
        h5.create_dataset("data", data=data, **options)
    return h5py.File(path, "r")


# (lead indices, rows, kept slices) of [N, T, X] data
SELECTIONS_1D = [
    ((2,), slice(None), ()),
    ((0,), slice(3, 4), ()),  # one frame: what a snapshot reads
    ((4,), slice(1, 8, 3), ()),  # a strided window
    ((1,), slice(5, 2), ()),  # empty
    ((3,), slice(2, 100), (slice(None, None, 2),)),  # past the end; every second point
    ((0,), slice(None, None, 2), (slice(1, None, 3),)),
    ((), slice(1, 3), (slice(None), slice(None, None, 3))),  # rows along the first axis
]


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2", "u1", "<f2"])
def test_reads_equal_h5py_for_every_dtype_and_selection(tmp_path, dtype):
    data = (np.random.default_rng(0).normal(size=(5, 9, 7)) * 50).astype(dtype)
    h5 = _write(tmp_path / "a.h5", data)
    reader = _reader(h5, "data")
    assert reader is not None
    for lead, rows, keep in SELECTIONS_1D:
        expected = h5["data"][(*lead, rows, *keep)]
        got = reader.read(lead, rows, keep)
        assert got.dtype == expected.dtype and got.shape == expected.shape, (lead, rows, keep)
        np.testing.assert_array_equal(got, expected)


def test_reads_equal_h5py_on_2d_grids_with_channels(tmp_path):
    data = np.random.default_rng(1).normal(size=(3, 6, 5, 4, 2)).astype(np.float32)
    h5 = _write(tmp_path / "a.h5", data)
    reader = _reader(h5, "data")
    for lead, rows, keep in [
        ((1,), slice(0, 6, 2), (slice(None, None, 2), slice(None, None, 3), slice(None))),
        ((2, 4), slice(None, None, 2), (slice(None, None, 2), slice(None))),
        ((0,), slice(4, 5), ()),
    ]:
        np.testing.assert_array_equal(reader.read(lead, rows, keep), h5["data"][(*lead, rows, *keep)])


def test_reads_split_into_blocks_and_single_rows_are_the_same(tmp_path, monkeypatch):
    data = np.random.default_rng(2).normal(size=(4, 30, 8)).astype(np.float32)
    h5 = _write(tmp_path / "a.h5", data)
    reader = _reader(h5, "data")
    selections = [
        ((1,), slice(None), (slice(None, None, 3),)),
        ((2,), slice(1, 29, 4), ()),
        ((3,), slice(5, 6), ()),
    ]
    for block_bytes, row_bytes in [
        (3 * 32, 1 << 20),
        (32, 1 << 20),
        (1 << 20, 1),
    ]:  # 3 rows, 1 row, rows one by one
        monkeypatch.setattr(contiguous, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(contiguous, "ROW_READ_BYTES", row_bytes)
        for lead, rows, keep in selections:
            got = reader.read(lead, rows, keep)
            np.testing.assert_array_equal(got, data[(*lead, rows, *keep)])
            assert got.flags.writeable


def test_a_negative_step_is_refused_as_h5py_refuses_it(tmp_path):
    h5 = _write(tmp_path / "a.h5", np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="step must be >= 1"):
        _reader(h5, "data").read((0,), slice(None, None, -1))


def test_user_block_is_counted_in_the_offset(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    h5 = _write(tmp_path / "a.h5", data, file={"userblock_size": 512})
    reader = _reader(h5, "data")
    assert reader is not None and reader.offset > 512
    np.testing.assert_array_equal(reader.read((2,), slice(1, 3)), data[2, 1:3])


@pytest.mark.parametrize(
    "options", [{"chunks": (1, 4, 5)}, {"compression": "gzip"}, {"shuffle": True}, {"fletcher32": True}]
)
def test_chunked_or_filtered_datasets_are_left_to_h5py(tmp_path, options):
    h5 = _write(tmp_path / "a.h5", np.ones((3, 4, 5), np.float32), **options)
    assert _reader(h5, "data") is None


def test_unallocated_compound_and_descriptorless_datasets_are_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5.create_dataset("never_written", shape=(3, 4), dtype="f4")  # reads give the fill value
        h5.create_dataset("pairs", data=np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]))
        h5.create_dataset("data", data=np.ones((3, 4), np.float32))
    h5 = h5py.File(tmp_path / "a.h5", "r")
    assert _reader(h5, "never_written") is None
    assert _reader(h5, "pairs") is None
    assert ContiguousDataset.probe(h5["data"], None, "'data'") is None


def test_a_file_cut_short_while_open_is_left_to_h5py_and_a_short_read_is_a_data_error(tmp_path):
    path = tmp_path / "a.h5"
    h5 = _write(path, np.ones((8, 64, 16), np.float32))
    whole = _reader(h5, "data")
    with open(path, "r+b") as handle:  # HDF5 refuses to open a truncated file; this one shrinks once open
        handle.truncate(path.stat().st_size - 4096)
    assert _reader(h5, "data") is None
    with pytest.raises(DataError, match=r"'data'.*truncated"):
        whole.read((7,), slice(None))


# ---- through PDEBenchFile --------------------------------------------------------------


def _every_read(f: PDEBenchFile) -> list[np.ndarray]:
    r = f.info.n_samples - 1
    if f.info.kind == "steady":
        return [*f.steady_pair(0), *f.steady_pair(r)]
    out = [f.trajectory(0), f.trajectory(r, slice(1, 2)), f.trajectory(r, slice(0, None, 2))]
    static = f.static_field(r)
    return out + ([static] if static is not None else [])


@pytest.mark.parametrize("layout", ["single", "darcy", "multigroup", "cfd", "ns_incomp"])
@pytest.mark.parametrize("reduced", [1, 2])
def test_contiguous_files_are_read_without_h5py_selections(tmp_path, pdebench_writers, layout, reduced):
    """Every layout's data reads go by offset, and equal what h5py's reads give."""
    written = getattr(pdebench_writers, layout)(tmp_path / f"{layout}.h5")
    f = PDEBenchFile(written.path, layout=layout, reduced_resolution=reduced)
    with mock.patch.object(ContiguousDataset, "probe", return_value=None):
        through_h5py = _every_read(f.reopened())
    with mock.patch.object(h5py.Dataset, "__getitem__", side_effect=AssertionError("read through h5py")):
        by_offset = _every_read(f)
    assert len(by_offset) == len(through_h5py)
    for got, expected in zip(by_offset, through_h5py):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_chunked_compressed_single_file_reads_through_h5py(tmp_path):
    data = np.random.default_rng(3).normal(size=(6, 7, 12)).astype(np.float32)
    path = tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("tensor", data=data, chunks=(1, 7, 12), compression="gzip")
        h5.create_dataset("x-coordinate", data=np.linspace(0, 1, 12))
        h5.create_dataset("t-coordinate", data=np.linspace(0, 1, 8))
    f = PDEBenchFile(path, reduced_resolution=3)
    np.testing.assert_array_equal(f.trajectory(4, slice(2, 7, 2))[..., 0], data[4, 2:7:2, ::3])
