"""1D viscous Burgers u_t + (u^2/2)_x = nu u_xx on the periodic unit interval, t in [0, 2].

Method: Fourier pseudo-spectral in space with 2/3-rule dealiasing, ETDRK4 in time
(Cox & Matthews 2002) with the contour-integral coefficients of Kassam & Trefethen (2005).
The fine grid has n_fine = 2^p >= max(2 nx, RESOLUTION * |u|_max / nu) points so the
viscous shock (width ~ 2 nu / |u|_max) is resolved; the step is dt <= CFL dx / |u|_max.
Viscous Burgers obeys a maximum principle, so |u|_max is bounded by the initial
condition's sum of |amplitudes| for all time. Samples are grouped by n_fine and solved in
vectorised chunks. Frames are stored at nx cell centres by evaluating the fine Fourier
series there (modes |m| < nx/2), which keeps the stored spatial mean equal to the fine
one exactly (the m = 0 mode is untouched by the nonlinear term and the diffusion).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from tqdm import tqdm

from ups.data.generate.initial_conditions import N_MODES, SineModes, draw_sine_modes
from ups.data.generate.spec import (
    Generator,
    SolveResult,
    cell_centres,
    chunks,
    pdebench_number,
    progress_bar,
)
from ups.errors import UPSError

T_FINAL = 2.0
# Wavenumbers 3 and 4 decay like exp(-nu (2 pi m)^2 t): at nu = 0.01 a sample made of them
# alone is down to ~1e-6 of its start by t = 2, where every relative error metric is noise.
MAX_WAVENUMBER = 2
RESOLUTION = 4.0
CFL = 1.0
MAX_FINE = 16384
CHUNK = 64
CONTOUR_POINTS = 64


def fine_grid_size(bound: np.ndarray, nu: float, nx: int) -> np.ndarray:
    """Fine grid size per sample, a power of two, from its velocity bound [N] -> int [N]."""
    needed = np.maximum(2 * nx, RESOLUTION * bound / nu)
    return (2 ** np.ceil(np.log2(needed))).astype(np.int64)


def etdrk4_coefficients(linear: np.ndarray, dt: float) -> tuple[np.ndarray, ...]:
    """Kassam-Trefethen ETDRK4 coefficients for a diagonal real linear operator.

    linear [M] (eigenvalues, here -nu k^2) -> (E, E2, Q, f1, f2, f3), each float64 [M].
    The phi-functions are averaged over a circle of radius 1 around each dt*L, which avoids
    the cancellation of their closed forms near dt*L = 0.
    """
    hl = dt * linear
    roots = np.exp(2j * np.pi * (np.arange(CONTOUR_POINTS) + 0.5) / CONTOUR_POINTS)
    lr = hl[:, None] + roots[None, :]
    exp_lr = np.exp(lr)

    def average(values: np.ndarray) -> np.ndarray:
        return dt * np.real(values.mean(axis=1))

    q = average((np.exp(lr / 2) - 1) / lr)
    f1 = average((-4 - lr + exp_lr * (4 - 3 * lr + lr**2)) / lr**3)
    f2 = average((2 + lr + exp_lr * (lr - 2)) / lr**3)
    f3 = average((-4 - 3 * lr - lr**2 + exp_lr * (4 - lr)) / lr**3)
    return np.exp(hl), np.exp(hl / 2), q, f1, f2, f3


def evolve(u0: np.ndarray, nu: float, times: np.ndarray, dt_max: float, nx_out: int) -> np.ndarray:
    """Integrate Burgers from fine-grid samples and return frames at nx_out cell centres.

    u0 [B, N] at the N cell centres of (0, 1); times [T] equispaced from 0; each output
    interval is split into ceil(interval / dt_max) equal ETDRK4 steps. -> float64 [B, T, nx_out]
    """
    n_fine = u0.shape[-1]
    m = np.arange(n_fine // 2 + 1)
    k = 2 * np.pi * m
    keep = m < n_fine / 3
    nonlinear_factor = np.where(keep, -0.5j * k, 0.0)
    interval = times[1] - times[0] if len(times) > 1 else 0.0
    steps = max(1, int(np.ceil(interval / dt_max - 1e-9)))
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(-nu * k**2, interval / steps)

    def rhs(v: np.ndarray) -> np.ndarray:
        u = scipy.fft.irfft(v, n=n_fine, axis=-1)
        return nonlinear_factor * scipy.fft.rfft(u * u, axis=-1)

    v = scipy.fft.rfft(u0, axis=-1) * keep
    frames = np.empty((u0.shape[0], len(times), nx_out))
    frames[:, 0] = resample_to_centres(v, n_fine, nx_out)
    for j in range(1, len(times)):
        for _ in range(steps):
            nv = rhs(v)
            a = e2 * v + q * nv
            na = rhs(a)
            b = e2 * v + q * na
            nb = rhs(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = rhs(c)
            v = e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
        frames[:, j] = resample_to_centres(v, n_fine, nx_out)
    return frames


def resample_to_centres(v: np.ndarray, n_fine: int, nx: int) -> np.ndarray:
    """Evaluate the Fourier series with rfft coefficients v [B, N/2+1] of samples at the N
    cell centres, at the nx cell centres, keeping modes |m| < nx/2. -> float64 [B, nx]"""
    m = np.arange(nx // 2 + 1)
    shift = (nx / n_fine) * np.exp(1j * np.pi * m * (1.0 / nx - 1.0 / n_fine))
    if nx % 2 == 0:
        shift[-1] = 0.0
    return scipy.fft.irfft(v[:, : nx // 2 + 1] * shift, n=nx, axis=-1)


def solve_modes(modes: SineModes, nu: float, nx: int, times: np.ndarray, bar: tqdm) -> np.ndarray:
    """Burgers trajectories of the initial conditions ``modes`` -> float64 [N, T, nx]."""
    n_fine = fine_grid_size(modes.bound(), nu, nx)
    out = np.empty((len(modes), len(times), nx))
    for size in np.unique(n_fine):
        # The velocity bound of a group depends only on its grid size, so a sample's
        # trajectory never depends on which other samples share its chunk.
        u_max = min(nu * size / RESOLUTION, N_MODES * 1.0)
        dt_max = CFL / (size * u_max)
        for rows in chunks(np.flatnonzero(n_fine == size), CHUNK):
            u0 = modes[rows].evaluate(cell_centres(size))
            out[rows] = evolve(u0, nu, times, dt_max, nx)
            bar.update(len(rows))
    return out


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n trajectories [n, nt, nx] at nx cell centres and nt times in [0, 2]."""
    nu = params["nu"]
    rng = np.random.default_rng(seed)
    modes = draw_sine_modes(rng, n, max_wavenumber=MAX_WAVENUMBER)
    largest = RESOLUTION * N_MODES / nu
    if largest > MAX_FINE:
        raise UPSError(
            f"burgers1d: nu={nu} needs a fine grid of {largest:.0f} points to resolve the viscous "
            f"shock (limit {MAX_FINE}). Use nu >= {RESOLUTION * N_MODES / MAX_FINE:g} "
            "(e.g. --param nu=0.001) or a smaller --nx."
        )
    t = np.linspace(0.0, T_FINAL, nt)
    with progress_bar(n, "burgers1d", progress) as bar:
        trajectories = solve_modes(modes, nu, nx, t, bar)
    return SolveResult(solution=trajectories.astype(np.float32), coords={"x": cell_centres(nx), "t": t})


GENERATOR = Generator(
    name="burgers1d",
    description="1D viscous Burgers u_t + (u^2/2)_x = nu*u_xx, x in [0,1) periodic, t in [0,2]",
    default_n=128,
    default_nx=256,
    default_nt=101,
    default_params={"nu": 0.01},
    file_name=lambda p: f"1D_Burgers_Sols_Nu{pdebench_number(p['nu'])}.hdf5",
    solve=solve,
    positive_params=frozenset({"nu"}),
    min_nx=16,
    periodic=True,
)
