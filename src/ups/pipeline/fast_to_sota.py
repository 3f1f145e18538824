"""``ups fast-to-sota``: validate → train → small evaluation → small gate → full evaluation →
full gate → promotion, in one run folder, with one ``summary.json`` saying what was decided and why.

- Training is ``run_pipeline`` with resume: stages already done in the run folder are reused
  (their checkpoints), a half-done stage continues; ``force_train`` first moves the earlier
  training (checkpoints, logs, stage_status.json, evaluations, promotion.json) to
  ``<run>/superseded/<time>/`` and retires the run's leaderboard rows (role ``superseded``). A
  run folder trained with another training config (everything but ``evaluation``, ``gates``,
  ``logging`` and ``paths.runs_dir``) is refused unless ``force_train``.
- Evaluations are ``ups.eval.run.evaluate`` on the run's best checkpoints, written to
  ``<run>/eval/<small|full>/results.{json,html}`` with a leaderboard row (role ``small_eval`` or
  ``full_eval``). Small: the config with ``evaluation.split=val`` and ``evaluation.report=false``,
  then the ``small_eval_config`` file on top; full: ``evaluation.split=test``, then
  ``full_eval_config``. An evaluation is reused when its results file is newer than every
  checkpoint it names, those are still the run's best, and the settings and engine are the same,
  unless its redo flag is set.
- Gates: ``ups.pipeline.gates.decide`` against the leaderboard's rows evaluated the same way
  whose provenance holds (``ups.pipeline.gates.gating_rows``).
  A failed small gate skips the full evaluation unless ``force_full_eval``.
- Promotion: when both gates pass, the candidate's small and full rows are appended again with
  role ``champion`` (once per run, evaluation and evaluation config) and
  ``<run>/promotion.json`` is written.

Several devices: every rank trains (Lightning starts the other ranks by re-running the
command); only rank 0 evaluates, decides and writes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ups import tracking
from ups.atomic import atomic_write_text
from ups.checkpoint import config_hash
from ups.config import Config, to_dict
from ups.config.requests import EvaluationRequest, Request
from ups.deadline import Deadline
from ups.engines.settings import training_device
from ups.errors import UPSError
from ups.eval.leaderboard import (
    append_leaderboard,
    leaderboard_row,
    read_leaderboard,
    retire_rows,
    run_config_hash,
)
from ups.eval.run import evaluate
from ups.pipeline.fast_plan import Plan, training_hash
from ups.pipeline.gates import decide, gating_rows, select_baseline
from ups.pipeline.pipeline import planned_stages, run_pipeline
from ups.pipeline.runner import is_rank_zero, supersede
from ups.pipeline.summary import Summary, now
from ups.runs import RunDir

log = logging.getLogger("ups")
COMPARABLE = ("split", "horizon", "context_frames", "resolution", "tasks")  # evaluated like the candidate
RETIRED = ("small_eval", "full_eval", "champion")  # a run's roles that --force-train retires


def fast_to_sota(request: Request, plan: Plan) -> Summary | None:
    """Run every step of ``plan`` (``ups.resolve.resolve_fast_to_sota``'s); the summary (None on
    ranks other than 0, which only train)."""
    rank_zero = is_rank_zero()
    summary = Summary(
        plan.run.summary_path,
        {
            "run_id": plan.run.root.name,
            "run_dir": str(plan.run.root.resolve()),
            "config": {
                "path": str(Path(request.config).resolve()),
                "overrides": list(request.overrides),
                "resolved": plan.run.relative(plan.run.resolved_config_path),
                "small_eval_config": _resolved(request.small_eval_config),
                "full_eval_config": _resolved(request.full_eval_config),
                "training_hash": training_hash(to_dict(plan.cfg)),
            },
            "engines": {"training": request.engine, "evaluation": request.eval_engine},
            "leaderboard": str(plan.leaderboard.resolve()),
            "gate_settings": {
                "improvement_metric": plan.metric,
                "min_small_delta": plan.deltas["small"],
                "min_full_delta": plan.deltas["full"],
                "ratio_limits": dict(plan.cfg.gates.ratio_limits),
            },
        },
    )
    if not rank_zero:
        train(request, plan, None)
        return None
    plan.run.root.mkdir(parents=True, exist_ok=True)
    summary.start(time.perf_counter() - plan.started)
    try:
        with tracking.tracking(plan.cfg, plan.run.root) as tracker:
            summary.tracking = {
                "csv": plan.run.relative(plan.run.logs_root),
                "wandb": None
                if tracker is None
                else {"run_id": tracker.run.id, "dir": plan.run.relative(tracker.directory)},
            }
            try:
                train(request, plan, summary)
                evaluate_and_gate(request, plan, summary)
                promote(plan, summary)
                summary.finish()
            finally:
                if tracker is not None:  # the summary as it stands, also after a failure
                    attach(tracker, summary, plan.leaderboard)
    except BaseException as exc:
        if summary.status != "failed":  # failed outside a step, or in tracking after the last step
            summary.fail("orchestrator" if summary.status == "running" else "tracking", exc)
        raise
    return summary


def _resolved(path: Path | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def train(request: Request, plan: Plan, summary: Summary | None) -> None:
    budget = plan.cfg.training.time_budget  # the train step's wall clock, from its start
    deadline = None if budget is None else Deadline.after(budget)
    if summary is None:  # another rank: train only
        run_pipeline(plan.cfg, plan.run.root, engine=request.engine, resume=True, deadline=deadline)
        return
    with summary.step("train") as entry:
        if request.force_train:
            entry["superseded"] = supersede_training(plan.run)
            entry["retired_rows"] = retire_rows(plan.leaderboard, plan.run.root.name, RETIRED, "superseded")
        try:
            done = run_pipeline(
                plan.cfg, plan.run.root, engine=request.engine, resume=True, deadline=deadline
            )
        finally:  # after a failure too: what is done in the run folder
            status = plan.run.status()
            entry["stages"] = {
                name: status.get(name, {}).get("state", "pending") for name in planned_stages(plan.cfg)
            }
            summary.checkpoints = {
                name: plan.run.relative(plan.run.best_checkpoint(name))
                for name, state in entry["stages"].items()
                if state == "done"
            }
        entry["stages"] = {item.stage: item.action for item in done}
        entry["status"] = "reused" if all(item.action == "already done" for item in done) else "done"


def supersede_training(run: RunDir) -> str | None:
    """Move the run's earlier training to ``superseded/<time>/`` (``--force-train`` keeps it);
    W&B's files stay with the run (one W&B run per folder)."""
    logs = [p for p in run.logs_root.iterdir() if p.name != "wandb"] if run.logs_root.is_dir() else []
    trained = [run.checkpoints_root, *logs, run.status_path, run.gate_evaluations_dir, run.promotion_path]
    target = supersede(run, trained)
    return None if target is None else str(target)


