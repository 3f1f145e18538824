"""HDF5 files read as untrusted input (``ups.data.untrusted``, ``ups.data.layouts``).

A tiny file can declare more than it holds (10**12 samples in 1.4 KB, storage never written, a
coordinate of 10**12 points), point at other files (virtual datasets, external links, external raw
storage), or hide a bad group behind a good first one. Each such file stops `ups pipeline` with exit
2 and a message naming the file and the problem, before anything is written; with
``data.allow_external_storage`` the other files are read, and the latent cache's key stamps them.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups.config.schema import TaskConfig
from ups.data.latent_cache import entry_key
from ups.data.pdebench import PDEBenchFile
from ups.data.tasks import load_tasks
from ups.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_multigroup, write_single  # noqa: E402
from tiny_runs import refused_before_work  # noqa: E402

SHAPE = (10, 6, 16)  # N, T, X
OPT_IN = {"allow_external_storage": True}
OPT_KEY = "data.allow_external_storage"


def _source(path: Path, seed: int = 0) -> np.ndarray:
    """``path.parent/source.h5`` with dataset ``x`` [10, 6, 16]; returns it."""
    data = np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)
    with h5py.File(path.parent / "source.h5", "w") as f:
        f.create_dataset("x", data=data)
    return data


def _with_tensor(path: Path, make) -> None:
    """A single-layout file whose ``tensor`` is made by ``make(file)``, with its coordinates."""
    with h5py.File(path, "w") as f:
        make(f)
        f.create_dataset("x-coordinate", data=np.linspace(0, 1, SHAPE[2]))
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, SHAPE[1]))


def never_written(path):
    _with_tensor(path, lambda f: f.create_dataset("tensor", shape=SHAPE, dtype="f4"))


def cut_short(path):
    write_single(path, shape=SHAPE)
    os.truncate(path, path.stat().st_size - 1000)


def declares_1e12_samples(path):
    _with_tensor(
        path,
        lambda f: f.create_dataset(
            "tensor", shape=(10**12, 6, 16), maxshape=(None, 6, 16), chunks=(1, 6, 16), dtype="f4"
        ),
    )


def coordinate_of_1e12_points(path):
    write_single(path, shape=SHAPE, x=False)
    with h5py.File(path, "r+") as f:
        f.create_dataset("x-coordinate", shape=(10**12,), maxshape=(None,), chunks=(1024,), dtype="f8")


def _virtual(path, shape=SHAPE):
    layout = h5py.VirtualLayout(shape=SHAPE, dtype="f4")
    layout[: shape[0]] = h5py.VirtualSource("source.h5", "x", shape=shape)
    _with_tensor(path, lambda f: f.create_virtual_dataset("tensor", layout, fillvalue=0))


def virtual(path):
    _source(path)
    _virtual(path)


def virtual_source_missing(path):
    _virtual(path)


def virtual_source_not_hdf5(path):
    (path.parent / "source.h5").write_text("not hdf5")
    _virtual(path)


def virtual_half_mapped(path):
    _source(path)
    _virtual(path, shape=(5, 6, 16))


def external_link(path):
    _source(path)
    _with_tensor(path, lambda f: f.__setitem__("tensor", h5py.ExternalLink("source.h5", "x")))
    with h5py.File(path, "r+") as f:  # so that the source's offsets fall inside this file too
        f.create_dataset("padding", data=np.ones(10_000, dtype="f4"))


def soft_link_through_an_external_link(path):
    _source(path)
    _with_tensor(path, lambda f: f.__setitem__("ext", h5py.ExternalLink("source.h5", "/")))
    with h5py.File(path, "r+") as f:
        f["tensor"] = h5py.SoftLink("/ext/x")


def declares_1e12_grid_points(path):
    _with_tensor(
        path,
        lambda f: f.create_dataset(
            "tensor", shape=(1, 6, 10**12), maxshape=(1, 6, None), chunks=(1, 6, 1024), dtype="f4"
        ),
    )


def dangling_link_opted_in(path):
    _with_tensor(path, lambda f: f.__setitem__("tensor", h5py.ExternalLink("gone.h5", "x")))


def external_group(path):
    write_multigroup(path, n=4)
    write_multigroup(path.parent / "other.h5", n=4)
    with h5py.File(path, "r+") as f:
        del f["0001"]
        f["0001"] = h5py.ExternalLink("other.h5", "0001")


def external_raw(path, nbytes=None):
    raw = path.parent / "raw.bin"
    raw.write_bytes(_source(path).tobytes()[:nbytes])
    segments = [(str(raw), 0, np.prod(SHAPE) * 4)]
    _with_tensor(path, lambda f: f.create_dataset("tensor", shape=SHAPE, dtype="f4", external=segments))


def complex_second_group(path):
    write_multigroup(path, n=4)
    with h5py.File(path, "r+") as f:
        data = f["0001/data"][...]
        del f["0001/data"]
        f["0001"].create_dataset("data", data=data.astype(np.complex64))


def zero_channels(path):
    write_single(path, shape=(10, 6, 16, 0))


def zero_times(path):
    write_single(path, shape=(10, 0, 16), t_len=0)


def zero_grid_points(path):
    write_single(path, shape=(10, 6, 0))


CASES = {  # name -> (writer, data settings, fragments of the message)
    "contiguous storage never written": (
        never_written,
        {},
        ["dataset 'tensor' is contiguous", "(3,840 bytes declared), but only 0 bytes are stored"],
    ),
    "file cut short": (cut_short, {}, ["cannot open as HDF5", "truncated file"]),
    "10**12 samples declared in 2 KB": (
        declares_1e12_samples,
        {},
        ["1,000,000,000,000 samples declared", "data.sample_limit = 10,000,000", "raise data.sample_limit"],
    ),
    "a coordinate of 10**12 points": (
        coordinate_of_1e12_points,
        {},
        ["'x-coordinate' has length 1000000000000", "expected a 1-D array of length 16"],
    ),
    "virtual dataset": (virtual, {}, ["'tensor' is a virtual dataset", "data.allow_external_storage: true"]),
    "virtual source missing, opted in": (
        virtual_source_missing,
        OPT_IN,
        ["dataset 'tensor' is virtual and maps 'x' of source.h5, which is not found"],
    ),
    "virtual source not HDF5, opted in": (
        virtual_source_not_hdf5,
        OPT_IN,
        ["dataset 'tensor' maps 'x' of", "which cannot be read as HDF5"],
    ),
    "virtual dataset half mapped, opted in": (
        virtual_half_mapped,
        OPT_IN,
        ["maps 480 of its 960 elements"],
    ),
    "external link": (
        external_link,
        {},
        ["'tensor' is an external link to 'x' of source.h5", "data.allow_external_storage: true"],
    ),
    "soft link through an external link": (
        soft_link_through_an_external_link,
        {},
        ["'tensor' is a link that leads into another file", "data.allow_external_storage: true"],
    ),
    "10**12 grid points declared in 2 KB": (
        declares_1e12_grid_points,
        {},
        ["6,000,000,000,000 values per sample", "more than UPS reads in one sample"],
    ),
    "external link that leads nowhere, opted in": (
        dangling_link_opted_in,
        OPT_IN,
        ["'tensor' is a link (to 'x' of gone.h5) that leads to nothing"],
    ),
    "external link to a group": (
        external_group,
        {},
        ["'0001' is an external link to '0001' of other.h5", "data.allow_external_storage: true"],
    ),
    "external raw storage": (
        external_raw,
        {},
        ["'tensor' is stored in external raw files", "data.allow_external_storage: true"],
    ),
    "external raw file too short, opted in": (
        lambda p: external_raw(p, nbytes=1000),
        OPT_IN,
        ["reads 3,840 bytes from byte 0 of the external file", "which holds 1,000 there"],
    ),
    "complex dtype in the second group": (
        complex_second_group,
        {},
        ["'0001/data' has shape (6, 16, 12, 2) and dtype complex64", "expected real"],
    ),
    "zero-length channel axis": (zero_channels, {}, ["'tensor' has shape (10, 6, 16, 0): no channels (C)"]),
    "zero-length time axis": (zero_times, {}, ["'tensor' has shape (10, 0, 16): no time steps (T)"]),
    "zero grid points": (zero_grid_points, {}, ["'tensor' has shape (10, 6, 0): no grid points along x"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_file_is_refused_before_work_with_nothing_written(tmp_path, capsys, name):
    writer, data, fragments = CASES[name]
    path = tmp_path / "data" / "task.h5"
    path.parent.mkdir()
    writer(path)
    err = refused_before_work(tmp_path, capsys, path, data)
    assert str(path) in err and all(fragment in err for fragment in fragments), err


def test_ups_train_refuses_a_hostile_file_before_work(tmp_path, capsys):
    path = tmp_path / "data" / "task.h5"
    path.parent.mkdir()
    external_link(path)
    err = refused_before_work(tmp_path, capsys, path, command=("train", "--stage", "autoencoder"))
    assert f"{path}: 'tensor' is an external link" in err, err


def test_1e12_declared_samples_are_refused_without_allocating(tmp_path):
    path = tmp_path / "huge.h5"
    declares_1e12_samples(path)
    assert path.stat().st_size < 4096  # the tensor and its two coordinates
    tracemalloc.start()
    with pytest.raises(DataError, match="1,000,000,000,000 samples declared"):
        PDEBenchFile(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, peak
    first = PDEBenchFile(path, max_samples=3)  # the first samples of a sparse file may be used
    assert first.info.n_samples == 3


@pytest.mark.parametrize("writer", [virtual, external_link, external_raw])
def test_opted_in_sources_are_read_and_stamped_in_the_cache_key(tmp_path, writer):
    path = tmp_path / "task.h5"
    writer(path)
    expected = _source(path)  # the source again, same values: only its file's stamp changes below
    source = tmp_path / ("raw.bin" if writer is external_raw else "source.h5")
    if writer is external_raw:
        source.write_bytes(expected.tobytes())

    def key():
        (task,) = load_tasks([TaskConfig("t", path.name)], tmp_path, **OPT_IN)
        np.testing.assert_array_equal(task.file.trajectory(3)[..., 0], expected[3])
        assert task.info.sources == (source.resolve(),)
        assert f"data read from other files ({OPT_KEY}): {source.resolve()}" in task.info.notes
        return entry_key(task, encoder="e", dtype="float32", latent_shape=(4, 3))

    before, fields = key()
    assert fields["sources"][0]["path"] == str(source.resolve())
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    after, _ = key()
    assert after != before
