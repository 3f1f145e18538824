import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ups.config.schema import TaskConfig
from ups.data.latent_pairs import WindowDataset
from ups.data.tasks import SteadyPairDataset, load_tasks, param_names
from ups.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_darcy  # noqa: E402


@pytest.fixture
def tasks(burgers_1d, reacdiff_attrs, darcy_2d, multigroup_2d, tmp_path):
    specs = [
        TaskConfig("burgers", burgers_1d.path.name),
        TaskConfig("reacdiff", str(reacdiff_attrs.path), params={"nu": 0.25}),
        TaskConfig("darcy", darcy_2d.path.name),
        TaskConfig("diffreact", multigroup_2d.path.name, layout="multigroup"),
    ]
    return load_tasks(specs, tmp_path, split_fractions=(0.6, 0.2, 0.2), seed=0)


def test_load_tasks_infos_splits_and_params(tasks):
    burgers, reacdiff, darcy, diffreact = tasks
    assert [t.name for t in tasks] == ["burgers", "reacdiff", "darcy", "diffreact"]
    assert reacdiff.info.params == {"nu": 0.25, "rho": 2.0, "k": 3.0}
    assert darcy.info.kind == "steady" and darcy.input_normalizer is not None
    assert burgers.input_normalizer is None
    assert (len(burgers.split.train), len(burgers.split.val), len(burgers.split.test)) == (6, 2, 2)
    assert burgers.split != reacdiff.split  # the task name is mixed into the seed
    assert param_names(tasks) == ["amp", "beta", "du", "k", "nu", "rho"]


def test_transient_normalizer_from_train_split(tasks, burgers_1d):
    burgers = tasks[0]
    train = burgers_1d.arrays["tensor"][list(burgers.split.train)].astype(np.float64)
    np.testing.assert_allclose(burgers.normalizer.mean, [train.mean()], rtol=1e-9)
    np.testing.assert_allclose(burgers.normalizer.std, [train.std()], rtol=1e-9)


def test_steady_normalizers_separate_for_input_and_solution(tasks, darcy_2d):
    darcy = tasks[2]
    train = list(darcy.split.train)
    a = darcy_2d.arrays["nu"][train].astype(np.float64)
    u = darcy_2d.arrays["tensor"][train].astype(np.float64)
    np.testing.assert_allclose(darcy.input_normalizer.mean, [a.mean()], rtol=1e-9)
    np.testing.assert_allclose(darcy.normalizer.mean, [u.mean()], rtol=1e-9)
    np.testing.assert_allclose(darcy.normalizer.std, [u.std()], rtol=1e-9)


def test_whole_trajectory_windows_items(tasks, burgers_1d, multigroup_2d):
    transient = [t for t in tasks if t.info.kind == "transient"]
    # one window of all 6 frames per trajectory
    ds = WindowDataset(transient, "val", horizon=5, stride=1, start=0)
    # darcy is steady and left out; 2 val trajectories each from the 3 transient tasks
    assert len(ds) == 6 and {ds[i]["task"] for i in range(len(ds))} == {"burgers", "reacdiff", "diffreact"}
    assert ds.param_order == ["amp", "du", "k", "nu", "rho"]
    item = ds[0]
    burgers = tasks[0]
    i = burgers.split.val[0]
    assert item["task"] == "burgers" and item["index"] == i
    expected = burgers.normalizer.normalize(burgers_1d.arrays["tensor"][i][..., None])
    torch.testing.assert_close(item["window"], torch.from_numpy(expected))
    assert item["window"].dtype == torch.float32 and item["window"].shape == (6, 16, 1)
    times = burgers_1d.arrays["t-coordinate"][:6]
    np.testing.assert_allclose(burgers.file.times(), times, rtol=1.3e-6)
    assert item["dt"].item() == pytest.approx(np.diff(times).mean(), rel=1e-6)
    assert item["coords"].shape == (16, 1)
    torch.testing.assert_close(item["params"], torch.tensor([0, 0, 0, 0.01, 0]))

    mg = ds[4]
    j = tasks[3].split.val[0]
    assert mg["task"] == "diffreact" and mg["window"].shape == (6, 16, 12, 2)
    torch.testing.assert_close(mg["params"], torch.tensor([float(j), 0.1, 0, 0, 0]))


