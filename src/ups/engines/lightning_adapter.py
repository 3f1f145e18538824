"""Every touch of Lightning's private or undocumented internals, in one place.

The Lightning engine (``ups.engines.lightning``) needs a few things Lightning keeps to itself;
each is one function here, and ``tests/unit/test_lightning_adapter.py`` checks each against the
installed Lightning, so that a release that changes one fails a test by name rather than a
resume or a log silently. No other module may use a private Lightning name
(``tests/unit/test_layers.py``).

- ``environment_rank``: this process's rank as torchrun, SLURM or Lightning's launcher set it;
- ``should_update_logs``: whether this training step's values are written (``log_every_n_steps``);
- ``refuse_in_process_launchers``: the launcher kind that starts ranks inside this process.

Lightning's own checkpoint state (loop progress, callback states) is written and read by Lightning
alone: only the Lightning engine resumes a Lightning checkpoint (``ups.engines.preflight``).
"""

from __future__ import annotations

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