def evaluate_and_gate(request: Request, plan: Plan, summary: Summary) -> None:
    for kind in ("small", "full"):
        if kind == "full" and not summary.gates["small"].passed and not request.force_full_eval:
            reason = "the small gate failed (run with --force-full-eval to evaluate anyway)"
            summary.skip("full_eval", reason)
            summary.skip("full_gate", reason)
            return
        redo = request.redo_small_eval if kind == "small" else request.redo_full_eval
        with summary.step(f"{kind}_eval") as entry:
            result, written, reused = run_evaluation(request, plan, kind, fresh=redo)
            entry["status"] = "reused" if reused else "done"
            entry.update(
                {key: plan.run.relative(path) for key, path in written.items() if key != "leaderboard"}
            )
            summary.evaluations[kind] = written["json"].resolve()
        with summary.step(f"{kind}_gate") as entry:
            decision = gate(plan, kind, result)
            entry.update(passed=decision.passed, provisional=decision.provisional)
            summary.gates[kind] = decision
        log.info("%s", decision.messages[0])


def run_evaluation(request: Request, plan: Plan, kind: str, fresh: bool) -> tuple[dict, dict, bool]:
    """(result, written files, reused?) of the ``kind`` evaluation."""
    cfg = plan.evals[kind]
    prefix = plan.run.gate_evaluation_prefix(kind)
    eval_request = EvaluationRequest(
        run_dir=plan.run.root,
        engine=request.eval_engine,
        output_prefix=prefix,
        leaderboard=plan.leaderboard,
        label=plan.run.root.name,
        role=f"{kind}_eval",
        kind=kind,
        device=training_device(cfg).type,
    )
    earlier = None if fresh else reusable(prefix.with_suffix(".json"), plan, cfg, request.eval_engine)
    if earlier is None:
        result, written = evaluate(cfg, eval_request)
        return result, written, False
    log.info("%s evaluation: reusing %s (same checkpoints and settings)", kind, prefix.with_suffix(".json"))
    if not registered(plan, role=f"{kind}_eval"):
        append_leaderboard(plan.leaderboard, leaderboard_row(earlier), plan.run.root)
    tracker = tracking.active()
    if tracker is not None:
        tracker.log_evaluation(kind, earlier)
    written = {"json": prefix.with_suffix(".json")}
    if prefix.with_suffix(".html").is_file():
        written["report"] = prefix.with_suffix(".html")
    return earlier, written, True


