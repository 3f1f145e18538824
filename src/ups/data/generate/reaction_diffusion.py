"""1D Fisher-KPP u_t = nu u_xx + rho u (1 - u) on the periodic unit interval, t in [0, 1].

Method: Strang splitting R(dt/2) D(dt) R(dt/2) on the nx cell centres, dt <= DT_MAX.
- R is the exact logistic flow u -> u / (u + (1 - u) exp(-rho tau)), which maps [0, 1]
  into [0, 1].
- D is the exact flow of the semi-discrete heat equation u' = nu L_h u with the periodic
  3-point Laplacian L_h: the matrix exp(nu dt L_h), entrywise non-negative with unit row
  sums, applied as a dense matrix product (sums of non-negative terms, so D u >= 0 holds
  exactly in floating point, and D u <= max u up to rounding of the row sums).
Both sub-steps map [0, 1]^nx into [0, 1]^nx for every dt: a discrete maximum principle.
Errors: O(dt^2) from the splitting (measured: about 2nd order), O(h^2) in space. Cost per
step is O(nx^2) per sample (dense kernel), fine for nx up to about 1024.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ups.data.generate.initial_conditions import draw_sine_modes
from ups.data.generate.spec import Generator, SolveResult, cell_centres, fill_in_chunks, pdebench_number

T_FINAL = 1.0
DT_MAX = 2.5e-4
CHUNK = 128


def heat_kernel_matrix(nx: int, nu: float, tau: float) -> np.ndarray:
    """exp(tau nu L_h) for the periodic 3-point Laplacian L_h on nx cells, dense [nx, nx].

    L_h is a Metzler matrix with zero row sums, so its exponential is entrywise positive
    with unit row sums. It is circulant; its column comes from the eigenvalues
    -(4 / h^2) sin^2(pi m / nx). Round-off can leave far-tail entries at about -1e-17:
    they are set to 0 and the column renormalised, so the matrix used is exactly
    non-negative and stochastic up to rounding of the row sums.
    """
    m = np.arange(nx // 2 + 1)
    eigenvalues = -4.0 * nx**2 * np.sin(np.pi * m / nx) ** 2
    column = np.fft.irfft(np.exp(tau * nu * eigenvalues), n=nx)
    column = np.clip(column, 0.0, None)
    column /= column.sum()
    return scipy.linalg.circulant(column)


def logistic_flow(u: np.ndarray, rho: float, tau: float) -> np.ndarray:
    """Exact solution of u' = rho u (1 - u) after time tau, for u in [0, 1]."""
    return u / (u + (1.0 - u) * np.exp(-rho * tau))


def evolve(u0: np.ndarray, nu: float, rho: float, times: np.ndarray, dt_max: float = DT_MAX) -> np.ndarray:
    """Strang-split Fisher-KPP from u0 [B, X] in [0, 1] to frames at equispaced ``times``.

    Each output interval is split into ceil(interval / dt_max) equal steps. -> float64 [B, T, X]
    """
    interval = times[1] - times[0] if len(times) > 1 else 0.0
    steps = max(1, int(np.ceil(interval / dt_max - 1e-9)))
    dt = interval / steps
    # The kernel is symmetric, so u @ kernel applies it to each row of u.
    kernel = heat_kernel_matrix(u0.shape[-1], nu, dt)
    frames = np.empty((u0.shape[0], len(times), u0.shape[-1]))
    frames[:, 0] = u = u0
    for j in range(1, len(times)):
        for _ in range(steps):
            u = logistic_flow(logistic_flow(u, rho, dt / 2) @ kernel, rho, dt / 2)
        frames[:, j] = u
    return frames


def normalised_initial_condition(raw: np.ndarray) -> np.ndarray:
    """Rescale each row of raw [B, X] to min 0 and max 1, as PDEBench does."""
    low = raw.min(axis=-1, keepdims=True)
    high = raw.max(axis=-1, keepdims=True)
    return (raw - low) / (high - low)


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n trajectories [n, nt, nx] at nx cell centres and nt times in [0, 1], values in [0, 1]."""
    rng = np.random.default_rng(seed)
    modes = draw_sine_modes(rng, n)
    x = cell_centres(nx)
    t = np.linspace(0.0, T_FINAL, nt)
    out = fill_in_chunks(
        np.empty((n, nt, nx), dtype=np.float32),
        CHUNK,
        "reaction_diffusion1d",
        progress,
        lambda rows: evolve(
            normalised_initial_condition(modes[rows].evaluate(x)), params["nu"], params["rho"], t
        ),
    )
    return SolveResult(solution=out, coords={"x": x, "t": t})


GENERATOR = Generator(
    name="reaction_diffusion1d",
    description="1D Fisher-KPP u_t = nu*u_xx + rho*u*(1-u), x in [0,1) periodic, t in [0,1]",
    default_n=128,
    default_nx=256,
    default_nt=101,
    default_params={"nu": 0.5, "rho": 1.0},
    file_name=lambda p: f"ReacDiff_Nu{pdebench_number(p['nu'])}_Rho{pdebench_number(p['rho'])}.hdf5",
    solve=solve,
    positive_params=frozenset({"nu", "rho"}),
    min_nx=16,
    periodic=True,
)
