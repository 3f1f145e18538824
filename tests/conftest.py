"""Shared fixtures: small hand-built PDEBench files in the five layouts.

Each ``make_*`` writer takes the arrays to store (or draws seeded random ones) and returns
a ``Written`` record holding the path and exactly what was written, so tests compare what
the readers return against the source arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest


@dataclass
class Written:
    path: Path
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_single(
    path: Path, shape=(10, 6, 16), *, x=True, y=None, t_len=None, attrs=None, tensor=None, seed=0
) -> Written:
    """Single-file layout: ``tensor`` [N, T, X(, Y)(, C)] with coordinates.

    ``x`` / ``y``: True writes uniform coordinates, False or None omits them, an array is
    written as given. A rank-4 ``tensor`` is [N, T, X, Y] only when ``y`` is written.
    ``t_len``: length of ``t-coordinate`` (default T; 0 omits it).
    """
    data = _rng(seed).normal(size=shape).astype(np.float32) if tensor is None else tensor
    n_t = data.shape[1]
    out = Written(Path(path), {"tensor": data})
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=data)
        for key, value, n in (
            ("x-coordinate", x, data.shape[2]),
            ("y-coordinate", y, data.shape[3] if data.ndim > 3 else 0),
        ):
            if value is True:
                value = np.linspace(0.0, 1.0, n, dtype=np.float32)
            if value is not None and value is not False:
                f.create_dataset(key, data=value)
                out.arrays[key] = np.asarray(value)
        t_len = n_t if t_len is None else t_len
        if t_len:
            t = np.linspace(0.0, 0.1 * (t_len - 1), t_len, dtype=np.float32)
            f.create_dataset("t-coordinate", data=t)
            out.arrays["t-coordinate"] = t
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return out


def write_darcy(path: Path, n=10, nx=16, ny=12, seed=1, attrs=None) -> Written:
    """Darcy layout: ``nu`` [N, X, Y], ``tensor`` [N, 1, X, Y], x/y coordinates."""
    rng = _rng(seed)
    nu = rng.uniform(1.0, 12.0, size=(n, nx, ny)).astype(np.float32)
    u = rng.normal(0.3, 0.05, size=(n, 1, nx, ny)).astype(np.float32)
    x = ((np.arange(nx) + 0.5) / nx).astype(np.float32)
    y = ((np.arange(ny) + 0.5) / ny).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=nu)
        f.create_dataset("tensor", data=u)
        f.create_dataset("x-coordinate", data=x)
        f.create_dataset("y-coordinate", data=y)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return Written(Path(path), {"nu": nu, "tensor": u, "x-coordinate": x, "y-coordinate": y})


def write_multigroup(
    path: Path, n=10, shape=(6, 16, 12, 2), seed=2, t_len=None, group_attrs=None, grid=True
) -> Written:
    """Multi-group layout: groups ``0000``.. with ``data`` [T, X(, Y), C] and ``grid/*``.

    ``group_attrs(i) -> dict`` sets attributes of group i.
    """
    rng = _rng(seed)
    data = rng.normal(size=(n, *shape)).astype(np.float32)
    n_t, spatial = shape[0], shape[1:-1]
    axes = {k: np.linspace(-1.0, 1.0, s, dtype=np.float32) for k, s in zip("xy", spatial)}
    t_len = n_t if t_len is None else t_len
    t = np.linspace(0.0, 0.05 * (t_len - 1), t_len, dtype=np.float32)
    with h5py.File(path, "w") as f:
        for i in range(n):
            g = f.create_group(f"{i:04d}")
            g.create_dataset("data", data=data[i])
            if grid:
                for k, v in axes.items():
                    g.create_dataset(f"grid/{k}", data=v)
                g.create_dataset("grid/t", data=t)
            for key, value in (group_attrs(i) if group_attrs else {}).items():
                g.attrs[key] = value
    arrays = {"data": data, "grid/t": t, **{f"grid/{k}": v for k, v in axes.items()}}
    return Written(Path(path), arrays)


def write_cfd(path: Path, shape=(6, 5, 16), seed=6, t_len=None, skip=(), attrs=None) -> Written:
    """Compressible CFD layout: ``density``, ``pressure``, ``Vx`` (``Vy``, ``Vz`` by rank),
    each [N, T, *spatial], with ``x-``/``y-``/``z-coordinate`` and ``t-coordinate`` of
    ``t_len`` entries (default T + 1, as PDEBench's). ``skip``: variables left out."""
    rng = _rng(seed)
    spatial = shape[2:]
    names = ("density", "pressure", *("Vx", "Vy", "Vz")[: len(spatial)])
    out = Written(Path(path))
    t_len = shape[1] + 1 if t_len is None else t_len
    with h5py.File(path, "w") as f:
        for name in names:
            if name not in skip:
                out.arrays[name] = rng.normal(size=shape).astype(np.float32)
                f.create_dataset(name, data=out.arrays[name])
        for axis, n in zip("xyz", spatial):
            out.arrays[f"{axis}-coordinate"] = np.linspace(-1.0, 1.0, n, dtype=np.float32)
            f.create_dataset(f"{axis}-coordinate", data=out.arrays[f"{axis}-coordinate"])
        out.arrays["t-coordinate"] = np.linspace(0.0, 0.05 * (t_len - 1), t_len, dtype=np.float32)
        f.create_dataset("t-coordinate", data=out.arrays["t-coordinate"])
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return out


def write_ns_incomp(path: Path, n=6, t=5, nx=12, ny=10, seed=7, force=True, times=None) -> Written:
    """Incompressible Navier-Stokes layout: ``velocity`` [N, T, X, Y, 2], ``particles``
    [N, T, X, Y, 1], ``force`` [N, X, Y, 2] and ``t`` [N, T] (``times``: rows as given)."""
    rng = _rng(seed)
    arrays = {
        "velocity": rng.normal(size=(n, t, nx, ny, 2)).astype(np.float32),
        "particles": rng.uniform(size=(n, t, nx, ny, 1)).astype(np.float32),
        "t": np.tile(np.linspace(0.0, 0.5, t, dtype=np.float32), (n, 1)) if times is None else times,
    }
    if force:
        arrays["force"] = rng.normal(size=(n, nx, ny, 2)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return Written(Path(path), arrays)


@pytest.fixture
def pdebench_writers():
    """The raw writers, for tests that craft their own (often broken) files."""
    return SimpleNamespace(
        single=write_single,
        darcy=write_darcy,
        multigroup=write_multigroup,
        cfd=write_cfd,
        ns_incomp=write_ns_incomp,
    )


@pytest.fixture
def burgers_1d(tmp_path) -> Written:
    """``1D_Burgers_Sols_Nu0.01.hdf5``: tensor [10, 6, 16], t-coordinate of length T+1."""
    return write_single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", (10, 6, 16), t_len=7)


@pytest.fixture
def advection_1d(tmp_path) -> Written:
    """``1D_Advection_Sols_beta0.4.hdf5``: tensor [10, 6, 16], t-coordinate of length T."""
    return write_single(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", (10, 6, 16), seed=3)


@pytest.fixture
def single_2d(tmp_path) -> Written:
    """``2D_Wave_Sols_C1.5.hdf5``: tensor [10, 6, 16, 12] with x and y coordinates."""
    return write_single(tmp_path / "2D_Wave_Sols_C1.5.hdf5", (10, 6, 16, 12), y=True, seed=4)


@pytest.fixture
def reacdiff_attrs(tmp_path) -> Written:
    """``ReacDiff_Nu0.5_Rho1.0.hdf5`` whose root attributes say rho=2.0 and k=3."""
    return write_single(
        tmp_path / "ReacDiff_Nu0.5_Rho1.0.hdf5",
        (10, 6, 16),
        seed=5,
        attrs={"rho": 2.0, "k": 3, "note": "not a number"},
    )


@pytest.fixture
def darcy_2d(tmp_path) -> Written:
    """``2D_DarcyFlow_beta1.0_Train.hdf5``: nu [10, 16, 12], tensor [10, 1, 16, 12]."""
    return write_darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")


@pytest.fixture
def multigroup_2d(tmp_path) -> Written:
    """``2D_diff-react_NA_NA.h5``: 10 groups of data [6, 16, 12, 2]; attrs Du=0.1 in every
    group (constant) and amp=i (varies by trajectory); grid/t of length T+1."""
    return write_multigroup(
        tmp_path / "2D_diff-react_NA_NA.h5", t_len=7, group_attrs=lambda i: {"Du": 0.1, "amp": float(i)}
    )


@pytest.fixture(scope="session")
def surrogate_run(tmp_path_factory) -> Path:
    """The run folder of the surrogate API's, ``ups predict``'s and ``ups export``'s tests
    (``tiny_runs.tiny_surrogate_run``), trained once per session; tests read it and write
    elsewhere (copies included)."""
    from tiny_runs import tiny_surrogate_run

    return tiny_surrogate_run(tmp_path_factory.mktemp("surrogate"))
