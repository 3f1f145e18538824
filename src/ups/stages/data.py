"""What the autoencoder and operator stages train on, built from loaded tasks.

Items are dicts of tensors plus ``task`` (the task name, so batches carry ``task_names``):

- ``SnapshotDataset``: one frame of one trajectory, ``u`` [*S, C] (normalised), ``coords``
  [*S, d], ``task_id`` [].
- ``WindowDataset``: a window of ``horizon + 1`` frames ``time_stride`` apart,
  ``window`` [H+1, *S, C] (normalised), ``coords`` [*S, d], ``dt`` [] (physical time between
  frames of the window), ``params`` [P], ``task_id`` [].

Only transient tasks take part; frames are read from the file per item.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch
from torch.utils.data import Dataset

from ups.data.tasks import TaskData, param_names
from ups.errors import DataError


def transient_tasks(tasks: list[TaskData], stage: str) -> list[TaskData]:
    """The tasks a latent-dynamics stage trains on; all must share grid rank and channels."""
    chosen = [t for t in tasks if t.info.kind == "transient"]
    if not chosen:
        raise DataError(f"stage {stage} needs at least one time-dependent task; data.tasks has only steady "
                        f"ones ({', '.join(t.name for t in tasks)}).")
    first = chosen[0].info
    for task in chosen[1:]:
        if (task.info.spatial_shape, task.info.n_channels) != (first.spatial_shape, first.n_channels):
            raise DataError(f"stage {stage}: task '{task.name}' has a grid of {task.info.spatial_shape} with "
                            f"{task.info.n_channels} channel(s) but '{chosen[0].name}' has {first.spatial_shape} "
                            f"with {first.n_channels}; tasks trained together need the same grid and channels for now "
                            f"(set data.reduced_resolution or train them in separate runs).")
    return chosen


class _Indexed(Dataset):
    """Maps a flat index to (task index, trajectory, position) over per-trajectory counts."""

    def __init__(self, tasks: list[TaskData], split: str, per_trajectory: list[int]):
        self.tasks = tasks
        self.entries = [(k, i) for k, t in enumerate(tasks) for i in t.split.indices(split)]
        self.per_trajectory = [per_trajectory[k] for k, _ in self.entries]
        self.offsets = np.concatenate([[0], np.cumsum(self.per_trajectory)]).tolist()
        self.coords = [torch.from_numpy(t.file.coordinates()) for t in tasks]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, item: int) -> tuple[int, int, int]:
        j = bisect.bisect_right(self.offsets, item) - 1
        k, traj = self.entries[j]
        return k, traj, item - int(self.offsets[j])


class SnapshotDataset(_Indexed):
    def __init__(self, tasks: list[TaskData], split: str):
        super().__init__(tasks, split, [t.info.n_times for t in tasks])

    def __getitem__(self, item: int) -> dict:
        k, traj, t = self.locate(item)
        task = self.tasks[k]
        frame = task.file.trajectory(traj, slice(t, t + 1))[0]
        return {"u": torch.from_numpy(task.normalizer.normalize(frame)), "coords": self.coords[k],
                "task_id": torch.tensor(k), "task": task.name}


class WindowDataset(_Indexed):
    def __init__(self, tasks: list[TaskData], split: str, horizon: int, stride: int):
        span = horizon * stride
        for task in tasks:
            if task.info.n_times <= span:
                raise DataError(f"task '{task.name}' has {task.info.n_times} frames (after "
                                f"data.reduced_resolution_t) but a window of training.rollout_horizon={horizon} "
                                f"steps of training.time_stride={stride} frames needs {span + 1}; lower one of them.")
        super().__init__(tasks, split, [t.info.n_times - span for t in tasks])
        self.horizon, self.stride = horizon, stride
        self.param_order = param_names(tasks)
        self.dt = [float(np.mean(np.diff(t.file.times()))) * stride for t in tasks]

    def params(self, task: TaskData, traj: int) -> torch.Tensor:
        """The trajectory's PDE parameters [P] (multi-group files may vary them per trajectory)."""
        values = task.file.params_of(traj)
        return torch.tensor([values.get(n, 0.0) for n in self.param_order], dtype=torch.float32)

    def __getitem__(self, item: int) -> dict:
        k, traj, t0 = self.locate(item)
        task = self.tasks[k]
        frames = task.file.trajectory(traj, slice(t0, t0 + self.horizon * self.stride + 1, self.stride))
        return {"window": torch.from_numpy(task.normalizer.normalize(frames)), "coords": self.coords[k],
                "dt": torch.tensor(self.dt[k], dtype=torch.float32), "params": self.params(task, traj),
                "task_id": torch.tensor(k), "task": task.name}
