"""Snapshots and rollout windows: the items the autoencoder and operator stages train on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ups.config.schema import TaskConfig
from ups.data.latent_pairs import (
    SnapshotDataset,
    SteadyFieldDataset,
    TaskGroups,
    WindowDataset,
    collate_task_batch,
    field_normalizers,
    transient_tasks,
)
from ups.data.pdebench import PDEBenchFile
from ups.data.tasks import load_tasks
from ups.errors import DataError


@pytest.fixture
def burgers(tmp_path, pdebench_writers):
    return pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(10, 13, 16), seed=3)


def test_trajectory_frames_read_only_the_selected_frames(burgers):
    reader = PDEBenchFile(burgers.path, reduced_resolution_t=2)
    full = reader.trajectory(4)
    np.testing.assert_array_equal(reader.trajectory(4, slice(1, 6, 2)), full[1:6:2])
    np.testing.assert_array_equal(
        reader.trajectory(4, slice(1, 6, 2))[..., 0], burgers.arrays["tensor"][4, 2:12:4]
    )


def test_snapshots_cover_every_frame_of_the_split_normalised(burgers, tmp_path):
    (task,) = load_tasks(
        [TaskConfig("burgers", burgers.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2)
    )
    snaps = SnapshotDataset([task], "train")
    assert len(snaps) == len(task.split.train) * 13
    item = snaps[13 + 5]
    raw = burgers.arrays["tensor"][task.split.train[1], 5][:, None]
    np.testing.assert_allclose(item["u"].numpy(), task.normalizer.normalize(raw), rtol=1e-6)
    assert item["coords"].shape == (16, 1) and item["task"] == "burgers" and int(item["task_id"]) == 0


def test_windows_hold_horizon_plus_one_frames_stride_apart(burgers, tmp_path):
    (task,) = load_tasks(
        [TaskConfig("burgers", burgers.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2)
    )
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
    with pytest.raises(
        DataError, match=r"'burgers' has 13 frames.*rollout_horizon=4.*time_stride=4.*needs 17"
    ):
        WindowDataset([task], "train", horizon=4, stride=4)


def test_latent_stages_need_a_transient_task(tmp_path, pdebench_writers):
    darcy = pdebench_writers.darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    tasks = load_tasks([TaskConfig("darcy", darcy.path.name)], tmp_path)
    with pytest.raises(DataError, match="stage operator needs at least one time-dependent task"):
        transient_tasks(tasks, "operator")


def test_windows_carry_per_trajectory_parameters_of_multigroup_files(tmp_path, pdebench_writers):
    groups = pdebench_writers.multigroup(
        tmp_path / "1D_diff-sorp_NA_NA.h5",
        n=6,
        shape=(7, 16, 1),
        group_attrs=lambda i: {"du": 0.1 * (i + 1), "k": 2.0},
    )
    (task,) = load_tasks([TaskConfig("sorp", groups.path.name)], tmp_path, split_fractions=(0.5, 0.5, 0.0))
    windows = WindowDataset([task], "train", horizon=2, stride=1)
    per_traj = 7 - 2
    for j, traj in enumerate(task.split.train):
        assert windows[j * per_traj]["params"].tolist() == pytest.approx([0.1 * (traj + 1), 2.0])


def test_tasks_trained_together_may_differ_in_grid_rank_and_channels(tmp_path, pdebench_writers):
    a = pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(6, 8, 16))
    c = pdebench_writers.multigroup(tmp_path / "2D_diff-react_NA_NA.h5", n=6, shape=(8, 8, 8, 2))
    d = pdebench_writers.darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    tasks = load_tasks(
        [TaskConfig("a", a.path.name), TaskConfig("c", c.path.name), TaskConfig("d", d.path.name)], tmp_path
    )
    assert [t.name for t in transient_tasks(tasks, "operator")] == ["a", "c"]
    assert sorted(field_normalizers(tasks)) == ["a", "c", "d.a", "d.u"]
    assert field_normalizers(tasks)["d.a"] is tasks[2].input_normalizer


def test_steady_fields_are_snapshots_of_coefficient_and_solution(tmp_path, pdebench_writers):
    d = pdebench_writers.darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    (task,) = load_tasks([TaskConfig("darcy", d.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2))
    coefficient, solution = SteadyFieldDataset([task], "train", "a"), SteadyFieldDataset([task], "train", "u")
    both = TaskGroups([coefficient, solution])
    assert both.task_sizes == [6, 6] and len(both) == 12
    i = task.split.train[2]
    item = both[6 + 2]
    assert item["task"] == "darcy.u" and int(item["index"]) == i and item["u"].shape == (16, 12, 1)
    np.testing.assert_allclose(
        item["u"].numpy(), task.normalizer.normalize(d.arrays["tensor"][i, 0][..., None]), rtol=1e-6
    )
    assert both[2]["task"] == "darcy.a"


def test_items_are_grouped_by_task_and_batches_carry_task_names(tmp_path, pdebench_writers):
    a = pdebench_writers.single(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", shape=(10, 8, 16))
    b = pdebench_writers.single(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", shape=(10, 6, 32), seed=1)
    tasks = load_tasks(
        [TaskConfig("a", a.path.name), TaskConfig("b", b.path.name)],
        tmp_path,
        split_fractions=(0.6, 0.2, 0.2),
    )
    windows = WindowDataset(tasks, "train", horizon=2, stride=2)
    assert windows.task_sizes == [6 * (8 - 4), 6 * (6 - 4)] and len(windows) == sum(windows.task_sizes)
    first_b = windows[windows.task_sizes[0]]
    assert first_b["task"] == "b" and int(first_b["task_id"]) == 1 and int(first_b["t0"]) == 0
    assert int(first_b["index"]) == tasks[1].split.train[0]
    batch = collate_task_batch([windows[i] for i in range(3)])
    assert batch["task_names"] == ["a", "a", "a"] and "task" not in batch
    assert batch["window"].shape == (3, 3, 16, 1) and batch["t0"].tolist() == [0, 1, 2]


def test_windows_read_latents_from_the_cache_and_fields_only_when_asked(burgers, tmp_path):
    (task,) = load_tasks(
        [TaskConfig("burgers", burgers.path.name)], tmp_path, split_fractions=(0.6, 0.2, 0.2)
    )

    class Latents:  # a stand-in for a LatentEntry: frame f of trajectory i is filled with 100 i + f
        def frames(self, trajectory, frames):
            index = np.arange(13, dtype=np.float32)[frames]
            return np.broadcast_to((100 * trajectory + index)[:, None, None], (len(index), 4, 8)).copy()

    latents_only = WindowDataset([task], "train", horizon=2, stride=3, latents=[Latents()], fields=False)
    item = latents_only[2]
    assert "window" not in item and item["z"].shape == (3, 4, 8)
    traj = task.split.train[0]
    assert item["z"][:, 0, 0].tolist() == [100 * traj + 2, 100 * traj + 5, 100 * traj + 8]
    both = WindowDataset([task], "train", horizon=2, stride=3, latents=[Latents()], fields=True)[2]
    assert both["window"].shape == (3, 16, 1) and torch.equal(both["z"], item["z"])
