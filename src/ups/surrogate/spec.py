"""What a surrogate knows of its tasks (``TaskSpec``) and what it answers (``Prediction``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ups.data.normalization import Normalizer
from ups.data.tasks import TaskData


@dataclass(frozen=True)
class TaskSpec:
    """What a surrogate knows of one of its tasks.

    ``grid`` is the spatial shape the model was trained on (after ``data.reduced_resolution``) and
    ``coords`` [*grid, d] its points, in the file's units; ``dt`` the physical time of one rollout
    step (``training.time_stride`` x the stored frame spacing; None for a steady task); ``params``
    the PDE parameters the model is conditioned on, in the order of a parameter vector, and
    ``defaults`` the file's constant values of them; ``static_channels`` the channels of a static
    field the task conditions on (the forcing of an incompressible Navier-Stokes file)."""

    name: str
    kind: str
    channels: tuple[str, ...]
    grid: tuple[int, ...]
    coords: np.ndarray
    dt: float | None
    params: tuple[str, ...]
    defaults: dict[str, float]
    varying: tuple[str, ...]
    static_channels: tuple[str, ...]
    normalizer: Normalizer
    input_normalizer: Normalizer | None


@dataclass
class Prediction:
    """A surrogate's answer, in physical units, NumPy or torch as its input was.

    ``fields``: the deterministic prediction, [B, steps, *grid, C] of a rollout ([B, steps, P, C] at
    ``points``) or [B, *grid, 1] of a steady solve (the regression); ``times`` [steps] the time of
    each step after the start (None when steady); with ``samples=K``: ``samples`` [B, K, ...] (each
    trajectory corrected by sampled residuals, or each steady solution drawn from the prior),
    ``mean`` and ``spread`` (standard deviation) over them, [B, ...]."""

    fields: Any
    times: np.ndarray | None = None
    samples: Any = None
    mean: Any = None
    spread: Any = None


def task_spec(task: TaskData, order: list[str], stride: int) -> TaskSpec:
    """The ``TaskSpec`` of a loaded task; ``order``: the parameter vector's names."""
    info = task.info
    times = task.file.times()
    steady = info.kind == "steady"
    return TaskSpec(
        name=task.name,
        kind=info.kind,
        channels=tuple(info.channel_names),
        grid=tuple(info.spatial_shape),
        coords=task.file.coordinates(),
        dt=None if steady else float(np.mean(np.diff(times))) * stride,
        params=tuple(order),
        defaults={name: float(v) for name, v in info.params.items() if name in order},
        varying=tuple(info.varying_params),
        static_channels=tuple(info.static_channels),
        normalizer=task.normalizer,
        input_normalizer=task.input_normalizer,
    )
