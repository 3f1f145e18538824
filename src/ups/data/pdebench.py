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

Each layout's datasets are checked, and its facts read, by ``ups.data.layouts.LayoutScan``; the
file is untrusted input (``ups.data.untrusted``): its links and storage are checked, and the sizes it
declares bounded, before anything is read.
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
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ups.config.schema import SAMPLE_LIMIT
from ups.data.contiguous import ContiguousDataset
from ups.data.layouts import LAYOUTS, LayoutScan
from ups.data.params import numeric_attrs, parse_params_from_name
from ups.errors import DataError


@dataclass(frozen=True)
class FileInfo:
    """What a file holds, after down-sampling and the sample cap.

    ``params`` are the file-level PDE parameters; ``varying_params`` names parameters whose
    value differs between trajectories (multigroup group attributes), read per trajectory
    with ``PDEBenchFile.params_of``. ``channel_names`` name the channels of ``trajectory``
    (or of u in a Darcy file) in order; ``static_channels`` those of ``static_field``, a
    per-sample field that does not change in time (the incompressible Navier-Stokes
    forcing). ``notes`` records fallbacks such as synthesised coordinates, and the cap.
    ``sources``: the other files the data is read from (external links, virtual and external
    storage, with ``allow_external_storage``), resolved.
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
    sources: tuple[Path, ...] = ()


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
        sample_limit: refuse a file with more samples in use than this (``data.sample_limit``).
        allow_external_storage: read external links, virtual datasets and external raw storage
            (``data.allow_external_storage``); refused otherwise.

    Raises:
        DataError: the file is missing, not HDF5, not in the layout asked for, or refused as
            untrusted input (``ups.data.untrusted``, ``ups.data.layouts``).
    """

    def __init__(
        self,
        path,
        layout: str = "auto",
        reduced_resolution: int = 1,
        reduced_resolution_t: int = 1,
        params_override: dict | None = None,
        max_samples: int | None = None,
        sample_limit: int = SAMPLE_LIMIT,
        allow_external_storage: bool = False,
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
        self.sample_limit, self.allow_external_storage = int(sample_limit), bool(allow_external_storage)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._direct: dict[str, ContiguousDataset | None] = {}  # by dataset key, for this process's handle
        with self._open() as h5:
            scan = LayoutScan(
                self.path,
                h5,
                layout,
                self.max_samples,
                sample_limit=self.sample_limit,
                allow_external=self.allow_external_storage,
            )
            params = parse_params_from_name(self.path.name)
            params.update(numeric_attrs(h5.attrs))
        self.layout, self._notes = scan.layout, scan.notes
        self._n, self._t_len, self._spatial = scan.n, scan.t_len, scan.spatial
        self._channels, self._channel_axis = scan.channels, scan.channel_axis
        self._channel_names, self._static = scan.channel_names, scan.static
        self._groups, self._group_params = scan.groups, scan.group_params
        self._axes, self._t = scan.axes, scan.t
        self._check_reduction()
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
            sources=tuple(sorted(scan.objects.sources)),
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
            sample_limit=self.sample_limit,
            allow_external_storage=self.allow_external_storage,
        )
        return PDEBenchFile(**{**settings, **changes})

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
        contiguous, unfiltered and in this file (``ContiguousDataset``), else by h5py."""
        h5 = self._handle()
        if key not in self._direct:
            own = h5[key].file.filename == h5.filename  # not behind an external link
            fd = _file_descriptor(h5) if own else None
            self._direct[key] = ContiguousDataset.probe(h5[key], fd, f"{self.path}: '{key}'")
        direct = self._direct[key]
        return h5[key][(*lead, rows, *keep)] if direct is None else direct.read(lead, rows, keep)

    def close(self) -> None:
        """Close this process's handle; the next data access re-opens it."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid, self._direct = None, None, {}

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_pid": None, "_direct": {}}

    # ---- validation ----------------------------------------------------------------

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
        varying = []
        for name in sorted(set().union(*self._group_params)):
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
        params = dict(self._params)
        if self._group_params:
            params.update(self._group_params[self._index(i)])
            params.update(self._override)
        return params

    def __repr__(self) -> str:
        return f"PDEBenchFile({str(self.path)!r}, layout={self.layout!r})"
