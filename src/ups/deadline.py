"""``training.time_budget``: one wall-clock deadline for a whole ``ups train`` or ``ups pipeline``
command, shared by its stages.

The clock starts when the command starts (``ups.cli.main``), so the budget covers everything
the user waits for: config and data loading and checks, every stage's set-up (upstream
checkpoints, latent cache, subspace fit, loaders), training, validations and checkpoint writes.

- ``Deadline``: the command's end on ``clock()``.
- ``Deadline.for_stage``: when a stage starts, it gets ``training.time_shares[stage]`` of the
  time that is left, relative to the shares of the stages still to run; what an earlier stage
  did not use goes to the later ones, and the last stage runs to the command's deadline.
  A stage whose share is gone before it starts is skipped (``ups.pipeline``).
- ``StopRule``: inside a stage, the engine stops training after a step when the time left
  would not hold one more step, the validation that follows the stop and the checkpoint
  writes, as measured so far in the stage (``observe_step``, ``observe_validation``). So a
  stage ends within its deadline unless a single step or validation runs longer than before.

``clock`` is ``time.monotonic``; tests replace it (``ups.deadline.clock = ...``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

clock = time.monotonic


class StageOutOfTime(Exception):
    """A stage that cannot validate once before its deadline: it is skipped, not failed."""


def now() -> float:
    return clock()


@dataclass(frozen=True)
class Deadline:
    """An end time on ``clock()``."""

    end: float

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        return cls((now() if start is None else start) + seconds)

    def remaining(self) -> float:
        return self.end - now()

    def for_stage(self, stage: str, plan_left: Sequence[str], shares: dict[str, float]) -> Deadline:
        """The deadline of ``stage``, the first of ``plan_left`` (the stages still to run, in
        order): its share of the time left, relative to theirs."""
        total = sum(shares.get(name, 1.0) for name in plan_left)
        fraction = shares.get(stage, 1.0) / total if total > 0 else 1.0
        if stage == plan_left[-1]:
            fraction = 1.0
        return Deadline(now() + max(0.0, self.remaining()) * fraction)


class StopRule:
    """When to stop training so that a stage ends by ``deadline``.

    After each optimizer step: stop when ``now + step + validation + margin >= deadline``,
    where ``step`` is the mean of the last few steps' durations, ``validation`` the last
    validation's duration with its checkpoint writes (before the first one: an estimate from
    a validation batch, ``estimate_validation``), and ``margin`` a small allowance (2% of the
    stage's time, at most 1 s) for what follows the last validation (the end-of-fit writes).
    """

    def __init__(self, deadline: Deadline, validates: bool, recent: int = 8):
        self.deadline, self.validates, self.recent = deadline, validates, recent
        self.steps: list[float] = []
        self.validation = 0.0
        self.margin = min(1.0, 0.02 * max(0.0, deadline.remaining()))

    def observe_step(self, seconds: float) -> None:
        self.steps.append(seconds)
        del self.steps[: -self.recent]

    def observe_validation(self, seconds: float) -> None:
        self.validation = seconds

    def estimate_validation(self, seconds_per_batch: float, batches: int) -> None:
        self.validation = max(self.validation, seconds_per_batch * batches)

    def reserve(self) -> float:
        step = sum(self.steps) / len(self.steps) if self.steps else 0.0
        return step + (self.validation if self.validates else 0.0) + self.margin

    def should_stop(self) -> bool:
        return self.deadline.remaining() <= self.reserve()

    def schedule_seconds(self) -> float:
        """The seconds a learning-rate schedule started now should run over: the time left
        less the final validation and the margin (at least one second)."""
        return max(
            1.0, self.deadline.remaining() - (self.validation if self.validates else 0.0) - self.margin
        )
