"""``ups evaluate``: both engines write the same numbers, wrapped checkpoints evaluate alike,
misfits are refused, outputs escape what users type."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ups.checkpoint import load_checkpoint
from ups.cli import main
from ups.pipeline.runner import train_stage
from ups.resolve import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import BURGERS_AND_DARCY, generative_overrides, tiny_five_stage_config  # noqa: E402

TASKS = BURGERS_AND_DARCY
SMALL = generative_overrides(steps_infer=2, val_samples=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config file, run folder with all five stages trained)."""
    root = tmp_path_factory.mktemp("evaluate")
    config = tiny_five_stage_config(root, SMALL)
    assert main(["pipeline", "--config", str(config), "--run-dir", str(root / "run")]) == 0
    return config, root / "run"


def evaluate(config, *args) -> dict:
    assert main(["evaluate", "--config", str(config), *args, "evaluation.report=false"]) == 0
    prefix = Path(args[args.index("--output-prefix") + 1])
    return json.loads(prefix.with_name(prefix.name + ".json").read_text())


def test_lightning_and_native_write_the_same_numbers(trained, tmp_path):
    config, run = trained
    results = {
        engine: evaluate(
            config, "--run-dir", str(run), "--engine", engine, "--output-prefix", str(tmp_path / engine)
        )
        for engine in ("lightning", "native")
    }
    lit, nat = results["lightning"], results["native"]
    assert lit["metrics"].keys() == nat["metrics"].keys()
    for key, value in lit["metrics"].items():
        assert nat["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
    for curve in ("operator", "corrected"):
        assert lit["rollout"][curve] == pytest.approx(nat["rollout"][curve], rel=1e-6)
    expected = {
        "nrmse",
        "rmse",
        "max_error",
        "crmse",
        "brmse",
        "frmse_low",
        "frmse_mid",
        "frmse_high",
        "correlation_time",
        "one_step_nrmse",
        "corrected_nrmse",
        "crps",
        "spread_skill",
        "steady_nrmse",
    }
    assert expected <= lit["metrics"].keys()
    assert {"burgers", "darcy"} <= lit["per_task"].keys() and "steady_nrmse" in lit["per_task"]["darcy"]
    assert len(lit["rollout"]["operator"]) == lit["horizon"] == 5  # 11 frames at stride 2, from frame 0
    assert set(lit["checkpoints"]) == {"operator", "consistency_distill", "diff_residual", "steady_prior"}
    assert lit["extra"]["ms_per_rollout_step"] > 0 and lit["extra"]["n_trajectories"] == 2


def test_a_copied_run_evaluates_and_resumes_from_its_own_files(trained, tmp_path):
    """Copy the run, delete the folder copied from, then evaluate and resume the copy: the best
    checkpoints it recorded are its own (records from before they were relative, absolute paths
    into the first folder, are re-rooted too), and the first folder is neither read nor written."""
    config, run = trained
    moved, copy = tmp_path / "moved", tmp_path / "copy"
    shutil.copytree(run, moved)
    shutil.copytree(moved, copy)
    shutil.rmtree(moved)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    status = json.loads((copy / "stage_status.json").read_text())
    recorded = status["operator"]["best_path"]
    assert recorded.startswith("checkpoints/operator/best-")
    for entry in status.values():  # as written before records were relative: into the original
        if entry.get("best_path"):
            entry["best_path"] = str(run / entry["best_path"])
    (copy / "stage_status.json").write_text(json.dumps(status))
    result = evaluate(
        config, "--run-dir", str(copy), "--engine", "native", "--output-prefix", str(tmp_path / "e")
    )
    assert result["checkpoints"]["operator"] == recorded

    resume = ["train", "--config", str(config), "--stage", "operator", "--run-dir", str(copy), "--resume"]
    assert main([*resume, "stages.operator.epochs=3"]) == 0
    after = json.loads((copy / "stage_status.json").read_text())["operator"]
    assert after["global_step"] == 3 * status["operator"]["global_step"] // 2
    assert (copy / after["best_path"]).is_file() and not Path(after["best_path"]).is_absolute()
    last = load_checkpoint(copy / "checkpoints" / "operator" / "last.ckpt")
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["dirpath"] == os.path.realpath(copy / "checkpoints" / "operator")
    assert len(state["best_k_models"]) == 2  # the two kept before the copy still ranked, one maybe replaced
    assert all(Path(p).parent == Path(state["dirpath"]) and Path(p).is_file() for p in state["best_k_models"])
    assert not moved.exists() and {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("wrap", ["model._orig_mod.", "module.model."], ids=["compiled", "ddp"])
def test_compiled_and_ddp_checkpoints_evaluate_like_the_plain_one(trained, tmp_path, wrap):
    config, run = trained
    status = json.loads((run / "stage_status.json").read_text())
    plain = run / status["operator"]["best_path"]  # recorded relative to the run folder
    ckpt = torch.load(plain, weights_only=True)
    ckpt["state_dict"] = {wrap + k[len("model.") :]: v for k, v in ckpt["state_dict"].items()}
    wrapped = tmp_path / "run" / "checkpoints" / "operator" / "wrapped.ckpt"
    wrapped.parent.mkdir(parents=True)
    torch.save(ckpt, wrapped)
    a = evaluate(
        config, "--checkpoint", str(plain), "--engine", "native", "--output-prefix", str(tmp_path / "a")
    )
    b = evaluate(
        config, "--checkpoint", str(wrapped), "--engine", "native", "--output-prefix", str(tmp_path / "b")
    )
    assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-12)


def test_a_checkpoint_of_another_architecture_is_refused(trained, tmp_path, capsys):
    config, run = trained
    code = main(
        [
            "evaluate",
            "--config",
            str(config),
            "--run-dir",
            str(run),
            "--output-prefix",
            str(tmp_path / "x"),
            "latent.dim=8",
            "stages.operator.heads=2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "shape differences" in err and "vs model" in err
    assert not list(tmp_path.iterdir())


def test_zero_shot_resolution_decodes_at_n_points_against_the_regenerated_truth(trained, tmp_path):
    config, run = trained
    native = evaluate(
        config, "--run-dir", str(run), "--engine", "native", "--output-prefix", str(tmp_path / "32")
    )
    finer = evaluate(
        config,
        "--run-dir",
        str(run),
        "--engine",
        "native",
        "--resolution",
        "64",
        "--output-prefix",
        str(tmp_path / "64"),
    )
    assert finer["resolution"] == 64
    regenerated = Path(load_config(config).paths.data_dir) / "reference"
    assert list(regenerated.rglob("1D_Burgers_Sols_Nu0.01.hdf5"))  # the truth at 64 points, regenerated
    # the same model decoded at twice the points keeps its accuracy on the regenerated truth
    assert finer["metrics"]["nrmse"] == pytest.approx(native["metrics"]["nrmse"], rel=0.25)
    same = evaluate(
        config,
        "--run-dir",
        str(run),
        "--engine",
        "native",
        "--resolution",
        "32",
        "--output-prefix",
        str(tmp_path / "same"),
    )
    assert same["metrics"]["nrmse"] == pytest.approx(
        native["metrics"]["nrmse"], rel=1e-6
    )  # the stored grid itself


def test_a_native_checkpoint_evaluates_the_same_in_either_engine(trained, tmp_path):
    config, run = trained
    cfg = load_config(config, ["stages.operator.epochs=1"])
    done = train_stage(cfg, "operator", tmp_path / "native-run", engine="native", from_run=run).result
    results = [
        evaluate(
            config,
            "--checkpoint",
            str(done.best_path),
            "--engine",
            engine,
            "--output-prefix",
            str(tmp_path / engine),
        )
        for engine in ("lightning", "native")
    ]
    assert results[0]["metrics"] == pytest.approx(results[1]["metrics"], rel=1e-6)


def test_the_leaderboard_and_the_report_escape_what_users_type(trained, tmp_path):
    config, run = trained
    label = "<script>alert(1)</script>"
    board = tmp_path / "board.csv"
    for engine in ("native", "lightning"):
        assert (
            main(
                [
                    "evaluate",
                    "--config",
                    str(config),
                    "--run-dir",
                    str(run),
                    "--engine",
                    engine,
                    "--label",
                    label,
                    "--tag",
                    "team=<b>x</b>",
                    "--tag",
                    "note==SUM(A1)",
                    "--leaderboard",
                    str(board),
                    "--output-prefix",
                    str(tmp_path / engine),
                    "--role",
                    "baseline",
                ]
            )
            == 0
        )
    rows = list(csv.DictReader(open(board)))
    assert [r["label"] for r in rows] == [label, label] and rows[0]["tag:team"] == "<b>x</b>"
    assert [(r["run_id"], r["role"], r["tasks"]) for r in rows] == [
        (run.name, "baseline", "burgers,darcy")
    ] * 2
    assert float(rows[0]["nrmse"]) == pytest.approx(float(rows[1]["nrmse"]), rel=1e-6)
    assert rows[0]["tag:note"] == "'=SUM(A1)"  # a spreadsheet shows it, never runs it
    provenance = (
        os.path.relpath(run.resolve(), board.parent.resolve()),
        hashlib.sha256((run / "config.resolved.yaml").read_bytes()).hexdigest(),
    )
    assert [(r["run_dir"], r["run_config_hash"]) for r in rows] == [provenance] * 2
    for page in (board.with_suffix(".html"), tmp_path / "native.html"):
        text = page.read_text()
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;" in text
            and "<script>" not in text
            and "<b>x</b>" not in text
        )


def test_context_frames_start_the_rollout_after_the_context_and_score_only_later_frames(trained, tmp_path):
    from ups.data.latent_pairs import WindowDataset
    from ups.data.summary import load_config_tasks

    config, run = trained
    board = tmp_path / "board.csv"
    plain = evaluate(
        config, "--run-dir", str(run), "--output-prefix", str(tmp_path / "plain"), "--leaderboard", str(board)
    )
    context = evaluate(
        config,
        "--run-dir",
        str(run),
        "--output-prefix",
        str(tmp_path / "context"),
        "--leaderboard",
        str(board),
        "evaluation.context_frames=3",
    )
    # 11 frames at stride 2: frames 0, 2, 4 are context; the rollout from frame 4 scores 6, 8, 10
    assert (plain["horizon"], plain["context_frames"]) == (5, None)
    assert (context["horizon"], context["context_frames"]) == (3, 3) and len(
        context["rollout"]["operator"]
    ) == 3
    assert context["metrics"]["one_step_nrmse"] != pytest.approx(plain["metrics"]["one_step_nrmse"])
    rows = list(csv.DictReader(board.open()))
    assert [row["context_frames"] for row in rows] == ["", "3"]

    burgers = [task for task in load_config_tasks(load_config(config)) if task.name == "burgers"]
    windows = WindowDataset(burgers, "test", 3, 2, start=4)
    traj = burgers[0].split.indices("test")[0]
    expected = burgers[0].normalizer.normalize(burgers[0].file.trajectory(traj, slice(4, 11, 2)))
    assert len(windows) == 2 and torch.equal(windows[0]["window"], torch.from_numpy(expected))
    with pytest.raises(Exception, match=r"from frame 4 \(the last of evaluation.context_frames\) needs 13"):
        WindowDataset(burgers, "test", 4, 2, start=4)
    code = main(
        [
            "evaluate",
            "--config",
            str(config),
            "--run-dir",
            str(run),
            "--output-prefix",
            str(tmp_path / "none"),
            "evaluation.context_frames=6",
        ]
    )  # frame 10 is the last: nothing after it
    assert code == 2 and not (tmp_path / "none.json").exists()
