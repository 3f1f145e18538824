"""Every touch of Lightning's private or undocumented internals, in one place.

The Lightning engine (``ups.engines.lightning``) needs a few things Lightning keeps to itself;
each is one function here, and ``tests/unit/test_lightning_adapter.py`` checks each against the
installed Lightning, so that a release that changes one fails a test by name rather than a
resume or a log silently. No other module may use a private Lightning name
(``tests/unit/test_layers.py``).

- ``environment_rank``: this process's rank as torchrun, SLURM or Lightning's launcher set it;
- ``should_update_logs``: whether this training step's values are written (``log_every_n_steps``);
- ``refuse_in_process_launchers``: the launcher kind that starts ranks inside this process;
- ``reroot_model_checkpoints``: ``ModelCheckpoint``'s recorded paths moved to this run folder.

Lightning's own checkpoint state (loop progress, callback states) is written and read by Lightning
alone (but for the re-rooted paths): only the Lightning engine resumes a Lightning checkpoint
(``ups.engines.preflight``).
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.fabric.utilities.rank_zero import _get_rank
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from ups.errors import UPSError


def environment_rank() -> int:
    """The global rank the environment gives this process (``RANK``, ``LOCAL_RANK``,
    ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``: Lightning's own reading), 0 when none does."""
    return _get_rank() or 0


def should_update_logs(trainer: pl.Trainer) -> bool:
    """True on the steps whose logged values Lightning writes (every ``log_every_n_steps``)."""
    return getattr(trainer._logger_connector, "should_update_logs", True)


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


MODEL_CHECKPOINT_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


def reroot_model_checkpoints(checkpoint: dict, dirpath: str) -> None:
    """Move the recorded files of every ``ModelCheckpoint`` state in ``checkpoint`` to ``dirpath``
    (their names kept), as if written there. The state holds absolute paths, and Lightning, when
    its ``dirpath`` differs from the recorded one, drops the best-k record and keeps
    ``best_model_path`` pointing into the old folder; every file of ours is in ``dirpath``."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if not key.startswith("ModelCheckpoint"):
            continue
        state["dirpath"] = dirpath
        for name in MODEL_CHECKPOINT_PATHS:
            if state.get(name):
                state[name] = os.path.join(dirpath, os.path.basename(state[name]))
        state["best_k_models"] = {
            os.path.join(dirpath, os.path.basename(path)): score
            for path, score in state.get("best_k_models", {}).items()
        }
