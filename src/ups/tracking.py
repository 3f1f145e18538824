"""Tracking: metrics.csv always (written by the engines), TensorBoard optionally (the engines),
and one Weights & Biases run per run folder (``logging.wandb``), here.

One W&B run per run folder: its id lives in a context file, ``$WANDB_CONTEXT_FILE`` or
``<run>/wandb_context.json``. ``tracking(cfg, run_dir)`` opens the run named there (writing a new
id first when there is none), so every command that works in the folder (``ups pipeline``,
``ups train``, ``ups evaluate``, ``ups fast-to-sota``) adds to the same run; inside one process
a nested ``tracking`` reuses the open run. The files go under ``<run>/logs/wandb/``.

Keys: training metrics as ``training/<stage>/<metric>`` on the step axis ``training/step`` (the
run's continuous step axis, see ``ups.runs``); evaluations as ``eval/<kind>/<metric>`` and
``eval/<kind>/<task>/<metric>``.

Nothing reaches the network unless ``logging.wandb.mode`` is ``online``: offline is the default,
and online without credentials is refused before any work (``check_tracking``). Only rank 0
logs to W&B.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ups.atomic import atomic_write_text
from ups.config import Config, to_dict
from ups.errors import UPSError

log = logging.getLogger("ups")
CONTEXT_ENV = "WANDB_CONTEXT_FILE"
_active: Tracker | None = None


def check_tracking(cfg: Config) -> None:
    """Refuse, before any work, a W&B set-up that cannot work here."""
    w = cfg.logging.wandb
    if not w.enabled:
        return
    if importlib.util.find_spec("wandb") is None:
        raise UPSError(
            "logging.wandb.enabled is true but the wandb package is not installed; install it "
            "(`pip install 'ups[tracking]'` or `pip install wandb`) or set logging.wandb.enabled=false."
        )
    if w.mode == "online" and not _has_credentials():
        raise UPSError(
            "logging.wandb.mode=online but no W&B credentials are configured (WANDB_API_KEY or "
            "`wandb login`); log in, or use logging.wandb.mode=offline and `wandb sync` the run later."
        )


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")


def active() -> Tracker | None:
    """The open W&B run of this process, if any."""
    return _active


class Tracker:
    """The W&B run of a run folder, with UPS's key layout. It opens on first use, so a command
    refused before any work leaves no W&B run and no file behind."""

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir, self._run = cfg, Path(run_dir), None

    @property
    def run(self):
        if self._run is None:
            self._run = _open(self.cfg, self.run_dir)
            self._run.define_metric("training/step")
            self._run.define_metric("training/*", step_metric="training/step")
        return self._run

    def log_training(self, stage: str, metrics: dict, step: int) -> None:
        values = {f"training/{stage}/{key}": float(value) for key, value in metrics.items() if key != "step"}
        self.run.log({**values, "training/step": step})

    def log_evaluation(self, kind: str, result: dict) -> None:
        values = {f"eval/{kind}/{name}": value for name, value in result["metrics"].items()}
        for task, metrics in result.get("per_task", {}).items():
            values.update({f"eval/{kind}/{task}/{name}": value for name, value in metrics.items()})
        for task, figures in result.get("per_channel", {}).items():
            for key, per_channel in figures.items():
                if key != "channels":
                    for channel, value in zip(figures["channels"], per_channel):
                        values[f"eval/{kind}/{task}/{channel}/{key}"] = value
        values.update({f"eval/{kind}/{name}": value for name, value in result.get("extra", {}).items()})
        self.run.log(values)
        self.run.summary.update(values)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def attach(self, path: Path) -> None:
        """A copy of the file as it is now, in the run's files (synced with the run)."""
        shutil.copy2(path, Path(self.run.dir) / Path(path).name)

    @property
    def directory(self) -> Path:
        """The run's local folder (``offline-run-…`` or ``run-…``)."""
        return Path(self.run.dir).parent

    def close(self, failed: bool) -> None:
        """Finish the run, its record log complete on disk when this returns: ``run.finish()``
        returns before wandb-core has written the log's last block (it closes the run's stream
        after), so W&B's service is shut down too, which waits for that (``wandb.teardown``; the
        next run starts a new one)."""
        if self._run is not None:
            import wandb

            where = self.directory
            self._run.finish(exit_code=1 if failed else 0)
            wandb.teardown()
            log.info("W&B (%s): %s", self.cfg.logging.wandb.mode, where)


def _open(cfg: Config, run_dir: Path):
    """``wandb.init`` of the run named in the context file (a new id written there first)."""
    import wandb

    w = cfg.logging.wandb
    path = Path(os.environ.get(CONTEXT_ENV) or run_dir / "wandb_context.json")
    context = json.loads(path.read_text()) if path.is_file() else {}
    if context.get("run_dir") not in (None, str(run_dir.resolve())):  # shared by several run folders
        log.info(
            "W&B: %s names the run of %s; starting a new W&B run for %s", path, context["run_dir"], run_dir
        )
        context = {}
    if not context.get("run_id"):
        context = {"run_id": secrets.token_hex(6), "project": w.project, "run_dir": str(run_dir.resolve())}
        atomic_write_text(path, json.dumps(context, indent=2) + "\n")
    save_dir = run_dir / "logs"
    save_dir.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True)
    run = wandb.init(
        id=context["run_id"],
        resume="allow",
        mode=w.mode,
        project=w.project,
        entity=w.entity,
        group=w.group,
        tags=list(w.tags) or None,
        name=run_dir.name,
        dir=str(save_dir),
        settings=settings,
    )
    run.config.update(to_dict(cfg), allow_val_change=True)  # a later stage may run with other settings
    return run


@contextmanager
def tracking(cfg: Config, run_dir: Path, *, rank_zero: bool = True) -> Iterator[Tracker | None]:
    """The W&B run of ``run_dir`` while the block runs (None when W&B is off or on other ranks);
    inside an open one, that one."""
    global _active
    if not cfg.logging.wandb.enabled or not rank_zero or _active is not None:
        yield _active if rank_zero else None
        return
    check_tracking(cfg)
    _active = tracker = Tracker(cfg, run_dir)
    failed = True
    try:
        yield tracker
        failed = False
    finally:
        _active = None
        tracker.close(failed)
