"""Random band-limited initial conditions, as PDEBench draws them for its 1D tasks.

u0(x) = sum_k A_k sin(2 pi m_k x + phi_k) with m_k integer in [1, max_wavenumber],
A_k ~ U(0, 1), phi_k ~ U(0, 2 pi). Being trigonometric polynomials, they are exactly
representable on any grid with more than 2 * max_wavenumber points, so spectral solvers
start from the exact initial condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_MODES = 2
MAX_WAVENUMBER = 4


@dataclass(frozen=True)
class SineModes:
    """Sine-series coefficients of N initial conditions: each field [N, K]."""

    wavenumbers: np.ndarray
    amplitudes: np.ndarray
    phases: np.ndarray

    def __getitem__(self, rows) -> SineModes:
        return SineModes(self.wavenumbers[rows], self.amplitudes[rows], self.phases[rows])

    def __len__(self) -> int:
        return len(self.wavenumbers)

    def bound(self) -> np.ndarray:
        """An upper bound of max_x |u0(x)| per sample, [N]."""
        return np.abs(self.amplitudes).sum(axis=1)

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """u0 at ``points`` (any shape S, periodic with period 1) -> float64 [N, *S]."""
        points = np.asarray(points, dtype=np.float64)
        flat = points.reshape(1, 1, -1)
        angle = 2 * np.pi * self.wavenumbers[..., None] * flat + self.phases[..., None]
        values = np.einsum("nk,nkp->np", self.amplitudes, np.sin(angle))
        return values.reshape(len(self), *points.shape)


def draw_sine_modes(
    rng: np.random.Generator, n: int, n_modes: int = N_MODES, max_wavenumber: int = MAX_WAVENUMBER
) -> SineModes:
    """Draw n random sine series (the first draws a solver makes from its seeded rng)."""
    wavenumbers = rng.integers(1, max_wavenumber + 1, size=(n, n_modes))
    amplitudes = rng.uniform(0.0, 1.0, size=(n, n_modes))
    phases = rng.uniform(0.0, 2 * np.pi, size=(n, n_modes))
    return SineModes(wavenumbers, amplitudes, phases)
