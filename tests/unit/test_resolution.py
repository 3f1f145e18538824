import h5py
import numpy as np
import pytest

from ups.config.schema import TaskConfig
from ups.data.generate import generate_dataset
from ups.data.generate.burgers import MAX_WAVENUMBER as BURGERS_MAX_WAVENUMBER
from ups.data.generate.initial_conditions import draw_sine_modes
from ups.data.tasks import load_tasks
from ups.errors import DataError
from ups.eval.resolution import reference_at_resolution

N, NT, SEED = 4, 11, 3


def cell_centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def low_modes(u: np.ndarray, k: int = 4) -> np.ndarray:
    """Fourier coefficients c_m (m = 0..k) of the function sampled at the cell centres of its
    last axis: u [..., X] -> complex [..., k+1]; the half-cell phase is undone so grids of
    any size give the same c_m for a band-limited function."""
    nx = u.shape[-1]
    m = np.arange(k + 1)
    return np.fft.rfft(u.astype(np.float64), axis=-1)[..., : k + 1] / nx * np.exp(-1j * np.pi * m / nx)


def load(path, rt=1):
    spec = TaskConfig("task", str(path))
    return load_tasks([spec], path.parent, reduced_resolution_t=rt, split_fractions=(0.5, 0.25, 0.25))[0]


def generated(task, folder, **kwargs):
    args = dict(n=N, nt=NT, seed=SEED, progress=False)
    return generate_dataset(task, folder, **{**args, **kwargs}).path


def trajectories(file) -> np.ndarray:
    return np.stack([file.trajectory(i)[..., 0] for i in range(file.info.n_samples)])


def test_downsampled_file_when_a_factor_reaches_n(tmp_path):
    task = load(generated("burgers1d", tmp_path / "data", nx=64), rt=2)
    ref = reference_at_resolution(task, 32, tmp_path / "work")
    assert ref.path == task.file.path and ref.reduced_resolution == 2
    assert ref.reduced_resolution_t == 2 and ref.info.n_times == task.info.n_times == 6
    np.testing.assert_allclose(ref.coordinates()[:, 0], cell_centres(64)[::2], rtol=1e-6)
    np.testing.assert_array_equal(trajectories(ref), trajectories(task.file)[..., ::2])
    assert not (tmp_path / "work").exists()
    assert reference_at_resolution(task, 64, tmp_path / "work").reduced_resolution == 1


def test_downsampled_2d_file_any_source(tmp_path, pdebench_writers):
    written = pdebench_writers.darcy(tmp_path / "field.hdf5", n=4, nx=16, ny=16)
    ref = reference_at_resolution(load(written.path), 8, tmp_path / "work")
    assert ref.reduced_resolution == 2 and ref.info.spatial_shape == (8, 8)
    np.testing.assert_array_equal(ref.steady_pair(1)[1][..., 0], written.arrays["tensor"][1, 0, ::2, ::2])


@pytest.mark.parametrize("generator, layout", [("burgers1d", "pdebench"), ("advection1d", "multigroup")])
def test_regenerated_builtin_has_the_same_trajectories(tmp_path, generator, layout):
    task = load(generated(generator, tmp_path / "data", nx=32, layout=layout), rt=2)
    ref = reference_at_resolution(task, 64, tmp_path / "work")
    assert tmp_path / "work" in ref.path.parents and ref.layout == task.file.layout
    np.testing.assert_allclose(ref.coordinates()[:, 0], cell_centres(64), rtol=1e-6)
    assert ref.info.n_samples == task.info.n_samples == N
    assert ref.info.n_times == task.info.n_times == 6
    np.testing.assert_array_equal(ref.times(), task.file.times())
    coarse, fine = low_modes(trajectories(task.file)), low_modes(trajectories(ref))
    # Measured ~5e-8 of the largest low mode (float32 rounding), at t = 0 and at the end.
    for frame in (0, -1):
        scale = np.abs(fine[:, frame]).max(axis=-1, keepdims=True)
        assert np.all(np.abs(coarse[:, frame] - fine[:, frame]) <= 1e-6 * scale)


def test_regenerated_fields_are_the_initial_condition_and_exact_advection(tmp_path):
    burgers = reference_at_resolution(load(generated("burgers1d", tmp_path / "b", nx=32)), 48, tmp_path / "w")
    modes = draw_sine_modes(np.random.default_rng(SEED), N, max_wavenumber=BURGERS_MAX_WAVENUMBER)
    np.testing.assert_allclose(trajectories(burgers)[:, 0], modes.evaluate(cell_centres(48)), atol=1e-6)

    advection = reference_at_resolution(
        load(generated("advection1d", tmp_path / "a", nx=32)), 64, tmp_path / "w"
    )
    modes = draw_sine_modes(np.random.default_rng(SEED), N)
    beta = advection.info.params["beta"]
    exact = np.stack([modes.evaluate((cell_centres(64) - beta * t) % 1.0) for t in advection.times()], axis=1)
    np.testing.assert_allclose(trajectories(advection), exact, atol=1e-6)


def test_second_call_reuses_the_regenerated_file(tmp_path):
    task = load(generated("advection1d", tmp_path / "data", nx=32))
    first = reference_at_resolution(task, 48, tmp_path / "work")
    mtime = first.path.stat().st_mtime_ns
    second = reference_at_resolution(task, 48, tmp_path / "work")
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime


def test_unreachable_resolution_of_a_foreign_file(tmp_path, pdebench_writers):
    written = pdebench_writers.single(tmp_path / "1D_Other_Sols.hdf5", (4, 6, 16))
    with pytest.raises(DataError, match=r"grids of 16, 8, 6, 4, .*not 10 points.*built-in transient"):
        reference_at_resolution(load(written.path), 10, tmp_path / "work")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "generator, nx, match",
    [
        ("darcy2d", 8, "coefficient field"),
        ("reaction_diffusion1d", 16, "min and max"),
    ],
)
def test_builtin_data_that_changes_with_nx_is_refused(tmp_path, generator, nx, match):
    path = generate_dataset(
        generator, tmp_path / "data", n=2, nx=nx, nt=None if generator == "darcy2d" else 3, progress=False
    ).path
    with pytest.raises(DataError, match=f"{generator}.*{match}"):
        reference_at_resolution(load(path), 2 * nx - 2, tmp_path / "work")


def test_stale_or_too_coarse_builtin_is_refused(tmp_path):
    path = generated("burgers1d", tmp_path / "data", nx=32)
    task = load(path)
    with pytest.raises(DataError, match="at least 16 points"):
        reference_at_resolution(task, 12, tmp_path / "work")
    task.file.close()
    with h5py.File(path, "a") as h5:
        h5.attrs["ups_format_version"] = 1
    with pytest.raises(DataError, match="format version 1"):
        reference_at_resolution(task, 48, tmp_path / "work")
    with pytest.raises(DataError, match="positive integer"):
        reference_at_resolution(task, 0, tmp_path / "work")
