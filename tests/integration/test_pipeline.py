"""``ups pipeline`` end to end on built-in Burgers data: order and handoff, the continuous step
axis, resume after a kill, failures, refusals and several devices (2 gloo ranks on CPU).

``TRAINED`` lists the stages these tests train; every other stage is switched off with
``stages.<s>.epochs=0``. Add a stage to ``TRAINED`` once it is registered in ``STAGES``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ups.checkpoint import load_checkpoint
from ups.cli import main
from ups.config import STAGE_NAMES
from ups.errors import UPSError
from ups.pipeline.pipeline import planned_stages
from ups.resolve import load_config
from ups.stages import STAGES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402

TRAINED = ("autoencoder", "operator")
OFF = [f"stages.{name}.epochs=0" for name in STAGE_NAMES if name not in TRAINED]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    return tiny_burgers_config(root)


def pipeline(config: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    """``ups pipeline`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pipeline", "--config", str(config), "--run-dir", str(run), *extra, *OFF])
    return code, out.getvalue(), err.getvalue()


def status(run: Path) -> dict:
    return json.loads((run / "stage_status.json").read_text())


def metric_rows(run: Path, stage: str) -> list[dict]:
    with open(run / "logs" / stage / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def files(folder: Path) -> dict[str, int]:
    """File name -> modification time (ns) of every file in ``folder``."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module", params=["lightning", "native"])
def finished(request, tiny_config, tmp_path_factory):
    """A whole pipeline run with each engine: (run folder, stdout)."""
    run = tmp_path_factory.mktemp(request.param) / "run"
    code, out, err = pipeline(tiny_config, run, "--engine", request.param)
    assert code == 0, err
    return run, out


def test_stages_run_in_order_each_on_the_one_before(finished):
    run, out = finished
    entries = status(run)
    for name in TRAINED:
        assert entries[name]["state"] == "done" and entries[name]["running_at"] <= entries[name]["done_at"]
    for earlier, later in zip(TRAINED, TRAINED[1:]):
        assert entries[earlier]["done_at"] <= entries[later]["running_at"]
    assert all(entries[name] == {"state": "pending"} for name in STAGE_NAMES if name not in TRAINED)
    # the operator's frozen encoder and decoder are the weights of this run's best autoencoder
    autoencoder = load_checkpoint(run / entries["autoencoder"]["best_path"])["state_dict"]
    operator = load_checkpoint(run / entries["operator"]["best_path"])["state_dict"]
    assert autoencoder and all(torch.equal(operator[key], value) for key, value in autoencoder.items())


def test_the_table_has_a_row_per_stage_and_ends_with_the_run(finished):
    run, out = finished
    lines = out.strip().splitlines()
    assert lines[-1] == f"run: {run}"
    header, rows = lines[-2 - len(TRAINED)], lines[-1 - len(TRAINED) : -1]
    assert header.split()[:5] == ["stage", "state", "epochs", "steps", "val/nrmse"]
    entries = status(run)
    for name, row in zip(TRAINED, rows):
        cells = row.split()
        entry = entries[name]
        assert cells[:5] == [
            name,
            "done",
            str(entry["epochs"]),
            str(entry["global_step"]),
            f"{entry['best_score']:.4g}",
        ]
    operator_row = rows[TRAINED.index("operator")]
    best = min(
        (r for r in metric_rows(run, "operator") if r["val/nrmse"]), key=lambda r: float(r["val/nrmse"])
    )
    assert f"rollout_nrmse {float(best['val/rollout_nrmse']):.4g}" in operator_row
    assert f"persistence_nrmse {float(best['val/persistence_nrmse']):.4g}" in operator_row
    assert "burgers" not in operator_row  # per-task metrics stay in metrics.csv


def test_logged_steps_run_on_from_stage_to_stage(finished):
    run, _ = finished
    entries, offset = status(run), 0
    for name in TRAINED:
        steps = [int(row["step"]) for row in metric_rows(run, name)]
        assert entries[name]["step_offset"] == offset
        assert min(steps) == offset and max(steps) == offset + entries[name]["global_step"] - 1
        # checkpoints keep the stage's own step count (resume depends on it)
        assert (
            load_checkpoint(run / "checkpoints" / name / "last.ckpt")["global_step"]
            == entries[name]["global_step"]
        )
        offset += entries[name]["global_step"]


def test_resume_after_a_kill_keeps_done_stages_and_continues_the_half_done_one(
    tiny_config, tmp_path, monkeypatch
):
    run, epochs = tmp_path / "run", 6
    knobs = [f"stages.operator.epochs={epochs}", "stages.operator.patience=100"]
    command = [
        sys.executable,
        "-m",
        "ups",
        "pipeline",
        "--config",
        str(tiny_config),
        "--run-dir",
        str(run),
        *knobs,
        *OFF,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    last = (
        run / "checkpoints" / "operator" / "last.ckpt"
    )  # appears whole (written to a temp file, then moved)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = load_checkpoint(last)
    assert status(run)["operator"]["state"] == "running" and killed["epoch"] < epochs - 1
    autoencoder_files = files(run / "checkpoints" / "autoencoder")

    batches = []
    operator_loss = STAGES["operator"].training_loss
    monkeypatch.setattr(
        STAGES["operator"],
        "training_loss",
        lambda self, batch: batches.append(1) or operator_loss(self, batch),
    )
    code, out, err = pipeline(tiny_config, run, "--resume", *knobs)
    assert code == 0, err
    assert files(run / "checkpoints" / "autoencoder") == autoencoder_files  # not retrained
    entry = status(run)["operator"]
    steps_per_epoch = killed["global_step"] // (killed["epoch"] + 1)
    assert entry["state"] == "done" and entry["epochs"] == epochs
    assert entry["global_step"] == epochs * steps_per_epoch
    assert len(batches) == (epochs - killed["epoch"] - 1) * steps_per_epoch  # continued, not restarted
    last_step = max(int(row["step"]) for row in metric_rows(run, "operator"))
    assert last_step == entry["step_offset"] + entry["global_step"] - 1
    assert "done (earlier)" in out and "done (resumed)" in out


def test_a_failing_stage_stops_the_pipeline(tiny_config, tmp_path, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("loss exploded")

    monkeypatch.setattr(STAGES["autoencoder"], "training_loss", broken)
    run = tmp_path / "run"
    code, out, err = pipeline(tiny_config, run)
    assert code == 1 and "run:" not in out
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        "ups pipeline: stage autoencoder failed: RuntimeError: loss exploded; "
        "later stages were not started (resume: ups pipeline --config "
    )
    assert line.endswith(" ".join(["--resume", *OFF]) + ")")
    entries = status(run)
    assert entries["autoencoder"]["state"] == "failed" and "loss exploded" in entries["autoencoder"]["error"]
    assert all(entries[name] == {"state": "pending"} for name in TRAINED[1:])
    assert not (run / "checkpoints" / "operator").exists()

    monkeypatch.undo()  # the fix; --resume starts the stage afresh (it has no last.ckpt)
    code, out, err = pipeline(tiny_config, run, "--resume")
    assert code == 0, err
    assert all(status(run)[name]["state"] == "done" for name in TRAINED)
    assert "error" not in status(run)["autoencoder"]


def test_a_missing_upstream_checkpoint_is_refused_before_anything_is_written(tiny_config, tmp_path):
    run = tmp_path / "empty"
    code, _, err = pipeline(tiny_config, run, "--stages", "operator")
    assert code == 2 and "no checkpoint of stage 'autoencoder'" in err
    assert not run.exists()


def test_a_misfitting_upstream_checkpoint_is_refused_before_the_stage_trains(tiny_config, tmp_path):
    run = tmp_path / "run"
    assert pipeline(tiny_config, run, "--stages", "autoencoder")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = pipeline(tiny_config, run, "--stages", "operator", "--resume", "latent.dim=8")
    assert code == 2
    assert "does not fit" in err and "(16" in err and "(8" in err
    assert not (run / "checkpoints" / "operator").exists() and status(run)["operator"] == {"state": "pending"}
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_used_run_folder_needs_resume(finished, tiny_config):
    run, _ = finished
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = pipeline(tiny_config, run)
    assert code == 2 and "--resume" in err and "new --run-dir" in err and "autoencoder (done)" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_unknown_stage_names_are_refused_with_the_valid_ones(tiny_config, tmp_path):
    code, _, err = pipeline(tiny_config, tmp_path / "run", "--stages", "autoencoder,decoder")
    assert code == 2 and "unknown stage(s) decoder" in err and ", ".join(STAGE_NAMES) in err
    assert not (tmp_path / "run").exists()


def test_an_enabled_stage_that_is_not_registered_stops_the_plan(tiny_config, monkeypatch):
    monkeypatch.delitem(STAGES, "operator")
    with pytest.raises(UPSError, match="stage\\(s\\) operator have epochs > 0 but are not available"):
        planned_stages(load_config(tiny_config, OFF))


def test_steady_prior_without_a_steady_task_is_skipped(tiny_config, caplog):
    caplog.set_level(logging.INFO, logger="ups")
    cfg = load_config(tiny_config, [*OFF, "stages.steady_prior.epochs=1"])
    assert planned_stages(cfg) == list(TRAINED)
    assert caplog.text.count("stage steady_prior: the config has no steady task, skipped") == 1


def test_the_latent_dynamics_stages_without_a_time_dependent_task_are_skipped(tmp_path, caplog):
    """A Darcy-only config at the defaults (every stage at 10 epochs) plans the autoencoder and the
    steady prior; the operator and its correctors need time-dependent data."""
    from tiny_runs import write_config
    from ups.data.generate import generate_dataset

    generate_dataset("darcy2d", tmp_path / "data", n=8, nx=16, seed=0, progress=False)
    config = write_config(
        tmp_path / "darcy.yaml",
        tmp_path / "data",
        [{"name": "darcy", "path": "2D_DarcyFlow_beta1.0_Train.hdf5"}],
    )
    caplog.set_level(logging.INFO, logger="ups")
    cfg = load_config(config, [f"stages.{name}.epochs=10" for name in STAGE_NAMES])
    assert planned_stages(cfg) == ["autoencoder", "steady_prior"]
    assert "stage operator: the config has no time-dependent task, skipped" in caplog.text


def test_tensorboard_without_its_package_is_refused(tiny_config, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",  # as if neither package were installed
        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else find_spec(name, *a),
    )
    code, _, err = pipeline(tiny_config, tmp_path / "run", "logging.tensorboard=true")
    assert code == 2 and "pip install tensorboard" in err and not (tmp_path / "run").exists()


def test_all_stages_write_one_tensorboard_run_with_stage_tags(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    code, _, err = pipeline(tiny_config, run, "logging.tensorboard=true")
    assert code == 0, err
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert {f"{name}/val/nrmse" for name in TRAINED} <= set(steps)
    assert min(steps["operator/train/loss"]) == status(run)["autoencoder"]["global_step"]
    assert sorted(p.name for p in (run / "logs").iterdir()) == sorted([*TRAINED, "tensorboard"])


def test_two_ddp_ranks_train_every_stage_in_one_folder(tiny_config, tmp_path):
    """Lightning's script launcher starts rank 1 at the first stage's fit; the later Trainers
    reuse the ranks and the process group. Rank 0 alone writes the status and prints."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "ups",
        "pipeline",
        "--config",
        str(tiny_config),
        "--run-dir",
        str(run),
        "--devices",
        "2",
        "training.strategy=ddp",
        "training.batch_size=2",
        *OFF,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run: ") == 1 and done.stdout.strip().splitlines()[-1] == f"run: {run}"
    entries = status(run)
    single = load_config(tiny_config, OFF)
    for name in TRAINED:
        assert (
            entries[name]["state"] == "done"
            and entries[name]["epochs"] == getattr(single.stages, name).epochs
        )
    assert entries["operator"]["step_offset"] == entries["autoencoder"]["global_step"]
    assert (
        min(int(row["step"]) for row in metric_rows(run, "operator")) == entries["autoencoder"]["global_step"]
    )
