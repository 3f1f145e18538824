"""The Lightning engine under SLURM: auto-requeue only when the config asks for it
(``training.slurm_requeue``), and a requeue that continues the run and stage it came from.

Left to itself, Lightning turns auto-requeue on whenever it detects SLURM: on the requeue signal
it writes ``hpc_ckpt_<n>.ckpt`` into the Trainer's ``default_root_dir``, and any later fit there
without a ``ckpt_path`` restores the newest one, whichever stage or run wrote it. So UPS passes
the SLURM environment itself, auto-requeue as configured; the Trainer's ``default_root_dir`` is
the stage's own checkpoint folder (``requeue_dir``), where only that stage ever looks; a fit
chooses its checkpoint itself (``requeue_checkpoint``), removing stale requeue files that Lightning
would otherwise restore; and the requeue files go when the stage ends. The requeued job runs the
same command again, so that command must name its run folder (``--run-dir`` or ``--run-id``;
the command line refuses it otherwise, before anything runs).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lightning.pytorch.plugins.environments import SLURMEnvironment

from ups.config import Config
from ups.runs import RunDir

log = logging.getLogger("ups")


def cluster_plugins(cfg: Config | None) -> list:
    """Under SLURM, Lightning's SLURM environment with auto-requeue as the config says (always
    off without a config: the tuner's fits); elsewhere nothing (Lightning detects the others)."""
    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=bool(cfg and cfg.training.slurm_requeue))]


def requeue_dir(run: RunDir, stage: str) -> Path:
    """Where a requeue of ``stage`` writes its checkpoint: the stage's checkpoint folder."""
    return run.checkpoint_dir(stage)


def requeue_files(run: RunDir, stage: str) -> list[Path]:
    """The stage's ``hpc_ckpt_<n>.ckpt`` files, oldest (lowest n) first."""
    found = requeue_dir(run, stage).glob("hpc_ckpt_*.ckpt")
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))


def requeue_checkpoint(cfg: Config, run: RunDir, stage: str, *, resume: bool) -> Path | None:
    """The checkpoint a requeued job of ``stage`` continues from, when requeue is on under SLURM:
    the newest requeue file, or ``last.ckpt`` when resuming and it was written later. Any other
    requeue file is stale: it is removed, so that Lightning never restores it."""
    files = requeue_files(run, stage)
    if not files:
        return None
    if cfg.training.slurm_requeue and SLURMEnvironment.detect():
        newest, last = files[-1], run.last_checkpoint(stage)
        if resume and last.is_file() and last.stat().st_mtime > newest.stat().st_mtime:
            return run.resume_checkpoint(stage)  # the newest intact kept one
        log.info("stage %s: continuing from the requeue checkpoint %s", stage, newest)
        return newest
    log.warning("stage %s: removing stale requeue checkpoints %s", stage, ", ".join(p.name for p in files))
    remove_requeue_files(run, stage)
    return None


def remove_requeue_files(run: RunDir, stage: str) -> None:
    """The stage's requeue files, removed when it ends (they are scratch, not results)."""
    for path in requeue_files(run, stage):
        path.unlink(missing_ok=True)
