"""Built-in dataset generators: solver accuracy, HDF5 layouts, atomic and idempotent writes."""

from __future__ import annotations

import dataclasses
import hashlib

import h5py
import numpy as np
import pytest

from ups.data.generate import (
    GENERATORS,
    advection,
    burgers,
    darcy,
    generate_dataset,
    hdf5_writer,
    reaction_diffusion,
)
from ups.data.generate.initial_conditions import SineModes, draw_sine_modes
from ups.data.generate.spec import cell_centres
from ups.errors import UPSError

SMALL = {"n": 3, "nx": 16, "nt": 5}
FAST_PARAMS = {
    "burgers1d": {"nu": 0.1},
    "advection1d": {"beta": 0.4},
    "reaction_diffusion1d": {"nu": 0.5, "rho": 1.0},
    "darcy2d": {"beta": 1.0},
    "cfd1d": {"eta": 0.01, "zeta": 0.01},
    "diffusion_reaction2d": {"du": 1e-3, "dv": 5e-3, "k": 5e-3},
}


def small_run(task, out_dir, **kwargs):
    args = {**SMALL, "params": FAST_PARAMS[task], "progress": False}
    if GENERATORS[task].steady:
        args.pop("nt")
    return generate_dataset(task, out_dir, **{**args, **kwargs})


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- solvers ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.4, -1.3, 2.75])
def test_advection_equals_exactly_shifted_initial_profile(beta):
    n, nx, nt, seed = 5, 64, 21, 7
    result = advection.solve(n, nx, nt, seed, {"beta": beta}, progress=False)
    modes = draw_sine_modes(np.random.default_rng(seed), n)
    x, t = result.coords["x"], result.coords["t"]
    expected = modes.evaluate(x[None, :] - beta * t[:, None])  # sin is 1-periodic in x
    assert np.abs(result.solution - expected).max() < 1e-5


def test_burgers_conserves_mass_in_every_stored_frame():
    result = burgers.solve(6, 64, 21, 3, {"nu": 0.01}, progress=False)
    means = result.solution.astype(np.float64).mean(axis=-1)  # [N, T]
    assert np.abs(means - means[:, :1]).max() < 1e-6
    assert np.abs(result.solution[:, -1] - result.solution[:, 0]).max() > 0.1  # it did evolve


def test_burgers_converges_under_grid_refinement():
    """Refine the fine grid N and the step dt = CFL dx / |u|max together; compare the
    frames at 64 cell centres up to t=1 (nu=0.02, shock forms) with N=2048.

    Observed max errors for N = 64, 128, 256, 512: 1.6e-5, 1.4e-7, 8.9e-9, 5.5e-10, i.e.
    per-doubling error factors 113, 16.1, 16.1: spectral convergence in space until the
    4th-order ETDRK4 time error (factor 2^4 = 16 per halving of dt) dominates.
    """
    modes = SineModes(np.array([[1, 3]]), np.array([[1.0, 0.5]]), np.array([[0.3, 1.1]]))
    nu, times, nx = 0.02, np.linspace(0.0, 1.0, 5), 64

    def frames(n_fine):
        dt_max = burgers.CFL / (n_fine * modes.bound().max())
        return burgers.evolve(modes.evaluate(cell_centres(n_fine)), nu, times, dt_max, nx)

    reference = frames(2048)
    errors = np.array([np.abs(frames(n) - reference).max() for n in (64, 128, 256, 512)])
    factors = errors[:-1] / errors[1:]
    assert factors[0] > 50  # spectral accuracy in space
    assert np.all(factors[1:] > 12)  # 4th order in time: ideal 16
    assert errors[-1] < 2e-9


@pytest.mark.parametrize("nu, rho", [(0.5, 1.0), (0.5, 10.0), (5.0, 10.0), (0.01, 10.0), (2.0, 5.0)])
def test_fisher_kpp_stays_in_unit_interval(nu, rho):
    result = reaction_diffusion.solve(8, 64, 11, 1, {"nu": nu, "rho": rho}, progress=False)
    u = result.solution
    assert u[:, 0].min() == 0.0 and u[:, 0].max() == 1.0  # bounds are active at t=0
    assert u.min() >= 0.0 and u.max() <= 1.0
    raw = reaction_diffusion.evolve(u[:, 0].astype(np.float64), nu, rho, result.coords["t"], dt_max=0.05)
    assert raw.min() >= 0.0 and raw.max() <= 1.0 + 1e-14  # even with huge steps


