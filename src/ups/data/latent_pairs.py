"""What the autoencoder and operator stages train on, built from loaded tasks.

Items are dicts of tensors plus ``task`` (the task name); ``collate_task_batch`` turns a
list of items of one task into a batch that carries ``task_names``.

- ``SnapshotDataset``: one frame of one trajectory, ``u`` [*S, C] (normalised), ``coords``
  [*S, d], ``task_id`` [], ``index`` (trajectory in its file) and ``t`` (frame).
- ``SteadyFieldDataset``: the coefficient or the solution of a steady pair as a snapshot.
- ``WindowDataset``: the latent pairs. A window of ``horizon + 1`` frames ``time_stride``
  apart starting at frame ``t0``: ``z`` [H+1, L, D] latents (when a latent cache is given)
  and/or ``window`` [H+1, *S, C] normalised fields (when ``fields``), with ``coords``
  [*S, d], ``dt`` [] (physical time between frames of the window), ``params`` [P],
  ``task_id``, ``index`` and ``t0``, and for a task with a static field (the forcing of an
  incompressible Navier-Stokes file) ``static`` [*S, S], normalised. Entry 0 is z_t, entry 1
  is z_{t+1}, entries 1..H the rollout targets.

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

from ups.data.tasks import TaskData, param_names, param_vector
from ups.errors import DataError


def tasks_of_kind(tasks: list[TaskData], kind: str, stage: str) -> list[TaskData]:
    """The ``transient`` or ``steady`` tasks a stage trains on; at least one, else a DataError."""
    chosen = [t for t in tasks if t.info.kind == kind]
    if not chosen:
        what = "time-dependent" if kind == "transient" else "steady (coefficient -> solution, e.g. Darcy)"
        raise DataError(
            f"stage {stage} needs at least one {what} task; data.tasks has "
            f"{', '.join(f'{t.name} ({t.info.kind})' for t in tasks)}."
        )
    return chosen


def transient_tasks(tasks: list[TaskData], stage: str) -> list[TaskData]:
    """The time-dependent tasks a latent-dynamics stage trains on (grids, ranks and channels may differ)."""
    return tasks_of_kind(tasks, "transient", stage)


def field_normalizers(tasks: list[TaskData]) -> dict:
    """Normaliser of every field the autoencoder sees, by field name: a transient task's fields
    under its name, a steady task's coefficient and solution under ``<task>.a`` and ``<task>.u``."""
    out = {}
    for task in tasks:
        if task.info.kind == "steady":
            out[f"{task.name}.a"], out[f"{task.name}.u"] = task.input_normalizer, task.normalizer
        else:
            out[task.name] = task.normalizer
    return out


def collate_task_batch(items: list[dict]) -> dict:
    """Stack items into a batch; their task names go to ``task_names`` (a list of str)."""
    batch = default_collate([{k: v for k, v in item.items() if k != "task"} for item in items])
    return {**batch, "task_names": [item["task"] for item in items]}


class _Indexed(Dataset):
    """Maps a flat index to (task index, trajectory, position) over per-trajectory counts.

    Items of task k form one contiguous range of ``task_sizes[k]`` indices, in task order.
    """

    def __init__(self, tasks: list[TaskData], split: str, per_trajectory: list[int]):
        self.tasks = tasks
        self.entries = [(k, i) for k, t in enumerate(tasks) for i in t.split.indices(split)]
        self.per_trajectory = [per_trajectory[k] for k, _ in self.entries]
        self.offsets = np.concatenate([[0], np.cumsum(self.per_trajectory)]).astype(np.int64).tolist()
        self.task_sizes = [
            sum(n for (k, _), n in zip(self.entries, self.per_trajectory) if k == j)
            for j in range(len(tasks))
        ]
        self.task_weights = [t.spec.weight for t in tasks]
        self.coords = [torch.from_numpy(t.file.coordinates()) for t in tasks]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, item: int) -> tuple[int, int, int]:
        j = bisect.bisect_right(self.offsets, item) - 1
        k, traj = self.entries[j]
        return k, traj, item - int(self.offsets[j])

    def snapshot(self, k: int, i: int, t: int, values: np.ndarray, norm, name: str) -> dict:
        """The item of frame ``t`` of trajectory ``i`` of task ``k``: ``values`` [*S, C] normalised."""
        return {
            "u": torch.from_numpy(norm.normalize(values)),
            "coords": self.coords[k],
            "task_id": torch.tensor(k),
            "index": torch.tensor(i),
            "t": torch.tensor(t),
            "task": name,
        }


class SnapshotDataset(_Indexed):
    def __init__(self, tasks: list[TaskData], split: str):
        super().__init__(tasks, split, [t.info.n_times for t in tasks])

    def __getitem__(self, item: int) -> dict:
        k, traj, t = self.locate(item)
        task = self.tasks[k]
        frame = task.file.trajectory(traj, slice(t, t + 1))[0]
        return self.snapshot(k, traj, t, frame, task.normalizer, task.name)


