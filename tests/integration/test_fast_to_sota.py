"""``ups fast-to-sota`` on tiny built-in data: promotion of a first run on a provisional pass,
weaker candidates stopped at the small gate (or recorded at both with --force-full-eval), one
offline W&B run with training and evaluation metrics, reuse, redo, retraining, a candidate
taking over from the champion, and truthful summaries when a step fails."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from ups.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import generative_overrides, tiny_five_stage_config  # noqa: E402
from wandb_offline import history  # noqa: E402

STRONG = ["stages.autoencoder.epochs=4", "stages.operator.epochs=6"]
WEAK = ["stages.autoencoder.epochs=1", "stages.operator.epochs=1"]  # far fewer epochs
STEPS = ("validate", "train", "small_eval", "small_gate", "full_eval", "full_gate", "promote")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny five-stage config on built-in Burgers and Darcy data."""
    root = tmp_path_factory.mktemp("fast")
    return tiny_five_stage_config(root, generative_overrides(steps_infer=2, val_samples=2))


def fast(config: Path, runs: Path, run_id: str, *args: str, code: int = 0) -> dict | None:
    """Run the command with its runs under ``runs``; the summary it wrote."""
    assert (
        main(["fast-to-sota", "--config", str(config), "--run-id", run_id, *args, f"paths.runs_dir={runs}"])
        == code
    )
    path = runs / run_id / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def statuses(summary: dict) -> dict:
    return {name: step["status"] for name, step in summary["steps"].items()}


def rows(runs: Path) -> list[dict]:
    with open(runs / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "engines",
    [["--engine", "native"], ["--engine", "lightning", "--eval-engine", "lightning"]],
    ids=["native", "lightning"],
)
def test_first_run_is_promoted_and_weaker_candidates_are_stopped_by_the_gates(
    tiny, tmp_path, engines, capsys
):
    runs = tmp_path / "runs"
    first = fast(tiny, runs, "first", *engines, *STRONG, "logging.wandb.enabled=true")
    assert statuses(first) == dict.fromkeys(STEPS, "done") and first["status"] == "done"
    assert first["engines"] == {"training": engines[1], "evaluation": "lightning"}
    assert first["promoted"] and first["champion_run_id"] == "first"
    for kind in ("small", "full"):
        gate = first["gates"][kind]
        assert gate["passed"] and gate["provisional"] and gate["baseline_row"] is None
        assert "provisional pass" in gate["messages"][0]
        assert (
            json.loads((runs / "first" / first["evaluations"][kind]).read_text())["split"]
            == {"small": "val", "full": "test"}[kind]
        )
    assert set(first["checkpoints"]) == {
        "autoencoder",
        "operator",
        "diff_residual",
        "consistency_distill",
        "steady_prior",
    } and all((runs / "first" / p).is_file() for p in first["checkpoints"].values())
    assert json.loads((runs / "first" / "promotion.json").read_text())["provisional"] is True
    out = capsys.readouterr().out.splitlines()
    assert (
        out[-1] == f"summary: {runs / 'first' / 'summary.json'}" and "promoted: yes; champion: first" in out
    )

    # one offline W&B run holding the training and the evaluation metrics, and the summary
    (wandb_run,) = (runs / "first" / "logs" / "wandb").glob("offline-run-*")
    assert (
        first["tracking"]["wandb"]["dir"] == wandb_run.relative_to(runs / "first").as_posix()
    )  # run-relative
    keys = {key for row in history(wandb_run) for key in row}
    assert {
        "training/operator/val/nrmse",
        "training/autoencoder/train/loss",
        "training/step",
        "eval/small/nrmse",
        "eval/full/nrmse",
        "eval/full/burgers/nrmse",
    } <= keys
    assert json.loads((wandb_run / "files" / "summary.json").read_text())["promoted"] is True
    assert (wandb_run / "files" / "leaderboard.csv").is_file()

    weak = fast(tiny, runs, "weak", *engines, *WEAK)
    assert statuses(weak) == {**dict.fromkeys(STEPS[:4], "done"), **dict.fromkeys(STEPS[4:], "skipped")}
    small = weak["gates"]["small"]
    assert (
        not small["passed"]
        and small["baseline_row"]["run_id"] == "first"
        and small["baseline_row"]["role"] == "champion"
    )
    assert small["candidate"] > small["baseline"] and "small gate failed." in small["messages"]
    assert "--force-full-eval" in weak["steps"]["full_eval"]["reason"] and "full" not in weak["gates"]
    assert not weak["promoted"] and weak["champion_run_id"] == "first"

    forced = fast(tiny, runs, "forced", *engines, "--force-full-eval", *WEAK)
    assert statuses(forced) == {**dict.fromkeys(STEPS[:6], "done"), "promote": "skipped"}
    assert not forced["gates"]["small"]["passed"] and not forced["gates"]["full"]["passed"]
    assert (
        forced["gates"]["full"]["baseline_row"]["split"] == "test"
    )  # compared with the champion's full evaluation
    assert (
        forced["steps"]["promote"]["reason"] == "the full gate failed"
        and forced["champion_run_id"] == "first"
    )

    board = [(r["run_id"], r["role"], r["eval"]) for r in rows(runs)]
    assert board == [
        ("first", "small_eval", "small"),
        ("first", "full_eval", "full"),
        ("first", "champion", "small"),
        ("first", "champion", "full"),
        ("weak", "small_eval", "small"),
        ("forced", "small_eval", "small"),
        ("forced", "full_eval", "full"),
    ]