def test_fisher_kpp_splitting_is_second_order_in_time():
    """Errors against dt=1e-5 for dt = 4e-3, 2e-3, 1e-3 (nu=0.5, rho=10): observed 4.7e-4,
    1.3e-4, 3.3e-5, i.e. factors 3.5 and 3.9 per halving (order 1.8-2.0)."""
    modes = draw_sine_modes(np.random.default_rng(0), 4)
    u0 = reaction_diffusion.normalised_initial_condition(modes.evaluate(cell_centres(64)))
    times = np.linspace(0.0, 0.2, 5)
    reference = reaction_diffusion.evolve(u0, 0.5, 10.0, times, dt_max=1e-5)
    errors = np.array(
        [
            np.abs(reaction_diffusion.evolve(u0, 0.5, 10.0, times, dt_max=dt) - reference).max()
            for dt in (4e-3, 2e-3, 1e-3)
        ]
    )
    assert np.all(errors[:-1] / errors[1:] > 3.0)


def test_darcy_satisfies_its_discrete_equation():
    coefficient = darcy.random_coefficient(np.random.default_rng(4), 3, 24)
    assert set(np.unique(coefficient)) == {darcy.A_LOW, darcy.A_HIGH}
    for a in coefficient:
        u = darcy.solve_pressure(a, 2.5)
        matrix, rhs = darcy.darcy_operator(a, 2.5)
        assert np.linalg.norm(matrix @ u.ravel() - rhs) / np.linalg.norm(rhs) < 1e-10
        assert u.min() > 0.0  # positive source, zero boundary: u > 0 inside


def test_darcy_stored_pairs_satisfy_the_equation_to_float32_precision():
    result = darcy.solve(3, 16, 1, 0, {"beta": 1.0}, progress=False)
    assert set(np.unique(result.coefficient)) == {np.float32(0.1), np.float32(1.0)}
    for a, u in zip(result.coefficient, result.solution[:, 0]):
        matrix, rhs = darcy.darcy_operator(a.astype(np.float64), 1.0)
        assert np.linalg.norm(matrix @ u.astype(np.float64).ravel() - rhs) / np.linalg.norm(rhs) < 1e-5