def test_whole_trajectories_downsampled_through_dataloader(burgers_1d, tmp_path):
    (task,) = load_tasks(
        [TaskConfig("burgers", burgers_1d.path.name)],
        tmp_path,
        reduced_resolution=2,
        reduced_resolution_t=2,
        normalization="none",
    )
    ds = WindowDataset([task], "train", horizon=task.info.n_times - 1, stride=1, start=0)
    serial = next(iter(DataLoader(ds, batch_size=len(ds), num_workers=0)))
    parallel = torch.cat([b["window"] for b in DataLoader(ds, batch_size=2, num_workers=2)])
    torch.testing.assert_close(parallel, serial["window"], rtol=0, atol=0)
    expected = burgers_1d.arrays["tensor"][list(task.split.train)][:, ::2, ::2, None]
    torch.testing.assert_close(serial["window"], torch.from_numpy(expected))
    assert serial["index"].tolist() == list(task.split.train)


def test_steady_pair_dataset(tasks, darcy_2d):
    darcy = tasks[2]
    ds = SteadyPairDataset(tasks, split="test")
    assert len(ds) == 2 and [ds[k]["task"] for k in range(len(ds))] == ["darcy", "darcy"]
    item = ds[1]
    i = darcy.split.test[1]
    a = darcy.input_normalizer.normalize(darcy_2d.arrays["nu"][i][..., None])
    u = darcy.normalizer.normalize(darcy_2d.arrays["tensor"][i, 0][..., None])
    torch.testing.assert_close(item["input"], torch.from_numpy(a))
    torch.testing.assert_close(item["target"], torch.from_numpy(u))
    assert item["coords"].shape == (16, 12, 2) and item["index"] == i


def test_missing_builtin_file_suggests_generate(tmp_path):
    spec = TaskConfig("burgers", "1D_Burgers_Sols_Nu0.01.hdf5")
    with pytest.raises(DataError) as err:
        load_tasks([spec], tmp_path / "data")
    message = str(err.value)
    assert "task 'burgers'" in message
    assert str(tmp_path / "data" / "1D_Burgers_Sols_Nu0.01.hdf5") in message
    assert f"ups data generate burgers1d --out {tmp_path / 'data'} --param nu=0.01" in message


def test_missing_other_file_no_generate_hint(tmp_path):
    with pytest.raises(DataError, match=r"task 'kdv'.*my_kdv\.h5.*does not exist") as err:
        load_tasks([TaskConfig("kdv", "my_kdv.h5")], tmp_path)
    assert "ups data generate" not in str(err.value)


def test_duplicate_and_empty_task_lists(burgers_1d, tmp_path):
    spec = TaskConfig("burgers", burgers_1d.path.name)
    with pytest.raises(DataError, match="duplicate task names"):
        load_tasks([spec, spec], tmp_path)
    with pytest.raises(DataError, match="data.tasks is empty"):
        load_tasks([], tmp_path)


def test_fallback_val_warning_through_load_tasks(burgers_1d, tmp_path):
    with pytest.warns(UserWarning, match="task 'burgers'.*carved 1 of"):
        (task,) = load_tasks(
            [TaskConfig("burgers", burgers_1d.path.name)], tmp_path, split_fractions=(0.8, 0.0, 0.2)
        )
    assert len(task.split.val) == 1


def test_normalizer_state_restores(tasks):
    state = tasks[0].normalizer.to_dict()
    np.testing.assert_array_equal(np.asarray(state["mean"], dtype=np.float64), tasks[0].normalizer.mean)