class SteadyFieldDataset(_Indexed):
    """The coefficient a(x) (``field="a"``) or the solution u(x) (``field="u"``) of steady pairs, as
    snapshots for the autoencoder: ``u`` [*S, 1] normalised, ``coords``, ``task_id``, ``index`` and
    ``task`` = ``<task>.<field>`` (the key of ``field_normalizers``)."""

    def __init__(self, tasks: list[TaskData], split: str, field: str):
        super().__init__(tasks, split, [1] * len(tasks))
        self.field = field

    def __getitem__(self, item: int) -> dict:
        k, i, _ = self.locate(item)
        task = self.tasks[k]
        a, u = task.file.steady_pair(i)
        values, norm = (a, task.input_normalizer) if self.field == "a" else (u, task.normalizer)
        return self.snapshot(k, i, 0, values, norm, f"{task.name}.{self.field}")


class TaskGroups(Dataset):
    """Datasets one after the other, their task groups kept: ``task_sizes`` is the concatenation."""

    def __init__(self, datasets: Sequence):
        self.datasets = [d for d in datasets if len(d)]
        self.task_sizes = [n for d in self.datasets for n in d.task_sizes]
        self.task_weights = [w for d in self.datasets for w in d.task_weights]
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, item: int) -> dict:
        j = bisect.bisect_right(self.offsets, item) - 1
        return self.datasets[j][item - self.offsets[j]]


class WindowDataset(_Indexed):
    """Latent pairs and rollout windows (see the module docstring).

    Args:
        latents: per task (same order as ``tasks``) an object with
            ``frames(trajectory, slice) -> float32 [F, L, D]`` (a ``LatentEntry`` of the
            latent cache); None reads fields only and the stage encodes them.
        fields: include the normalised fields ``window`` (always true without ``latents``).
    """

    def __init__(
        self,
        tasks: list[TaskData],
        split: str,
        horizon: int,
        stride: int,
        *,
        latents: Sequence | None = None,
        fields: bool = True,
        start: int | None = None,
        horizon_name: str = "stages.operator.rollout_horizon",
    ):
        if horizon < 1:  # a default horizon computed after a context that leaves no later frame
            raise DataError(
                f"{horizon_name}={horizon}: nothing to roll out; with training.time_stride={stride} no "
                f"frame follows frame {start or 0} (the last of evaluation.context_frames); lower "
                f"evaluation.context_frames or training.time_stride."
            )
        span = horizon * stride + (start or 0)
        for task in tasks:
            if task.info.n_times <= span:
                context = f" from frame {start} (the last of evaluation.context_frames)" if start else ""
                raise DataError(
                    f"task '{task.name}' has {task.info.n_times} frames (after "
                    f"data.reduced_resolution_t) but a window of {horizon_name}={horizon} steps of "
                    f"training.time_stride={stride} frames{context} needs {span + 1}; lower one of them."
                )
        # ``start``: one window per trajectory, from frame ``start`` (evaluation rollouts); else every window
        super().__init__(tasks, split, [1 if start is not None else t.info.n_times - span for t in tasks])
        self.horizon, self.stride, self.start = horizon, stride, start
        self.latents, self.fields = latents, fields or latents is None
        self.param_order = param_names(tasks)
        self.dt = [float(np.mean(np.diff(t.file.times()))) * stride for t in tasks]

    def window(self, item: int) -> tuple[int, int, int]:
        """(task, trajectory, first frame) of window ``item``."""
        k, traj, t0 = self.locate(item)
        return k, traj, t0 + (self.start or 0)

    def __getitem__(self, item: int) -> dict:
        k, traj, t0 = self.window(item)
        task = self.tasks[k]
        frames = slice(t0, t0 + self.horizon * self.stride + 1, self.stride)
        out = {
            "coords": self.coords[k],
            "dt": torch.tensor(self.dt[k], dtype=torch.float32),
            "params": param_vector(task.file.params_of(traj), self.param_order),  # may vary per trajectory
            "task_id": torch.tensor(k),
            "index": torch.tensor(traj),
            "t0": torch.tensor(t0),
            "task": task.name,
        }
        if self.latents is not None:
            out["z"] = torch.from_numpy(self.latents[k].frames(traj, frames))
        if self.fields:
            out["window"] = torch.from_numpy(task.normalizer.normalize(task.file.trajectory(traj, frames)))
        if task.info.static_channels:  # the operator's conditioning (``LatentOperator.encode_forcing``)
            out["static"] = torch.from_numpy(task.input_normalizer.normalize(task.file.static_field(traj)))
        return out