def reusable(path: Path, plan: Plan, cfg: Config, engine: str) -> dict | None:
    """The earlier result at ``path`` when it is of the current checkpoints (the run's best, none
    written after the result), config and engine."""
    try:
        earlier = json.loads(path.read_text())
        paths = {stage: plan.run.best_checkpoint(stage) for stage in earlier.get("checkpoints", {})}
        current = {stage: plan.run.relative(path) for stage, path in paths.items()}
        newest = max(path.stat().st_mtime_ns for path in paths.values())
    except (OSError, ValueError, UPSError):  # no result, unreadable, a stage's checkpoints gone
        return None
    same = (
        earlier.get("checkpoints") == current
        and earlier.get("config_hash") == config_hash(cfg)
        and earlier.get("engine") == engine
        and path.stat().st_mtime_ns > newest
    )
    return earlier if same else None


def gate(plan: Plan, kind: str, result: dict):
    candidate = leaderboard_row(result)
    return decide(
        kind,
        candidate,
        gating_rows(plan.leaderboard),
        metric=plan.metric,
        min_delta=plan.deltas[kind],
        ratio_limits=dict(plan.cfg.gates.ratio_limits),
        candidate_run=plan.run.root.name,
        comparable={key: candidate.get(key) for key in COMPARABLE},
    )


def promote(plan: Plan, summary: Summary) -> None:
    full = summary.gates.get("full")
    if full is None or not full.passed or not summary.gates["small"].passed:
        summary.skip(
            "promote",
            "the full gate did not run"
            if full is None
            else "the full gate failed"
            if not full.passed
            else "the small gate failed (the full evaluation was forced)",
        )
    else:
        with summary.step("promote") as entry:
            run_id = plan.run.root.name
            for kind in ("small", "full"):
                result = json.loads(summary.evaluations[kind].read_text())
                if not registered(plan, role="champion", eval=kind, config_hash=result["config_hash"]):
                    row = leaderboard_row({**result, "role": "champion"})
                    append_leaderboard(plan.leaderboard, row, plan.run.root)
            record = {
                "promoted_at": now(),
                "run_id": run_id,
                "metric": plan.metric,
                "value": full.candidate,
                "previous_baseline": full.baseline_row,
                "provisional": full.provisional,
                "leaderboard": str(plan.leaderboard.resolve()),
            }
            atomic_write_text(plan.run.promotion_path, json.dumps(record, indent=2) + "\n")
            entry["record"] = plan.run.relative(plan.run.promotion_path)
            summary.promoted = True
    summary.champion_run_id = champion(plan, summary)


def registered(plan: Plan, **cells: str) -> bool:
    """Whether the leaderboard has a row of this run, with its provenance as it is now, holding
    ``cells``."""
    cells = {"run_id": plan.run.root.name, "run_config_hash": run_config_hash(plan.run.root) or "", **cells}
    rows = read_leaderboard(plan.leaderboard).rows
    return any(all(row.get(key) == value for key, value in cells.items()) for row in rows)


def champion(plan: Plan, summary: Summary) -> str | None:
    """The run of the best champion row evaluated like this run's full evaluation (else like its
    small one)."""
    rows = [r for r in gating_rows(plan.leaderboard) if r.get("role") == "champion"]
    for kind in ("full", "small"):
        if kind in summary.evaluations:
            result = json.loads(summary.evaluations[kind].read_text())
            like = {key: leaderboard_row(result).get(key) for key in COMPARABLE}
            best = select_baseline(rows, plan.metric, candidate_run="", comparable=like)
            if best is not None:
                return best.get("run_id")
    return None


def attach(tracker, summary: Summary, leaderboard: Path) -> None:
    """The summary, the gate table and the leaderboard, in the W&B run."""
    rows = [
        [
            kind,
            g.passed,
            g.provisional,
            g.metric,
            g.candidate,
            g.baseline,
            (g.baseline_row or {}).get("run_id"),
            " ".join(g.messages),
        ]
        for kind, g in summary.gates.items()
    ]
    tracker.log_table(
        "gates",
        ["gate", "passed", "provisional", "metric", "candidate", "baseline", "baseline_run", "messages"],
        rows,
    )
    tracker.run.summary.update({"promoted": summary.promoted, "champion_run_id": summary.champion_run_id})
    for path in (summary.path, leaderboard, leaderboard.with_suffix(".html")):
        if path.is_file():
            tracker.attach(path)
