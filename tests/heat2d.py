"""A 2D periodic heat file with two channels and an exact Fourier solution, in PDEBench's
multi-group layout: the regression data for 2D multi-channel transient fields.

Channel c of trajectory i is a sum of ``MODES`` cosines cos(2 pi (k . x) + phi) with integer
wavevectors |k_j| <= 3, each decaying like exp(-D_c (2 pi)^2 |k|^2 t), D = (0.01, 0.003): the
exact solution of u_t = D_c (u_xx + u_yy) on the periodic unit square, sampled at the cell
centres. With the defaults (40 trajectories, 32 x 32, 51 frames on t in [0, 1]) persistence's
one-step nRMSE is about 0.03.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

DIFFUSIVITY = (0.01, 0.003)
MODES = 4


def heat2d_fields(n: int = 40, nx: int = 32, nt: int = 51, t_final: float = 1.0, seed: int = 0):
    """(fields [n, nt, nx, nx, 2] float64, x [nx], t [nt])."""
    rng = np.random.default_rng(seed)
    x = (np.arange(nx) + 0.5) / nx
    grid_x, grid_y = np.meshgrid(x, x, indexing="ij")
    t = np.linspace(0.0, t_final, nt)
    fields = np.zeros((n, nt, nx, nx, 2))
    for i in range(n):
        for c, diffusivity in enumerate(DIFFUSIVITY):
            for _ in range(MODES):
                k = rng.integers(-3, 4, size=2)
                amplitude, phase = rng.uniform(0.2, 1.0), rng.uniform(0.0, 2 * np.pi)
                decay = np.exp(-diffusivity * (2 * np.pi) ** 2 * float(k @ k) * t)
                wave = np.cos(2 * np.pi * (k[0] * grid_x + k[1] * grid_y) + phase)
                fields[i, ..., c] += amplitude * decay[:, None, None] * wave[None]
    return fields, x, t


def write_heat2d(path: Path, **kwargs) -> Path:
    """Write ``heat2d_fields(**kwargs)`` as groups ``0000``, ... (``data`` [T, X, Y, 2] float32,
    ``grid/x``, ``grid/y``, ``grid/t``) and return ``path``."""
    fields, x, t = heat2d_fields(**kwargs)
    with h5py.File(path, "w") as h5:
        for i, trajectory in enumerate(fields.astype(np.float32)):
            group = h5.create_group(f"{i:04d}")
            group.create_dataset("data", data=trajectory)
            for key, value in (("grid/x", x), ("grid/y", x), ("grid/t", t)):
                group.create_dataset(key, data=value)
    return Path(path)
