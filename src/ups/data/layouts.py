"""What a PDEBench HDF5 file's layout says, read once when the file is opened: which layout,
the sample, frame, grid and channel counts, the coordinates and times, the channels' names and
the static fields; every dataset checked for the shape and dtype its layout stores
(``ups.data.pdebench.PDEBenchFile`` reads the data itself).

The file is untrusted input: every object is reached through ``ups.data.untrusted.UntrustedFile``
(links and storage checked), and the sizes the file declares are checked before anything is read
or allocated by them: no axis of the data may be empty, the samples used may not exceed
``sample_limit`` (``data.sample_limit``), and a coordinate's length is checked before it is read."""

from __future__ import annotations

import math
import re

import h5py
import numpy as np

from ups.data.params import numeric_attrs
from ups.data.untrusted import UntrustedFile
from ups.errors import DataError

LAYOUTS = ("single", "darcy", "multigroup", "cfd", "ns_incomp")
SPATIAL_AXES = "xyz"
CFD_VELOCITIES = ("Vx", "Vy", "Vz")
NS_CHANNELS = ("Vx", "Vy", "particles")
NS_STATIC = ("force_x", "force_y")

_GROUP_NAME = re.compile(r"^\d+$")


SAMPLE_VALUES_LIMIT = 2**32  # values in one sample (T x grid x C): 16 GiB of float32


def _cell_centres(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) + 0.5) / n


