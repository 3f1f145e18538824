"""``ups pipeline``: every enabled stage of a config, in order, into one run folder.

Which stages: those of ``STAGE_NAMES`` (in that order) with ``stages.<s>.epochs > 0``, only
the listed ones when ``stages`` is given; ``steady_prior`` only when a task is steady, the
operator and its correctors only when a task is time-dependent. A stage
that would run but is not in ``STAGES`` stops the pipeline before anything is trained. Each
stage loads its upstream stages' best checkpoints from the same run (``runner.build_stage``).

The run folder: one that already has a stage past ``pending`` is refused unless ``resume``.
With ``resume`` a done stage whose checkpoint exists is kept, a stage with a ``last.ckpt``
(running when it was killed, or failed) continues from it, any other starts afresh.

Failure: bad input found before a stage trains (config, data, a missing or misfitting
upstream or resume checkpoint) raises ``UPSError`` and writes nothing for that stage; an
exception while it trains marks it failed in stage_status.json and raises ``StageFailed``.
Later stages are not started either way.

Several devices: Lightning's script launcher starts the other ranks (the same command, run
again) when the first stage's Trainer fits; every later Trainer finds the ranks and the
process group in place, and every rank walks the same plan. Only rank 0 writes
stage_status.json, so all ranks meet at a barrier after each stage: the next stage's
decisions, upstream checkpoints and step offset then read the same status on every rank.

The figures of ``stage_table``: epochs and optimizer steps from stage_status.json; the best
validation epoch's overall metrics (``val/<name>``, no task part) from
logs/<stage>/metrics.csv, the one record that holds every epoch of a stage across resumes,
for stages trained now and earlier alike.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ups.config import STAGE_NAMES, Config
from ups.data.summary import config_file_infos
from ups.deadline import Deadline, now
from ups.errors import UPSError
from ups.pipeline.runner import (
    SKIPPED_FOR_TIME,
    StageRun,
    checked_stage,
    fit_in_run,
    is_rank_zero,
)
from ups.runs import RunDir
from ups.stages import STAGES

log = logging.getLogger("ups")


class StageFailed(Exception):
    """A stage raised while training: it is marked failed and later stages were not started."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"stage {stage} failed: {type(error).__name__}: {error}")
        self.stage, self.error = stage, error


def planned_stages(cfg: Config, only: Sequence[str] | None = None) -> list[str]:
    """The stages to run, in ``STAGE_NAMES`` order (see the module docstring)."""
    if only is not None and not only:
        raise UPSError(
            f"--stages names no stage; give a comma-separated list of {', '.join(STAGE_NAMES)}, "
            f"or leave --stages out to run every enabled stage."
        )
    unknown = [name for name in only or () if name not in STAGE_NAMES]
    if unknown:
        raise UPSError(
            f"--stages: unknown stage(s) {', '.join(unknown)}; valid names: {', '.join(STAGE_NAMES)}."
        )
    plan = []
    # the kinds of the tasks ("transient", "steady"): the files opened once, when a stage's kind matters
    kinds = functools.cache(lambda: {info.kind for _, info in config_file_infos(cfg)})

    for name in STAGE_NAMES:
        if only is not None and name not in only:
            continue
        if getattr(cfg.stages, name).epochs <= 0:
            log.info("stage %s: stages.%s.epochs is 0, skipped", name, name)
        elif name == "steady_prior" and "steady" not in kinds():
            log.info("stage steady_prior: the config has no steady task, skipped")
        elif name in LATENT_DYNAMICS and "transient" not in kinds():
            log.info("stage %s: the config has no time-dependent task, skipped", name)
        else:
            plan.append(name)
    missing = [name for name in plan if name not in STAGES]
    if missing:
        raise UPSError(
            f"stage(s) {', '.join(missing)} have epochs > 0 but are not available in this version "
            f"(available: {', '.join(STAGES)}); set stages.<stage>.epochs=0 or leave them out of --stages."
        )
    if not plan:
        raise UPSError("no stage to train: every selected stage has stages.<stage>.epochs=0.")
    return plan


LATENT_DYNAMICS = ("operator", "diff_residual", "consistency_distill")  # stages of time-dependent tasks only


def refuse_used_run(run: RunDir) -> None:
    """A run folder with stages past ``pending`` is continued with ``resume`` only."""
    used = {
        name: entry["state"]
        for name, entry in run.status().items()
        if entry.get("state", "pending") != "pending"
    }
    if used:
        listed = ", ".join(f"{name} ({state})" for name, state in used.items())
        raise UPSError(
            f"run folder {run.root} already has stage(s) {listed}; continue it with --resume, "
            f"or train into a new --run-dir."
        )


