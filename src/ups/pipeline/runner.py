"""Run one stage in a run folder: data, upstream checkpoints, engine, status.

Everything that can be wrong with the input (data files, upstream checkpoints, engine
options) is checked before the run folder is created or touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_write_text, remove_leftovers
from ups.checkpoint import load_checkpoint
from ups.config import Config
from ups.data.summary import load_config_tasks
from ups.deadline import Deadline, StageOutOfTime, now
from ups.engines import FitResult, fit_checked, preflight
from ups.engines.settings import training_device
from ups.errors import UPSError
from ups.runs import RunDir
from ups.stages import STAGES

log = logging.getLogger("ups")


@dataclass
class StageRun:
    stage: str
    run: RunDir
    result: FitResult | None  # None when the stage did not train now
    # trained | resumed | skipped (epochs <= 0) | skipped (time budget) | already done
    # (``ups pipeline --resume``)
    action: str = "trained"


SKIPPED_FOR_TIME = "skipped (time budget)"


def is_rank_zero() -> bool:
    """False in every process of a multi-device run but the first: those Lightning starts for
    devices 1, 2, …, and those of torchrun or SLURM (Lightning's own reading of the rank,
    ``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``, …, and the node's rank)."""
    # lazy: Lightning loads only when a command asks, not when the pipeline is imported
    from ups.engines.lightning_adapter import environment_rank

    return environment_rank() == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def build_stage(cfg: Config, stage: str, source: RunDir):
    """The Stage object of ``stage`` with its data loaded and its upstream stages' best
    checkpoints taken from the run ``source``."""
    if stage not in STAGES:
        raise UPSError(f"stage '{stage}' is not available; choose one of {', '.join(STAGES)}.")
    upstream = {name: load_checkpoint(source.best_checkpoint(name)) for name in STAGES[stage].upstream}
    return STAGES[stage](cfg, load_config_tasks(cfg), upstream)


def latent_cache_root(cfg: Config) -> Path:
    """``training.latent_cache_dir``; UPSError when it is not set."""
    if cfg.training.latent_cache_dir is None:
        raise UPSError(
            "training.latent_cache_dir is not set; set it in the config or as an override, "
            "e.g. training.latent_cache_dir=data/latent_cache."
        )
    return Path(cfg.training.latent_cache_dir)


def build_latent_cache(cfg: Config, run_dir: Path) -> list:
    """Fill ``training.latent_cache_dir`` with the latents of the autoencoder of ``run_dir``
    (verifying entries that are there); returns the cache entries, one per transient task."""
    latent_cache_root(cfg)
    stage = build_stage(cfg, "operator", RunDir(run_dir))
    stage.dynamics.prepare_latents(training_device(cfg), progress=True)  # not the operator's subspace
    return stage.dynamics.latents


def train_stage(
    cfg: Config,
    stage: str,
    run_dir: Path,
    *,
    engine: str = "lightning",
    resume: bool = False,
    force: bool = False,
    from_run: Path | None = None,
    deadline: Deadline | None = None,
) -> StageRun:
    """Train ``stage`` of ``cfg`` in ``run_dir`` with ``engine`` (by ``deadline``, when given:
    ``training.time_budget``). A stage done in the run is refused unless ``resume`` or ``force``,
    which first moves its checkpoints and logs to ``superseded/<time>/``."""
    if stage not in STAGES:
        raise UPSError(f"stage '{stage}' is not available; choose one of {', '.join(STAGES)}.")
    run = RunDir(run_dir)
    if getattr(cfg.stages, stage).epochs <= 0:
        log.info("stage %s: stages.%s.epochs is 0, skipped", stage, stage)
        return StageRun(stage, run, None, action="skipped")
    started = now()
    refuse_done_stage(run, stage, resume=resume, force=force)
    stage_obj = checked_stage(cfg, stage, run, engine=engine, resume=resume, from_run=from_run)
    if force and is_rank_zero() and run.status().get(stage, {}).get("state") == "done":
        supersede(run, [run.checkpoint_dir(stage), run.log_dir(stage)], {stage: run.status()[stage]})
    return fit_in_run(stage_obj, cfg, run, engine=engine, resume=resume, deadline=deadline, started=started)


def tune_stage(
    cfg: Config,
    stage: str,
    run_dir: Path,
    request,
    *,
    engine: str = "lightning",
    force: bool = False,
    from_run: Path | None = None,
) -> list[str]:
    """Lightning's Tuner on a checked copy of ``stage`` (``ups.engines.tuning``): writes
    ``<run>/tuning.json``; returns the overrides that carry the tuned values into the fit."""
    # lazy: Lightning's Tuner loads only when a stage is tuned
    from ups.engines.tuning import tune

    refuse_done_stage(RunDir(run_dir), stage, resume=False, force=force)
    stage_obj = checked_stage(cfg, stage, RunDir(run_dir), engine=engine, resume=False, from_run=from_run)
    return tune(stage_obj, cfg, Path(run_dir), request)


def refuse_done_stage(run: RunDir, stage: str, *, resume: bool, force: bool) -> None:
    """A stage done in ``run`` is trained again only when asked (``ups pipeline`` refuses alike).
    Rank 0 decides: the other ranks start when it has begun training the stage."""
    state = run.status().get(stage, {}).get("state")
    if state == "done" and not (resume or force) and is_rank_zero():
        raise UPSError(
            f"run folder {run.root} already has stage {stage} (done); train it again with --force "
            f"(its checkpoints and logs are moved to {run.root / 'superseded'}/<time>/), continue it "
            f"with --resume, or train into a new --run-dir."
        )


def supersede(run: RunDir, paths: list[Path], status: dict | None = None) -> Path | None:
    """Move ``paths`` (in ``run``) to ``superseded/<time>/``, each at its place in the run folder,
    with the stage_status.json entries ``status`` of what they were; the folder, or None when
    none of ``paths`` exists."""
    moved = [path for path in paths if path.exists()]
    if not moved:
        return None
    target = run.superseded_dir(datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%S.%fZ"))
    for path in moved:
        place = target / path.relative_to(run.root)
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), place)
    if status:
        atomic_write_text(target / run.status_path.name, json.dumps(status, indent=2, sort_keys=True) + "\n")
    log.info("the earlier training in %s is kept in %s", run.root, target)
    return target


