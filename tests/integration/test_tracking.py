"""W&B tracking: one run per run folder across commands, its context file, and set-ups refused
before any work (no package, online without credentials)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from ups.cli import main
from ups.config import Config, with_keys
from ups.tracking import tracking

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402
from wandb_offline import history  # noqa: E402

ON = "logging.wandb.enabled=true"


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracking")
    return tiny_burgers_config(root)


def test_every_command_in_a_run_folder_adds_to_its_one_wandb_run(config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert (
        main(["pipeline", "--config", str(config), "--run-dir", str(run), ON, "logging.wandb.tags=[demo]"])
        == 0
    )
    run_id = json.loads((run / "wandb_context.json").read_text())["run_id"]
    assert (
        main(["evaluate", "--config", str(config), "--run-dir", str(run), ON, "evaluation.report=false"]) == 0
    )
    folders = sorted((run / "logs" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(
        f.name.endswith(f"-{run_id}") for f in folders
    )  # one run, resumed offline
    training = {key for row in history(folders[0]) for key in row}
    assert {"training/autoencoder/train/loss", "training/operator/val/nrmse"} <= training
    assert "eval/test-h5/nrmse" in {key for row in history(folders[1]) for key in row}


def test_the_context_file_can_live_elsewhere(config, tmp_path, monkeypatch):
    context = tmp_path / "ctx" / "wandb.json"
    monkeypatch.setenv("WANDB_CONTEXT_FILE", str(context))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run), ON]) == 0
    run_id = json.loads(context.read_text())["run_id"]
    assert not (run / "wandb_context.json").exists()
    assert [f.name.rsplit("-", 1)[1] for f in (run / "logs" / "wandb").glob("offline-run-*")] == [run_id]


def test_set_ups_that_cannot_work_are_refused_before_any_work(config, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run = tmp_path / "run"
    assert (
        main(["pipeline", "--config", str(config), "--run-dir", str(run), ON, "logging.wandb.mode=online"])
        == 2
    )
    assert "no W&B credentials" in capsys.readouterr().err and not run.exists()
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a)
    )
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run), ON]) == 2
    assert "wandb package is not installed" in capsys.readouterr().err and not run.exists()


def test_a_command_refused_in_preflight_leaves_no_wandb_run(config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--stage", "operator", "--run-dir", str(run), ON]) == 2
    assert "no checkpoint of stage 'autoencoder'" in capsys.readouterr().err and not run.exists()


def test_a_context_file_of_another_run_folder_starts_a_new_wandb_run(config, tmp_path, monkeypatch):
    context = tmp_path / "wandb.json"
    monkeypatch.setenv("WANDB_CONTEXT_FILE", str(context))
    ids = []
    for run in (tmp_path / "a", tmp_path / "b"):
        assert (
            main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run), ON]) == 0
        )
        ids.append(json.loads(context.read_text())["run_id"])
    assert ids[0] != ids[1] and json.loads(context.read_text())["run_dir"] == str((tmp_path / "b").resolve())


def test_a_closed_run_has_its_whole_record_log_on_disk(tmp_path):
    """wandb-core holds the record log's last block in memory until it closes the run's stream,
    which it does after ``run.finish()`` has returned. Frozen from the moment it is told the run
    is finished until 0.5 s later (as a busy machine may leave it), the log is still complete when
    ``tracking`` returns. Uses wandb's private ``ServiceConnection``: a release that changes it
    fails here, loudly."""
    from wandb.sdk.lib.service.service_connection import ServiceConnection

    inform_finish = ServiceConnection.inform_finish

    def inform_a_frozen_core(connection, run_id):
        core = connection._proc._process.pid
        os.kill(core, signal.SIGSTOP)
        threading.Timer(0.5, os.kill, (core, signal.SIGCONT)).start()
        inform_finish(connection, run_id)

    cfg = with_keys(Config(), {"logging.wandb.enabled": True})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServiceConnection, "inform_finish", inform_a_frozen_core)
        with tracking(cfg, tmp_path / "run") as tracker:
            tracker.log_training("operator", {"loss": 0.25}, step=3)
            tracker.log_evaluation("full", {"metrics": {"nrmse": 0.5}})
    (folder,) = (tmp_path / "run" / "logs" / "wandb").glob("offline-run-*")
    assert [{k: v for k, v in row.items() if not k.startswith("_")} for row in history(folder)] == [
        {"training/operator/loss": 0.25, "training/step": 3},
        {"eval/full/nrmse": 0.5},
    ]
