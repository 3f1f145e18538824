"""Snapshots and rollout windows: the items the autoencoder and operator stages train on."""

from __future__ import annotations

import numpy as np
import pytest

from ups.config.schema import TaskConfig
from ups.data.pdebench import PDEBenchFile
from ups.data.tasks import load_tasks
from ups.errors import DataError
from ups.stages.data import SnapshotDataset, WindowDataset, transient_tasks


@pytest.fixture
def burgers(tmp_path, pdebench_writers):
    return pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(10, 13, 16), seed=3)


def test_trajectory_frames_read_only_the_selected_frames(burgers):
    reader = PDEBenchFile(burgers.path, reduced_resolution_t=2)
    full = reader.trajectory(4)
    np.testing.assert_array_equal(reader.trajectory(4, slice(1, 6, 2)), full[1:6:2])
    np.testing.assert_array_equal(reader.trajectory(4, slice(1, 6, 2))[..., 0], burgers.arrays["tensor"][4, 2:12:4])


def test_snapshots_cover_every_frame_of_the_split_normalised(burgers, tmp_path):
    (task,) = load_tasks([TaskConfig("burgers", burgers.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2))
    snaps = SnapshotDataset([task], "train")
    assert len(snaps) == len(task.split.train) * 13
    item = snaps[13 + 5]
    raw = burgers.arrays["tensor"][task.split.train[1], 5][:, None]
    np.testing.assert_allclose(item["u"].numpy(), task.normalizer.normalize(raw), rtol=1e-6)
    assert item["coords"].shape == (16, 1) and item["task"] == "burgers" and int(item["task_id"]) == 0


def test_windows_hold_horizon_plus_one_frames_stride_apart(burgers, tmp_path):
    (task,) = load_tasks([TaskConfig("burgers", burgers.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2))
    windows = WindowDataset([task], "val", horizon=3, stride=2)
    per_traj = 13 - 3 * 2
    assert len(windows) == len(task.split.val) * per_traj
    item = windows[per_traj + 4]
    raw = burgers.arrays["tensor"][task.split.val[1], 4:11:2][..., None]
    np.testing.assert_allclose(item["window"].numpy(), task.normalizer.normalize(raw), rtol=1e-6)
    assert float(item["dt"]) == pytest.approx(0.2)  # fixture times are 0.1 apart, stride 2
    assert item["params"].tolist() == pytest.approx([0.01])


def test_windows_longer_than_the_trajectory_are_refused(burgers, tmp_path):
    (task,) = load_tasks([TaskConfig("burgers", burgers.path.name)], tmp_path)
    with pytest.raises(DataError, match=r"'burgers' has 13 frames.*rollout_horizon=4.*time_stride=4.*needs 17"):
        WindowDataset([task], "train", horizon=4, stride=4)


def test_latent_stages_need_a_transient_task(tmp_path, pdebench_writers):
    darcy = pdebench_writers.darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    tasks = load_tasks([TaskConfig("darcy", darcy.path.name)], tmp_path)
    with pytest.raises(DataError, match="stage operator needs at least one time-dependent task"):
        transient_tasks(tasks, "operator")


def test_windows_carry_per_trajectory_parameters_of_multigroup_files(tmp_path, pdebench_writers):
    groups = pdebench_writers.multigroup(tmp_path / "1D_diff-sorp_NA_NA.h5", n=6, shape=(7, 16, 1),
                                         group_attrs=lambda i: {"du": 0.1 * (i + 1), "k": 2.0})
    (task,) = load_tasks([TaskConfig("sorp", groups.path.name)], tmp_path, split_fractions=(0.5, 0.5, 0.0))
    windows = WindowDataset([task], "train", horizon=2, stride=1)
    per_traj = 7 - 2
    for j, traj in enumerate(task.split.train):
        assert windows[j * per_traj]["params"].tolist() == pytest.approx([0.1 * (traj + 1), 2.0])


def test_tasks_trained_together_need_the_same_grid(tmp_path, pdebench_writers):
    a = pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(6, 8, 16))
    b = pdebench_writers.single(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", shape=(6, 8, 32))
    tasks = load_tasks([TaskConfig("a", a.path.name), TaskConfig("b", b.path.name)], tmp_path)
    with pytest.raises(DataError, match=r"task 'b' has a grid of \(32,\).*'a' has \(16,\)"):
        transient_tasks(tasks, "autoencoder")
