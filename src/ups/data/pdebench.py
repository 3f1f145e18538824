"""Read PDEBench HDF5 files in their own layouts, lazily and by slicing.

Five layouts are read (``layout="auto"`` detects them, in this order):

- ``darcy`` (steady): ``nu`` [N, X, Y] (coefficient a(x)) and ``tensor`` [N, 1, X, Y]
  (solution u(x)), with ``x-coordinate`` [X] and ``y-coordinate`` [Y].
- ``single`` (transient): ``tensor`` with rank 3 [N, T, X] (one channel); rank 4 is
  [N, T, X, Y] when ``y-coordinate`` is present, else [N, T, X, C]; rank 5 is
  [N, T, X, Y, C]. ``x-coordinate`` [X], optional ``y-coordinate`` [Y], ``t-coordinate``
  of length T or T+1 (real PDEBench files carry one extra time; the first T are used).
- ``cfd`` (transient, PDEBench's compressible 1D/2D/3D CFD): ``density``, ``pressure``,
  ``Vx`` (``Vy`` in 2D and 3D, ``Vz`` in 3D), each [N, T, X(, Y(, Z))], read as channels in
  that order; ``x-``/``y-``/``z-coordinate``, ``t-coordinate`` (T or T+1).
- ``ns_incomp`` (transient, PDEBench's incompressible 2D Navier-Stokes): ``velocity``
  [N, T, X, Y, 2] and ``particles`` [N, T, X, Y, 1] as channels ``Vx, Vy, particles``;
  ``force`` [N, X, Y, 2] is a static field per sample (``static_field(i)``); ``t`` [N, T]
  (every sample's times must agree).
- ``multigroup`` (transient): groups ``0000``, ``0001``, ... each with ``data``
  [T, X, C] or [T, X, Y, C] and ``grid/x``, ``grid/y`` (2D), ``grid/t`` (T or T+1). The
  grid of the first group is used for all groups.

Missing coordinates fall back to uniform cell centres on (0, 1) and missing times to
``linspace(0, 1, T)``; each fallback is recorded in ``FileInfo.notes``. ``max_samples``
keeps the first samples in file order (PDEBench's ``num_samples_max``).

The HDF5 handle is opened on first data access, cached, never pickled, and re-opened
when the process id changes (forked DataLoader workers). Contiguous, unfiltered datasets (what
PDEBench and ``ups data generate`` write) are read by file offset through that handle's file
descriptor (``ups.data.contiguous``), the others through h5py; the values are the same.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ups.data.contiguous import ContiguousDataset
from ups.data.params import numeric_attrs, parse_params_from_name
from ups.errors import DataError

LAYOUTS = ("single", "darcy", "multigroup", "cfd", "ns_incomp")
SPATIAL_AXES = "xyz"
CFD_VELOCITIES = ("Vx", "Vy", "Vz")
NS_CHANNELS = ("Vx", "Vy", "particles")
NS_STATIC = ("force_x", "force_y")

_GROUP_NAME = re.compile(r"^\d+$")


@dataclass(frozen=True)
class FileInfo:
    """What a file holds, after down-sampling and the sample cap.

    ``params`` are the file-level PDE parameters; ``varying_params`` names parameters whose
    value differs between trajectories (multigroup group attributes), read per trajectory
    with ``PDEBenchFile.params_of``. ``channel_names`` name the channels of ``trajectory``
    (or of u in a Darcy file) in order; ``static_channels`` those of ``static_field``, a
    per-sample field that does not change in time (the incompressible Navier-Stokes
    forcing). ``notes`` records fallbacks such as synthesised coordinates, and the cap.
    """

    path: Path
    layout: str
    kind: str
    n_samples: int
    n_times: int
    spatial_shape: tuple[int, ...]
    n_channels: int
    params: dict[str, float]
    varying_params: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    channel_names: tuple[str, ...] = ()
    static_channels: tuple[str, ...] = ()
    n_stored: int = 0


def _cell_centres(n: int) -> np.ndarray:
    return ((np.arange(n) + 0.5) / n).astype(np.float64)


def _n_kept(n: int, step: int) -> int:
    return math.ceil(n / step)


def _file_descriptor(h5: h5py.File) -> int | None:
    """The OS file descriptor of an h5py file opened with the default (sec2) driver, else None."""
    try:
        fd = h5.id.get_vfd_handle()
    except (OSError, ValueError, TypeError):
        return None
    return fd if h5.driver == "sec2" and isinstance(fd, int) else None


def default_channel_names(n: int) -> tuple[str, ...]:
    """``("u",)`` for one channel, ``("u0", "u1", ...)`` for several."""
    return ("u",) if n == 1 else tuple(f"u{c}" for c in range(n))


class PDEBenchFile:
    """One PDEBench HDF5 file, validated on construction and read lazily by slicing.

    Args:
        path: the ``.hdf5``/``.h5`` file.
        layout: ``"auto"`` or one of ``LAYOUTS``.
        reduced_resolution: keep every r-th point along each spatial axis.
        reduced_resolution_t: keep every r_t-th frame.
        params_override: PDE parameters that win over the file name and attributes.
        max_samples: keep only the first samples in file order (PDEBench's
            ``num_samples_max``); None keeps all.

    Raises:
        DataError: the file is missing, not HDF5, or not in the layout asked for.
    """

    def __init__(
        self,
        path,
        layout: str = "auto",
        reduced_resolution: int = 1,
        reduced_resolution_t: int = 1,
        params_override: dict | None = None,
        max_samples: int | None = None,
    ):
        self.path = Path(path)
        if layout != "auto" and layout not in LAYOUTS:
            raise DataError(
                f"{self.path}: unknown layout {layout!r}; expected 'auto' or one of "
                f"{', '.join(repr(x) for x in LAYOUTS)}."
            )
        for name, value in (
            ("reduced_resolution", reduced_resolution),
            ("reduced_resolution_t", reduced_resolution_t),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"{self.path}: {name}={value!r} must be an integer >= 1.")
        if max_samples is not None and (
            isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1
        ):
            raise DataError(
                f"{self.path}: max_samples={max_samples!r} must be an integer >= 1, or unset "
                f"to keep every sample."
            )
        self.reduced_resolution = self._r = int(reduced_resolution)
        self.reduced_resolution_t = self._rt = int(reduced_resolution_t)
        self.max_samples = None if max_samples is None else int(max_samples)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._direct: dict[str, ContiguousDataset | None] = {}  # by dataset key, for this process's handle
        self._notes: list[str] = []
        self._group_params: list[dict[str, float]] = []
        self._channel_names: tuple[str, ...] = ()
        self._static: tuple[str, ...] = ()
        with self._open() as h5:
            self.layout = self._detect_layout(h5) if layout == "auto" else layout
            validate = {
                "single": self._validate_single,
                "darcy": self._validate_darcy,
                "multigroup": self._validate_multigroup,
                "cfd": self._validate_cfd,
                "ns_incomp": self._validate_ns_incomp,
            }[self.layout]
            validate(h5)
            params = parse_params_from_name(self.path.name)
            params.update(numeric_attrs(h5.attrs))
        self._check_reduction()
        self._n_stored = self._n
        if self.max_samples is not None and self.max_samples < self._n:
            self._notes.append(
                f"max_samples={self.max_samples}: the first {self.max_samples} of {self._n} samples are used"
            )
            self._n = self.max_samples
        varying = self._split_group_params(params)
        self._override = self._check_override(params_override or {})
        params.update(self._override)
        self._params = {k: float(v) for k, v in params.items()}
        self.info = FileInfo(
            path=self.path,
            layout=self.layout,
            kind="steady" if self.layout == "darcy" else "transient",
            n_samples=self._n,
            n_times=1 if self.layout == "darcy" else _n_kept(self._t_len, self._rt),
            spatial_shape=tuple(_n_kept(s, self._r) for s in self._spatial),
            n_channels=self._channels,
            params=dict(self._params),
            varying_params=tuple(v for v in varying if v not in self._override),
            notes=tuple(self._notes),
            channel_names=self._channel_names or default_channel_names(self._channels),
            static_channels=self._static,
            n_stored=self._n_stored,
        )

    def reopened(self, **changes) -> PDEBenchFile:
        """The same file read with the same settings, except ``changes`` (any constructor
        argument, e.g. ``reduced_resolution=2`` or ``path=`` a regenerated copy)."""
        settings = dict(
            path=self.path,
            layout=self.layout,
            reduced_resolution=self._r,
            reduced_resolution_t=self._rt,
            params_override=self._override,
            max_samples=self.max_samples,
        )
        settings.update(changes)
        return PDEBenchFile(**settings)

    def _check_override(self, override: dict) -> dict[str, float]:
        out = {}
        for key, value in override.items():
            try:
                out[str(key).lower()] = float(value)
            except (TypeError, ValueError):
                raise DataError(
                    f"{self.path}: PDE parameter override {key}={value!r} is not a "
                    f"number; task params must map names to numbers."
                ) from None
        return out

    # ---- opening -------------------------------------------------------------------

    def _open(self) -> h5py.File:
        if not self.path.exists():
            raise DataError(
                f"{self.path}: file not found. Check the path, or generate a "
                f"small dataset with `ups data generate`."
            )
        if not self.path.is_file():
            raise DataError(f"{self.path}: is not a file; expected a PDEBench .hdf5/.h5 file.")
        if not h5py.is_hdf5(self.path):
            raise DataError(
                f"{self.path}: not an HDF5 file (no HDF5 signature); expected a PDEBench .hdf5/.h5 file."
            )
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open as HDF5 ({exc}).") from exc

    def _handle(self) -> h5py.File:
        """The cached handle of this process; opened on first use and after a fork."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = self._open()
            self._pid = os.getpid()
            self._direct = {}
        return self._h5

    def _read(self, key: str, lead: tuple[int, ...], rows: slice, keep: tuple[slice, ...] = ()) -> np.ndarray:
        """``h5[key][(*lead, rows, *keep)]`` in the stored dtype: by file offset when the dataset is
        contiguous and unfiltered (``ContiguousDataset``), else by h5py."""
        h5 = self._handle()
        if key not in self._direct:
            self._direct[key] = ContiguousDataset.probe(
                h5[key], _file_descriptor(h5), f"{self.path}: '{key}'"
            )
        direct = self._direct[key]
        return h5[key][(*lead, rows, *keep)] if direct is None else direct.read(lead, rows, keep)

    def close(self) -> None:
        """Close this process's handle; the next data access re-opens it."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._pid = None
        self._direct = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_pid"] = None
        state["_direct"] = {}
        return state

    # ---- validation ----------------------------------------------------------------

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
        if any(_GROUP_NAME.match(k) and isinstance(h5[k], h5py.Group) for k in keys):
            return "multigroup"
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise DataError(
            f"{self.path}: cannot tell the layout; top-level keys are [{shown}]. Expected "
            f"'tensor' (single-file), 'tensor' + 'nu' (Darcy), 'density' + 'pressure' + 'Vx' "
            f"(compressible CFD), 'velocity' + 'particles' (incompressible Navier-Stokes), or "
            f"groups '0000', '0001', ... with 'data' (multi-group)."
        )

    def _dataset(self, h5, key: str, expected: str) -> h5py.Dataset:
        if key not in h5 or not isinstance(h5[key], h5py.Dataset):
            raise DataError(
                f"{self.path}: no dataset '{key}' (layout '{self.layout}'); "
                f"expected '{key}' with shape {expected}. Top-level keys: "
                f"{list(h5.keys())[:10]}."
            )
        ds = h5[key]
        if ds.dtype.kind not in "fiu":
            raise DataError(
                f"{self.path}: dataset '{key}' has dtype {ds.dtype}; expected a "
                f"real numeric array {expected}."
            )
        return ds

    def _axis(self, h5, key: str, n: int, axis: str) -> np.ndarray:
        """A 1-D coordinate of length n, or uniform cell centres when absent."""
        if key not in h5:
            self._notes.append(f"no '{key}': using {n} uniform cell centres on (0, 1) for {axis}")
            return _cell_centres(n)
        values = np.asarray(h5[key][()], dtype=np.float64).reshape(-1)
        if values.shape[0] != n:
            raise DataError(
                f"{self.path}: '{key}' has length {values.shape[0]} (shape "
                f"{h5[key].shape}) but the data has {n} points along {axis}; "
                f"expected a 1-D array of length {n}."
            )
        return values

    def _time_axis(self, h5, key: str, t: int) -> np.ndarray:
        """Times of length T; a T+1 array (the PDEBench quirk) is cut to its first T."""
        if key not in h5:
            self._notes.append(f"no '{key}': using {t} uniform times on [0, 1]")
            return np.linspace(0.0, 1.0, t)
        values = np.asarray(h5[key][()], dtype=np.float64).reshape(-1)
        if values.shape[0] not in (t, t + 1):
            raise DataError(
                f"{self.path}: '{key}' has length {values.shape[0]} (shape "
                f"{h5[key].shape}) but the data has T={t} frames; expected length "
                f"{t} or {t + 1}."
            )
        return values[:t]

    def _validate_single(self, h5) -> None:
        ds = self._dataset(h5, "tensor", "[N, T, X] or [N, T, X, Y]")
        rank = ds.ndim
        has_y = "y-coordinate" in h5
        if rank == 3 or (rank == 4 and has_y):
            self._channel_axis, self._channels = False, 1
        elif rank in (4, 5):
            self._channel_axis, self._channels = True, int(ds.shape[-1])
        else:
            raise DataError(
                f"{self.path}: dataset 'tensor' has shape {ds.shape} (rank {rank}); "
                f"expected [N, T, X], [N, T, X, Y] (with 'y-coordinate'), "
                f"[N, T, X, C] or [N, T, X, Y, C]."
            )
        self._n, self._t_len = int(ds.shape[0]), int(ds.shape[1])
        n_spatial = rank - 2 - int(self._channel_axis)
        self._spatial = tuple(int(s) for s in ds.shape[2 : 2 + n_spatial])
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
        self._channel_names, self._channels = names, len(names)
        self._n, self._t_len = int(density.shape[0]), int(density.shape[1])
        self._spatial = tuple(int(s) for s in density.shape[2:])
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
        if "force" in h5:
            force = self._dataset(h5, "force", f"[{n}, {spatial[0]}, {spatial[1]}, 2]")
            if force.shape != (n, *spatial, 2):
                raise DataError(
                    f"{self.path}: dataset 'force' has shape {force.shape}; expected "
                    f"{(n, *spatial, 2)}, one static 2D forcing per sample."
                )
            self._static = NS_STATIC
        self._channel_names, self._channels = NS_CHANNELS, 3
        self._n, self._t_len, self._spatial = n, t_len, tuple(spatial)
        self._read_grid(h5, [f"{a}-coordinate" for a in SPATIAL_AXES], None)
        self._t = self._sample_times(h5, n, t_len)

    def _sample_times(self, h5, n: int, t_len: int) -> np.ndarray:
        """One time axis from ``t`` [N, T], whose rows must agree (one axis serves every sample)."""
        if "t" not in h5:
            self._notes.append(f"no 't': using {t_len} uniform times on [0, 1]")
            return np.linspace(0.0, 1.0, t_len)
        t = self._dataset(h5, "t", f"[{n}, {t_len}]")
        if t.shape != (n, t_len):
            raise DataError(
                f"{self.path}: dataset 't' has shape {t.shape}; expected {(n, t_len)}, the "
                f"times of every sample's frames."
            )
        rows = np.asarray(t[()], dtype=np.float64)
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
        self._n, self._t_len, self._channels = int(u.shape[0]), 1, 1
        self._spatial = (int(u.shape[2]), int(u.shape[3]))
        self._read_grid(h5, ["x-coordinate", "y-coordinate"], None)

    def _validate_multigroup(self, h5) -> None:
        names = sorted((k for k in h5.keys() if _GROUP_NAME.match(k)), key=int)
        if not names:
            raise DataError(
                f"{self.path}: no groups named '0000', '0001', ...; top-level keys "
                f"are {list(h5.keys())[:10]}. Expected the multi-group layout."
            )
        shape = None
        for name in names[: self.max_samples]:
            group = h5[name]
            if not isinstance(group, h5py.Group) or "data" not in group:
                raise DataError(
                    f"{self.path}: group '{name}' has no dataset 'data'; every group "
                    f"must hold 'data' [T, X, C] or [T, X, Y, C]."
                )
            ds = group["data"]
            if shape is None:
                shape = ds.shape
                if ds.ndim not in (3, 4, 5) or ds.dtype.kind not in "fiu":
                    raise DataError(
                        f"{self.path}: '{name}/data' has shape {ds.shape} and dtype "
                        f"{ds.dtype}; expected real [T, X, C], [T, X, Y, C] or [T, X, Y, Z, C]."
                    )
            elif ds.shape != shape:
                raise DataError(
                    f"{self.path}: '{name}/data' has shape {ds.shape} but "
                    f"'{names[0]}/data' has {shape}; all groups must match."
                )
            self._group_params.append(numeric_attrs(group.attrs))
        self._groups = names
        self._n, self._t_len, self._channels = len(names), int(shape[0]), int(shape[-1])
        self._spatial = tuple(int(s) for s in shape[1:-1])
        self._channel_axis = True
        first = names[0]
        self._read_grid(h5, [f"{first}/grid/{a}" for a in SPATIAL_AXES], f"{first}/grid/t")

    def _read_grid(self, h5, axis_keys: list[str], t_key: str | None) -> None:
        self._axes = [
            self._axis(h5, key, n, axis) for key, n, axis in zip(axis_keys, self._spatial, SPATIAL_AXES)
        ]
        self._t = self._time_axis(h5, t_key, self._t_len) if t_key else np.zeros(1)

    def _check_reduction(self) -> None:
        smallest = min(self._spatial)
        if self._r > smallest:
            raise DataError(
                f"{self.path}: reduced_resolution={self._r} is larger than the grid "
                f"{self._spatial}; use a value between 1 and {smallest}."
            )
        if self.layout != "darcy" and self._rt > self._t_len:
            raise DataError(
                f"{self.path}: reduced_resolution_t={self._rt} is larger than the "
                f"T={self._t_len} frames; use a value between 1 and {self._t_len}."
            )

    def _split_group_params(self, params: dict[str, float]) -> list[str]:
        """Group attributes equal in every group join ``params``; the names that vary are
        returned (they are read per trajectory)."""
        if not self._group_params:
            return []
        names = sorted(set().union(*self._group_params))
        varying = []
        for name in names:
            values = {g.get(name) for g in self._group_params}
            if len(values) == 1:
                params[name] = values.pop()
            else:
                varying.append(name)
        return varying

    # ---- data access ---------------------------------------------------------------

    def _index(self, i: int) -> int:
        n = self._n
        if not -n <= i < n:
            raise IndexError(f"{self.path}: sample {i} out of range for N={n}.")
        return int(i) % n

    def trajectory(self, i: int, frames: slice = slice(None)) -> np.ndarray:
        """Trajectory i as float32 [T, *spatial, C], down-sampled in space and time.

        ``frames`` selects frames of the down-sampled time axis (e.g. ``slice(5, 14, 4)``);
        only those are read from the file.
        """
        if self.layout == "darcy":
            raise DataError(
                f"{self.path}: a Darcy file is steady and has no trajectories; read "
                f"it with steady_pair(i) (a steady task, e.g. stage steady_prior)."
            )
        i, r = self._index(i), self._r
        start, stop, step = frames.indices(_n_kept(self._t_len, self._rt))
        time = slice(start * self._rt, stop * self._rt, step * self._rt)
        space = (slice(None, None, r),) * len(self._spatial)
        if self.layout == "multigroup":
            data = self._read(f"{self._groups[i]}/data", (), time, (*space, slice(None)))
        elif self.layout == "cfd":
            data = np.stack([self._read(name, (i,), time, space) for name in self._channel_names], axis=-1)
        elif self.layout == "ns_incomp":
            data = np.concatenate(
                [self._read(key, (i,), time, (*space, slice(None))) for key in ("velocity", "particles")],
                axis=-1,
            )
        else:
            channel = (slice(None),) if self._channel_axis else ()
            data = self._read("tensor", (i,), time, (*space, *channel))
            if not self._channel_axis:
                data = data[..., None]
        return np.asarray(data, dtype=np.float32)

    def static_field(self, i: int) -> np.ndarray | None:
        """Sample i's static field, float32 [*spatial, S] down-sampled (channels
        ``info.static_channels``), or None when the file has none."""
        if not self._static:
            return None
        i, space = self._index(i), slice(None, None, self._r)
        data = self._read("force", (i,), space, (*(space,) * (len(self._spatial) - 1), slice(None)))
        return np.asarray(data, dtype=np.float32)

    def data_keys(self, i: int) -> tuple[str, ...]:
        """Where sample i lives in the file: the dataset (and index) behind ``trajectory(i)``,
        or behind both arrays of ``steady_pair(i)``."""
        i = self._index(i)
        if self.layout == "darcy":
            return f"nu[{i}]", f"tensor[{i}]"
        if self.layout == "multigroup":
            return (f"{self._groups[i]}/data",)
        if self.layout == "cfd":
            return (f"{'/'.join(self._channel_names)}[{i}]",)
        if self.layout == "ns_incomp":
            return (f"velocity/particles[{i}]",)
        return (f"tensor[{i}]",)

    def steady_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Darcy sample i: (a [*spatial, 1], u [*spatial, 1]), float32, down-sampled."""
        if self.layout != "darcy":
            raise DataError(
                f"{self.path}: steady_pair needs the Darcy layout, this file is "
                f"'{self.layout}'; read it with trajectory(i)."
            )
        i, space = self._index(i), slice(None, None, self._r)
        a = self._read("nu", (i,), space, (space,))
        u = self._read("tensor", (i, 0), space, (space,))
        return (np.asarray(a, dtype=np.float32)[..., None], np.asarray(u, dtype=np.float32)[..., None])

    def coordinates(self) -> np.ndarray:
        """Grid positions, float32 [*spatial, d] (d = 1, 2 or 3, ``ij`` indexing)."""
        mesh = np.meshgrid(*(axis[:: self._r] for axis in self._axes), indexing="ij")
        return np.stack(mesh, axis=-1).astype(np.float32)

    def times(self) -> np.ndarray:
        """Frame times, float32 [T] after temporal down-sampling ([1] zeros when steady)."""
        return self._t[:: self._rt].astype(np.float32)

    def params_of(self, i: int) -> dict[str, float]:
        """PDE parameters of sample i: file-level, then its group's attributes, then overrides."""
        if not self._group_params:
            return dict(self._params)
        params = dict(self._params)
        params.update(self._group_params[self._index(i)])
        params.update(self._override)
        return params

    def __repr__(self) -> str:
        return f"PDEBenchFile({str(self.path)!r}, layout={self.layout!r})"
