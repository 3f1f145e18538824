"""Runs an ``ups`` command that SIGKILLs itself at a chosen point (for the fault-injection test).

    python tests/fault_injection.py LOG POINT -- ups-arguments...

Every training batch appends ``<stage>`` to the file LOG (the test counts the batches each
attempt trained). POINT says where the process kills itself with SIGKILL, which no handler
or ``finally`` block sees, as a preempted job dies:

- ``none``: nowhere (a plain run);
- ``batch:<stage>:<n>``: at the start of the stage's n-th training batch (counted from 1);
- ``raise:<stage>:<n>``: there, an exception instead of a kill (every rank of a several-device
  run raises at the same batch, so none waits for a dead peer);
- ``after-done:<stage>``: right after ``stage_status.json`` records the stage as done, before
  the next stage starts;
- ``checkpoint-write:<stage>:<n>``: in the middle of writing the stage's n-th checkpoint file
  (counted from 1): half of the bytes are in the temporary file, fsynced, when it dies.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch

from ups.cli import main
from ups.runs import RunDir
from ups.stages import STAGES


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Interrupted(RuntimeError):
    pass


def interrupt() -> None:
    raise Interrupted("interrupted by tests/fault_injection.py")


def count_batches(log: str, kill_stage: str | None, kill_at: int | None, kill=die) -> None:
    for name, cls in STAGES.items():

        def training_loss(self, batch, _original=cls.training_loss, _name=name, _calls=[0]):  # noqa: B006 (a counter shared by the calls)
            _calls[0] += 1
            if _name == kill_stage and _calls[0] == kill_at:
                kill()
            with open(log, "a") as handle:
                handle.write(_name + "\n")
            return _original(self, batch)

        cls.training_loss = training_loss


def kill_after_done(stage: str) -> None:
    original = RunDir.set_stage_state

    def set_stage_state(self, name, state, **extra):
        original(self, name, state, **extra)
        if name == stage and state == "done":
            die()

    RunDir.set_stage_state = set_stage_state


def kill_while_writing(stage: str, n: int) -> None:
    original, writes = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        stage_of = obj.get("ups", {}).get("stage") if isinstance(obj, dict) else None
        if stage_of == stage and isinstance(f, (str, os.PathLike)):
            writes[0] += 1
            if writes[0] == n:
                buffer = io.BytesIO()
                original(obj, buffer, *args, **kwargs)
                with open(f, "wb") as handle:
                    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                die()
        return original(obj, f, *args, **kwargs)

    torch.save = save


def install(log: str, point: str) -> None:
    kind, _, rest = point.partition(":")
    kill_stage, kill_at = None, None
    if kind in ("batch", "raise"):
        kill_stage, n = rest.split(":")
        kill_at = int(n)
    elif kind == "after-done":
        kill_after_done(rest)
    elif kind == "checkpoint-write":
        stage, n = rest.split(":")
        kill_while_writing(stage, int(n))
    elif kind not in ("none", "raise"):
        raise SystemExit(f"unknown fault point {point!r}")
    count_batches(log, kill_stage, kill_at, interrupt if kind == "raise" else die)


if __name__ == "__main__":
    log, point, separator, *command = sys.argv[1:]
    assert separator == "--", "usage: fault_injection.py LOG POINT -- ups-arguments..."
    install(log, point)
    sys.exit(main(command))