@pytest.mark.parametrize("fixture", ["burgers_1d", "multigroup_2d", "darcy_2d"])
def test_nan_or_inf_in_any_split_is_refused_naming_file_key_sample_and_shape(tmp_path, request, fixture):
    """Every split is read for NaN or Inf when the task loads, before any training."""
    import h5py

    from ups.data.pdebench import PDEBenchFile

    written, bad = request.getfixturevalue(fixture), 7
    key = PDEBenchFile(written.path).data_keys(bad)[0]
    with h5py.File(written.path, "r+") as f:
        dataset = f[key.split("[")[0]] if "[" in key else f[key]
        values = dataset[bad] if "[" in key else dataset[...]
        values.flat[3] = np.inf if fixture == "multigroup_2d" else np.nan
        if "[" in key:
            dataset[bad] = values
        else:
            dataset[...] = values
    with pytest.raises(DataError) as error:
        load_tasks([TaskConfig("t", written.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2), seed=0)
    message = str(error.value)
    assert (
        str(written.path) in message
        and f"{key} (sample {bad}, shape (" in message
        and "NaN or Inf" in message
    )


def test_periodic_domains_by_file_name_unless_the_config_says(tasks, advection_1d, single_2d, tmp_path):
    burgers, reacdiff, darcy, diffreact = tasks
    assert burgers.periodic and reacdiff.periodic  # 1D Burgers and reaction-diffusion: periodic
    assert not darcy.periodic and not diffreact.periodic
    specs = [
        TaskConfig("advection", advection_1d.path.name),
        TaskConfig("wave", single_2d.path.name),
        TaskConfig("bounded", advection_1d.path.name, periodic=False),
        TaskConfig("torus", single_2d.path.name, periodic=True),
    ]
    advection, wave, bounded, torus = load_tasks(specs, tmp_path, split_fractions=(0.6, 0.2, 0.2))
    assert advection.periodic and not wave.periodic  # a 2D file is not assumed periodic
    assert not bounded.periodic and torus.periodic  # the config wins


def test_a_file_named_periodic_is_periodic(pdebench_writers, tmp_path):
    pdebench_writers.single(tmp_path / "2D_CFD_Rand_M0.1_periodic_Train.hdf5", (10, 6, 16, 12), y=True)
    pdebench_writers.single(tmp_path / "2D_aperiodicity_Sols.hdf5", (10, 6, 16, 12), y=True)
    cfd, other = load_tasks(
        [
            TaskConfig("cfd", "2D_CFD_Rand_M0.1_periodic_Train.hdf5"),
            TaskConfig("other", "2D_aperiodicity_Sols.hdf5"),
        ],
        tmp_path,
        split_fractions=(0.6, 0.2, 0.2),
    )
    assert cfd.periodic and not other.periodic


def test_transposed_pairs_only_for_square_darcy_unless_the_config_says(tasks, burgers_1d, tmp_path):
    burgers, reacdiff, darcy, diffreact = tasks
    assert not any(t.transpose_symmetric for t in tasks)  # the Darcy fixture's grid is 16 x 12: not square
    (tmp_path / "square").mkdir()
    write_darcy(tmp_path / "square" / "2D_DarcyFlow_beta1.0_Train.hdf5", nx=12, ny=12)
    write_darcy(tmp_path / "square" / "2D_other_steady.hdf5", nx=12, ny=12)
    specs = [
        TaskConfig("darcy", "2D_DarcyFlow_beta1.0_Train.hdf5"),
        TaskConfig("other", "2D_other_steady.hdf5"),
        TaskConfig("off", "2D_DarcyFlow_beta1.0_Train.hdf5", transpose_symmetric=False),
        TaskConfig("on", "2D_other_steady.hdf5", layout="darcy", transpose_symmetric=True),
    ]
    darcy, other, off, on = load_tasks(specs, tmp_path / "square", split_fractions=(0.6, 0.2, 0.2))
    assert darcy.transpose_symmetric and not other.transpose_symmetric  # by file name, as the built-in Darcy
    assert not off.transpose_symmetric and on.transpose_symmetric  # the config wins


@pytest.mark.parametrize("fixture", ["burgers_1d", "darcy_2d"])
def test_transposed_pairs_refused_where_they_cannot_hold(fixture, request, tmp_path):
    written = request.getfixturevalue(fixture)
    with pytest.raises(ConfigError) as error:
        load_tasks(
            [TaskConfig("t", written.path.name, transpose_symmetric=True)],
            tmp_path,
            split_fractions=(0.6, 0.2, 0.2),
        )
    message = str(error.value)
    assert "data.tasks[t].transpose_symmetric" in message and str(written.path) in message
    assert ("transient" if fixture == "burgers_1d" else "[16, 12]") in message and "set it false" in message


def test_transpose_half_swaps_the_same_samples_of_every_field():
    from ups.stages.batch import transpose_half

    a, u = torch.randn(64, 5, 5, 1), torch.randn(64, 5, 5, 1)
    ta, tu = transpose_half([a, u], torch.Generator().manual_seed(0))
    swapped = [bool(torch.equal(ta[i], a[i].transpose(0, 1))) for i in range(64)]
    assert all(swapped[i] or torch.equal(ta[i], a[i]) for i in range(64)) and 20 < sum(swapped) < 44
    assert all(torch.equal(tu[i], u[i].transpose(0, 1) if swapped[i] else u[i]) for i in range(64))
    again, _ = transpose_half([a, u], torch.Generator().manual_seed(0))
    assert torch.equal(again, ta)  # the draw comes from the generator alone