def test_reuse_redo_retrain_and_a_better_candidate_taking_over(tiny, tmp_path):
    runs = tmp_path / "runs"
    fast(tiny, runs, "a", *WEAK)
    board = rows(runs)
    again = fast(tiny, runs, "a", *WEAK)
    assert statuses(again) == {
        **dict.fromkeys(STEPS, "done"),
        "train": "reused",
        "small_eval": "reused",
        "full_eval": "reused",
    }
    assert again["promoted"] and len(rows(runs)) == len(board)  # no new rows: same results, already champion
    assert len(list((runs / "a").glob("summary.*.json"))) == 1  # the earlier summary is kept

    redo = fast(tiny, runs, "a", "--redo-small-eval", *WEAK)
    assert (redo["steps"]["small_eval"]["status"], redo["steps"]["full_eval"]["status"]) == ("done", "reused")

    # a stronger candidate beats the champion (cost ratios left out: timings of tiny models are noise)
    better = fast(tiny, runs, "b", *STRONG, "gates.ratio_limits={}")
    assert (
        not better["gates"]["full"]["provisional"]
        and better["gates"]["full"]["baseline_row"]["run_id"] == "a"
    )
    assert better["promoted"] and better["champion_run_id"] == "b"

    # other training settings in a trained run folder: refused before anything is written
    before = (runs / "a" / "summary.json").read_text()
    assert fast(tiny, runs, "a", *STRONG, code=2) is not None
    assert (runs / "a" / "summary.json").read_text() == before
    retrained = fast(tiny, runs, "a", "--force-train", *STRONG, "gates.ratio_limits={}")
    assert (
        retrained["steps"]["train"]["status"] == "done"
        and retrained["steps"]["small_eval"]["status"] == "done"
    )
    kept = Path(retrained["steps"]["train"]["superseded"])
    assert (kept / "stage_status.json").is_file() and (kept / "checkpoints" / "operator").is_dir()
    assert (kept / "promotion.json").is_file() and (kept / "eval" / "small" / "results.json").is_file()
    # what the superseded weights scored stays on the leaderboard, retired: never a baseline again
    assert retrained["steps"]["train"]["retired_rows"] == 5  # small, full, 2 champion, the redone small
    assert [r["role"] for r in rows(runs) if r["run_id"] == "a"][:5] == ["superseded"] * 5


def test_a_failing_step_leaves_a_truthful_partial_summary(tiny, tmp_path, monkeypatch):
    import ups.pipeline.fast_to_sota as orchestrator

    def broken(cfg, request):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(orchestrator, "evaluate", broken)
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="disk on fire"):
        fast(tiny, runs, "x", *WEAK)
    summary = json.loads((runs / "x" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == {
        "step": "small_eval",
        "type": "RuntimeError",
        "message": "disk on fire",
    }
    assert statuses(summary) == {
        "validate": "done",
        "train": "done",
        "small_eval": "failed",
        **dict.fromkeys(STEPS[3:], "pending"),
    }
    assert summary["finished_at"] and len(summary["checkpoints"]) == 5


def test_use_lightning_and_lightning_eval_are_aliases():
    from ups.cli import build_parser

    args = build_parser().parse_args(
        [
            "fast-to-sota",
            "--config",
            "c.yaml",
            "--engine",
            "native",
            "--use-lightning",
            "--lightning-eval",
            "a.b=1",
        ]
    )
    assert (args.engine, args.eval_engine, args.overrides) == ("lightning", "lightning", ["a.b=1"])
    args = build_parser().parse_args(["fast-to-sota", "--config", "c.yaml", "--eval-engine", "native"])
    assert (args.engine, args.eval_engine) == ("lightning", "native")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--improvement-metric", "correlation_time"], "not a metric where lower is better"),
        (["--improvement-metric", "metric:nope/nrmse"], "task 'nope' is not one of the config's tasks"),
        (["--min-full-delta", "-1"], "must be >= 0"),
        (["gates.ratio_limits={spread_skill: 2}"], "gates.ratio_limits key 'spread_skill'"),
        (["--small-eval-config", "{model}"], "only an 'evaluation:' section"),
        (["--full-eval-config", "{long}"], "the full evaluation's evaluation.horizon=50"),
        (
            [
                "--improvement-metric",
                "crps",
                "stages.diff_residual.epochs=0",
                "stages.consistency_distill.epochs=0",
            ],
            "comes from the consistency_distill or diff_residual stage",
        ),
        (["--engine", "native", "training.devices=2"], "native"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tiny, tmp_path, capsys, args, message):
    model = tmp_path / "model.yaml"
    model.write_text("evaluation: {horizon: 2}\nlatent: {dim: 8}\n")
    long = tmp_path / "long.yaml"
    long.write_text("evaluation: {horizon: 50}\n")
    args = [{"{model}": str(model), "{long}": str(long)}.get(a, a) for a in args]
    runs = tmp_path / "runs"
    assert fast(tiny, runs, "bad", *args, code=2) is None
    assert message in capsys.readouterr().err and not runs.exists()
