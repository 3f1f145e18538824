"""Promotion gates: does a candidate beat the current baseline on the leaderboard?

Rows are leaderboard rows (``ups.eval.leaderboard.leaderboard_row`` plus ``role`` and
``run_id``). Lower is better for every metric.

- Baseline: among rows not of the candidate's own run that were evaluated like the candidate
  (``comparable``: the same split, horizon, resolution and tasks), the best row (lowest
  improvement metric) with role ``champion``; if there is none, the best ``full_eval`` row; else
  the best ``baseline`` row; else no baseline.
- Pass: baseline - candidate >= the minimum delta on the improvement metric, and every ratio
  limit holds (candidate / baseline <= limit, e.g. conservation or cost per step). A metric
  missing on either side is reported as skipped, never passed silently; a missing improvement
  metric on the candidate fails the gate.
- No baseline at all: a provisional pass, recorded as such.
Every decision carries human-readable messages.

Only rows whose provenance holds may be a baseline (``gating_rows``): a row of role champion,
full_eval or baseline without ``run_dir`` and ``run_config_hash`` (written before rows carried
them, or added by hand), or whose run folder holds another ``config.resolved.yaml`` than the one
it was evaluated with, is ignored with a warning; a row whose run folder is gone still gates,
with a warning (it records what was measured).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ups.errors import UPSError
from ups.eval.evaluator import FIELD_METRICS
from ups.eval.leaderboard import read_leaderboard, run_config_hash, warn_once

ROLES = ("champion", "full_eval", "baseline")  # baseline preference, best first
# the evaluation's metrics where lower is better: the only ones a gate can compare
GATE_METRICS = (
    *FIELD_METRICS,
    *(f"corrected_{name}" for name in FIELD_METRICS),
    "crps",
    "steady_nrmse",
    "steady_regression_nrmse",
    "ms_per_rollout_step",
)


def gate_metric(name: str, tasks: list[str], what: str) -> str:
    """``name`` (``metric:`` prefix allowed) checked: a ``GATE_METRICS`` name, overall or of a task
    (``<task>/<metric>``). Raises ``UPSError`` saying what is valid."""
    plain = name.removeprefix("metric:")
    task, _, metric = plain.rpartition("/")
    if metric in GATE_METRICS and (not task or task in tasks):
        return plain
    problem = (
        f"task '{task}' is not one of the config's tasks ({', '.join(tasks)})"
        if metric in GATE_METRICS and task
        else f"'{metric}' is not a metric where lower is better"
    )
    raise UPSError(
        f"{what} '{name}': {problem}. Use one of {', '.join(GATE_METRICS)}, optionally as "
        f"<task>/<metric> (e.g. {tasks[0] if tasks else 'burgers1d'}/nrmse)."
    )


@dataclass
class Check:
    metric: str
    candidate: float | None
    baseline: float | None
    limit: float
    status: str  # "pass", "fail" or "skipped"

    @property
    def ratio(self) -> float | None:
        if self.candidate is None or not self.baseline:
            return None
        return self.candidate / self.baseline


@dataclass
class GateDecision:
    gate: str  # "small" or "full"
    passed: bool
    provisional: bool
    metric: str
    candidate: float | None
    baseline: float | None
    baseline_row: dict | None
    min_delta: float
    checks: list[Check] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": [{**asdict(c), "ratio": c.ratio} for c in self.checks]}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def gating_rows(leaderboard: Path) -> list[dict]:
    """The rows of the CSV ``leaderboard`` that may be a baseline: of a ``ROLES`` role, with
    provenance that holds (module docstring); a warning for each row left out or kept without
    its run folder."""
    board = read_leaderboard(leaderboard)
    kept, unproven = [], []
    for row, line in zip(board.rows, board.lines):
        if row.get("role") not in ROLES:
            continue
        if not row.get("run_dir") or not row.get("run_config_hash"):
            unproven.append(str(line))
            continue
        run = Path(leaderboard).parent / row["run_dir"]
        what = f"leaderboard {leaderboard}, line {line} ({row.get('role')} of run {row.get('run_id')})"
        if not run.is_dir():
            warn_once(f"{what}: its run folder {run} is gone; it still gates on the figures it records.")
        elif run_config_hash(run) != row["run_config_hash"]:
            warn_once(
                f"{what}: ignored by the gates: {run}/config.resolved.yaml is not the config the row "
                f"was evaluated with (retrained since, or a row copied by hand); evaluate the run "
                f"again to register what it holds now."
            )
            continue
        kept.append(row)
    if unproven:
        shown = ", ".join(unproven[:10]) + (f" and {len(unproven) - 10} more" if len(unproven) > 10 else "")
        warn_once(
            f"leaderboard {leaderboard}, line(s) {shown}: ignored by the gates: no run_dir and "
            f"run_config_hash (written before leaderboard rows carried their provenance, or added "
            f"by hand). To let such a run be a baseline again, evaluate it onto this leaderboard: "
            f"`ups evaluate --config C --run-dir <its run folder> --role baseline --leaderboard "
            f"{leaderboard}`."
        )
    return kept


def comparable_rows(rows: list[dict], comparable: dict | None) -> list[dict]:
    """The rows whose values of the ``comparable`` keys equal the candidate's (as the CSV writes
    them: None is blank)."""
    text = lambda value: "" if value is None else str(value)  # noqa: E731
    return [
        r for r in rows if all(text(r.get(key)) == text(value) for key, value in (comparable or {}).items())
    ]


def select_baseline(
    rows: list[dict], metric: str, candidate_run: str, comparable: dict | None = None
) -> dict | None:
    """The best row of the most preferred role present, other runs only (see the module docstring)."""
    others = [
        r
        for r in comparable_rows(rows, comparable)
        if r.get("run_id") != candidate_run and _number(r.get(metric)) is not None
    ]
    for role in ROLES:
        of_role = [r for r in others if r.get("role") == role]
        if of_role:
            return min(of_role, key=lambda r: _number(r[metric]))
    return None


def decide(
    gate: str,
    candidate: dict,
    rows: list[dict],
    *,
    metric: str,
    min_delta: float,
    ratio_limits: dict[str, float],
    candidate_run: str,
    comparable: dict | None = None,
) -> GateDecision:
    """The gate's decision for ``candidate`` (its metrics by name) against ``rows``."""
    value = _number(candidate.get(metric))
    row = select_baseline(rows, metric, candidate_run, comparable)
    base = _number(row.get(metric)) if row else None
    decision = GateDecision(gate, False, False, metric, value, base, row, min_delta)
    if value is None:
        decision.messages.append(
            f"{gate} gate failed: the candidate has no '{metric}' (the improvement metric)."
        )
        return decision
    if row is None:
        decision.passed = decision.provisional = True
        like = ", ".join(
            f"{key} {'-' if v is None or v == '' else v}" for key, v in (comparable or {}).items()
        )
        decision.messages.append(
            f"{gate} gate: no champion, full_eval or baseline row of another run"
            f"{f' evaluated like this candidate ({like})' if like else ''} to compare with; "
            f"provisional pass with {metric} = {value:.4g}."
        )
        return decision
    improvement = base - value
    improved = improvement >= min_delta
    decision.messages.append(
        f"{gate} gate: {metric} {value:.4g} vs {row.get('role')} '{row.get('label')}' "
        f"(run {row.get('run_id')}) "
        f"{base:.4g}: improvement {improvement:.4g} {'>=' if improved else '<'} required {min_delta:.4g}."
    )
    decision.checks = [
        _ratio_check(name, limit, candidate, row) for name, limit in sorted(ratio_limits.items())
    ]
    for check in decision.checks:
        if check.status == "skipped":
            why = (
                "is missing on the candidate"
                if check.candidate is None
                else "is missing on the baseline"
                if check.baseline is None
                else "is 0 on the baseline (no ratio)"
            )
            decision.messages.append(
                f"{gate} gate: ratio check on '{check.metric}' skipped: the metric {why}."
            )
        else:
            decision.messages.append(
                f"{gate} gate: {check.metric} ratio {check.ratio:.4g} "
                f"{'<=' if check.status == 'pass' else '>'} limit {check.limit:.4g}."
            )
    decision.passed = improved and all(c.status != "fail" for c in decision.checks)
    decision.messages.append(f"{gate} gate {'passed' if decision.passed else 'failed'}.")
    return decision


def _ratio_check(metric: str, limit: float, candidate: dict, row: dict) -> Check:
    value, base = _number(candidate.get(metric)), _number(row.get(metric))
    if value is None or base is None or base == 0:
        return Check(metric, value, base, limit, "skipped")
    return Check(metric, value, base, limit, "pass" if value / base <= limit else "fail")
