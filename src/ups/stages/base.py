"""The Stage contract: what a training stage computes, knowing nothing of the engine.

An engine (``ups.engines.lightning`` or ``ups.engines.native``) drives a Stage:

    stage = STAGES["operator"](cfg, tasks, upstream)   # builds stage.model, seeded from cfg.seed
    once:           stage.prepare(device)           # one-off work before training (the latent cache)
    loaders from stage.train_dataset() / stage.val_dataset() (items grouped by task, ``task_sizes``)
                and stage.collate; every batch holds samples of one task
    per batch:      stage.training_loss(batch)      -> {"loss": scalar, "<term>": scalar, ...,
                                                        "nrmse": [B], "<task>/nrmse": [B_task]}
    per val batch:  stage.validation_metrics(batch) -> {"nrmse": [B], "<task>/nrmse": [B_task], ...}
    once:           stage.configure_optimizers(total_steps) -> (optimizer, per-step scheduler | None)

In ``training_loss`` scalars are logged every step as ``train/<term>``; entries with a batch
axis are per-sample metrics that the engines average over the epoch (``train/<key>``), so
per-task numbers cost no synchronisation per step.

All randomness inside a stage's computations comes from ``stage.generator`` (never the global
RNG), so both engines see identical numbers whatever else consumes random numbers; its state
travels in checkpoints (``extra_state``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ups.config import Config
from ups.data.latent_pairs import collate_task_batch
from ups.data.tasks import TaskData
from ups.stages.optim import build_optimizer


class Stage(abc.ABC):
    """One training stage. Subclasses set ``name`` and ``upstream`` and implement the hooks.

    Args:
        cfg: the validated config.
        tasks: the loaded tasks (files, splits, normalisers) of ``cfg.data``.
        upstream: checkpoints of the stages this one needs, by stage name, as loaded by
            ``ups.checkpoint.load_checkpoint`` (``{"state_dict": ..., "ups": ...}``); None when the
            stage's own checkpoint, which holds its upstream parts too, is loaded next
            (``from_checkpoint``).
    """

    name: ClassVar[str]
    upstream: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Config, tasks: list[TaskData], upstream: dict[str, dict] | None = None):
        self.cfg = cfg
        self.tasks = tasks
        self.upstream_checkpoints = upstream
        missing = [name for name in self.upstream if name not in (upstream or {})]
        if upstream is not None and missing:
            raise ValueError(f"stage {self.name} needs the checkpoints of {missing}")
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.model: nn.Module = self.build()

    # ---- what a stage defines ---------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> nn.Module:
        """The module holding trainable parts and frozen upstream parts (requires_grad=False)."""

    @abc.abstractmethod
    def train_dataset(self) -> Dataset: ...

    @abc.abstractmethod
    def val_dataset(self) -> Dataset: ...

    collate = staticmethod(collate_task_batch)  # the collate_fn of both loaders

    @abc.abstractmethod
    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """``"loss"`` (optimised) and other scalar terms, logged per step; entries of shape [B]
        are per-sample metrics (``nrmse``, ``<task>/nrmse``) averaged over the epoch."""

    @abc.abstractmethod
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-sample values ``[B]`` (``"nrmse"`` required); engines average them over the epoch."""

    def configure_optimizers(self, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        """Optimizer and a scheduler stepped once per optimizer step (``total_steps`` of them)."""
        return build_optimizer(self.cfg, self.name, self.trainable_parameters(), total_steps)

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:  # noqa: B027 (optional hook)
        """One-off work before the datasets are built for training (e.g. filling the latent
        cache), run by the engine on its device; nothing by default."""

    def all_parameters_used_every_step(self) -> bool:
        """False when a batch of one task leaves some trainable parameters unused (task-specific
        stems), which DDP must be told about."""
        return True

    # ---- shared behaviour -------------------------------------------------------------
    def upstream_checkpoint(self) -> dict | None:
        """The checkpoint of the stage this one builds on; None when its own checkpoint is loaded next."""
        return None if self.upstream_checkpoints is None else self.upstream_checkpoints[self.upstream[0]]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def frozen_modules(self) -> list[nn.Module]:
        """Upstream parts that never train; they stay in eval mode."""
        return []

    def set_train_mode(self, training: bool) -> None:
        self.model.train(training)
        for module in self.frozen_modules():
            module.eval()

    def metadata(self) -> dict:
        """What a checkpoint of this stage records besides weights (plain types only)."""
        return {
            "normalizers": {t.name: t.normalizer.to_dict() for t in self.tasks},
            "tasks": [t.name for t in self.tasks],
        }

    def extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
