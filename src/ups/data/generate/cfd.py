"""1D compressible Navier-Stokes on the periodic unit interval, t in [0, 1], as PDEBench's
1D CFD family (density, pressure and velocity; shear viscosity eta, bulk viscosity zeta).

    rho_t + (rho u)_x = 0
    (rho u)_t + (rho u^2 + p - tau)_x = 0
    E_t + ((E + p) u - u tau)_x = 0,   E = p / (gamma - 1) + rho u^2 / 2,
    tau = (4/3 eta + zeta) u_x,        gamma = 5/3 (PDEBench's).

Method: a conservative finite-volume scheme on nx cells. Primitive variables (rho, u, p) are
reconstructed at the faces with the monotonised-central (MC) limiter; the inviscid flux is
the HLLC approximate Riemann solver (Toro, with Davis wave-speed estimates); the viscous
flux uses the central face gradient; time stepping is the two-stage strong-stability-
preserving Runge-Kutta scheme (Heun), with dt from the CFL number CFL on max(|u| + c) and
from the explicit viscous limit, shortened to land on every stored time. Being a flux
difference on a periodic grid, it conserves total mass, momentum and energy to rounding.

Initial conditions ("Rand", as PDEBench's): each of density, pressure and velocity is a
random sine series divided by its bound, so at most 1 in magnitude (``initial_conditions``), then
rho0 = 1 + A w_rho, p0 = 1 + A w_p, u0 = A w_u with A = AMPLITUDE.
"""

from __future__ import annotations

import numpy as np

from ups.data.generate.initial_conditions import draw_sine_modes
from ups.data.generate.spec import Generator, SolveResult, cell_centres, fill_in_chunks, pdebench_number
from ups.errors import UPSError

GAMMA = 5.0 / 3.0
T_FINAL = 1.0
CFL = 0.4
VISCOUS_SAFETY = 0.4
AMPLITUDE = 0.5
CHUNK = 128
VARIABLES = ("density", "pressure", "Vx")


