"""What the autoencoder and operator stages train on, built from loaded tasks.

Items are dicts of tensors plus ``task`` (the task name); ``collate_task_batch`` turns a
list of items of one task into a batch that carries ``task_names``.

- ``SnapshotDataset``: one frame of one trajectory, ``u`` [*S, C] (normalised), ``coords``
  [*S, d], ``task_id`` [], ``index`` (trajectory in its file) and ``t`` (frame).
- ``WindowDataset``: the latent pairs. A window of ``horizon + 1`` frames ``time_stride``
  apart starting at frame ``t0``: ``z`` [H+1, L, D] latents (when a latent cache is given)
  and/or ``window`` [H+1, *S, C] normalised fields (when ``fields``), with ``coords``
  [*S, d], ``dt`` [] (physical time between frames of the window), ``params`` [P],
  ``task_id``, ``index`` and ``t0``. Entry 0 is z_t, entry 1 is z_{t+1}, entries 1..H the
  rollout targets.

Items are grouped by task (``task_sizes``), so ``ups.data.sampling.TaskBatchSampler``
can draw batches of one task each: tasks may differ in grid size and channels.
Frames are read from the file (or the cache) per item.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ups.data.tasks import TaskData, param_names
from ups.errors import DataError


def transient_tasks(tasks: list[TaskData], stage: str) -> list[TaskData]:
    """The tasks a latent-dynamics stage trains on; all must have the same number of spatial axes
    (grid sizes and channel counts may differ)."""
    chosen = [t for t in tasks if t.info.kind == "transient"]
    if not chosen:
        raise DataError(f"stage {stage} needs at least one time-dependent task; data.tasks has only steady "
                        f"ones ({', '.join(t.name for t in tasks)}).")
    first = chosen[0]
    for task in chosen[1:]:
        if len(task.info.spatial_shape) != len(first.info.spatial_shape):
            raise DataError(f"stage {stage}: task '{task.name}' is {len(task.info.spatial_shape)}D but "
                            f"'{first.name}' is {len(first.info.spatial_shape)}D; tasks trained together share one "
                            f"encoder and need the same number of spatial axes (train them in separate runs).")
    return chosen


def collate_task_batch(items: list[dict]) -> dict:
    """Stack items into a batch; their task names go to ``task_names`` (a list of str)."""
    names = [item["task"] for item in items]
    batch = default_collate([{k: v for k, v in item.items() if k != "task"} for item in items])
    batch["task_names"] = names
    return batch


class _Indexed(Dataset):
    """Maps a flat index to (task index, trajectory, position) over per-trajectory counts.

    Items of task k form one contiguous range of ``task_sizes[k]`` indices, in task order.
    """

    def __init__(self, tasks: list[TaskData], split: str, per_trajectory: list[int]):
        self.tasks = tasks
        self.entries = [(k, i) for k, t in enumerate(tasks) for i in t.split.indices(split)]
        self.per_trajectory = [per_trajectory[k] for k, _ in self.entries]
        self.offsets = np.concatenate([[0], np.cumsum(self.per_trajectory)]).astype(np.int64).tolist()
        self.task_sizes = [sum(n for (k, _), n in zip(self.entries, self.per_trajectory) if k == j)
                           for j in range(len(tasks))]
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
                "task_id": torch.tensor(k), "index": torch.tensor(traj), "t": torch.tensor(t), "task": task.name}


class WindowDataset(_Indexed):
    """Latent pairs and rollout windows (see the module docstring).

    Args:
        latents: per task (same order as ``tasks``) an object with
            ``frames(trajectory, slice) -> float32 [F, L, D]`` (a ``LatentEntry`` of the
            latent cache); None reads fields only and the stage encodes them.
        fields: include the normalised fields ``window`` (always true without ``latents``).
    """

    def __init__(self, tasks: list[TaskData], split: str, horizon: int, stride: int, *,
                 latents: Sequence | None = None, fields: bool = True):
        span = horizon * stride
        for task in tasks:
            if task.info.n_times <= span:
                raise DataError(f"task '{task.name}' has {task.info.n_times} frames (after "
                                f"data.reduced_resolution_t) but a window of training.rollout_horizon={horizon} "
                                f"steps of training.time_stride={stride} frames needs {span + 1}; lower one of them.")
        super().__init__(tasks, split, [t.info.n_times - span for t in tasks])
        self.horizon, self.stride = horizon, stride
        self.latents, self.fields = latents, fields or latents is None
        self.param_order = param_names(tasks)
        self.dt = [float(np.mean(np.diff(t.file.times()))) * stride for t in tasks]

    def params(self, task: TaskData, traj: int) -> torch.Tensor:
        """The trajectory's PDE parameters [P] (multi-group files may vary them per trajectory)."""
        values = task.file.params_of(traj)
        return torch.tensor([values.get(n, 0.0) for n in self.param_order], dtype=torch.float32)

    def __getitem__(self, item: int) -> dict:
        k, traj, t0 = self.locate(item)
        task = self.tasks[k]
        frames = slice(t0, t0 + self.horizon * self.stride + 1, self.stride)
        out = {"coords": self.coords[k], "dt": torch.tensor(self.dt[k], dtype=torch.float32),
               "params": self.params(task, traj), "task_id": torch.tensor(k), "index": torch.tensor(traj),
               "t0": torch.tensor(t0), "task": task.name}
        if self.latents is not None:
            out["z"] = torch.from_numpy(self.latents[k].frames(traj, frames))
        if self.fields:
            out["window"] = torch.from_numpy(task.normalizer.normalize(task.file.trajectory(traj, frames)))
        return out
