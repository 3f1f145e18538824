"""One writer per folder (``ups.locks``), and the run folder a command picks (``runs.shared_run_dir``):
UPS_RUN_DIR honoured only from the UPS command that launched this process, several ranks without a
shared --run-dir refused."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from ups.errors import UPSError
from ups.locks import FolderLocked, folder_lock, read_holder
from ups.runs import shared_run_dir


def held_by(lock, **holder) -> dict:
    """A lock file as another process left it."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": "ups train --stage operator",
        "started": "2026-01-02T03:04:05+00:00",
        "slurm_job_id": None,
        "token": "other",
        **holder,
    }
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(record))
    return record


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    lock = tmp_path / "run" / ".ups.lock"
    with folder_lock(lock, "ups train --stage autoencoder", what="run folder") as me:
        assert read_holder(lock) == me and me["pid"] == os.getpid()
        with pytest.raises(FolderLocked) as refused:
            with folder_lock(lock, "ups pipeline", what="run folder"):
                pass
    message = str(refused.value)
    assert (
        f"run folder {lock.parent} is in use by pid {os.getpid()} on host {socket.gethostname()}" in message
    )
    assert "`ups train --stage autoencoder`, started 20" in message and f"kill {os.getpid()}" in message
    assert not lock.parent.exists()  # made for the lock, removed with it


def test_the_lock_is_released_after_an_exception_and_made_folders_removed(tmp_path):
    lock = tmp_path / "runs" / "new" / ".ups.lock"
    with pytest.raises(RuntimeError), folder_lock(lock, "ups train", what="run folder"):
        assert lock.is_file()
        raise RuntimeError("a stage failed")
    assert not (tmp_path / "runs").exists()  # nothing was written: no folder is left
    with folder_lock(lock, "ups train", what="run folder"):
        (lock.parent / "stage_status.json").write_text("{}")
    assert sorted(p.name for p in lock.parent.iterdir()) == ["stage_status.json"]


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    lock = tmp_path / ".ups.lock"
    pid = dead_pid()
    held_by(lock, pid=pid)
    with caplog.at_level(logging.WARNING, "ups"), folder_lock(lock, "ups train", what="run folder") as me:
        assert read_holder(lock) == me
    assert f"taking over the lock of pid {pid} on host" in caplog.text and "no longer running" in caplog.text
    assert not lock.exists() and list(tmp_path.iterdir()) == []


def test_a_lock_of_another_host_needs_break_lock(tmp_path, caplog):
    lock = tmp_path / ".ups.lock"
    held_by(lock, host="node-17", pid=4242, slurm_job_id="991")
    with pytest.raises(FolderLocked, match=r"pid 4242 on host node-17 .*SLURM job 991\).*--break-lock"):
        with folder_lock(lock, "ups train", what="run folder"):
            pass
    assert read_holder(lock)["host"] == "node-17"  # left alone
    with (
        caplog.at_level(logging.WARNING, "ups"),
        folder_lock(lock, "ups train", what="run folder", break_lock=True),
    ):
        assert read_holder(lock)["pid"] == os.getpid()
    assert "taking over the lock of pid 4242 on host node-17" in caplog.text
    assert not lock.exists()


def test_a_lock_of_the_same_slurm_job_on_another_host_is_a_requeue(tmp_path, monkeypatch):
    lock = tmp_path / ".ups.lock"
    held_by(lock, host="node-17", pid=4242, slurm_job_id="991")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    with folder_lock(lock, "ups train", what="run folder") as me:
        assert read_holder(lock) == me and me["slurm_job_id"] == "991"


def test_without_hard_links_the_lock_is_made_by_exclusive_creation(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    lock = tmp_path / ".ups.lock"
    with folder_lock(lock, "ups train", what="run folder") as me:
        assert read_holder(lock) == me
        with pytest.raises(FolderLocked, match=f"in use by pid {os.getpid()}"):
            with folder_lock(lock, "ups pipeline", what="run folder"):
                pass
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("UPS_RUN_DIR", "UPS_RUN_DIR_OWNER", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_ups_run_dir_from_the_shell_is_ignored_with_a_warning(tmp_path, clean_env, caplog):
    clean_env.setenv("UPS_RUN_DIR", str(tmp_path / "elsewhere"))
    with caplog.at_level(logging.WARNING, "ups"), shared_run_dir(None, tmp_path / "runs") as run_dir:
        assert run_dir.parent == tmp_path / "runs"
        assert os.environ["UPS_RUN_DIR"] == str(run_dir)
    assert f"UPS_RUN_DIR={tmp_path / 'elsewhere'} is ignored" in caplog.text
    assert os.environ["UPS_RUN_DIR"] == str(tmp_path / "elsewhere")  # the shell's, as it was


def test_ups_run_dir_set_by_the_launching_command_is_honoured(tmp_path, clean_env, caplog):
    """Lightning re-runs the command for devices 1, 2, … as children of rank 0, which set both."""
    clean_env.setenv("UPS_RUN_DIR", str(tmp_path / "chosen"))
    clean_env.setenv("UPS_RUN_DIR_OWNER", str(os.getppid()))
    clean_env.setenv("WORLD_SIZE", "2")
    with caplog.at_level(logging.WARNING, "ups"), shared_run_dir(None, tmp_path / "runs") as run_dir:
        assert run_dir == tmp_path / "chosen"
    assert caplog.text == ""


@pytest.mark.parametrize("launcher", [{"WORLD_SIZE": "2"}, {"SLURM_NTASKS": "4"}])
def test_several_ranks_without_a_shared_run_dir_are_refused(tmp_path, clean_env, launcher):
    for name, value in launcher.items():
        clean_env.setenv(name, value)
    with pytest.raises(
        UPSError, match=r"no --run-id is given, so each would train into a run folder of its own"
    ):
        with shared_run_dir(None, tmp_path / "runs", flag="--run-id"):
            pass
    with shared_run_dir(tmp_path / "shared", tmp_path / "runs") as run_dir:
        assert run_dir == tmp_path / "shared"
