"""The multi-channel built-in generators: 1D compressible Navier-Stokes (``cfd1d``, PDEBench's
1D CFD layout) and 2D FitzHugh-Nagumo diffusion-reaction (``diffusion_reaction2d``, PDEBench's
multi-group layout): conservation, convergence, and the files the readers see."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ups.data.generate import cfd, diffusion_reaction, generate_dataset
from ups.data.generate.spec import cell_centres
from ups.data.pdebench import PDEBenchFile

# --- cfd1d -----------------------------------------------------------------------------


def test_cfd_conserves_mass_momentum_and_energy():
    rng = np.random.default_rng(0)
    x = cell_centres(64)
    rho0, u0, p0 = cfd.initial_fields(rng, 4, x)
    frames = cfd.evolve(rho0, u0, p0, 0.01, 0.01, np.linspace(0.0, 0.5, 6))  # [B, T, 3, X]
    totals = frames.sum(axis=-1)
    np.testing.assert_allclose(totals, np.broadcast_to(totals[:, :1], totals.shape), rtol=1e-12, atol=1e-12)
    assert np.abs(frames[:, -1] - frames[:, 0]).max() > 0.05  # it did evolve


def test_cfd_advects_a_density_wave_at_second_order():
    """rho = 1 + 0.2 sin(2 pi x), u = 1, p = 1 is an exact inviscid solution: rho(x - t)."""
    errors = []
    for nx in (32, 64, 128):
        x = cell_centres(nx)
        rho0 = 1.0 + 0.2 * np.sin(2 * np.pi * x)[None]
        frames = cfd.evolve(rho0, np.ones_like(rho0), np.ones_like(rho0), 0.0, 0.0, np.array([0.0, 0.5]))
        exact = 1.0 + 0.2 * np.sin(2 * np.pi * (x - 0.5))
        errors.append(np.abs(frames[0, -1, 0] - exact).mean())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-4 and orders.min() > 1.6, (errors, orders)


def test_cfd_viscosity_damps_a_standing_sound_wave_at_its_rate():
    """A small velocity wave u = a sin(2 pi x) on rho = p = 1 is a damped standing sound wave:
    U'' + nu k^2 U' + c^2 k^2 U = 0 (nu = 4/3 eta + zeta, c^2 = gamma). After half a period,
    t = pi / omega', the pressure wave is zero and the energy is a^2 / 4 exp(-nu k^2 t)."""
    x = cell_centres(256)
    a, eta, zeta = 1e-4, 0.02, 0.01
    rate = (4.0 / 3.0 * eta + zeta) * (2 * np.pi) ** 2
    t = np.pi / np.sqrt(cfd.GAMMA * (2 * np.pi) ** 2 - (rate / 2) ** 2)
    ones = np.ones((1, 256))
    frames = cfd.evolve(ones, a * np.sin(2 * np.pi * x)[None], ones, eta, zeta, np.array([0.0, t]))
    rho, u, p = cfd.primitive(frames[:, -1])
    energy = (0.5 * u**2 + (p - 1.0) ** 2 / (2 * cfd.GAMMA)).mean()  # acoustic energy, rho ~ 1
    assert energy == pytest.approx(0.25 * a**2 * np.exp(-rate * t), rel=0.02)
    assert np.abs(p - 1.0).max() < 0.05 * a


def test_cfd1d_file_is_pdebench_1d_cfd(tmp_path):
    result = generate_dataset("cfd1d", tmp_path, n=3, nx=32, nt=6, seed=2, progress=False)
    assert result.path.name == "1D_CFD_Rand_Eta0.01_Zeta0.01_periodic_Train.hdf5"
    with h5py.File(result.path, "r") as h5:
        assert {"density", "pressure", "Vx", "x-coordinate", "t-coordinate"} == set(h5.keys())
        assert h5["density"].shape == (3, 6, 32) and h5["t-coordinate"].shape == (7,)  # PDEBench's T + 1
    f = PDEBenchFile(result.path)
    assert f.info.layout == "cfd" and f.info.channel_names == ("density", "pressure", "Vx")
    assert f.info.params == pytest.approx({"eta": 0.01, "zeta": 0.01, "periodic": 1.0})
    trajectory = f.trajectory(1)
    assert trajectory[..., 0].min() > 0 and trajectory[..., 1].min() > 0
    np.testing.assert_allclose(f.times(), np.linspace(0, 1, 6), atol=1e-7)


# --- diffusion_reaction2d ---------------------------------------------------------------


def test_no_flux_laplacian_has_the_cosine_modes_as_eigenvectors_and_conserves_sums():
    nx = 16
    x = diffusion_reaction.cell_centres(nx)
    dx = 2.0 / nx
    mode = np.outer(np.cos(3 * np.pi * (x + 1) / 2), np.cos(1 * np.pi * (x + 1) / 2))[None]
    eigenvalue = -4 / dx**2 * (np.sin(3 * np.pi * dx / 4) ** 2 + np.sin(1 * np.pi * dx / 4) ** 2)
    np.testing.assert_allclose(diffusion_reaction.laplacian(mode, dx), eigenvalue * mode, atol=1e-10)
    noise = np.random.default_rng(1).normal(size=(2, nx, nx))
    assert np.abs(diffusion_reaction.laplacian(noise, dx).sum(axis=(1, 2))).max() < 1e-9


def test_diffusion_reaction_rk4_is_fourth_order_in_time():
    u0, v0 = diffusion_reaction.initial_fields(
        np.random.default_rng(3), 2, diffusion_reaction.cell_centres(16)
    )
    params = {"du": 1e-3, "dv": 5e-3, "k": 5e-3}
    times = np.array([0.0, 1.0])
    final = [
        diffusion_reaction.evolve(u0, v0, params, times, dt_max=dt)[:, -1] for dt in (0.2, 0.1, 0.05, 0.025)
    ]
    errors = [np.abs(a - final[-1]).max() for a in final[:-1]]
    assert np.log2(errors[0] / errors[1]) > 3.5, errors


def test_diffusion_reaction2d_file_is_pdebench_multigroup(tmp_path):
    result = generate_dataset("diffusion_reaction2d", tmp_path, n=3, nx=8, nt=5, seed=4, progress=False)
    assert result.path.name == "2D_diff-react_NA_NA.h5"
    assert result.shapes["0000/data"] == (5, 8, 8, 2) and result.shapes["groups"] == (3,)
    f = PDEBenchFile(result.path)
    assert (f.info.layout, f.info.spatial_shape, f.info.n_channels) == ("multigroup", (8, 8), 2)
    assert f.info.params == pytest.approx({"du": 1e-3, "dv": 5e-3, "k": 5e-3})
    np.testing.assert_allclose(f.coordinates()[:, 0, 0], diffusion_reaction.cell_centres(8))
    trajectory = f.trajectory(2)
    assert np.abs(trajectory[0]).max() == pytest.approx(1.0)  # each initial field scaled to max 1
    assert np.abs(trajectory[-1] - trajectory[0]).max() > 0.05
