"""Writes solver output in PDEBench's HDF5 layouts, atomically, with the settings as attrs.

File formats (float32 arrays, float64 coordinates; ``Generator.file_format`` says which a
layout name writes):
- "single", transient: ``tensor`` [N, T, X], ``x-coordinate`` [X], ``t-coordinate`` [T].
- "darcy", steady 2D: ``nu`` [N, X, Y] (the coefficient a), ``tensor`` [N, 1, X, Y],
  ``x-coordinate`` [X], ``y-coordinate`` [Y].
- "cfd", transient, one dataset per variable (``density``, ``pressure``, ``Vx``) [N, T, X],
  ``x-coordinate`` [X] and ``t-coordinate`` [T + 1]: as PDEBench's CFD files, one time more
  than the frames (the next frame's time; readers use the first T).
- "multigroup", transient: groups "0000", "0001", ... each with ``data`` [T, *S, C],
  ``grid/x`` [X] (``grid/y`` [Y] in 2D), ``grid/t`` [T].
In every format the root attributes hold the generation settings (see ``settings``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ups.atomic import atomic_path
from ups.data.generate.spec import SolveResult
from ups.errors import DataError

FORMAT_VERSION = 2  # 2: burgers1d initial conditions use wavenumbers 1-2


def write_coordinates(h5: h5py.File, coords: dict[str, np.ndarray]) -> None:
    """PDEBench's ``x-coordinate``, ``y-coordinate``, ``t-coordinate``: one per entry of ``coords``."""
    for axis, values in coords.items():
        h5.create_dataset(f"{axis}-coordinate", data=values)


def write_single(h5: h5py.File, result: SolveResult) -> None:
    h5.create_dataset("tensor", data=result.solution)
    write_coordinates(h5, result.coords)


def write_darcy(h5: h5py.File, result: SolveResult) -> None:
    h5.create_dataset("nu", data=result.coefficient)
    h5.create_dataset("tensor", data=result.solution)
    write_coordinates(h5, result.coords)


def write_cfd(h5: h5py.File, result: SolveResult) -> None:
    for c, name in enumerate(result.channels):
        h5.create_dataset(name, data=result.solution[..., c])
    t = result.coords["t"]
    write_coordinates(h5, {**result.coords, "t": np.append(t, 2 * t[-1] - t[-2])})


def write_multigroup(h5: h5py.File, result: SolveResult) -> None:
    solution = result.solution if result.channels else result.solution[..., None]  # [N, T, *S, C]
    for i, trajectory in enumerate(solution):
        group = h5.create_group(f"{i:04d}")
        group.create_dataset("data", data=trajectory)
        for axis, values in result.coords.items():
            group.create_dataset(f"grid/{axis}", data=values)


FORMAT_WRITERS: dict[str, Callable[[h5py.File, SolveResult], None]] = {
    "single": write_single,
    "darcy": write_darcy,
    "cfd": write_cfd,
    "multigroup": write_multigroup,
}


def settings(task: str, layout: str, seed: int, n: int, nx: int, nt: int, params: dict) -> dict:
    """The root attributes that identify a generated file (PDE parameters as plain names)."""
    return {
        "ups_generator": task,
        "ups_layout": layout,
        "ups_seed": int(seed),
        "ups_n": int(n),
        "ups_nx": int(nx),
        "ups_nt": int(nt),
        "ups_format_version": FORMAT_VERSION,
        **{name: float(value) for name, value in sorted(params.items())},
    }


def read_settings(path: Path) -> dict:
    """Root attributes of an existing file as plain Python values; DataError if unreadable."""
    try:
        with h5py.File(path, "r") as h5:
            return {key: _plain(value) for key, value in h5.attrs.items()}
    except OSError as err:
        raise DataError(
            f"{path} exists but cannot be read as HDF5 ({err}). Pass overwrite=True "
            "(--overwrite) to replace it, or choose another --out folder."
        ) from err


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def describe_settings(attrs: dict) -> str:
    return ", ".join(f"{key.removeprefix('ups_')}={value}" for key, value in sorted(attrs.items()))


def dataset_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the datasets in a written file; multigroup files list the first group and
    the number of groups under "groups"."""
    with h5py.File(path, "r") as h5:
        datasets = {key: h5[key].shape for key in h5 if isinstance(h5[key], h5py.Dataset)}
        if datasets:
            return datasets
        groups = sorted(h5)
        shapes: dict[str, tuple[int, ...]] = {"groups": (len(groups),)}
        if groups:
            first = groups[0]
            for key in ("data", "grid/x", "grid/y", "grid/t"):
                if key in h5[first]:
                    shapes[f"{first}/{key}"] = h5[f"{first}/{key}"].shape
        return shapes


def write_atomic(
    path: Path,
    result: SolveResult,
    attrs: dict,
    file_format: str,
    extras: Callable[[h5py.File], None] | None = None,
) -> None:
    """Write ``result`` in ``file_format`` to ``path`` atomically (``ups.atomic.atomic_path``);
    ``extras`` adds to the open file what the format does not hold (``ups predict``'s samples)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        FORMAT_WRITERS[file_format](h5, result)
        if extras is not None:
            extras(h5)
