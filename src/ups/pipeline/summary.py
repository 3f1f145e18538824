"""``summary.json`` of a fast-to-sota invocation: written atomically when it starts and after
every step, so that a crash leaves a truthful partial summary (the schema: docs/orchestration.md).

An earlier invocation's summary in the same run folder is kept as ``summary.<its start>.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_path

SCHEMA_VERSION = 1
STEPS = ("validate", "train", "small_eval", "small_gate", "full_eval", "full_gate", "promote")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Summary:
    """The summary being written; ``data`` is the JSON document."""

    def __init__(self, path: Path, head: dict):
        self.path = Path(path)
        self.data = {
            "schema_version": SCHEMA_VERSION,
            **head,
            "status": "running",
            "started_at": now(),
            "finished_at": None,
            "duration_s": None,
            "steps": {name: {"status": "pending"} for name in STEPS},
            "checkpoints": {},
            "evaluations": {},
            "gates": {},
            "promoted": False,
            "champion_run_id": None,
            "error": None,
        }
        self._t0 = time.perf_counter()

    def start(self, validate_seconds: float) -> None:
        """Keep an earlier invocation's summary, then write this one with its validation step."""
        if self.path.is_file():
            try:
                stamp = json.loads(self.path.read_text()).get("started_at") or now()
            except (OSError, ValueError):
                stamp = now()
            self.path.rename(self.path.with_name(f"summary.{stamp.replace(':', '')}.json"))
        self.data["steps"]["validate"] = {"status": "done", "duration_s": round(validate_seconds, 3)}
        self.write()

    def write(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        """Run one step: its entry is ``running`` while the block runs, then ``done`` (or what the
        block set: ``reused``, ``skipped``), or ``failed`` with the error; written each time."""
        entry = {"status": "running", "started_at": now()}
        self.data["steps"][name] = entry
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
        self.data["steps"][name] = {"status": "skipped", "reason": reason}
        self.write()

    def fail(self, step: str, exc: BaseException) -> None:
        self.data["error"] = {"step": step, "type": type(exc).__name__, "message": str(exc).strip()}
        self.finish("failed")

    def finish(self, status: str = "done") -> None:
        self.data.update(
            status=status, finished_at=now(), duration_s=round(time.perf_counter() - self._t0, 3)
        )
        self.write()
