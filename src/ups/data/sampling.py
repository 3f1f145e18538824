"""Batches that each hold items of one task, drawn per (seed, epoch) and dealt to DDP ranks.

A multi-task dataset stores the items of task k contiguously, at indices
``[offset_k, offset_k + size_k)`` with offsets the cumulative sizes in task order. Tasks differ
in grid size and channel count, so a batch never mixes tasks.

- Determinism: the batches of an epoch come from a ``torch.Generator`` seeded with
  ``seed * 1_000_003 + epoch`` (never the global RNG), so every process draws the same ones and
  each epoch draws new ones.
- ``proportional`` (default): every item exactly once per epoch. Each task's items are permuted
  and cut into batches of ``batch_size`` (the last one shorter), then the batches of all tasks
  are shuffled together, so tasks appear in proportion to their size.
- ``uniform``: every task contributes ``max_k size_k`` draws per epoch: fresh permutations of a
  smaller task are concatenated and truncated, so each of its items is drawn floor or ceil of
  ``max / size`` times, and at least once.
- ``weights`` (per task, default 1): multiply a task's draws per epoch (rounded, at least one),
  e.g. to draw a small task more often; draws beyond its size repeat its items as ``uniform`` does.
- ``shuffle=False`` (validation): tasks in order, items in order, consecutive batches.
- ``limit`` (validation only, ``training.val_max_samples``): at most this many items per pass, a
  fixed subset drawn once from ``seed`` (the same at every validation, so epochs compare),
  shared out to the tasks in proportion to their sizes (largest remainders; at least one per
  non-empty task while the limit allows), each task's items kept in order.
- Resuming inside an epoch: ``skip = k`` makes the next pass start at this rank's batch k of
  the epoch (the first k were trained on before the checkpoint); ``len`` stays the epoch's.
- Sharding: rank r takes batches r, r + W, ... of the epoch's list. When the batch count is not
  a multiple of the world size W, the largest batch (the first of equal ones) is halved until it
  is, so every rank runs ``len(sampler)`` batches (DDP would hang otherwise) and no draw is
  repeated: the ranks' draws are disjoint and together are the whole epoch. Size-0 tasks give
  no batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Sampler

STRATEGIES = ("proportional", "uniform")


def _task_draws(task_sizes: Sequence[int], strategy: str, weights: Sequence[float] | None) -> list[int]:
    """Draws per task and epoch: its size (proportional) or the largest size (uniform), times
    its weight (rounded, at least 1 for a non-empty task)."""
    base = (
        list(task_sizes) if strategy == "proportional" else [max(task_sizes) if n else 0 for n in task_sizes]
    )
    weights = weights if weights is not None else [1.0] * len(base)
    return [max(1, round(b * w)) if b else 0 for b, w in zip(base, weights)]


def _draw(size: int, n_draws: int, g: torch.Generator | None) -> torch.Tensor:
    """``[n_draws]`` local indices of a task of ``size`` items: permutations concatenated and
    truncated, or ``0, 1, ..., size - 1, 0, ...`` without a generator."""
    if g is None:
        return torch.arange(n_draws) % size
    return torch.cat([torch.randperm(size, generator=g) for _ in range(math.ceil(n_draws / size))])[:n_draws]


def _limited(task_sizes: Sequence[int], limit: int) -> list[int]:
    """Items per task when at most ``limit`` are kept: proportional shares, largest remainders
    first, at least one per non-empty task while the limit allows, never above a task's size."""
    total = sum(task_sizes)
    if limit >= total:
        return list(task_sizes)
    raw = [limit * n / total for n in task_sizes]
    counts = [math.floor(r) for r in raw]
    for k in sorted(range(len(raw)), key=lambda j: counts[j] - raw[j])[: limit - sum(counts)]:
        counts[k] += 1
    for k, n in enumerate(task_sizes):  # a task with items keeps one, taken from the largest share
        if n and not counts[k] and max(counts) > 1:
            counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
            counts[k] = 1
    return counts