class LayoutScan:
    """The layout facts of one open file (``layout`` "auto" detects it); DataError when the
    file does not hold what its layout stores, declares more than ``sample_limit`` samples in use
    (after ``max_samples``), or reads other files without ``allow_external``. ``objects.sources``:
    the other files it reads."""

    def __init__(
        self,
        path,
        h5: h5py.File,
        layout: str,
        max_samples: int | None,
        *,
        sample_limit: int,
        allow_external: bool = False,
    ):
        self.path, self.max_samples, self.sample_limit = path, max_samples, sample_limit
        self.objects = UntrustedFile(path, h5, allow_external)
        self.notes: list[str] = []
        self.channel_axis = False
        self.channel_names: tuple[str, ...] = ()
        self.static: tuple[str, ...] = ()
        self.groups: list[str] = []
        self.group_params: list[dict[str, float]] = []
        self.layout = self._detect_layout(h5) if layout == "auto" else layout
        getattr(self, f"_validate_{self.layout}")(h5)  # one of LAYOUTS, checked by the caller
        if self.objects.sources:
            shown = ", ".join(str(path) for path in sorted(self.objects.sources))
            self.notes.append(f"data read from other files (data.allow_external_storage): {shown}")

    def _detect_layout(self, h5: h5py.File) -> str:
        keys = list(h5.keys())
        if "tensor" in h5 and "nu" in h5:
            return "darcy"
        if "tensor" in h5:
            return "single"
        if "density" in h5:
            return "cfd"
        if "velocity" in h5:
            return "ns_incomp"
        if any(_GROUP_NAME.match(k) and isinstance(self.objects.get(k), h5py.Group) for k in keys):
            return "multigroup"
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise DataError(
            f"{self.path}: cannot tell the layout; top-level keys are [{shown}]. Expected "
            f"'tensor' (single-file), 'tensor' + 'nu' (Darcy), 'density' + 'pressure' + 'Vx' "
            f"(compressible CFD), 'velocity' + 'particles' (incompressible Navier-Stokes), or "
            f"groups '0000', '0001', ... with 'data' (multi-group)."
        )

    def _dataset(self, h5, key: str, expected: str) -> h5py.Dataset:
        ds = self.objects.dataset(key)
        if not isinstance(ds, h5py.Dataset):
            raise DataError(
                f"{self.path}: no dataset '{key}' (layout '{self.layout}'); "
                f"expected '{key}' with shape {expected}. Top-level keys: "
                f"{list(h5.keys())[:10]}."
            )
        if ds.dtype.kind not in "fiu":
            raise DataError(
                f"{self.path}: dataset '{key}' has dtype {ds.dtype}; expected a "
                f"real numeric array {expected}."
            )
        return ds

    def _axis(self, h5, key: str, n: int, axis: str) -> np.ndarray:
        """A 1-D coordinate of length n, or uniform cell centres when absent."""
        if self.objects.get(key) is None:
            self.notes.append(f"no '{key}': using {n} uniform cell centres on (0, 1) for {axis}")
            return _cell_centres(n)
        ds = self._dataset(h5, key, f"[{n}]")
        if ds.size != n:
            raise DataError(
                f"{self.path}: '{key}' has length {ds.size} (shape "
                f"{ds.shape}) but the data has {n} points along {axis}; "
                f"expected a 1-D array of length {n}."
            )
        return np.asarray(ds[()], dtype=np.float64).reshape(-1)

    def _time_axis(self, h5, key: str, t: int) -> np.ndarray:
        """Times of length T; a T+1 array (the PDEBench quirk) is cut to its first T."""
        if self.objects.get(key) is None:
            self.notes.append(f"no '{key}': using {t} uniform times on [0, 1]")
            return np.linspace(0.0, 1.0, t)
        ds = self._dataset(h5, key, f"[{t}] or [{t + 1}]")
        if ds.size not in (t, t + 1):
            raise DataError(
                f"{self.path}: '{key}' has length {ds.size} (shape "
                f"{ds.shape}) but the data has T={t} frames; expected length "
                f"{t} or {t + 1}."
            )
        return np.asarray(ds[()], dtype=np.float64).reshape(-1)[:t]

    def _validate_single(self, h5) -> None:
        ds = self._dataset(h5, "tensor", "[N, T, X] or [N, T, X, Y]")
        rank = ds.ndim
        has_y = self.objects.get("y-coordinate") is not None
        if rank == 3 or (rank == 4 and has_y):
            self.channel_axis, self.channels = False, 1
        elif rank in (4, 5):
            self.channel_axis, self.channels = True, int(ds.shape[-1])
        else:
            raise DataError(
                f"{self.path}: dataset 'tensor' has shape {ds.shape} (rank {rank}); "
                f"expected [N, T, X], [N, T, X, Y] (with 'y-coordinate'), "
                f"[N, T, X, C] or [N, T, X, Y, C]."
            )
        n_spatial = rank - 2 - int(self.channel_axis)
        self._set_sizes("tensor", ds.shape, ds.shape[0], ds.shape[1], ds.shape[2 : 2 + n_spatial])
        self._read_grid(h5, [f"{a}-coordinate" for a in SPATIAL_AXES], "t-coordinate")

    def _validate_cfd(self, h5) -> None:
        density = self._dataset(h5, "density", "[N, T, X], [N, T, X, Y] or [N, T, X, Y, Z]")
        if density.ndim not in (3, 4, 5):
            raise DataError(
                f"{self.path}: dataset 'density' has shape {density.shape} (rank "
                f"{density.ndim}); the compressible CFD layout stores each variable as "
                f"[N, T, X], [N, T, X, Y] or [N, T, X, Y, Z]."
            )
        n_spatial = density.ndim - 2
        names = ("density", "pressure", *CFD_VELOCITIES[:n_spatial])
        for name in names[1:]:
            ds = self._dataset(h5, name, f"{tuple(density.shape)} like 'density'")
            if ds.shape != density.shape:
                raise DataError(
                    f"{self.path}: dataset '{name}' has shape {ds.shape} but 'density' has "
                    f"{density.shape}; every variable of a {n_spatial}D CFD file "
                    f"({', '.join(names)}) must have the same shape."
                )
        self.channel_names, self.channels = names, len(names)
        self._set_sizes("density", density.shape, density.shape[0], density.shape[1], density.shape[2:])
        self._read_grid(h5, [f"{a}-coordinate" for a in SPATIAL_AXES], "t-coordinate")

    def _validate_ns_incomp(self, h5) -> None:
        velocity = self._dataset(h5, "velocity", "[N, T, X, Y, 2]")
        if velocity.ndim != 5 or velocity.shape[-1] != 2:
            raise DataError(
                f"{self.path}: dataset 'velocity' has shape {velocity.shape}; the "
                f"incompressible Navier-Stokes layout stores it as [N, T, X, Y, 2]."
            )
        n, t_len, *spatial, _ = (int(s) for s in velocity.shape)
        particles = self._dataset(h5, "particles", f"[{n}, {t_len}, {spatial[0]}, {spatial[1]}, 1]")
        if particles.shape != (n, t_len, *spatial, 1):
            raise DataError(
                f"{self.path}: dataset 'particles' has shape {particles.shape}; expected "
                f"{(n, t_len, *spatial, 1)} to match 'velocity' {velocity.shape}."
            )
        if self.objects.get("force") is not None:
            force = self._dataset(h5, "force", f"[{n}, {spatial[0]}, {spatial[1]}, 2]")
            if force.shape != (n, *spatial, 2):
                raise DataError(
                    f"{self.path}: dataset 'force' has shape {force.shape}; expected "
                    f"{(n, *spatial, 2)}, one static 2D forcing per sample."
                )
            self.static = NS_STATIC
        self.channel_names, self.channels = NS_CHANNELS, 3
        self._set_sizes("velocity", velocity.shape, n, t_len, spatial)
        self._read_grid(h5, [f"{a}-coordinate" for a in SPATIAL_AXES], None)
        self.t = self._sample_times(h5, n, t_len)

    def _sample_times(self, h5, n: int, t_len: int) -> np.ndarray:
        """One time axis from ``t`` [N, T], whose rows must agree (one axis serves every sample);
        only the rows of the samples in use (``max_samples``) are read."""
        if self.objects.get("t") is None:
            return self._time_axis(h5, "t", t_len)  # uniform times, noted
        t = self._dataset(h5, "t", f"[{n}, {t_len}]")
        if t.shape != (n, t_len):
            raise DataError(
                f"{self.path}: dataset 't' has shape {t.shape}; expected {(n, t_len)}, the "
                f"times of every sample's frames."
            )
        rows = np.asarray(t[: self.max_samples], dtype=np.float64)
        first = rows[0]
        differ = ~np.isclose(rows, first, rtol=1e-6, atol=1e-9).all(axis=1)
        if differ.any():
            bad = int(np.argmax(differ))
            raise DataError(
                f"{self.path}: 't' differs between samples (sample {bad} has times "
                f"{rows[bad, :3].tolist()}... against sample 0's {first[:3].tolist()}...); "
                f"UPS needs one time axis per file. Split the file by time step."
            )
        return first

    def _validate_darcy(self, h5) -> None:
        u = self._dataset(h5, "tensor", "[N, 1, X, Y]")
        a = self._dataset(h5, "nu", "[N, X, Y]")
        if u.ndim != 4 or u.shape[1] != 1:
            raise DataError(
                f"{self.path}: Darcy dataset 'tensor' has shape {u.shape}; expected "
                f"[N, 1, X, Y] (one steady solution per sample)."
            )
        expected = (u.shape[0], u.shape[2], u.shape[3])
        if a.shape != expected:
            raise DataError(
                f"{self.path}: Darcy dataset 'nu' has shape {a.shape}; expected "
                f"{expected} to match 'tensor' {u.shape}."
            )
        self.channels = 1
        self._set_sizes("tensor", u.shape, u.shape[0], 1, u.shape[2:])
        self._read_grid(h5, ["x-coordinate", "y-coordinate"], None)

    def _validate_multigroup(self, h5) -> None:
        names = sorted((k for k in h5.keys() if _GROUP_NAME.match(k)), key=int)
        if not names:
            raise DataError(
                f"{self.path}: no groups named '0000', '0001', ...; top-level keys "
                f"are {list(h5.keys())[:10]}. Expected the multi-group layout."
            )
        self._check_sample_count(len(names), "one per group")
        first, shape = names[0], None
        for name in names[: self.max_samples]:  # every group in use, each checked alike
            ds = self._group_data(name)
            shape = ds.shape if shape is None else shape
            if ds.shape != shape:
                raise DataError(
                    f"{self.path}: '{name}/data' has shape {ds.shape} but "
                    f"'{first}/data' has {shape}; all groups must match."
                )
            self.group_params.append(numeric_attrs(self.objects.get(name).attrs))
        self.groups = names
        self.channels, self.channel_axis = int(shape[-1]), True
        self._set_sizes(f"{first}/data", shape, len(names), shape[0], shape[1:-1])
        self._read_grid(h5, [f"{first}/grid/{a}" for a in SPATIAL_AXES], f"{first}/grid/t")

    def _group_data(self, name: str) -> h5py.Dataset:
        """Group ``name``'s ``data``: a real array [T, X(, Y(, Z)), C]."""
        ds = self.objects.dataset(f"{name}/data")
        if not isinstance(ds, h5py.Dataset):
            raise DataError(
                f"{self.path}: group '{name}' has no dataset 'data'; every group "
                f"must hold 'data' [T, X, C] or [T, X, Y, C]."
            )
        if ds.ndim not in (3, 4, 5) or ds.dtype.kind not in "fiu":
            raise DataError(
                f"{self.path}: '{name}/data' has shape {ds.shape} and dtype "
                f"{ds.dtype}; expected real [T, X, C], [T, X, Y, C] or [T, X, Y, Z, C]."
            )
        return ds

    def _check_sample_count(self, n: int, what: str) -> None:
        """Refuse more samples in use (the first ``max_samples`` of ``n``) than ``sample_limit``;
        ``what`` says where ``n`` comes from."""
        used = n if self.max_samples is None else min(n, self.max_samples)
        if used > self.sample_limit:
            raise DataError(
                f"{self.path}: {n:,} samples declared ({what}), more than data.sample_limit = "
                f"{self.sample_limit:,}. If the file really holds that many, raise data.sample_limit; "
                f"to use only the first ones, set data.max_samples."
            )

    def _set_sizes(self, key: str, shape, n: int, t_len: int, spatial) -> None:
        """The data's sizes, declared by dataset ``key`` of ``shape`` (``channels`` set before):
        refused when more samples are in use than ``sample_limit`` or an axis is empty, before
        anything is read or allocated by them."""
        self.n, self.t_len, self.spatial = int(n), int(t_len), tuple(int(s) for s in spatial)
        self._check_sample_count(self.n, f"'{key}' has shape {tuple(shape)}")
        sizes = {"samples (N)": self.n, "time steps (T)": self.t_len, "channels (C)": self.channels}
        sizes.update({f"grid points along {a}": s for a, s in zip(SPATIAL_AXES, self.spatial)})
        empty = [name for name, size in sizes.items() if size == 0]
        if empty:
            raise DataError(
                f"{self.path}: '{key}' has shape {tuple(shape)}: no {empty[0]}; every axis of the "
                f"data must hold at least one entry."
            )
        values = self.t_len * self.channels * math.prod(self.spatial)
        if values > SAMPLE_VALUES_LIMIT:
            raise DataError(
                f"{self.path}: '{key}' has shape {tuple(shape)}: {values:,} values per sample, more than "
                f"UPS reads in one sample ({SAMPLE_VALUES_LIMIT:,}; PDEBench's largest holds 2.2e8). "
                f"Check that the file holds what its shape declares."
            )

    def _read_grid(self, h5, axis_keys: list[str], t_key: str | None) -> None:
        self.axes = [
            self._axis(h5, key, n, axis) for key, n, axis in zip(axis_keys, self.spatial, SPATIAL_AXES)
        ]
        self.t = self._time_axis(h5, t_key, self.t_len) if t_key else np.zeros(1)
