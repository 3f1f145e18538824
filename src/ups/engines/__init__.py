"""Engines run a Stage: Lightning (the product) or a native PyTorch loop (the reference).

``fit_stage`` is the one entry point; both engines read the same config, draw the same
batches and write the same checkpoint format (``ups.checkpoint``).
"""

from __future__ import annotations

import importlib.util
import logging

from ups.checkpoint import check_fit, load_checkpoint
from ups.config import Config
from ups.engines.common import (
    FitResult,
    stage_settings,
    task_batch_sampler,
    uses_gpu,
    validation_on,
)
from ups.engines.guards import apply_guards
from ups.engines.progress import inside_epoch
from ups.errors import UPSError
from ups.runs import RunDir
from ups.tracking import check_tracking

__all__ = ["ENGINES", "FitResult", "fit_checked", "fit_stage", "preflight"]


def _lightning(stage, cfg, run, resume, callbacks, step_offset, deadline):
    # lazy: Lightning loads only when its engine runs
    from ups.engines.lightning import fit_lightning

    return fit_lightning(
        stage, cfg, run, resume=resume, callbacks=callbacks, step_offset=step_offset, deadline=deadline
    )


def _native(stage, cfg, run, resume, callbacks, step_offset, deadline):
    # lazy: each engine's module loads only when that engine runs
    from ups.engines.native import fit_native

    return fit_native(stage, cfg, run, resume=resume, callbacks=callbacks, step_offset=step_offset)


log = logging.getLogger("ups")

ENGINES = {"lightning": _lightning, "native": _native}


def preflight(stage, cfg: Config, run: RunDir, *, engine: str, resume: bool) -> None:
    """Every check that needs no training, so that bad input fails before a run folder is
    written: the engine and its options, the resume checkpoint and its fit, non-empty data."""
    if engine not in ENGINES:
        raise UPSError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}.")
    if engine == "native":
        # lazy: each engine's module loads only when that engine runs
        from ups.engines.native import refuse_unsupported

        refuse_unsupported(cfg)
        if cfg.training.time_budget is not None:
            raise UPSError(
                "training.time_budget is kept by the Lightning engine; use --engine lightning, or "
                "training.max_time (per stage) with the native engine."
            )
    if (
        engine == "lightning"
        and cfg.logging.tensorboard
        and not any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
    ):
        raise UPSError(
            "logging.tensorboard=true needs the tensorboard package: `pip install tensorboard`, "
            "or set logging.tensorboard=false (metrics.csv is written either way)."
        )
    check_tracking(cfg)
    devices = cfg.training.devices * cfg.training.num_nodes
    if cfg.training.cpu_offload_optimizer and (engine != "lightning" or not uses_gpu(cfg) or devices < 2):
        raise UPSError(
            "training.cpu_offload_optimizer offloads FSDP's shards, so it needs the Lightning engine with "
            "training.strategy=fsdp on several GPUs (found: engine " + engine + f", {devices} device(s), "
            f"{'GPU' if uses_gpu(cfg) else 'CPU'}); set it false."
        )
    if (
        engine == "lightning"
        and cfg.training.strategy == "fsdp"
        and devices > 1
        and not stage.all_parameters_used_every_step()
    ):
        raise UPSError(
            f"stage {stage.name}: training.strategy=fsdp needs every rank to run the same modules at each "
            f"step, but this config's tasks use different stems or heads (one task per batch, a different "
            f"task on each rank); use training.strategy=ddp for it."
        )
    every, epochs = cfg.training.val_every_n_epochs, stage_settings(cfg, stage.name).epochs
    if validation_on(cfg) and 0 < epochs < every:
        raise UPSError(
            f"training.val_every_n_epochs = {every} is more than stages.{stage.name}.epochs = {epochs}: "
            f"the stage would never validate (no val/nrmse, no best checkpoint); lower "
            f"training.val_every_n_epochs or raise stages.{stage.name}.epochs."
        )
    last = run.last_checkpoint(stage.name)
    progress = None
    if resume:
        if not last.is_file():
            raise UPSError(f"resume: {last} does not exist; train the stage first or drop resume.")
        checkpoint = load_checkpoint(last)
        check_fit(stage, checkpoint)
        progress = checkpoint.get("ups", {}).get("progress")
    splits = [("train", stage.train_dataset())] + (
        [("val", stage.val_dataset())] if validation_on(cfg) else []
    )
    ranks = cfg.training.devices * cfg.training.num_nodes if engine == "lightning" else 1
    for name, dataset in splits:
        if len(dataset) == 0:
            fix = (
                "set data.split.val > 0 or training.skip_lightning_val=true"
                if name == "val"
                else "check data.split and the tasks' trajectory counts"
            )
            raise UPSError(f"stage {stage.name}: the {name} split has no samples; {fix}.")
        try:  # the sampler refuses a split too small to give every rank the same number of batches
            sampler = task_batch_sampler(dataset, cfg, stage.name, train=name == "train", world_size=ranks)
        except ValueError as exc:
            raise UPSError(f"stage {stage.name}, {name} split on {ranks} rank(s): {exc}") from None
        if name == "train" and inside_epoch(progress) and len(sampler) != progress["batches_per_epoch"]:
            raise UPSError(
                f"resume: {last} was written inside epoch {progress['epoch']} of "
                f"{progress['batches_per_epoch']} batches per rank, but this config gives {len(sampler)} "
                f"(another batch size, device count or data); resume with the run's config, or train the "
                f"stage afresh."
            )


def fit_stage(
    stage,
    cfg: Config,
    run: RunDir,
    *,
    engine: str = "lightning",
    resume: bool = False,
    callbacks=(),
    step_offset: int = 0,
) -> FitResult:
    """Train ``stage`` for ``stages.<stage.name>.epochs`` epochs into ``run``.

    With ``resume`` training continues from ``run.last_checkpoint(stage)`` (either
    engine's) with weights, optimizer, scheduler, EMA, generator and counters restored.
    ``callbacks``: extra Lightning callbacks (Lightning engine only). ``step_offset`` is added
    to every logged step (the run's continuous step axis, ``RunDir.step_offset``); the
    checkpoints' ``global_step`` stays the stage's own.
    """
    cfg = apply_guards(cfg)
    preflight(stage, cfg, run, engine=engine, resume=resume)
    return fit_checked(
        stage, cfg, run, engine=engine, resume=resume, callbacks=callbacks, step_offset=step_offset
    )


def fit_checked(
    stage,
    cfg: Config,
    run: RunDir,
    *,
    engine: str,
    resume: bool,
    callbacks=(),
    step_offset: int = 0,
    deadline=None,
) -> FitResult:
    """``fit_stage`` after ``preflight`` has passed (callers that must check before writing
    anything run ``preflight`` themselves, then this, on a config through ``apply_guards``).
    Each engine runs the stage's ``prepare`` (e.g. the latent cache) on its own device before
    building the loaders. ``deadline`` (``ups.deadline.Deadline``, Lightning only): training
    stops so that the stage ends by it (``training.time_budget``)."""
    return ENGINES[engine](stage, cfg, run, resume, callbacks, step_offset, deadline)