def checked_stage(
    cfg: Config, stage: str, run: RunDir, *, engine: str, resume: bool, from_run: Path | None = None
):
    """The Stage object of ``stage``, built on its upstream checkpoints (from ``from_run`` or
    ``run``) and through ``preflight``: every check that needs no training, before anything is
    written. Raises ``UPSError`` on bad input."""
    stage_obj = build_stage(cfg, stage, RunDir(from_run) if from_run else run)
    preflight(stage_obj, cfg, run, engine=engine, resume=resume)
    return stage_obj


def fit_in_run(
    stage_obj,
    cfg: Config,
    run: RunDir,
    *,
    engine: str,
    resume: bool,
    deadline: Deadline | None = None,
    started: float | None = None,
) -> StageRun:
    """Train a ``checked_stage`` into ``run``, keeping ``stage_status.json`` truthful (rank 0):
    running (with the log step offset) → done (checkpoints, score, steps, epochs, and the
    stage's wall-clock ``seconds`` since ``started``, its set-up included) or failed."""
    stage, offset = stage_obj.name, run.step_offset(stage_obj.name)
    action = "resumed" if resume else "trained"
    started = now() if started is None else started
    if not is_rank_zero():  # Lightning re-runs this command per device; rank 0 keeps the books
        try:
            result = fit_checked(
                stage_obj, cfg, run, engine=engine, resume=resume, step_offset=offset, deadline=deadline
            )
        except StageOutOfTime:
            return StageRun(stage, run, None, SKIPPED_FOR_TIME)
        return StageRun(stage, run, result, action)
    run.init(cfg)
    if resume:  # what a killed write left behind: its temporary files, never the files themselves
        for folder in (run.root, run.checkpoint_dir(stage), run.log_dir(stage)):
            remove_leftovers(folder)
    else:  # an earlier attempt's last checkpoints must not become this fit's fall-backs
        supersede(run, run.last_checkpoints(stage))
    run.set_stage_state(stage, "running", engine=engine, step_offset=offset)
    try:
        result = fit_checked(
            stage_obj, cfg, run, engine=engine, resume=resume, step_offset=offset, deadline=deadline
        )
    except StageOutOfTime as exc:
        log.warning("%s; skipped", exc)
        if not resume:  # nothing of it is kept: no checkpoint, no log
            for folder in (run.checkpoint_dir(stage), run.log_dir(stage)):
                shutil.rmtree(folder, ignore_errors=True)
        run.set_stage_state(stage, "skipped", reason=str(exc))
        return StageRun(stage, run, None, SKIPPED_FOR_TIME)
    except BaseException as exc:
        run.set_stage_state(stage, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:  # the tuner's, also of a tuning killed in an earlier attempt
        shutil.rmtree(run.tuning_scratch, ignore_errors=True)
    run.set_stage_state(
        stage,
        "done",
        engine=engine,
        best_path=run.relative(result.best_path) if result.best_path else None,
        last_path=run.relative(result.last_path),
        best_score=result.best_score,
        global_step=result.global_step,
        epochs=result.epochs_run,
        seconds=round(now() - started, 3),
    )
    return StageRun(stage, run, result, action)