def _fixed_subset(size: int, n: int, seed: int) -> torch.Tensor:
    """``n`` of ``size`` local indices, drawn from ``seed`` alone, ascending."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _split_largest(batches: list[list[int]], n_splits: int) -> list[list[int]]:
    """Halve the largest batch (the first of equal ones) ``n_splits`` times, in place."""
    for _ in range(n_splits):
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        half = (len(batches[i]) + 1) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


def _check(task_sizes: Sequence[int], batch_size: int, strategy: str, rank: int, world_size: int) -> None:
    if not task_sizes or min(task_sizes) < 0 or max(task_sizes) == 0:
        raise ValueError(
            f"task_sizes={list(task_sizes)}: need at least one task with items and no negative "
            "sizes; check the tasks of the dataset."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1 (training.batch_size).")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {STRATEGIES}.")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size."
        )


class TaskBatchSampler(Sampler[list[int]]):
    """This rank's single-task batches (lists of dataset indices) of the current epoch.

    Engines call ``set_epoch`` before each epoch; Lightning reaches it through ``sampler`` (itself).
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        strategy: str = "proportional",
        rank: int = 0,
        world_size: int = 1,
        weights: Sequence[float] | None = None,
        limit: int | None = None,
    ):
        _check(task_sizes, batch_size, strategy, rank, world_size)
        if limit is not None and (shuffle or limit < 1):
            raise ValueError(
                f"limit={limit}: a fixed subset of at least one item is for validation (shuffle=False)."
            )
        if weights is not None and (len(weights) != len(task_sizes) or min(weights) <= 0):
            raise ValueError(
                f"weights={list(weights)}: need one positive weight per task ({len(task_sizes)})."
            )
        self.task_sizes, self.batch_size = list(task_sizes), batch_size
        self.seed, self.shuffle, self.strategy = seed, shuffle, strategy
        self.rank, self.world_size = rank, world_size
        self.offsets = [sum(self.task_sizes[:k]) for k in range(len(self.task_sizes))]
        self.draws = _task_draws(self.task_sizes, strategy, weights)
        self.limited = limit is not None and limit < sum(self.task_sizes)
        if self.limited:
            self.draws = _limited(self.task_sizes, limit)
        self.n_batches = sum(math.ceil(n / batch_size) for n in self.draws)
        self.n_splits = -self.n_batches % world_size
        if self.n_batches + self.n_splits > sum(self.draws):
            raise ValueError(
                f"{sum(self.draws)} draws per epoch ({strategy} over tasks of sizes {self.task_sizes}) "
                f"cannot be dealt to {world_size} ranks in equal batch counts without repeating items: "
                f"that needs {self.n_batches + self.n_splits} non-empty batches. Use fewer devices, more "
                f"data or a larger batch_size."
            )
        self.epoch = 0
        self.skip = 0  # batches of the next pass to leave out (resuming inside an epoch); then 0 again
        self.sampler = self  # Lightning calls ``batch_sampler.sampler.set_epoch`` before each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch``, before dealing: ``len(self) * world_size`` lists."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch) if self.shuffle else None
        batches = []
        for k, (offset, size, n) in enumerate(zip(self.offsets, self.task_sizes, self.draws)):
            if n:
                local = (
                    _fixed_subset(size, n, self.seed * 1_000_003 + k) if self.limited else _draw(size, n, g)
                )
                idx = (offset + local).tolist()
                batches += [idx[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if g is not None:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return _split_largest(batches, self.n_splits)

    def __iter__(self):
        # A generator, so the epoch is read at the first batch: Lightning may create the
        # iterator before it calls set_epoch (e.g. when resuming).
        skip, self.skip = self.skip, 0
        yield from self.epoch_batches(self.epoch)[self.rank :: self.world_size][skip:]

    def __len__(self) -> int:
        return (self.n_batches + self.n_splits) // self.world_size
