"""PDEBench's compressible CFD (1D/2D/3D) and incompressible Navier-Stokes layouts, the
sample cap and PDEBench's split, on small hand-built files."""

import h5py
import numpy as np
import pytest
import yaml

from ups.data.pdebench import PDEBenchFile
from ups.data.splits import split_trajectories
from ups.data.summary import load_config_tasks, summary_table
from ups.errors import DataError, UPSError
from ups.resolve import load_config


@pytest.mark.parametrize(
    "shape, names",
    [
        ((6, 5, 16), ("density", "pressure", "Vx")),
        ((6, 5, 8, 6), ("density", "pressure", "Vx", "Vy")),
        ((6, 5, 4, 6, 8), ("density", "pressure", "Vx", "Vy", "Vz")),
    ],
)
def test_cfd_variables_are_channels_in_order(tmp_path, pdebench_writers, shape, names):
    w = pdebench_writers.cfd(
        tmp_path / f"{len(shape) - 2}D_CFD_Rand_M0.1_Eta0.01_Zeta0.1_periodic_Train.hdf5", shape
    )
    f = PDEBenchFile(w.path)
    info = f.info
    assert (info.layout, info.kind, info.n_samples, info.n_times) == ("cfd", "transient", 6, 5)
    assert info.spatial_shape == shape[2:] and info.channel_names == names and info.n_channels == len(names)
    assert info.params == pytest.approx({"m": 0.1, "eta": 0.01, "zeta": 0.1, "periodic": 1.0})
    trajectory = f.trajectory(3)
    assert trajectory.shape == (5, *shape[2:], len(names))
    for c, name in enumerate(names):
        np.testing.assert_array_equal(trajectory[..., c], w.arrays[name][3])
    np.testing.assert_array_equal(f.times(), w.arrays["t-coordinate"][:5])  # T + 1 times stored
    coords = f.coordinates()
    assert coords.shape == (*shape[2:], len(shape) - 2)
    np.testing.assert_array_equal(coords[..., 0].reshape(shape[2], -1)[:, 0], w.arrays["x-coordinate"])
    if len(shape) == 5:
        np.testing.assert_array_equal(coords[0, 0, :, 2], w.arrays["z-coordinate"])


def test_cfd_downsampled_and_frames(tmp_path, pdebench_writers):
    w = pdebench_writers.cfd(tmp_path / "2D_CFD_Rand_M1.0_Eta0.1_Zeta0.1_periodic_Train.hdf5", (4, 7, 8, 6))
    f = PDEBenchFile(w.path, reduced_resolution=2, reduced_resolution_t=3)
    assert f.info.spatial_shape == (4, 3) and f.info.n_times == 3
    np.testing.assert_array_equal(
        f.trajectory(1, slice(1, 3))[..., 1], w.arrays["pressure"][1, 3:7:3, ::2, ::2]
    )


def test_cfd_shape_mismatch_and_missing_variable(tmp_path, pdebench_writers):
    w = pdebench_writers.cfd(tmp_path / "a.hdf5", (4, 5, 8, 6), skip=("Vy",))
    with pytest.raises(DataError, match=r"no dataset 'Vy' \(layout 'cfd'\)"):
        PDEBenchFile(w.path)
    with h5py.File(w.path, "a") as h5:
        h5.create_dataset("Vy", data=np.zeros((4, 5, 8, 5), np.float32))
    with pytest.raises(DataError, match=r"'Vy' has shape \(4, 5, 8, 5\) but 'density' has \(4, 5, 8, 6\)"):
        PDEBenchFile(w.path)


def test_ns_incomp_channels_static_force_and_times(tmp_path, pdebench_writers):
    w = pdebench_writers.ns_incomp(tmp_path / "ns_incom_inhom_2d_512-0.h5")
    f = PDEBenchFile(w.path)
    info = f.info
    assert (info.layout, info.n_samples, info.n_times, info.spatial_shape) == ("ns_incomp", 6, 5, (12, 10))
    assert info.channel_names == ("Vx", "Vy", "particles") and info.static_channels == ("force_x", "force_y")
    trajectory = f.trajectory(2)
    np.testing.assert_array_equal(trajectory[..., :2], w.arrays["velocity"][2])
    np.testing.assert_array_equal(trajectory[..., 2:], w.arrays["particles"][2])
    np.testing.assert_array_equal(f.static_field(4), w.arrays["force"][4])
    np.testing.assert_array_equal(f.times(), w.arrays["t"][0])
    assert any(
        "uniform cell centres" in note for note in info.notes
    )  # PDEBench's NS files have no coordinates
    assert f.data_keys(2) == ("velocity/particles[2]",)


def test_ns_incomp_without_force_has_no_static_field(tmp_path, pdebench_writers):
    f = PDEBenchFile(pdebench_writers.ns_incomp(tmp_path / "ns.h5", force=False).path)
    assert f.info.static_channels == () and f.static_field(0) is None


def test_ns_incomp_times_must_agree(tmp_path, pdebench_writers):
    times = np.tile(np.linspace(0.0, 0.5, 5, dtype=np.float32), (6, 1))
    times[3] *= 2
    with pytest.raises(DataError, match="'t' differs between samples \\(sample 3"):
        PDEBenchFile(pdebench_writers.ns_incomp(tmp_path / "ns.h5", times=times).path)


