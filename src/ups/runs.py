"""One run = one folder: resolved config, stage status, checkpoints, logs.

    runs/<run_id>/
      config.resolved.yaml
      stage_status.json        per stage: pending / running / done / failed, with timestamps
      checkpoints/<stage>/     best-*.ckpt (k lowest val/nrmse); last.ckpt, last-1.ckpt, … (the newest
                               ``checkpoint.keep_last``, newest first)
      profile/                 ``training.lightning_profile``'s reports
      summary.json             fast-to-sota's decisions; tuning.json and tuning_lr_<stage>.png the tuner's
      evaluation/              ``ups evaluate``'s results, reports and per-sample files
      eval/<small|full>/       fast-to-sota's evaluations; promotion.json its promotion record
      superseded/<time>/       the training that ``fast-to-sota --force-train`` or ``train --force`` replaced
      .ups.lock                who is writing the folder now (``ups.locks``), while a command runs
      logs/<stage>/            metrics.csv (always), steps on the run's continuous step axis
      logs/tensorboard/        one TensorBoard run for all stages (``logging.tensorboard``)

The run's step axis is continuous: a stage's logged steps begin after the optimizer steps of
the stages before it (``STAGE_NAMES`` order) that are done in the run (``step_offset``).
Checkpoints keep their own per-stage ``global_step``; only the logs are shifted.

``RunDir`` owns these paths: nothing else joins a run folder's names. Paths it records
(``stage_status.json``, a checkpoint's own bookkeeping, ``summary.json``) are relative to the run
folder (``relative``), so that a moved or copied folder reads its own files (``reroot``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_write_text
from ups.config import STAGE_NAMES, Config, to_yaml
from ups.errors import UPSError
from ups.seal import newest_intact

log = logging.getLogger("ups")
BEST_FILENAME = "best-epoch{epoch:03d}-step{step:06d}"  # formatted by ModelCheckpoint and the native loop


def _under_root(*parts: str) -> property:
    """A fixed path in the run folder, as a read-only attribute of ``RunDir``."""
    return property(lambda run: run.root.joinpath(*parts))


class RunDir:
    """Paths and status of one run folder (created on ``init``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # Fixed paths in the folder (the layout above); paths that take a stage or a name are methods.
    status_path = _under_root("stage_status.json")
    lock_path = _under_root(".ups.lock")  # ``ups.locks``: one writing command at a time
    resolved_config_path = _under_root("config.resolved.yaml")
    summary_path = _under_root("summary.json")
    tuning_report = _under_root("tuning.json")
    promotion_path = _under_root("promotion.json")
    evaluation_dir = _under_root("evaluation")
    gate_evaluations_dir = _under_root("eval")
    profile_dir = _under_root("profile")
    tuning_scratch = _under_root(".tuning")
    checkpoints_root = _under_root("checkpoints")
    logs_root = _under_root("logs")
    tensorboard_dir = _under_root("logs", "tensorboard")

    @staticmethod
    def new_id() -> str:
        """``<date>-<time>-<6 hex digits>``: sortable by start time, and distinct for runs started in
        the same second (no folder is reserved, so a command refused later leaves nothing)."""
        return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def init(self, cfg: Config) -> RunDir:
        """Create the folder; record the config, keeping an earlier different one (a later stage
        or a resume with other settings) as ``config.resolved.<timestamp>.yaml`` beside it."""
        self.root.mkdir(parents=True, exist_ok=True)
        resolved = self.resolved_config_path
        text = to_yaml(cfg)
        if resolved.is_file() and resolved.read_text() != text:
            resolved.rename(self.root / f"config.resolved.{self.new_id()}.yaml")
        atomic_write_text(resolved, text)
        if not self.status_path.exists():
            self._write_status({name: {"state": "pending"} for name in STAGE_NAMES})
        return self

    def gate_evaluation_prefix(self, kind: str) -> Path:
        """fast-to-sota's ``kind`` (small or full) evaluation: ``<prefix>.json`` and ``.html``."""
        return self.gate_evaluations_dir / kind / "results"

    def superseded_dir(self, stamp: str) -> Path:
        return self.root / "superseded" / stamp

    def checkpoint_dir(self, stage: str) -> Path:
        return self.checkpoints_root / stage

    def last_checkpoint(self, stage: str) -> Path:
        """Where ``stage``'s newest last checkpoint is written (it may not exist yet)."""
        return self.checkpoint_dir(stage) / "last.ckpt"  # also the name Lightning's ModelCheckpoint gives it

    def kept_last_checkpoint(self, stage: str, age: int) -> Path:
        """The last checkpoint ``age`` saves older than the newest: ``last-<age>.ckpt`` (0: ``last.ckpt``)."""
        return self.last_checkpoint(stage) if age == 0 else self.checkpoint_dir(stage) / f"last-{age}.ckpt"

    def last_checkpoints(self, stage: str) -> list[Path]:
        """``stage``'s kept last checkpoints that exist, newest first."""
        ages = [0] + sorted(
            int(age)
            for p in self.checkpoint_dir(stage).glob("last-*.ckpt")
            if (age := p.stem.removeprefix("last-")).isdigit()
        )
        return [path for age in ages if (path := self.kept_last_checkpoint(stage, age)).is_file()]

    def rotate_last(self, stage: str, keep: int) -> None:
        """Before a new ``last.ckpt`` takes its name: each kept one becomes one save older, the
        ``keep``-th oldest drops out (``checkpoint.keep_last``). Renames only, each atomic: a kill
        between them leaves every checkpoint whole under some name."""
        for stale in self.last_checkpoints(stage):
            if stale.stem != "last" and int(stale.stem.removeprefix("last-")) >= keep:
                stale.unlink()
        for age in range(keep - 1, 0, -1):
            newer = self.kept_last_checkpoint(stage, age - 1)
            if newer.is_file():
                os.replace(newer, self.kept_last_checkpoint(stage, age))

    def resume_checkpoint(self, stage: str) -> Path:
        """The newest intact kept last checkpoint of ``stage`` (a damaged newer one is named in a
        warning); ``CheckpointError`` if there is none or all are damaged."""
        return newest_intact(self.last_checkpoints(stage) or [self.last_checkpoint(stage)])

    def best_checkpoint_path(self, stage: str, epoch: int, step: int) -> Path:
        """The name of a best-k checkpoint of ``stage`` written after ``epoch`` at ``step``."""
        return self.checkpoint_dir(stage) / (BEST_FILENAME.format(epoch=epoch, step=step) + ".ckpt")

    def relative(self, path: str | Path) -> str:
        """``path`` as this folder records it: relative to the folder when inside it."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def reroot(self, recorded: str, stage: str) -> Path:
        """A recorded checkpoint path read in this folder: a relative one under the folder; an
        absolute one (recorded before paths were relative, maybe in the folder this one was
        copied from) as the file of its name in this folder's ``checkpoints/<stage>/``, never
        another folder's file."""
        path = Path(recorded)
        if not path.is_absolute():
            return self.root / path
        if path.resolve().is_relative_to(self.root.resolve()):
            return path
        return self.checkpoint_dir(stage) / path.name

    def best_checkpoint(self, stage: str) -> Path:
        """The best checkpoint a finished stage recorded, else its newest intact last one
        (``resume_checkpoint``). ``UPSError`` if a recorded best is missing (never silently
        another checkpoint) or there is none."""
        recorded = self.status().get(stage, {}).get("best_path")
        if recorded:
            best = self.reroot(recorded, stage)
            if not best.is_file():
                raise UPSError(
                    f"stage '{stage}' recorded its best checkpoint {recorded}, but {best} is missing from "
                    f"{self.root}; restore it (a copy of the run folder must keep checkpoints/), or "
                    f"evaluate another checkpoint with --checkpoint."
                )
            return best
        if not self.last_checkpoints(stage):
            raise UPSError(
                f"no checkpoint of stage '{stage}' in {self.root}; train it first (`ups train --stage "
                f"{stage} --run-dir {self.root}`) or point --from-run at a run that has one."
            )
        return self.resume_checkpoint(stage)

    def log_dir(self, stage: str) -> Path:
        return self.logs_root / stage

    def metrics_csv(self, stage: str) -> Path:
        return self.log_dir(stage) / "metrics.csv"

    def tuning_lr_plot(self, stage: str) -> Path:
        return self.root / f"tuning_lr_{stage}.png"

    def step_offset(self, stage: str) -> int:
        """Optimizer steps of the stages before ``stage`` that are done in this run: where
        ``stage``'s logged steps begin on the run's continuous step axis."""
        status = self.status()
        earlier = (status.get(name, {}) for name in STAGE_NAMES[: STAGE_NAMES.index(stage)])
        return sum(int(entry.get("global_step", 0)) for entry in earlier if entry.get("state") == "done")

    def status(self) -> dict:
        return json.loads(self.status_path.read_text()) if self.status_path.exists() else {}

    def set_stage_state(self, stage: str, state: str, **extra) -> None:
        status = self.status()
        entry = status.get(stage, {})
        if state == "running":
            entry.pop("error", None)  # of an earlier attempt
        entry.update(state=state, **extra)
        entry[f"{state}_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        status[stage] = entry
        self._write_status(status)

    def _write_status(self, status: dict) -> None:
        atomic_write_text(self.status_path, json.dumps(status, indent=2, sort_keys=True) + "\n")


OWNER_VARIABLE = "UPS_RUN_DIR_OWNER"  # the process id that set UPS_RUN_DIR for the ranks it starts


def externally_launched() -> bool:
    """torchrun or SLURM started several processes for this command (``WORLD_SIZE`` or
    ``SLURM_NTASKS`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 or int(os.environ.get("SLURM_NTASKS", 1)) > 1


def _launched_run_dir() -> str | None:
    """UPS_RUN_DIR when the process that started this one set it (Lightning re-runs the command
    for devices 1, 2, … as children of rank 0); one inherited from a shell is ignored, with a warning."""
    inherited = os.environ.get("UPS_RUN_DIR")
    if inherited is None or os.environ.get(OWNER_VARIABLE) == str(os.getppid()):
        return inherited
    log.warning(
        "UPS_RUN_DIR=%s is ignored: it was not set by the UPS command that started this process "
        "(only the ranks a UPS command launches inherit it); give --run-dir to choose the run folder.",
        inherited,
    )
    return None


@contextmanager
def shared_run_dir(run_dir: Path | None, runs_dir: str | Path, flag: str = "--run-dir") -> Iterator[Path]:
    """The run folder of a command: ``run_dir``, else the one the rank-0 process that launched this
    one chose (``UPS_RUN_DIR``), else a new ``<runs_dir>/<RunDir.new_id()>``; set for the ranks
    Lightning starts while the block runs. Several ranks started by torchrun or SLURM without
    ``run_dir`` (``flag``) are refused: each would pick its own folder."""
    chosen = run_dir or _launched_run_dir()
    if chosen is None and externally_launched():
        raise UPSError(
            f"several processes run this command (WORLD_SIZE={os.environ.get('WORLD_SIZE', 1)}, "
            f"SLURM_NTASKS={os.environ.get('SLURM_NTASKS', 1)}) and no {flag} is given, so each would "
            f"train into a run folder of its own; give {flag} so that every rank uses the same one."
        )
    run_dir = Path(chosen or Path(runs_dir) / RunDir.new_id())
    saved = {name: os.environ.get(name) for name in ("UPS_RUN_DIR", OWNER_VARIABLE)}
    os.environ.update({"UPS_RUN_DIR": str(run_dir), OWNER_VARIABLE: str(os.getpid())})
    try:
        yield run_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
