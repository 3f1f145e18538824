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

``run_forked`` runs the same without the interpreter's start-up (seconds of imports), for the
small kill tests of the default test run; ``kill_and_resume`` is the check both sizes make.
"""

from __future__ import annotations

import functools
import io
import json
import os
import select
import signal
import subprocess
import sys
import traceback
from collections import Counter
from pathlib import Path

import torch

from ups.checkpoint import load_checkpoint
from ups.cli import main
from ups.engines.progress import inside_epoch
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


def _forked_main(log: str, point: str, command: list[str], output: str) -> int:
    with open(output, "a") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    torch.set_num_threads(1)  # the default test run shares a few cores: threads would wait on each other
    install(log, point)
    try:
        return main(command)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
        return 1


def serve() -> None:
    """The fork server: the imports once, then per request line on stdin (JSON: log, point, command,
    output) a fork of itself runs it, and its exit code goes back a line on stdout. The server
    itself computes nothing, so that forking it is safe."""
    import ups.engines.lightning  # noqa: F401
    import ups.engines.native  # noqa: F401
    import ups.eval.run  # noqa: F401
    import ups.pipeline.fast_to_sota  # noqa: F401

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _forked_main(*json.loads(line))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


@functools.cache
def _server() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def run_forked(log: Path, point: str, command: list[str], output: Path, timeout: float = 300) -> int:
    """``python tests/fault_injection.py LOG POINT -- command``, forked from a server that has the
    imports done; stdout and stderr appended to ``output``. Returns the exit code (-9: SIGKILL)."""
    server = _server()
    server.stdin.write(json.dumps([str(log), point, command, str(output)]) + "\n")
    server.stdin.flush()
    if not select.select([server.stdout], [], [], timeout)[0]:
        server.kill()
        _server.cache_clear()
        raise TimeoutError(f"{command} ran longer than {timeout} s; its output: {output}")
    return int(server.stdout.readline())


# ---- what a test checks after each kill ------------------------------------------------------
def states(run: Path) -> dict[str, str]:
    return {
        name: entry["state"] for name, entry in json.loads((run / "stage_status.json").read_text()).items()
    }


def batches(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def batches_done(checkpoint: dict) -> int:
    """Training batches behind a checkpoint (one optimizer step per batch in these configs)."""
    progress = checkpoint["ups"]["progress"]
    epochs = checkpoint["epoch"] + (0 if inside_epoch(progress) else 1)
    return epochs * progress["batches_per_epoch"] + (progress["batches"] if inside_epoch(progress) else 0)


def checkpoint_files(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (run / "checkpoints").rglob("*.ckpt")}


def kill_and_resume(launch, run: Path, stages: tuple[str, ...], kills: list, expected: Counter, logs: Path):
    """Run ``launch(log, point, resume)`` once per kill in ``kills`` (each resuming the run the one
    before killed) and check, after each: the process died of SIGKILL; ``stage_status.json`` says
    done, running (where it died) and pending for ``stages``; every checkpoint on disk is whole, and
    those of stages done earlier untouched; a resumed stage trained only the batches its checkpoint
    did not hold (``expected``: the batches of an uninterrupted run). A kill is (point, the stage it
    dies in or None, the stages done before, whether it dies before the stage's first checkpoint).
    Returns the checkpoint files of the done stages and the batches each killed stage resumes from
    (both for the final, uninterrupted resume's checks)."""
    resumed_from: dict[str, int] = {}
    kept: dict[Path, bytes] = {}
    for attempt, (point, dying, done, before_first_checkpoint) in enumerate(kills):
        log = logs / f"attempt{attempt}.log"
        code = launch(log, point, attempt > 0)
        assert code == -9, f"{point}: exit code {code}"  # SIGKILL
        expected_states = {
            name: "done" if name in done else "running" if name == dying else "pending" for name in stages
        }
        assert {name: states(run).get(name, "pending") for name in stages} == expected_states, point
        files = checkpoint_files(run)
        for path in files:
            load_checkpoint(path)
        assert {p: files[p] for p in kept} == kept
        kept = {p: b for p, b in files.items() if p.parent.name in done}
        for name, count in batches(log).items():
            if name in resumed_from:
                assert count == expected[name] - resumed_from.pop(name) or name == dying
        if dying is not None:
            last = run / "checkpoints" / dying / "last.ckpt"
            assert last.exists() != before_first_checkpoint
            resumed_from[dying] = batches_done(load_checkpoint(last)) if last.exists() else 0
            assert 0 <= resumed_from[dying] < expected[dying]
        if point.startswith("checkpoint-write"):  # the half-written file is the temporary one
            assert list((run / "checkpoints" / dying).glob(".last.ckpt.*.tmp"))
    return kept, resumed_from


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
elif __name__ == "__main__":
    log, point, separator, *command = sys.argv[1:]
    assert separator == "--", "usage: fault_injection.py LOG POINT -- ups-arguments..."
    install(log, point)
    sys.exit(main(command))
