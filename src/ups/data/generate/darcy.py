"""2D steady Darcy flow -div(a grad u) = beta on the unit square, u = 0 on the boundary.

Coefficient: a = A_HIGH where a periodic Gaussian random field g ~ N(0, (-Lap + TAU^2)^-ALPHA)
(zero mean, sampled by FFT on the nx x nx cell centres) is >= 0, else A_LOW; so a takes
exactly the values {1.0, 0.1} (the thresholded-GRF construction of the FNO/PDEBench data).

Discretisation: cell-centred finite volumes on nx x nx square cells of side h = 1/nx. The
flux through an interior face is a_f (u_P - u_N) with the harmonic mean
a_f = 2 a_P a_N / (a_P + a_N); through a boundary face it is a_P (u_P - 0) / (h/2) * h =
2 a_P u_P (the Dirichlet value sits half a cell away). Summing the outgoing fluxes of a
cell gives the symmetric positive definite system A u = beta h^2 1, solved by SuperLU.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ups.data.generate.spec import (
    Generator,
    SolveResult,
    cell_centres,
    chunks,
    pdebench_number,
    progress_bar,
)

A_HIGH = 1.0
A_LOW = 0.1
TAU = 3.0
ALPHA = 2.0
CHUNK = 32


def random_coefficient(rng: np.random.Generator, n: int, nx: int) -> np.ndarray:
    """n piecewise-constant coefficients a in {A_LOW, A_HIGH}, float64 [n, nx, nx]."""
    m = np.fft.fftfreq(nx, d=1.0 / nx)
    k2 = (2 * np.pi) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    amplitude = (k2 + TAU**2) ** (-ALPHA / 2)
    amplitude[0, 0] = 0.0
    noise = rng.standard_normal((n, nx, nx))
    field = np.fft.ifft2(np.fft.fft2(noise) * amplitude).real
    return np.where(field >= 0.0, A_HIGH, A_LOW)


def darcy_operator(a: np.ndarray, beta: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """The finite-volume system A u = b for one coefficient a [X, Y].

    Unknowns are the cell values u[i, j] flattened in C order (index i * Y + j).
    Returns A [X*Y, X*Y] (sparse, symmetric positive definite) and b [X*Y].
    """
    nx, ny = a.shape
    index = np.arange(nx * ny).reshape(nx, ny)
    diagonal = np.zeros((nx, ny))
    rows, cols, vals = [], [], []
    for axis in (0, 1):  # views with ``axis`` first: the faces between neighbours along it
        a_ax, diagonal_ax, index_ax = (np.moveaxis(x, axis, 0) for x in (a, diagonal, index))
        face = 2 * a_ax[:-1] * a_ax[1:] / (a_ax[:-1] + a_ax[1:])
        diagonal_ax[:-1] += face
        diagonal_ax[1:] += face
        for p, q in ((index_ax[:-1], index_ax[1:]), (index_ax[1:], index_ax[:-1])):
            rows.append(p.ravel())
            cols.append(q.ravel())
            vals.append(-face.ravel())
        diagonal_ax[0] += 2 * a_ax[0]  # the boundary faces
        diagonal_ax[-1] += 2 * a_ax[-1]
    rows.append(index.ravel())
    cols.append(index.ravel())
    vals.append(diagonal.ravel())
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nx * ny, nx * ny)
    )
    rhs = np.full(nx * ny, beta / (nx * ny))
    return matrix, rhs


def solve_pressure(a: np.ndarray, beta: float) -> np.ndarray:
    """Solution u [X, Y] (float64) of the finite-volume Darcy system for coefficient a [X, Y]."""
    matrix, rhs = darcy_operator(a, beta)
    return spla.splu(matrix.tocsc()).solve(rhs).reshape(a.shape)


def solve(n: int, nx: int, nt: int, seed: int, params: dict, progress: bool) -> SolveResult:
    """n coefficient/solution pairs: coefficient [n, nx, nx], solution [n, 1, nx, nx]."""
    rng = np.random.default_rng(seed)
    coefficient = np.empty((n, nx, nx), dtype=np.float32)
    solution = np.empty((n, 1, nx, nx), dtype=np.float32)
    with progress_bar(n, "darcy2d", progress) as bar:
        for rows in chunks(np.arange(n), CHUNK):
            a = random_coefficient(rng, len(rows), nx)
            coefficient[rows] = a
            for i, sample in enumerate(rows):
                solution[sample, 0] = solve_pressure(a[i], params["beta"])
                bar.update(1)
    x = cell_centres(nx)
    return SolveResult(solution=solution, coefficient=coefficient, coords={"x": x, "y": x.copy()})


GENERATOR = Generator(
    name="darcy2d",
    description="2D steady Darcy -div(a*grad u) = beta on [0,1]^2, u = 0 on the boundary, a in {1, 0.1}",
    default_n=128,
    default_nx=64,
    default_nt=1,
    default_params={"beta": 1.0},
    file_name=lambda p: f"2D_DarcyFlow_beta{pdebench_number(p['beta'])}_Train.hdf5",
    solve=solve,
    positive_params=frozenset({"beta"}),
    steady=True,
    pdebench_layout="darcy",
    transpose_symmetric=True,
)
