"""Every touch of Lightning's private or undocumented internals, in one place.

The Lightning engine (``ups.engines.lightning``) needs a few things Lightning keeps to itself;
each is one function here, and ``tests/unit/test_lightning_adapter.py`` checks each against the
installed Lightning, so that a release that changes one fails a test by name rather than a
resume or a log silently. No other module may use a private Lightning name
(``tests/unit/test_layers.py``).

- ``environment_rank``: this process's rank as torchrun, SLURM or Lightning's launcher set it;
- ``should_update_logs``: whether this training step's values are written (``log_every_n_steps``);
- ``attached_trainer``: a LightningModule's trainer, or None outside a fit;
- ``refuse_in_process_launchers``: the launcher kind that starts ranks inside this process;
- ``keep_previous_metrics``: a resumed fit appends to the CSV logger's metrics.csv;
- ``synthesized_loops``: the fit loop's progress for a checkpoint the native engine wrote;
- ``callback_states``, ``restore_callback_states``, ``version_record``: what the native engine
  writes and reads of ModelCheckpoint's and EarlyStopping's state and Lightning's version, so
  that either engine resumes the other's checkpoints exactly (docs/lightning_training.md).
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning
import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import _get_rank
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from ups.engines.progress import inside_epoch
from ups.errors import UPSError


def environment_rank() -> int:
    """The global rank the environment gives this process (``RANK``, ``LOCAL_RANK``,
    ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``: Lightning's own reading), 0 when none does."""
    return _get_rank() or 0


def should_update_logs(trainer: pl.Trainer) -> bool:
    """True on the steps whose logged values Lightning writes (every ``log_every_n_steps``)."""
    return getattr(trainer._logger_connector, "should_update_logs", True)


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer ``module`` is fitted by, or None (``module.trainer`` raises when there is none)."""
    return module._trainer


def refuse_in_process_launchers(trainer: pl.Trainer) -> None:
    """Loaders and the latent cache are set up in this process for its rank, before ``fit``.
    That holds when each rank is its own process from the start: Lightning's script launcher
    (``ups train`` re-run per device) or an external one (torchrun, SLURM). A fork or spawn
    launcher (what ``strategy: auto`` picks inside a notebook) would copy rank 0's set-up."""
    launcher = trainer.strategy.launcher
    if (
        trainer.world_size > 1
        and launcher is not None
        and not isinstance(launcher, _SubprocessScriptLauncher)
    ):
        raise UPSError(
            f"{trainer.world_size} devices with Lightning's {type(launcher).__name__}, which starts the "
            f"ranks from inside this process; run several devices from the command line "
            f"(`ups train … --devices N`) or under torchrun/SLURM, with training.strategy=ddp."
        )


def keep_previous_metrics(trainer: pl.Trainer) -> None:
    """A resumed fit appends to metrics.csv; Lightning's CSV writer would delete it when it starts.

    The writer is created here (which removes the file), the old rows are put back and the
    writer learns their columns (``metrics_keys``), so it appends or rewrites the header.
    """
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and trainer.is_global_zero:
            path = Path(logger.log_dir) / "metrics.csv"
            previous = path.read_text() if path.is_file() else None
            writer = logger.experiment
            if previous:
                path.write_text(previous)
                writer.metrics_keys = previous.splitlines()[0].split(",")


def synthesized_loops(trainer: pl.Trainer, checkpoint: dict, batches_per_epoch: int, accumulate: int) -> dict:
    """Loop progress for a checkpoint written without it (by the native engine).

    Lightning restores epoch and step counters only from ``checkpoint["loops"]``. This takes
    the fresh loops' own state dicts as a template and sets the counters to what Lightning
    itself stores when it saves at the same point: at the end of epoch ``checkpoint["epoch"]``
    (the epoch processed but not completed, its last batch done), or, for a checkpoint written
    inside the epoch (``ups.progress``), at the end of that epoch's k-th batch (batch k not yet
    counted completed, its step not yet counted in ``_batches_that_stepped``; the loader's
    position in the loop state).
    """
    epoch, step = int(checkpoint["epoch"]), int(checkpoint["global_step"])
    progress = checkpoint.get("ups", {}).get("progress")
    inside = inside_epoch(progress)
    done = int(progress["batches"]) if inside else batches_per_epoch
    fit = copy.deepcopy(trainer.fit_loop.state_dict())
    for scope in ("total", "current"):
        fit["epoch_progress"][scope].update(
            ready=epoch + 1, started=epoch + 1, processed=epoch if inside else epoch + 1, completed=epoch
        )
    batches = {"total": batches_per_epoch * epoch + done, "current": done}
    steps = {"total": step, "current": -(-done // accumulate)}
    for scope in ("total", "current"):
        n, k = batches[scope], steps[scope]
        fit["epoch_loop.batch_progress"][scope].update(ready=n, started=n, processed=n, completed=n - inside)
        optim = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
        optim["step"][scope].update(ready=k, completed=k)
        optim["zero_grad"][scope].update(ready=k, started=k, completed=k)
        fit["epoch_loop.scheduler_progress"][scope].update(ready=k, completed=k)
    fit["epoch_loop.batch_progress"]["is_last_batch"] = not inside
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] = step - inside
    if inside:
        fit["state_dict"]["combined_loader"] = [{"epoch": epoch, "batches": done}]
    return {
        "fit_loop": fit,
        "validate_loop": trainer.validate_loop.state_dict(),
        "test_loop": trainer.test_loop.state_dict(),
        "predict_loop": trainer.predict_loop.state_dict(),
    }


def version_record() -> dict:
    """The Lightning version a checkpoint records (Lightning reads it when it loads one)."""
    return {"pytorch-lightning_version": lightning.__version__}


def callback_states(state_keys, *, last: str, dirpath: str, top_k, patience, last_score) -> dict:
    """ModelCheckpoint's (``state_keys[0]``) and EarlyStopping's (``state_keys[1]``) state with
    Lightning's fields, from the native loop's best-k (``top_k``; None: validation off, no
    monitor and no early stopping) and patience."""
    if top_k is None:
        return {
            state_keys[0]: {
                "monitor": None,
                "best_model_score": None,
                "best_model_path": "",
                "current_score": None,
                "dirpath": dirpath,
                "best_k_models": {},
                "kth_best_model_path": "",
                "kth_value": None,
                "last_model_path": last,
            }
        }
    best, worst = top_k.best(), top_k.worst() if top_k.best_k_models else ""
    scores = {k: torch.tensor(v) for k, v in top_k.best_k_models.items()}
    return {
        state_keys[0]: {
            "monitor": "val/nrmse",
            "best_model_score": scores.get(best),
            "best_model_path": best or "",
            "current_score": None if last_score is None else torch.tensor(last_score),
            "dirpath": dirpath,
            "best_k_models": scores,
            "kth_best_model_path": worst,
            "kth_value": scores.get(worst),
            "last_model_path": last,
        },
        state_keys[1]: {
            "wait_count": patience.wait,
            "stopped_epoch": 0,
            "best_score": torch.tensor(patience.best),
            "patience": patience.patience,
        },
    }


def restore_callback_states(states: dict, state_keys, top_k, patience) -> None:
    """The native loop's best-k (the files still there) and patience from either engine's
    callback states."""
    if state_keys[0] in states:
        kept = states[state_keys[0]].get("best_k_models", {})
        top_k.best_k_models = {k: float(v) for k, v in kept.items() if Path(k).exists()}
    if state_keys[1] in states:
        stop = states[state_keys[1]]
        patience.wait, patience.best = int(stop["wait_count"]), float(stop["best_score"])