def test_darcy_boundary_stencil_and_second_order_torsion_limit():
    """a = 1, beta = 1 is the torsion problem; u(1/2, 1/2) -> 0.0736713532814 at O(h^2).
    A full-cell (instead of half-cell) Dirichlet distance would give an O(h) error."""
    matrix, rhs = darcy.darcy_operator(np.ones((3, 3)), 1.0)
    # corner cell: two interior faces (1 each) + two boundary faces (2 a / (h/2) * h = 2 each)
    assert matrix[0, 0] == 6.0 and matrix[4, 4] == 4.0 and rhs[0] == pytest.approx(1 / 9)
    errors = []
    for nx in (16, 32, 64):
        u = darcy.solve_pressure(np.ones((nx, nx)), 1.0)
        centre = u[nx // 2 - 1 : nx // 2 + 1, nx // 2 - 1 : nx // 2 + 1].mean()
        errors.append(abs(centre - 0.0736713532814))
    assert errors[-1] < 2e-5
    assert errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5


# --- files -----------------------------------------------------------------------------


def test_pdebench_1d_layout(tmp_path):
    result = small_run("burgers1d", tmp_path, seed=5)
    assert result.status == "written" and result.path.name == "1D_Burgers_Sols_Nu0.1.hdf5"
    with h5py.File(result.path, "r") as h5:
        assert set(h5.keys()) == {"tensor", "x-coordinate", "t-coordinate"}
        assert h5["tensor"].dtype == np.float32 and h5["tensor"].shape == (3, 5, 16)
        np.testing.assert_allclose(h5["x-coordinate"][:], (np.arange(16) + 0.5) / 16)
        np.testing.assert_allclose(h5["t-coordinate"][:], np.linspace(0, 2, 5))
        assert dict(h5.attrs) == {
            "ups_generator": "burgers1d",
            "ups_layout": "pdebench",
            "ups_seed": 5,
            "ups_n": 3,
            "ups_nx": 16,
            "ups_nt": 5,
            "ups_format_version": 2,
            "nu": 0.1,
        }
    assert result.shapes["tensor"] == (3, 5, 16)


def test_pdebench_darcy_layout(tmp_path):
    result = small_run("darcy2d", tmp_path)
    assert result.path.name == "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(result.path, "r") as h5:
        assert set(h5.keys()) == {"nu", "tensor", "x-coordinate", "y-coordinate"}
        assert h5["nu"].shape == (3, 16, 16) and h5["tensor"].shape == (3, 1, 16, 16)
        assert h5["nu"].dtype == np.float32 and h5["tensor"].dtype == np.float32
        np.testing.assert_allclose(h5["y-coordinate"][:], (np.arange(16) + 0.5) / 16)
        assert h5.attrs["beta"] == 1.0 and h5.attrs["ups_nt"] == 1


@pytest.mark.parametrize(
    "task, params, name",
    [
        ("burgers1d", {"nu": 0.01}, "1D_Burgers_Sols_Nu0.01.hdf5"),
        ("burgers1d", {"nu": 0.001}, "1D_Burgers_Sols_Nu0.001.hdf5"),
        ("advection1d", {"beta": 0.4}, "1D_Advection_Sols_beta0.4.hdf5"),
        ("reaction_diffusion1d", {"nu": 0.5, "rho": 1.0}, "ReacDiff_Nu0.5_Rho1.0.hdf5"),
        ("reaction_diffusion1d", {"nu": 2, "rho": 10}, "ReacDiff_Nu2.0_Rho10.0.hdf5"),
        ("darcy2d", {"beta": 1.0}, "2D_DarcyFlow_beta1.0_Train.hdf5"),
        ("cfd1d", {"eta": 0.01, "zeta": 0.1}, "1D_CFD_Rand_Eta0.01_Zeta0.1_periodic_Train.hdf5"),
        ("cfd1d", {"eta": 1e-8, "zeta": 1e-8}, "1D_CFD_Rand_Eta1e-08_Zeta1e-08_periodic_Train.hdf5"),
        ("diffusion_reaction2d", {"du": 1e-3, "dv": 5e-3, "k": 5e-3}, "2D_diff-react_NA_NA.h5"),
    ],
)
def test_file_names_follow_pdebench(task, params, name):
    assert GENERATORS[task].file_name(params) == name


def test_multigroup_layout_holds_the_same_trajectories(tmp_path):
    single = small_run("reaction_diffusion1d", tmp_path)
    multi = small_run("reaction_diffusion1d", tmp_path, layout="multigroup")
    assert multi.path.name == "ReacDiff_Nu0.5_Rho1.0.h5"
    with h5py.File(single.path, "r") as ref, h5py.File(multi.path, "r") as h5:
        assert sorted(h5.keys()) == ["0000", "0001", "0002"]
        assert (h5.attrs["nu"], h5.attrs["rho"], h5.attrs["ups_layout"]) == (0.5, 1.0, "multigroup")
        for i, key in enumerate(sorted(h5.keys())):
            data = h5[f"{key}/data"]
            assert data.dtype == np.float32 and data.shape == (5, 16, 1)
            np.testing.assert_array_equal(data[..., 0], ref["tensor"][i])
            np.testing.assert_array_equal(h5[f"{key}/grid/x"][:], ref["x-coordinate"][:])
            np.testing.assert_array_equal(h5[f"{key}/grid/t"][:], ref["t-coordinate"][:])
    assert multi.shapes == {
        "groups": (3,),
        "0000/data": (5, 16, 1),
        "0000/grid/x": (16,),
        "0000/grid/t": (5,),
    }


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_same_seed_gives_identical_arrays_and_other_seed_differs(tmp_path, task):
    first = small_run(task, tmp_path / "a", seed=11)
    again = small_run(task, tmp_path / "b", seed=11)
    other = small_run(task, tmp_path / "c", seed=12)
    with h5py.File(first.path) as f1, h5py.File(again.path) as f2, h5py.File(other.path) as f3:
        keys = []
        f1.visititems(lambda key, item: keys.append(key) if isinstance(item, h5py.Dataset) else None)
        for key in keys:
            assert f1[key][()].tobytes() == f2[key][()].tobytes()
        data = next(key for key in ("tensor", "density", "0000/data") if key in f1)
        assert f1[data][()].tobytes() != f3[data][()].tobytes()


def test_rerun_with_same_settings_is_up_to_date_and_untouched(tmp_path):
    first = small_run("advection1d", tmp_path)
    before = first.path.stat()
    again = small_run("advection1d", tmp_path)
    after = first.path.stat()
    assert again.status == "up-to-date" and again.path == first.path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again.shapes == first.shapes


def test_other_settings_raise_and_keep_the_old_file(tmp_path):
    first = small_run("advection1d", tmp_path, seed=1)
    digest = file_digest(first.path)
    with pytest.raises(UPSError, match="overwrite") as err:
        small_run("advection1d", tmp_path, seed=2)
    assert "seed=1" in str(err.value) and "seed=2" in str(err.value)
    assert file_digest(first.path) == digest
    replaced = small_run("advection1d", tmp_path, seed=2, overwrite=True)
    assert replaced.status == "written"
    with h5py.File(replaced.path) as h5:
        assert h5.attrs["ups_seed"] == 2


def test_a_foreign_file_is_never_replaced_silently(tmp_path):
    target = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    target.write_bytes(b"not hdf5")
    with pytest.raises(UPSError, match="overwrite"):
        small_run("advection1d", tmp_path)
    assert target.read_bytes() == b"not hdf5"


def test_failing_solver_leaves_no_file(tmp_path, monkeypatch):
    def broken_solve(*args, **kwargs):
        raise RuntimeError("solver blew up")

    task = GENERATORS["advection1d"]
    monkeypatch.setitem(GENERATORS, "advection1d", dataclasses.replace(task, solve=broken_solve))
    with pytest.raises(RuntimeError, match="blew up"):
        small_run("advection1d", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    old = small_run("advection1d", tmp_path, seed=1)
    digest = file_digest(old.path)

    def interrupted(h5, result):
        h5.create_dataset("tensor", data=result.solution)
        raise KeyboardInterrupt

    monkeypatch.setitem(hdf5_writer.FORMAT_WRITERS, "single", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_run("advection1d", tmp_path, seed=2, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [old.path.name]
    assert file_digest(old.path) == digest


@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        ("burger1d", {}, "did you mean 'burgers1d'"),
        ("burgers1d", {"params": {"nuu": 0.1}}, "did you mean 'nu'"),
        ("burgers1d", {"params": {"nu": -0.1}}, "nu of burgers1d must be a positive"),
        ("burgers1d", {"params": {"nu": float("nan")}}, "must be a positive finite"),
        ("advection1d", {"params": {"beta": "fast"}}, "must be a finite number"),
        ("burgers1d", {"n": 0}, "n must be positive"),
        ("advection1d", {"nx": -4}, "nx must be >= 16"),
        ("advection1d", {"nt": 0}, "nt must be positive"),
        ("advection1d", {"nt": 1}, "nt must be >= 2"),
        ("advection1d", {"n": 2.5}, "n must be an integer"),
        ("advection1d", {"seed": -1}, "seed must be non-negative"),
        ("advection1d", {"layout": "pdebnch"}, "did you mean 'pdebench'"),
        ("darcy2d", {"layout": "multigroup"}, "darcy2d is steady"),
        ("darcy2d", {"nt": 10}, "no time axis"),
        ("burgers1d", {"params": {"nu": 1e-5}}, "resolve the viscous shock"),
    ],
)
def test_bad_arguments_raise_helpful_errors(tmp_path, task, kwargs, message):
    with pytest.raises(UPSError, match=f"(?i){message}"):
        generate_dataset(task, tmp_path, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "data"
    target.write_text("x")
    with pytest.raises(UPSError, match="is a file"):
        small_run("advection1d", target)
