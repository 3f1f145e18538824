"""Engines run a Stage: Lightning (the product) or a native PyTorch loop (the reference).

``fit_stage`` is the one entry point; both engines read the same config, draw the same
batches and write the same checkpoint format (``ups.checkpoint``). Either engine loads the
weights of the other's checkpoints; each resumes only its own (``refuse_another_engines_checkpoint``).
"""

from __future__ import annotations

import logging

from ups.checkpoint import check_fit, load_checkpoint
from ups.config import Config
from ups.config.engines import check_engine, refuse_unknown_engine
from ups.engines.loaders import task_batch_sampler
from ups.engines.progress import FitResult, inside_epoch
from ups.engines.settings import VALIDATION_OFF_MESSAGE, stage_settings, validation_on
from ups.errors import UPSError
from ups.runs import RunDir

__all__ = ["FitResult", "fit_checked", "fit_stage", "preflight"]

log = logging.getLogger("ups")


def preflight(stage, cfg: Config, run: RunDir, *, engine: str, resume: bool) -> None:
    """The checks that need the built stage, so that bad input fails before a run folder is
    written: FSDP's modules, validation's cadence, the resume checkpoint (its engine and its fit),
    non-empty splits that fit the ranks. The config's own rules and the engine's (devices, precision,
    offload, tracking) were checked when it was resolved (``ups.resolve.load_config``)."""
    check_engine(cfg, engine)  # resolved configs passed already; this is for direct callers
    devices = cfg.training.devices * cfg.training.num_nodes
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
        if not run.last_checkpoints(stage.name):
            raise UPSError(f"resume: {last} does not exist; train the stage first or drop resume.")
        last = run.resume_checkpoint(stage.name)  # a damaged newest one: the previous, with a warning
        checkpoint = load_checkpoint(last)
        refuse_another_engines_checkpoint(checkpoint, last, stage.name, engine, run)
        check_fit(stage, checkpoint)
        progress = checkpoint.get("ups", {}).get("progress")
    splits = [("train", stage.train_dataset())] + (
        [("val", stage.val_dataset())] if validation_on(cfg) else []
    )
    ranks = devices if engine == "lightning" else 1
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


def refuse_another_engines_checkpoint(checkpoint: dict, path, stage: str, engine: str, run: RunDir) -> None:
    """A checkpoint resumes exactly only in the engine that wrote it (``ups.engine``; before UPS
    recorded it, Lightning's checkpoints were the ones with ``loops``): Lightning's loop and
    callback state is Lightning's own, and the native engine keeps its own in ``ups``."""
    writer = checkpoint.get("ups", {}).get("engine") or ("lightning" if "loops" in checkpoint else "native")
    if writer != engine:
        raise UPSError(
            f"resume: {path} was written by the {writer} engine, and only the engine that wrote a "
            f"checkpoint resumes it. Resume with --engine {writer}; or, to train stage {stage} with "
            f"the {engine} engine, start it afresh in a new run folder on this run's upstream "
            f"checkpoints (ups train --stage {stage} --engine {engine} --from-run {run.root})."
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

    With ``resume`` training continues from ``run.resume_checkpoint(stage)`` (the newest intact
    kept last checkpoint, written by the same engine) with weights, optimizer, scheduler, EMA,
    generator and counters restored.
    ``callbacks``: extra Lightning callbacks (Lightning engine only). ``step_offset`` is added
    to every logged step (the run's continuous step axis, ``RunDir.step_offset``); the
    checkpoints' ``global_step`` stays the stage's own.
    """
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
    anything run ``preflight`` themselves, then this, on a config resolved for the engine:
    ``ups.resolve.load_config(engine=...)``, which applied the guards).
    Each engine runs the stage's ``prepare`` (e.g. the latent cache) on its own device before
    building the loaders. ``deadline`` (``ups.deadline.Deadline``, Lightning only): training
    stops so that the stage ends by it (``training.time_budget``)."""
    refuse_unknown_engine(engine)  # no default engine: a misspelt name must not train natively
    if not validation_on(cfg):
        log.info(VALIDATION_OFF_MESSAGE)
    if engine == "lightning":
        from ups.engines.lightning import fit_lightning  # lazy: Lightning loads when its engine runs

        return fit_lightning(
            stage, cfg, run, resume=resume, callbacks=callbacks, step_offset=step_offset, deadline=deadline
        )
    from ups.engines.native import fit_native  # lazy: as Lightning's, loaded when its engine runs

    return fit_native(stage, cfg, run, resume=resume, callbacks=callbacks, step_offset=step_offset)
