"""1D linear advection u_t + beta u_x = 0 on the periodic unit interval, t in [0, 2].

Fourier spectral in space, exact in time: each Fourier mode of the sampled initial
condition is rotated by exp(-2 pi i m beta t). For the band-limited initial conditions of
:mod:`initial_conditions` this reproduces u0(x - beta t) to round-off.
"""

from __future__ import annotations

import numpy as np

from ups.data.generate.initial_conditions import draw_sine_modes
from ups.data.generate.spec import Generator, SolveResult, cell_centres, fill_in_chunks, pdebench_number

T_FINAL = 2.0
CHUNK = 256


def advect_spectral(u0: np.ndarray, beta: float, times: np.ndarray) -> np.ndarray:
    """Exact periodic translation of grid samples by beta * t.

    u0 [B, X] on X equispaced points of period 1; times [T] -> float64 [B, T, X].
    The Nyquist mode (even X) is dropped: its translate is not representable on the grid.
    """
    nx = u0.shape[-1]
    coeffs = np.fft.rfft(u0, axis=-1)
    wavenumbers = np.arange(coeffs.shape[-1])
    if nx % 2 == 0:
        coeffs[..., -1] = 0.0
    rotation = np.exp(-2j * np.pi * beta * np.outer(times, wavenumbers))
    return np.fft.irfft(coeffs[:, None, :] * rotation[None], n=nx, axis=-1)


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n trajectories [n, nt, nx] at nx cell centres and nt times in [0, 2]."""
    rng = np.random.default_rng(seed)
    modes = draw_sine_modes(rng, n)
    x = cell_centres(nx)
    t = np.linspace(0.0, T_FINAL, nt)
    out = fill_in_chunks(
        np.empty((n, nt, nx), dtype=np.float32),
        CHUNK,
        "advection1d",
        progress,
        lambda rows: advect_spectral(modes[rows].evaluate(x), params["beta"], t),
    )
    return SolveResult(solution=out, coords={"x": x, "t": t})


GENERATOR = Generator(
    name="advection1d",
    description="1D advection u_t + beta*u_x = 0, x in [0,1) periodic, t in [0,2]",
    default_n=128,
    default_nx=256,
    default_nt=101,
    default_params={"beta": 0.4},
    file_name=lambda p: f"1D_Advection_Sols_beta{pdebench_number(p['beta'])}.hdf5",
    solve=solve,
    min_nx=16,
    periodic=True,
)
