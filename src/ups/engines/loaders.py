"""The loaders both engines train and validate from: one-task batches of the stage's batch size
drawn by ``TaskBatchSampler``, sharded over the ranks, and the training loader that knows (and,
after a resume, restores) its position in the epoch."""

from __future__ import annotations

from torch.utils.data import DataLoader

from ups.config import Config
from ups.config.engines import uses_gpu
from ups.data.sampling import TaskBatchSampler
from ups.engines.settings import batch_size


def task_sizes(dataset) -> list[int]:
    """Items per task (contiguous ranges); a dataset that does not group by task is one task."""
    return list(getattr(dataset, "task_sizes", [len(dataset)]))


def task_batch_sampler(
    dataset, cfg: Config, stage_name: str, *, train: bool, rank: int = 0, world_size: int = 1
) -> TaskBatchSampler:
    """One-task batches of the stage's batch size sharded over ``world_size`` ranks: shuffled per
    epoch with ``data.task_sampling`` and the tasks' weights for training, in order (every sample
    once, or the fixed subset of ``training.val_max_samples``) for validation."""
    return TaskBatchSampler(
        task_sizes(dataset),
        batch_size(cfg, stage_name),
        seed=cfg.seed,
        shuffle=train,
        strategy=cfg.data.task_sampling if train else "proportional",
        rank=rank,
        world_size=world_size,
        weights=getattr(dataset, "task_weights", None) if train else None,
        limit=None if train else cfg.training.val_max_samples,
    )


def build_loaders(
    stage, cfg: Config, *, validate: bool, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader, DataLoader | None]:
    """(train loader, val loader or None), each drawing its batches from ``task_batch_sampler``."""
    t = cfg.training
    common = dict(
        num_workers=t.num_workers,
        pin_memory=t.pin_memory and uses_gpu(cfg),
        persistent_workers=t.persistent_workers and t.num_workers > 0,
        collate_fn=stage.collate,
    )
    if t.num_workers > 0 and t.prefetch_factor is not None:
        common["prefetch_factor"] = t.prefetch_factor

    def loader(dataset, train: bool) -> DataLoader:
        sampler = task_batch_sampler(dataset, cfg, stage.name, train=train, rank=rank, world_size=world_size)
        return (ResumableLoader if train else DataLoader)(dataset, batch_sampler=sampler, **common)

    # both splits are checked non-empty and large enough for the ranks by ``ups.engines.preflight``
    train = loader(stage.train_dataset(), train=True)
    return train, loader(stage.val_dataset(), train=False) if validate else None


class ResumableLoader(DataLoader):
    """The training loader, which knows how far into its epoch it is.

    ``state_dict()`` is ``{"epoch": e, "batches": k}``: k batches of epoch e handed out. After
    ``load_state_dict`` the next pass over epoch e starts at batch k (``TaskBatchSampler.skip``),
    so a resume from a checkpoint written inside an epoch trains on exactly the batches the
    interrupted run had left. Lightning saves and restores this through its loop state (it does
    so for loaders with ``state_dict``/``load_state_dict``); the native engine through the
    checkpoint's ``ups.progress`` (``progress_record``).

    ``__iter__`` is a generator, so the epoch and the start are read at the first batch, after
    the engine has called ``set_epoch`` (Lightning creates the iterator before that).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._position = {"epoch": self.batch_sampler.epoch, "batches": 0}
        self._resume: dict | None = None

    def __iter__(self):
        sampler = self.batch_sampler
        resume, self._resume = self._resume, None
        start = resume["batches"] if resume is not None and resume["epoch"] == sampler.epoch else 0
        sampler.skip = start
        self._position = {"epoch": sampler.epoch, "batches": start}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict:
        return dict(self._position)

    def load_state_dict(self, state: dict) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