def resume_action(run: RunDir, stage: str) -> str:
    """What ``--resume`` does with ``stage``: "already done", "resumed" or "trained" (afresh)."""
    if run.status().get(stage, {}).get("state") == "done":
        try:
            run.best_checkpoint(stage)
            return "already done"
        except UPSError:
            log.warning(
                "stage %s: stage_status.json says done but its checkpoints are gone; training it again", stage
            )
    return "resumed" if run.last_checkpoints(stage) else "trained"


def run_pipeline(
    cfg: Config,
    run_dir: Path,
    *,
    stages: Sequence[str] | None = None,
    engine: str = "lightning",
    resume: bool = False,
    deadline: Deadline | None = None,
) -> list[StageRun]:
    """Train the planned stages of ``cfg`` into ``run_dir`` in order; one ``StageRun`` per
    stage trained now, (``resume``) already done, or skipped because ``deadline``
    (``training.time_budget``) left it less than ``MIN_STAGE_SECONDS``, it and every later
    stage. Raises ``UPSError`` on bad input and ``StageFailed`` when a stage fails while training."""
    plan = planned_stages(cfg, stages)
    run = RunDir(run_dir)
    if not resume and is_rank_zero():  # the other ranks start once rank 0 has begun writing
        refuse_used_run(run)
    # each stage's action, decided before any trains (training one stage changes no other's)
    actions = {stage: resume_action(run, stage) if resume else "trained" for stage in plan}
    done, out_of_time = [], False
    for i, stage in enumerate(plan):
        action = actions[stage]
        if action == "already done":
            log.info("stage %s: done in %s, kept", stage, run.root)
            done.append(StageRun(stage, run, None, action))
            continue
        started, own, reason = now(), None, "an earlier stage ran out of training.time_budget"
        if deadline is not None and not out_of_time:
            own = deadline.for_stage(
                stage, [s for s in plan[i:] if actions[s] != "already done"], cfg.training.time_shares
            )
            reason = (
                f"training.time_budget leaves it {max(0.0, own.remaining()):.1f} s, less than "
                f"{MIN_STAGE_SECONDS:.0f} s"
            )
            out_of_time = _agreed(own.remaining() < MIN_STAGE_SECONDS)
        if out_of_time:
            log.warning("stage %s: skipped: %s", stage, reason)
            if is_rank_zero() and run.status_path.is_file():
                run.set_stage_state(stage, "skipped", reason=reason)
            done.append(StageRun(stage, run, None, SKIPPED_FOR_TIME))
            continue
        resumed = action == "resumed"
        log.info(
            "stage %s: %s%s",
            stage,
            "resuming from its last.ckpt" if resumed else "training",
            "" if own is None else f", {own.remaining():.1f} s of training.time_budget",
        )
        stage_obj = checked_stage(cfg, stage, run, engine=engine, resume=resumed)
        try:
            ran = fit_in_run(
                stage_obj, cfg, run, engine=engine, resume=resumed, deadline=own, started=started
            )
        except Exception as exc:
            raise StageFailed(stage, exc) from exc
        done.append(ran)
        out_of_time = ran.action == SKIPPED_FOR_TIME
        wait_for_rank_zero()
    return done


MIN_STAGE_SECONDS = 1.0  # under training.time_budget, a stage left less than this is not started


def _agreed(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (each rank reads its own clock)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [flag]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])
    return flag


def wait_for_rank_zero() -> None:
    """With several devices: every rank waits until rank 0 has recorded the stage."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def stage_table(done: list[StageRun]) -> list[str]:
    """One line per stage: state, epochs, optimizer steps, best val/nrmse and the best epoch's
    other overall validation metrics; a header line first."""
    rows = [("stage", "state", "epochs", "steps", "val/nrmse", "other val metrics of the best epoch")]
    for item in done:
        entry = item.run.status().get(item.stage, {})
        best = best_validation(item.run.metrics_csv(item.stage))
        nrmse = best.pop("val/nrmse", None)
        note = {
            "resumed": " (resumed)",
            "already done": " (earlier)",
            SKIPPED_FOR_TIME: " (time budget)",
        }.get(item.action, "")
        rows.append(
            (
                item.stage,
                entry.get("state", "?") + note,
                str(entry.get("epochs", "-")),
                str(entry.get("global_step", "-")),
                "-" if nrmse is None else f"{nrmse:.4g}",
                "  ".join(f"{key.removeprefix('val/')} {value:.4g}" for key, value in sorted(best.items())),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows]


def best_validation(metrics_csv: Path) -> dict[str, float]:
    """The overall validation metrics (``val/<name>``) of the row with the lowest finite
    val/nrmse in a stage's metrics.csv; empty without validation rows."""
    if not metrics_csv.is_file():
        return {}
    with metrics_csv.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/nrmse")]
    rows = [row for row in rows if math.isfinite(float(row["val/nrmse"]))]
    if not rows:
        return {}
    best = min(rows, key=lambda row: float(row["val/nrmse"]))
    return {
        key: float(value)
        for key, value in best.items()
        if key.startswith("val/") and key.count("/") == 1 and value
    }
