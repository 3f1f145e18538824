"""One run = one folder: resolved config, stage status, checkpoints, logs.

    runs/<run_id>/
      config.resolved.yaml
      stage_status.json        per stage: pending / running / done / failed, with timestamps
      checkpoints/<stage>/     best-*.ckpt (k lowest val/nrmse) and last.ckpt
      logs/<stage>/            metrics.csv (always), steps on the run's continuous step axis
      logs/tensorboard/        one TensorBoard run for all stages (``logging.tensorboard``)

The run's step axis is continuous: a stage's logged steps begin after the optimizer steps of
the stages before it (``STAGE_NAMES`` order) that are done in the run (``step_offset``).
Checkpoints keep their own per-stage ``global_step``; only the logs are shifted.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_path
from ups.config import STAGE_NAMES, Config, to_yaml


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class RunDir:
    """Paths and status of one run folder (created on ``init``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def new_id() -> str:
        """``<date>-<time>-<6 hex digits>``: sortable by start time, and distinct for runs started in
        the same second (no folder is reserved, so a command refused later leaves nothing)."""
        return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def init(self, cfg: Config) -> RunDir:
        """Create the folder; record the config, keeping an earlier different one (a later stage
        or a resume with other settings) as ``config.resolved.<timestamp>.yaml`` beside it."""
        self.root.mkdir(parents=True, exist_ok=True)
        resolved = self.root / "config.resolved.yaml"
        text = to_yaml(cfg)
        if resolved.is_file() and resolved.read_text() != text:
            resolved.rename(self.root / f"config.resolved.{self.new_id()}.yaml")
        atomic_write_text(resolved, text)
        if not self.status_path.exists():
            self._write_status({name: {"state": "pending"} for name in STAGE_NAMES})
        return self

    @property
    def status_path(self) -> Path:
        return self.root / "stage_status.json"

    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def log_dir(self, stage: str) -> Path:
        return self.root / "logs" / stage

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "logs" / "tensorboard"

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
