"""Ground truth of a task at another spatial resolution, for zero-shot resolution tests.

A model trained on one grid decodes at any query points; to score it at n points per axis
we need the same trajectories (same indices, same time axis) sampled on that grid. That
is either the stored file down-sampled (when some integer factor gives exactly n points),
or, for built-in data whose trajectories do not depend on the grid, the same dataset
regenerated at nx = n.
"""

from __future__ import annotations

import math
from pathlib import Path

from ups.data.generate import GENERATORS, generate_dataset
from ups.data.generate.hdf5_writer import FORMAT_VERSION, read_settings
from ups.data.pdebench import PDEBenchFile
from ups.data.tasks import TaskData
from ups.errors import DataError

# Generators whose trajectories are the same functions at every nx: their initial
# conditions are trigonometric polynomials drawn before nx is used, and their solvers are
# spectral. Measured at nx 32 vs 64 vs 128: Fourier modes |k| <= 4 agree to ~1e-7 of the
# largest one, at t = 0 and at the last frame (tests/unit/test_resolution.py).
REGENERABLE = frozenset({"burgers1d", "advection1d"})

# Why the other built-in generators cannot stand in for their own data at another nx.
_NOT_REGENERABLE = {
    "diffusion_reaction2d": "its second-order Laplacian makes its trajectories change with nx",
    "cfd1d": "it is a finite-volume solution whose limiter and shocks depend on the grid, so its "
    "trajectories at another nx differ by more than the evaluation measures",
    "darcy2d": "its random coefficient field a(x) is drawn on the nx x nx grid, so another nx "
    "draws other coefficients from the same seed: other samples, not the same ones",
    "reaction_diffusion1d": "it rescales each initial condition by its min and max on the grid "
    "and uses a second-order Laplacian, so its trajectories change with nx "
    "(low Fourier modes differ by ~1e-2 relative at nx 32 vs 64)",
}


def reference_at_resolution(task: TaskData, n: int, workdir: Path) -> PDEBenchFile:
    """The task's trajectories on n points per spatial axis: same trajectory indices and
    time axis (same ``reduced_resolution_t``) as ``task.file``.

    1. When the stored grid [S1, S2, ...] gives n points on every axis at some integer
       down-sampling r (ceil(S / r) == n, PDEBenchFile's rule), the same file with
       ``reduced_resolution=r`` (the smallest such r).
    2. Else, for a file written by a built-in transient generator in ``REGENERABLE``, the
       same dataset (seed, sample count, frames, layout, PDE parameters) regenerated at
       nx = n under ``workdir``; a later call finds it there and does not solve again.
    3. Else DataError, naming the resolutions the file offers.

    Raises:
        DataError: n is not a positive integer, or no way to reach n points is valid.
    """
    file = task.file
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(
            f"task '{task.name}': resolution n={n!r} must be a positive integer (points per spatial axis)."
        )
    stored = file.reopened(reduced_resolution=1).info.spatial_shape
    r = _reduction_to(stored, n)
    if r is not None:
        return file.reopened(reduced_resolution=r)
    return _regenerated(task, n, stored, Path(workdir))


def _reduction_to(stored: tuple[int, ...], n: int) -> int | None:
    """The smallest r with ceil(S / r) == n on every axis, or None."""
    return next((r for r in range(1, min(stored) + 1) if all(math.ceil(s / r) == n for s in stored)), None)


def _offered(stored: tuple[int, ...], shown: int = 8) -> str:
    """The grids down-sampling offers (r = 1, 2, ...), largest first, e.g. '64, 32, 22, ...'."""
    every_r = ("x".join(str(math.ceil(s / r)) for s in stored) for r in range(1, min(stored) + 1))
    grids = list(dict.fromkeys(every_r))  # distinct, in order
    return ", ".join(grids[:shown]) + (", ..." if len(grids) > shown else "")


def _regenerated(task: TaskData, n: int, stored: tuple[int, ...], workdir: Path) -> PDEBenchFile:
    file = task.file
    where = (
        f"task '{task.name}' ({file.path}) stores a grid of {'x'.join(map(str, stored))} points, "
        f"which down-sampling turns into grids of {_offered(stored)}, not {n} points per axis"
    )
    attrs = read_settings(file.path)
    generator = attrs.get("ups_generator")
    if generator not in GENERATORS:
        raise DataError(
            f"{where}. Only built-in transient data (written by `ups data generate`: "
            f"{', '.join(sorted(REGENERABLE))}) can be regenerated at another resolution; "
            f"evaluate this task at one of the resolutions above."
        )
    if generator not in REGENERABLE:
        reason = _NOT_REGENERABLE.get(
            generator, "it is not known to give the same trajectories at another nx"
        )
        raise DataError(
            f"{where}. It was written by the built-in generator {generator}, which cannot be "
            f"regenerated at another resolution: {reason}. Evaluate it at one of the "
            f"resolutions above."
        )
    version = attrs.get("ups_format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{where}. It was written by an older {generator} (format version {version}, "
            f"current {FORMAT_VERSION}) whose initial conditions differ from today's, so "
            f"regenerating would give other trajectories. Rewrite it with `ups data generate "
            f"{generator} --overwrite`, or evaluate at one of the resolutions above."
        )
    spec = GENERATORS[generator]
    if n < spec.min_nx:
        raise DataError(
            f"{where}. {generator} solves on at least {spec.min_nx} points (asked for {n}); "
            f"evaluate at n >= {spec.min_nx} or at one of the resolutions above."
        )
    seed, count, nt, layout = attrs["ups_seed"], attrs["ups_n"], attrs["ups_nt"], attrs["ups_layout"]
    # Everything that names the file's content but the PDE parameters (already in the file
    # name) goes into the folder, so two tasks never share a cache entry.
    folder = workdir / f"{generator}_{layout}_n{count}_nt{nt}_seed{seed}_nx{n}"
    result = generate_dataset(
        generator,
        folder,
        n=count,
        nx=n,
        nt=nt,
        seed=seed,
        layout=layout,
        params={name: attrs[name] for name in spec.default_params},
        overwrite=True,
        progress=False,
    )
    return file.reopened(path=result.path, reduced_resolution=1)
