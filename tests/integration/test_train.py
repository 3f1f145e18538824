"""The autoencoder and operator stages end to end on built-in Burgers data, both engines."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from ups.checkpoint import load_checkpoint
from ups.cli import main
from ups.pipeline.runner import train_stage
from ups.resolve import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return tiny_burgers_config(root)


@pytest.fixture(scope="module")
def autoencoder_run(tiny_config, tmp_path_factory):
    run = tmp_path_factory.mktemp("ae_run")
    assert main(["train", "--config", str(tiny_config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    return run


def test_autoencoder_run_folder_has_config_status_checkpoints_and_logs(autoencoder_run, tiny_config):
    assert (autoencoder_run / "config.resolved.yaml").is_file()
    status = json.loads((autoencoder_run / "stage_status.json").read_text())
    assert status["autoencoder"]["state"] == "done" and status["operator"]["state"] == "pending"
    ckpts = sorted(p.name for p in (autoencoder_run / "checkpoints" / "autoencoder").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch000") for n in ckpts)
    rows = list(csv.DictReader(open(autoencoder_run / "logs" / "autoencoder" / "metrics.csv")))
    assert any(r.get("val/nrmse") for r in rows) and any(r.get("train/loss") for r in rows)
    meta = load_checkpoint(autoencoder_run / status["autoencoder"]["best_path"])["ups"]
    assert meta["stage"] == "autoencoder" and meta["schema_version"] == 1
    assert set(meta["metadata"]["normalizers"]) == {"burgers"}


def test_operator_engines_agree_number_for_number(autoencoder_run, tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    results = {
        engine: train_stage(
            cfg, "operator", tmp_path / engine, engine=engine, from_run=autoencoder_run
        ).result
        for engine in ("lightning", "native")
    }
    lit, nat = results["lightning"], results["native"]
    assert len(lit.train_losses) == len(nat.train_losses) > 0
    assert nat.train_losses == pytest.approx(lit.train_losses, rel=1e-6)
    assert [r["val/nrmse"] for r in nat.val_history] == pytest.approx(
        [r["val/nrmse"] for r in lit.val_history], rel=1e-6
    )
    assert len(lit.val_history) == 2 and "val/rollout_nrmse" in lit.val_history[-1]
    assert lit.val_history[-1]["val/persistence_nrmse"] > 0


def test_operator_cli_prints_figures_beside_persistence(autoencoder_run, tiny_config, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "operator",
                "--run-dir",
                str(autoencoder_run),
                "--engine",
                "native",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert any("vs persistence (u_t+1 = u_t)" in line for line in out)
    assert out[-1] == f"run: {autoencoder_run}"


def test_operator_without_an_autoencoder_is_refused_before_any_folder(tiny_config, tmp_path, capsys):
    run = tmp_path / "fresh"
    assert main(["train", "--config", str(tiny_config), "--stage", "operator", "--run-dir", str(run)]) == 2
    assert "no checkpoint of stage 'autoencoder'" in capsys.readouterr().err
    assert not run.exists()


def test_resume_continues_the_step_count(tiny_config, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--stage", "autoencoder", "--run-dir", str(run)]
    assert main(args) == 0
    first = json.loads((run / "stage_status.json").read_text())["autoencoder"]["global_step"]
    assert main([*args, "--resume", "stages.autoencoder.epochs=2"]) == 0
    second = json.loads((run / "stage_status.json").read_text())["autoencoder"]
    assert second["global_step"] == 2 * first and second["epochs"] == 2


def test_validation_off_trains_without_monitor(tiny_config, tmp_path, capsys, caplog):
    run = tmp_path / "noval"
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "autoencoder",
                "--run-dir",
                str(run),
                "training.skip_lightning_val=true",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "no validation: last checkpoint" in captured.out
    assert caplog.text.count("gating is left to external evaluation") == 1
    assert sorted(p.name for p in (run / "checkpoints" / "autoencoder").iterdir()) == ["last.ckpt"]


def test_a_stage_with_zero_epochs_is_skipped(tiny_config, tmp_path, capsys):
    run = tmp_path / "skip"
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "autoencoder",
                "--run-dir",
                str(run),
                "stages.autoencoder.epochs=0",
            ]
        )
        == 0
    )
    assert "skipped" in capsys.readouterr().out
    assert not run.exists()


def test_a_misfitting_upstream_checkpoint_is_refused(autoencoder_run, tiny_config, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "operator",
                "--run-dir",
                str(tmp_path / "x"),
                "--from-run",
                str(autoencoder_run),
                "encoder.hidden=24",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not fit" in err and "(16" in err and "(24" in err


def test_an_autoencoder_of_the_other_latent_amplitude_setting_is_refused_naming_it(
    autoencoder_run, tiny_config, tmp_path, capsys
):
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "operator",
                "--run-dir",
                str(tmp_path / "x"),
                "--from-run",
                str(autoencoder_run),
                "latent.amplitude=false",
            ]
        )
        == 2
    )
    assert "trained with latent.amplitude=true" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_without_the_latent_amplitude_both_stages_train(tiny_config, tmp_path):
    run = tmp_path / "plain"
    assert (
        main(
            [
                "pipeline",
                "--config",
                str(tiny_config),
                "--run-dir",
                str(run),
                "--stages",
                "autoencoder,operator",
                "latent.amplitude=false",
            ]
        )
        == 0
    )
    status = json.loads((run / "stage_status.json").read_text())
    assert status["autoencoder"]["state"] == status["operator"]["state"] == "done"
    stored = load_checkpoint(run / status["autoencoder"]["best_path"])["state_dict"]
    assert [v.shape[1] for k, v in stored.items() if k.endswith("latent_proj.weight")] == [
        16 + 9
    ]  # all D = 16


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--engine", "native", "training.devices=2"], "native engine runs on one device"),
        (["stages.operator.rollout_horizon=9"], "rollout_horizon=9"),
        (
            ["latent.dim=2"],
            "latent.dim = 2 channels, which leaves none for the shape; raise latent.dim or set "
            "latent.amplitude=false",
        ),
        (
            ["training.val_every_n_epochs=3", "stages.operator.epochs=2"],
            "training.val_every_n_epochs = 3 is more than stages.operator.epochs = 2: the stage would "
            "never validate",
        ),
    ],
)
def test_engine_and_data_problems_are_reported_before_the_run_folder(
    autoencoder_run, tiny_config, tmp_path, capsys, extra, needle
):
    run = tmp_path / "never"
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_config),
                "--stage",
                "operator",
                "--run-dir",
                str(run),
                "--from-run",
                str(autoencoder_run),
                *extra,
            ]
        )
        == 2
    )
    assert needle in capsys.readouterr().err
    assert not run.exists()


def test_a_failed_resume_leaves_the_run_folder_untouched(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--stage", "autoencoder", "--run-dir", str(run)]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main([*args, "--resume", "encoder.hidden=24"]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resume_in_the_other_engine_is_refused_and_leaves_the_run_folder_untouched(
    tiny_config, tmp_path, capsys
):
    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--stage", "autoencoder", "--run-dir", str(run)]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main([*args, "--resume", "--engine", "native"]) == 2
    err = capsys.readouterr().err
    assert (
        f"resume: {run / 'checkpoints' / 'autoencoder' / 'last.ckpt'} was written by the lightning engine"
        in err
    )
    assert "Resume with --engine lightning" in err and f"--from-run {run}" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_two_runs_started_at_once_get_their_own_folders(tiny_config, tmp_path):
    import os
    import subprocess

    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "ups",
        "train",
        "--config",
        str(tiny_config),
        "--stage",
        "autoencoder",
        f"paths.runs_dir={runs}",
    ]
    processes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    folders = sorted(runs.iterdir())
    assert len(folders) == 2 and {out.strip().splitlines()[-1] for out, _ in outputs} == {
        f"run: {f}" for f in folders
    }
    for folder in folders:
        assert json.loads((folder / "stage_status.json").read_text())["autoencoder"]["state"] == "done"


@pytest.mark.parametrize(
    "model, verdict", [(0.01, "3.0x lower"), (0.06, "2.0x higher: worse than predicting no change")]
)
def test_operator_report_says_lower_or_higher_than_persistence(model, verdict):
    from types import SimpleNamespace

    from ups.cli.train import _train_report

    row = {"epoch": 3, "val/nrmse": model, "val/persistence_nrmse": 0.03}
    result = SimpleNamespace(
        epochs_run=4, global_step=40, stopped_early=False, val_history=[row], best_path="b.ckpt"
    )
    lines = _train_report(SimpleNamespace(stage="operator", action="trained", result=result, run=None))
    assert lines[-1].endswith(f"on the same pairs: {verdict}")


def test_a_done_stage_is_trained_again_only_with_force(autoencoder_run, tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(autoencoder_run, run)
    args = ["train", "--config", str(tiny_config), "--stage", "autoencoder", "--run-dir", str(run)]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} already has stage autoencoder (done); train it again with --force" in err
    assert "continue it with --resume, or train into a new --run-dir" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the lock released too
    earlier = json.loads((run / "stage_status.json").read_text())["autoencoder"]
    assert main([*args, "--force", "--engine", "native"]) == 0
    (kept,) = (run / "superseded").iterdir()
    last = Path("checkpoints", "autoencoder", "last.ckpt")
    assert (kept / last).read_bytes() == before[run / last]
    assert (kept / "logs" / "autoencoder" / "metrics.csv").is_file()
    assert json.loads((kept / "stage_status.json").read_text()) == {"autoencoder": earlier}
    now = json.loads((run / "stage_status.json").read_text())["autoencoder"]
    assert (
        now["state"] == "done"
        and now["engine"] == "native"
        and (run / last).read_bytes() != before[run / last]
    )


@pytest.mark.parametrize("command", ["train", "pipeline", "fast-to-sota"])
def test_a_second_command_in_a_run_folder_is_refused_naming_the_holder(
    tiny_config, tmp_path, capsys, command
):
    run = tmp_path / "run"
    run.mkdir()
    holder = {
        "pid": os.getpid(),  # alive, on this host
        "host": socket.gethostname(),
        "command": "ups pipeline --config C",
        "started": "2026-12-05T14:02:11+00:00",
        "slurm_job_id": None,
        "token": "first",
    }
    (run / ".ups.lock").write_text(json.dumps(holder))
    where = {
        "train": ["--stage", "autoencoder", "--run-dir", str(run)],
        "pipeline": ["--run-dir", str(run)],
        "fast-to-sota": ["--run-id", "run", f"paths.runs_dir={tmp_path}"],
    }[command]
    assert main([command, "--config", str(tiny_config), *where]) == 2
    assert (
        f"ups {command}: error: run folder {run} is in use by pid {os.getpid()} on host "
        f"{socket.gethostname()} (`ups pipeline --config C`, started 2026-12-05T14:02:11+00:00); "
        f"wait for it to finish, or stop it (kill {os.getpid()})." in capsys.readouterr().err
    )
    assert [p.name for p in run.iterdir()] == [".ups.lock"]  # nothing written, the holder's lock kept
