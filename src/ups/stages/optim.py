"""Optimizer and learning-rate schedule of a stage: the global ``optimizer`` section with the
stage's ``stages.<name>.optimizer`` overrides on top.

The schedule runs over the stage's budget: its optimizer steps, or, when ``training.max_time``
is set, whichever of the steps and the wall clock runs out first. A stage stopped by its time
limit therefore ends with the rate decayed, as it would at its last epoch.
"""

from __future__ import annotations

import math
import time

import torch

from ups.config import Config, max_time_seconds


def resolved_optimizer(cfg: Config, stage: str) -> dict:
    """The optimizer settings of ``stage``: global values, then the stage's overrides."""
    override = getattr(cfg.stages, stage).optimizer  # its keys: the settings a stage may override
    return {k: getattr(cfg.optimizer, k) if v is None else v for k, v in vars(override).items()}


def build_optimizer(cfg: Config, stage: str, params, total_steps: int):
    """(optimizer, ``BudgetSchedule`` stepped once per optimizer step, or None for a constant rate)."""
    s = resolved_optimizer(cfg, stage)
    params = list(params)
    if s["name"] in ("adamw", "adam"):
        adam = torch.optim.AdamW if s["name"] == "adamw" else torch.optim.Adam
        opt = adam(params, lr=s["lr"], weight_decay=s["weight_decay"], betas=tuple(cfg.optimizer.betas))
    else:
        opt = torch.optim.SGD(params, lr=s["lr"], weight_decay=s["weight_decay"], momentum=0.9)
    if s["scheduler"] == "none" and s["warmup_steps"] == 0:
        return opt, None
    return opt, BudgetSchedule(
        opt, s["scheduler"], s["warmup_steps"], max(total_steps, 1), max_time_seconds(cfg.training.max_time)
    )


def lr_factor(kind: str, warmup: int, progress: float, step: int) -> float:
    """The multiplier of the base rate at optimizer step ``step`` (0-based), ``progress`` in [0, 1]
    of the way through the budget."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "step":
        return 0.1 ** math.floor(3 * progress)
    return 1.0


class BudgetSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up over ``warmup`` steps, then ``kind`` (cosine, step or none) over the budget.

    Progress through the budget is the larger of the step fraction, (step - warmup) / (total -
    warmup), and, when ``seconds`` (``training.max_time``) is set, the fraction of it spent since
    the scheduler was built. The seconds spent are part of the state, so a resumed stage goes
    on from where its clock stopped. Without a time limit the schedule depends on the step alone.
    """

    def __init__(self, optimizer, kind: str, warmup: int, total: int, seconds: float | None = None):
        self.kind, self.warmup, self.total, self.seconds = kind, warmup, total, seconds
        self.seconds_before = 0.0  # spent by earlier processes of the stage (restored on resume)
        self._clock = time.monotonic()
        self._agreed: float | None = None  # the seconds spent, as the ranks agreed, during step_with_seconds
        super().__init__(optimizer)

    def spent(self) -> float:
        if self._agreed is not None:
            return self._agreed
        return self.seconds_before + time.monotonic() - self._clock

    def step_with_seconds(self, seconds: float) -> None:
        """One step that takes ``seconds`` as the time spent instead of reading this process's
        clock: the ranks of a distributed run step with the same value (rank 0's), so their
        rates stay identical."""
        self._agreed = seconds
        try:
            self.step()
        finally:
            self._agreed = None

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup) / max(1, self.total - self.warmup)
        by_time = self.spent() / self.seconds if self.seconds else 0.0
        return min(1.0, max(by_steps, by_time, 0.0))

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        factor = lr_factor(self.kind, self.warmup, self.progress(step), step)
        return [base * factor for base in self.base_lrs]

    # What the config gives (a resume under a changed config follows the new one) or the clock
    # of this process: not part of the state.
    _NOT_STATE = ("kind", "warmup", "total", "seconds", "_clock", "_agreed", "lr_lambdas")

    def state_dict(self) -> dict:
        state = {k: v for k, v in super().state_dict().items() if k not in self._NOT_STATE}
        return {**state, "seconds_before": self.spent()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in self._NOT_STATE})
        self._clock = time.monotonic()
