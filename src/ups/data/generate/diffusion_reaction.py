"""2D diffusion-reaction of FitzHugh-Nagumo type, as PDEBench's ``2D_diff-react`` family:
an activator u and an inhibitor v on the square (-1, 1)^2 with no-flux (Neumann)
boundaries, t in [0, T_FINAL],

    u_t = du (u_xx + u_yy) + u - u^3 - k - v
    v_t = dv (v_xx + v_yy) + u - v

with PDEBench's du = 1e-3, dv = 5e-3, k = 5e-3 as defaults.

Method: the 5-point Laplacian on nx x nx cell centres with mirrored ghost cells (the
cell-centred no-flux condition; it conserves the sum of a field exactly), and the classical
fourth-order Runge-Kutta scheme with a fixed step of at most DT_MAX and at most half its
diffusive stability limit 2.78 dx^2 / (8 max(du, dv)), shortened to land on every stored time.

Initial conditions: smooth, not PDEBench's grid-scale white noise (which no any-point
model can reconstruct and which depends on the grid): each of u and v is a sum of N_MODES
random no-flux modes cos(m pi (x + 1) / 2) cos(l pi (y + 1) / 2) with m, l in
[0, MAX_WAVENUMBER] and amplitudes U(-1, 1), scaled to a maximum of 1. Being discrete
eigenvectors of the Laplacian, they are represented exactly on every grid of more than
MAX_WAVENUMBER cells per axis (``min_nx`` is twice that).
"""

from __future__ import annotations

import numpy as np

from ups.data.generate import spec
from ups.data.generate.spec import Generator, SolveResult, fill_in_chunks
from ups.errors import UPSError

T_FINAL = 5.0
DT_MAX = 0.01
N_MODES = 4
MAX_WAVENUMBER = 4
CHUNK = 64
CHANNELS = ("u", "v")


def cell_centres(n: int) -> np.ndarray:
    """Cell centres of n equal cells of (-1, 1), float64 [n]: ``spec.cell_centres`` mapped there."""
    return -1.0 + 2.0 * spec.cell_centres(n)


def laplacian(field: np.ndarray, dx: float) -> np.ndarray:
    """5-point Laplacian of [..., X, Y] with mirrored ghost cells (no-flux boundaries)."""
    padded = np.pad(field, [(0, 0)] * (field.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    return (
        padded[..., 2:, 1:-1]
        + padded[..., :-2, 1:-1]
        + padded[..., 1:-1, 2:]
        + padded[..., 1:-1, :-2]
        - 4.0 * field
    ) / dx**2


def rhs(u: np.ndarray, v: np.ndarray, params: dict, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Time derivatives (u_t, v_t) of fields [B, X, Y]."""
    return (
        params["du"] * laplacian(u, dx) + u - u**3 - params["k"] - v,
        params["dv"] * laplacian(v, dx) + u - v,
    )


def evolve(
    u0: np.ndarray, v0: np.ndarray, params: dict, times: np.ndarray, dt_max: float = DT_MAX
) -> np.ndarray:
    """RK4 from (u0, v0) [B, X, X] to equispaced ``times`` -> float64 [B, T, X, X, 2].

    Raises:
        UPSError: the fields stopped being finite (the solver failed).
    """
    dx = 2.0 / u0.shape[-1]
    dt_max = min(dt_max, 0.5 * 2.78 * dx**2 / (8.0 * max(params["du"], params["dv"])))
    interval = times[1] - times[0] if len(times) > 1 else 0.0
    steps = max(1, int(np.ceil(interval / dt_max - 1e-9)))
    dt = interval / steps
    frames = np.empty((u0.shape[0], len(times), *u0.shape[1:], 2))
    u, v = u0, v0
    frames[:, 0, ..., 0], frames[:, 0, ..., 1] = u, v
    for j in range(1, len(times)):
        for _ in range(steps):
            k1 = rhs(u, v, params, dx)
            k2 = rhs(u + 0.5 * dt * k1[0], v + 0.5 * dt * k1[1], params, dx)
            k3 = rhs(u + 0.5 * dt * k2[0], v + 0.5 * dt * k2[1], params, dx)
            k4 = rhs(u + dt * k3[0], v + dt * k3[1], params, dx)
            u = u + dt / 6.0 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            v = v + dt / 6.0 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            raise UPSError(
                f"diffusion_reaction2d: the fields stopped being finite by t={times[j]:.4g}; lower du, dv "
                f"or nx."
            )
        frames[:, j, ..., 0], frames[:, j, ..., 1] = u, v
    return frames


def initial_fields(rng: np.random.Generator, n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth (u0, v0), each [n, X, X]: no-flux cosine modes scaled to max 1."""
    fields = []
    for _ in range(2):
        m = rng.integers(0, MAX_WAVENUMBER + 1, size=(n, N_MODES, 2))
        amplitude = rng.uniform(-1.0, 1.0, size=(n, N_MODES))
        cx = np.cos(m[..., 0, None] * np.pi * (x + 1.0) / 2.0)  # [n, K, X]
        cy = np.cos(m[..., 1, None] * np.pi * (x + 1.0) / 2.0)
        field = np.einsum("nk,nkx,nky->nxy", amplitude, cx, cy)
        fields.append(field / np.maximum(np.abs(field).max(axis=(1, 2), keepdims=True), 1e-12))
    return fields[0], fields[1]


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n trajectories of (u, v), [n, nt, nx, nx, 2], on nx x nx cell centres of (-1, 1)^2
    and nt times in [0, T_FINAL]."""
    rng = np.random.default_rng(seed)
    x = cell_centres(nx)
    u0, v0 = initial_fields(rng, n, x)
    t = np.linspace(0.0, T_FINAL, nt)
    out = fill_in_chunks(
        np.empty((n, nt, nx, nx, 2), dtype=np.float32),
        CHUNK,
        "diffusion_reaction2d",
        progress,
        lambda rows: evolve(u0[rows], v0[rows], params, t),
    )
    return SolveResult(solution=out, coords={"x": x, "y": x, "t": t}, channels=CHANNELS)


GENERATOR = Generator(
    name="diffusion_reaction2d",
    description="2D FitzHugh-Nagumo activator u and inhibitor v, (-1,1)^2 no-flux, t in [0,5]",
    default_n=128,
    default_nx=32,
    default_nt=101,
    default_params={"du": 1e-3, "dv": 5e-3, "k": 5e-3},
    file_name=lambda p: "2D_diff-react_NA_NA.h5",
    solve=solve,
    positive_params=frozenset({"du", "dv"}),
    min_nx=2 * MAX_WAVENUMBER,
    pdebench_layout="multigroup",
)
