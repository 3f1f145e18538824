"""``summary.json`` of a fast-to-sota invocation: written atomically when it starts and after
every step, so that a crash leaves a truthful partial summary (the schema: docs/orchestration.md).

The orchestration's state is the ``Summary``'s typed fields (what was trained, evaluated,
decided); ``to_json`` is the document they make. An earlier invocation's summary in the same run
folder is kept as ``summary.<its start>.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_write_text
from ups.pipeline.gates import GateDecision
from ups.runs import RunDir

SCHEMA_VERSION = 1
STEPS = ("validate", "train", "small_eval", "small_gate", "full_eval", "full_gate", "promote")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Summary:
    """The invocation's state, written to ``path`` as it changes. ``head`` holds what is fixed
    when it starts (run, config, engines, leaderboard, gate settings); ``steps`` one entry per
    step of ``STEPS`` (its status, times, and what the step records)."""

    path: Path
    head: dict
    status: str = "running"
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    duration_s: float | None = None
    steps: dict[str, dict] = field(default_factory=lambda: {name: {"status": "pending"} for name in STEPS})
    tracking: dict | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)  # stage -> its best checkpoint (run-relative)
    evaluations: dict[str, Path] = field(default_factory=dict)  # small / full -> results JSON
    gates: dict[str, GateDecision] = field(default_factory=dict)  # small / full -> the decision
    promoted: bool = False
    champion_run_id: str | None = None
    error: dict | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.run = RunDir(self.path.parent)
        self._t0 = time.perf_counter()

    def to_json(self) -> dict:
        document = {
            "schema_version": SCHEMA_VERSION,
            **self.head,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "steps": self.steps,
            "checkpoints": self.checkpoints,
            "evaluations": {kind: self.run.relative(path) for kind, path in self.evaluations.items()},
            "gates": {kind: decision.to_dict() for kind, decision in self.gates.items()},
            "promoted": self.promoted,
            "champion_run_id": self.champion_run_id,
            "error": self.error,
        }
        if self.tracking is not None:
            document["tracking"] = self.tracking
        return document

    def start(self, validate_seconds: float) -> None:
        """Keep an earlier invocation's summary, then write this one with its validation step."""
        if self.path.is_file():
            try:
                stamp = json.loads(self.path.read_text()).get("started_at") or now()
            except (OSError, ValueError):
                stamp = now()
            self.path.rename(self.path.with_name(f"summary.{stamp.replace(':', '')}.json"))
        self.steps["validate"] = {"status": "done", "duration_s": round(validate_seconds, 3)}
        self.write()

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_json(), indent=2) + "\n")

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        """Run one step: its entry is ``running`` while the block runs, then ``done`` (or what the
        block set: ``reused``, ``skipped``), or ``failed`` with the error; written each time."""
        entry = {"status": "running", "started_at": now()}
        self.steps[name] = entry
        self.write()
        t0 = time.perf_counter()
        try:
            yield entry
        except BaseException as exc:
            entry["status"] = "failed"
            self.fail(name, exc)
            raise
        else:
            if entry["status"] == "running":
                entry["status"] = "done"
        finally:
            entry["finished_at"], entry["duration_s"] = now(), round(time.perf_counter() - t0, 3)
            self.write()

    def skip(self, name: str, reason: str) -> None:
        self.steps[name] = {"status": "skipped", "reason": reason}
        self.write()

    def fail(self, step: str, exc: BaseException) -> None:
        self.error = {"step": step, "type": type(exc).__name__, "message": str(exc).strip()}
        self.finish("failed")

    def finish(self, status: str = "done") -> None:
        self.status, self.finished_at = status, now()
        self.duration_s = round(time.perf_counter() - self._t0, 3)
        self.write()