def mc_slope(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Monotonised-central limited slope (per cell, in units of the cell width)."""
    a, b = centre - left, right - centre
    slope = np.minimum(np.minimum(2 * np.abs(a), 2 * np.abs(b)), 0.5 * np.abs(a + b))
    return np.where(a * b > 0, np.sign(a) * slope, 0.0)


def primitive(state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, u, p) from conserved [B, 3, X]."""
    rho, momentum, energy = state[:, 0], state[:, 1], state[:, 2]
    u = momentum / rho
    return rho, u, (GAMMA - 1.0) * (energy - 0.5 * rho * u**2)


def conserved(rho: np.ndarray, u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Conserved [B, 3, X] from primitive fields [B, X]."""
    return np.stack([rho, rho * u, p / (GAMMA - 1.0) + 0.5 * rho * u**2], axis=1)


def _euler_flux(rho, u, p):
    """(Euler flux, conserved state), each [B, 3, X], of primitive fields [B, X]."""
    energy = p / (GAMMA - 1.0) + 0.5 * rho * u**2
    flux = np.stack([rho * u, rho * u**2 + p, (energy + p) * u], axis=1)
    return flux, np.stack([rho, rho * u, energy], axis=1)


def hllc_flux(left: tuple, right: tuple) -> np.ndarray:
    """HLLC flux between primitive face states (rho, u, p) [B, X] -> [B, 3, X]."""
    (rl, ul, pl), (rr, ur, pr) = left, right
    cl, cr = np.sqrt(GAMMA * pl / rl), np.sqrt(GAMMA * pr / rr)
    sl, sr = np.minimum(ul - cl, ur - cr), np.maximum(ul + cl, ur + cr)
    s_star = (pr - pl + rl * ul * (sl - ul) - rr * ur * (sr - ur)) / (rl * (sl - ul) - rr * (sr - ur))
    flux_l, state_l = _euler_flux(rl, ul, pl)
    flux_r, state_r = _euler_flux(rr, ur, pr)

    def star(rho, u, p, s, state):
        factor = rho * (s - u) / (s - s_star)
        energy = state[:, 2] / rho + (s_star - u) * (s_star + p / (rho * (s - u)))
        return np.stack([factor, factor * s_star, factor * energy], axis=1)

    star_l = flux_l + sl[:, None] * (star(rl, ul, pl, sl, state_l) - state_l)
    star_r = flux_r + sr[:, None] * (star(rr, ur, pr, sr, state_r) - state_r)
    return np.where(
        (sl >= 0)[:, None],
        flux_l,
        np.where((s_star >= 0)[:, None], star_l, np.where((sr > 0)[:, None], star_r, flux_r)),
    )


def flux_divergence(state: np.ndarray, dx: float, viscosity: float) -> np.ndarray:
    """-(F_{i+1/2} - F_{i-1/2}) / dx for conserved [B, 3, X] on the periodic grid."""
    faces_left, faces_right = [], []
    for w in primitive(state):
        w_prev, w_next = np.roll(w, 1, axis=-1), np.roll(w, -1, axis=-1)
        slope = mc_slope(w_prev, w, w_next)
        faces_left.append(w + 0.5 * slope)  # left state of face i+1/2
        faces_right.append(np.roll(w - 0.5 * slope, -1, axis=-1))  # right state of face i+1/2
    flux = hllc_flux(tuple(faces_left), tuple(faces_right))
    if viscosity:
        _, u, _ = primitive(state)
        u_next = np.roll(u, -1, axis=-1)
        tau = viscosity * (u_next - u) / dx
        flux[:, 1] -= tau
        flux[:, 2] -= 0.5 * (u + u_next) * tau
    return -(flux - np.roll(flux, 1, axis=-1)) / dx


def stable_step(state: np.ndarray, dx: float, viscosity: float) -> float:
    """The largest dt allowed by the CFL number and the explicit viscous limit."""
    rho, u, p = primitive(state)
    dt = CFL * dx / float(np.max(np.abs(u) + np.sqrt(GAMMA * p / rho)))
    if viscosity:
        dt = min(dt, VISCOUS_SAFETY * float(rho.min()) * dx**2 / viscosity)
    return dt


def evolve(
    rho0: np.ndarray, u0: np.ndarray, p0: np.ndarray, eta: float, zeta: float, times: np.ndarray
) -> np.ndarray:
    """The states at ``times`` (increasing, times[0] the initial time) -> float64
    [B, T, 3, X], conserved variables (rho, rho u, E), from primitive fields [B, X].

    Raises:
        UPSError: density or pressure stopped being positive (the solver failed).
    """
    dx = 1.0 / rho0.shape[-1]
    viscosity = 4.0 / 3.0 * eta + zeta
    state = conserved(rho0, u0, p0)
    frames = np.empty((state.shape[0], len(times), *state.shape[1:]))
    frames[:, 0] = state
    t = times[0]
    for j, target in enumerate(times[1:], start=1):
        while t < target - 1e-12 * max(1.0, abs(target)):
            dt = min(stable_step(state, dx, viscosity), target - t)
            stage = state + dt * flux_divergence(state, dx, viscosity)
            state = 0.5 * (state + stage + dt * flux_divergence(stage, dx, viscosity))
            t += dt
            rho, _, p = primitive(state)
            if not (np.isfinite(state).all() and rho.min() > 0 and p.min() > 0):
                raise UPSError(
                    f"cfd1d: density or pressure lost positivity at t={t:.4g}; lower the "
                    f"initial amplitude or raise nx."
                )
        frames[:, j] = state
    return frames


def initial_fields(rng: np.random.Generator, n: int, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Random (rho0, u0, p0), each [n, X]: sine series divided by their bound (|w| <= 1), then offset."""
    shapes = []
    for _ in range(3):
        modes = draw_sine_modes(rng, n)
        shapes.append(modes.evaluate(x) / modes.bound()[:, None])
    w_rho, w_p, w_u = shapes
    return 1.0 + AMPLITUDE * w_rho, AMPLITUDE * w_u, 1.0 + AMPLITUDE * w_p


def to_variables(frames: np.ndarray) -> np.ndarray:
    """Conserved frames [B, T, 3, X] -> (density, pressure, Vx) [B, T, X, 3]."""
    b, t, _, x = frames.shape
    rho, u, p = primitive(frames.reshape(b * t, 3, x))
    return np.stack([rho, p, u], axis=-1).reshape(b, t, x, 3)


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n trajectories of (density, pressure, Vx), [n, nt, nx, 3], at nx cell centres and nt
    times in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = cell_centres(nx)
    rho0, u0, p0 = initial_fields(rng, n, x)
    t = np.linspace(0.0, T_FINAL, nt)
    out = fill_in_chunks(
        np.empty((n, nt, nx, 3), dtype=np.float32),
        CHUNK,
        "cfd1d",
        progress,
        lambda rows: to_variables(evolve(rho0[rows], u0[rows], p0[rows], params["eta"], params["zeta"], t)),
    )
    return SolveResult(solution=out, coords={"x": x, "t": t}, channels=VARIABLES)


GENERATOR = Generator(
    name="cfd1d",
    description=(
        "1D compressible Navier-Stokes (density, pressure, Vx; gamma 5/3), x in [0,1) periodic, t in [0,1]"
    ),
    default_n=128,
    default_nx=256,
    default_nt=201,  # frames 0.005 apart: persistence's one-step nRMSE is 0.033 (docs/data.md)
    default_params={"eta": 0.01, "zeta": 0.01},
    file_name=lambda p: (
        f"1D_CFD_Rand_Eta{pdebench_number(p['eta'])}_Zeta{pdebench_number(p['zeta'])}_periodic_Train.hdf5"
    ),
    solve=solve,
    positive_params=frozenset({"eta", "zeta"}),
    min_nx=16,
    periodic=True,
    pdebench_layout="cfd",
)