def test_unknown_file_names_every_layout(tmp_path):
    with h5py.File(tmp_path / "odd.h5", "w") as h5:
        h5.create_dataset("stuff", data=np.zeros(3))
    with pytest.raises(DataError, match="cannot tell the layout; top-level keys are \\[stuff\\]") as err:
        PDEBenchFile(tmp_path / "odd.h5")
    for layout in ("'tensor'", "'density'", "'velocity'", "groups '0000'"):
        assert layout in str(err.value)


@pytest.mark.parametrize("writer", ["single", "multigroup", "cfd"])
def test_max_samples_keeps_the_first_in_file_order(tmp_path, pdebench_writers, writer):
    w = getattr(pdebench_writers, writer)(tmp_path / "f.h5")
    full, capped = PDEBenchFile(w.path), PDEBenchFile(w.path, max_samples=4)
    assert capped.info.n_samples == 4
    assert f"max_samples=4: the first 4 of {full.info.n_samples} samples are used" in capped.info.notes
    np.testing.assert_array_equal(capped.trajectory(3), full.trajectory(3))
    with pytest.raises(IndexError):
        capped.trajectory(4)
    assert PDEBenchFile(w.path, max_samples=1000).info.n_samples == full.info.n_samples
    with pytest.raises(DataError, match="max_samples=0 must be an integer >= 1"):
        PDEBenchFile(w.path, max_samples=0)
    assert capped.reopened(reduced_resolution=2).info.n_samples == 4


def test_pdebench_split_takes_the_first_tenth_as_test():
    split = split_trajectories(100, (0.8, 0.1, 0.1), seed=3, task_name="t", mode="pdebench")
    assert split.test == tuple(range(10))
    assert (len(split.train), len(split.val)) == (80, 10)
    assert not set(split.train) & set(split.val) and not set(split.train + split.val) & set(split.test)
    other = split_trajectories(100, (0.8, 0.1, 0.1), seed=4, task_name="t", mode="pdebench")
    assert other.test == split.test and other.val != split.val  # the seed draws val and train only


def test_pdebench_split_of_a_multigroup_file_takes_the_last():
    split = split_trajectories(25, (0.8, 0.1, 0.1), seed=0, task_name="t", mode="pdebench", test_at_end=True)
    assert split.test == tuple(range(22, 25))  # PDEBench: data_list[int(25 * 0.9):]
    assert len(split.train) + len(split.val) == 22


def test_seeded_split_unchanged_by_the_mode_argument():
    assert split_trajectories(57, seed=2, task_name="x") == split_trajectories(
        57, seed=2, task_name="x", mode="seeded"
    )
    with pytest.raises(DataError, match="split mode 'random' is unknown"):
        split_trajectories(57, mode="random")


def _config(tmp_path, path, **data):
    tree = {
        "paths": {"data_dir": str(tmp_path), "runs_dir": str(tmp_path / "runs")},
        "data": {"tasks": [{"name": "flow", "path": path.name}], **data},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    return load_config(tmp_path / "config.yaml")


def test_config_split_mode_and_max_samples_reach_the_tasks(tmp_path, pdebench_writers):
    w = pdebench_writers.cfd(tmp_path / "1D_CFD_Rand_Eta0.01_Zeta0.01_periodic_Train.hdf5", (40, 5, 16))
    (task,) = load_config_tasks(_config(tmp_path, w.path, max_samples=30, split={"mode": "pdebench"}))
    assert task.info.n_samples == 30 and task.split.test == (0, 1, 2)
    assert task.normalizer.mean.shape == (3,)  # one statistic per variable
    text = summary_table([task])
    assert "channels density, pressure, Vx" in text and "the first 30 of 40 samples" in text


def test_3d_files_summarise_but_do_not_train(tmp_path, pdebench_writers):
    w = pdebench_writers.cfd(
        tmp_path / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5", (12, 5, 4, 4, 4)
    )
    cfg = _config(tmp_path, w.path)
    (task,) = load_config_tasks(cfg)
    assert "on 4 x 4 x 4, channels density, pressure, Vx, Vy, Vz" in summary_table([task])
    with pytest.raises(UPSError, match="task 'flow' .* is on a 3D grid 4x4x4: .* does not train on them"):
        load_config(tmp_path / "config.yaml", stages=["autoencoder"])


def test_heat2d_regression_file_is_an_exact_heat_solution(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from heat2d import DIFFUSIVITY, heat2d_fields, write_heat2d

    fields, x, t = heat2d_fields(n=3, nx=16, nt=5)
    # each Fourier mode of channel c decays by exp(-D_c (2 pi)^2 |k|^2 dt) per step, exactly
    spectrum = np.fft.fft2(fields, axes=(2, 3))
    k = np.fft.fftfreq(16, 1.0 / 16)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    for c, diffusivity in enumerate(DIFFUSIVITY):
        expected = (
            spectrum[:, :1, ..., c] * np.exp(-diffusivity * (2 * np.pi) ** 2 * k2 * t[:, None, None])[None]
        )
        np.testing.assert_allclose(spectrum[..., c], expected, atol=1e-9)
    f = PDEBenchFile(write_heat2d(tmp_path / "2D_heat_periodic.h5", n=3, nx=16, nt=5))
    assert (f.info.layout, f.info.spatial_shape, f.info.n_channels, f.info.n_times) == (
        "multigroup",
        (16, 16),
        2,
        5,
    )
    fields, _, _ = heat2d_fields()
    step = np.sqrt(((fields[:, 1:] - fields[:, :-1]) ** 2).mean(axis=(2, 3)))
    persistence = (step / np.sqrt((fields[:, 1:] ** 2).mean(axis=(2, 3)))).mean()
    assert 0.02 <= persistence <= 0.05  # the default frames: a small, real step
