"""Helpers over batches shared by the stages and engines: flattening grids, splitting rows by task,
denormalising, per-sample relative errors, moving batches and frozen modules to a device.

Task membership is read from the batch's host-side ``task_names``, so splitting metrics by
task never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def flat_points(field: torch.Tensor) -> torch.Tensor:
    """[B, *S, C] -> [B, Q, C] with Q = prod(S)."""
    return field.reshape(field.shape[0], -1, field.shape[-1])


def task_rows(task_names: list[str]) -> dict[str, list[int] | None]:
    """Rows of each task in a batch; None means every row (the usual one-task batch)."""
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(task_names):
        rows.setdefault(name, []).append(i)
    return {name: None if len(r) == len(task_names) else r for name, r in rows.items()}


def denormalize(normalizers: dict, task_names: list[str], values: torch.Tensor) -> torch.Tensor:
    """Normalised values [B, ..., C] of samples of the named tasks (``normalizers``: name -> Normalizer)
    -> physical units."""
    groups = task_rows(task_names)
    if len(groups) == 1:
        (name,) = groups
        return normalizers[name].denormalize(values)
    out = torch.empty_like(values)
    for name, rows in groups.items():
        index = torch.tensor(rows, device=values.device)
        out[index] = normalizers[name].denormalize(values[index])
    return out


def per_task(metrics: dict, name: str, values: torch.Tensor, task_names: list[str]) -> None:
    """Adds ``name`` [B] and ``<task>/<name>`` for each task present in the batch."""
    metrics[name] = values
    for task, rows in task_rows(task_names).items():
        metrics[f"{task}/{name}"] = (
            values if rows is None else values[torch.tensor(rows, device=values.device)]
        )


def relative_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||pred - target|| / ||target|| over all but the first axis: [B, ...] -> [B]
    (float32, detached)."""
    err = (pred - target).detach().float().flatten(1).pow(2).sum(1)
    return (err / target.detach().float().flatten(1).pow(2).sum(1).clamp_min(1e-12)).sqrt()


def transpose_half(fields: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Fields [B, X, X, C] on a square grid with their two spatial axes swapped in a random half of
    the samples, the same samples in every field (a and u of a pair), drawn from ``generator``:
    training data doubled for a problem that is symmetric so (``data.tasks[].transpose_symmetric``)."""
    swap = (torch.rand(fields[0].shape[0], generator=generator) < 0.5).to(fields[0].device)
    return [torch.where(swap[:, None, None, None], f.transpose(1, 2), f) for f in fields]


def to_device(batch, device: torch.device):
    """A loader's batch (tensors, possibly in dicts, lists, tuples) moved to ``device``; other
    values as they are. Loaders give CPU tensors, so on the CPU the batch is returned as is."""
    if device.type == "cpu":
        return batch
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def evenly_spaced(size: int, count: int) -> list[int]:
    """Up to ``count`` indices of ``range(size)``, spread evenly from the first to the last."""
    return torch.linspace(0, size - 1, min(size, count)).long().tolist() if size else []


def batches_of(
    dataset, indices: Sequence[int], collate: Callable, size: int, device: torch.device
) -> Iterator:
    """The items ``indices`` of ``dataset``, collated ``size`` at a time and moved to ``device``."""
    for first in range(0, len(indices), size):
        yield to_device(collate([dataset[i] for i in indices[first : first + size]]), device)


@contextmanager
def on_device(modules: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """Within the block ``modules`` sit on ``device`` in eval mode (one-off work such as filling
    the latent cache); afterwards they are back on the device, and in the mode, they came from."""
    home = next(modules[0].parameters()).device
    modes = [{sub: sub.training for sub in module.modules()} for module in modules]
    for module in modules:
        module.to(device).eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.to(home)
            for sub, training in mode.items():
                sub.train(training)
