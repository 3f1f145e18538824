"""Promotion gates: does a candidate beat the current baseline on the leaderboard?

Rows are leaderboard rows (``ups.eval.leaderboard.leaderboard_row`` plus ``role`` and
``run_id``). Lower is better for every metric.

- Baseline: among rows not of the candidate's own run, the best row (lowest improvement
  metric) with role ``champion``; if there is none, the best ``full_eval`` row; else the best
  ``baseline`` row; else no baseline.
- Pass: baseline - candidate >= the minimum delta on the improvement metric, and every ratio
  limit holds (candidate / baseline <= limit, e.g. conservation or cost per step). A metric
  missing on either side is reported as skipped, never passed silently; a missing improvement
  metric on the candidate fails the gate.
- No baseline at all: a provisional pass, recorded as such.
Every decision carries human-readable messages.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

ROLES = ("champion", "full_eval", "baseline")  # baseline preference, best first


@dataclass
class Check:
    metric: str
    candidate: float | None
    baseline: float | None
    limit: float
    status: str                     # "pass", "fail" or "skipped"

    @property
    def ratio(self) -> float | None:
        if self.candidate is None or not self.baseline:
            return None
        return self.candidate / self.baseline


@dataclass
class GateDecision:
    gate: str                       # "small" or "full"
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


def select_baseline(rows: list[dict], metric: str, candidate_run: str) -> dict | None:
    """The best row of the most preferred role present, other runs only (see the module docstring)."""
    others = [r for r in rows if r.get("run_id") != candidate_run and _number(r.get(metric)) is not None]
    for role in ROLES:
        of_role = [r for r in others if r.get("role") == role]
        if of_role:
            return min(of_role, key=lambda r: _number(r[metric]))
    return None


def decide(gate: str, candidate: dict, rows: list[dict], *, metric: str, min_delta: float,
           ratio_limits: dict[str, float], candidate_run: str) -> GateDecision:
    """The gate's decision for ``candidate`` (its metrics by name) against ``rows``."""
    value = _number(candidate.get(metric))
    row = select_baseline(rows, metric, candidate_run)
    base = _number(row.get(metric)) if row else None
    decision = GateDecision(gate, False, False, metric, value, base, row, min_delta)
    if value is None:
        decision.messages.append(f"{gate} gate failed: the candidate has no '{metric}' (the improvement metric).")
        return decision
    if row is None:
        decision.passed = decision.provisional = True
        decision.messages.append(f"{gate} gate: no champion, full_eval or baseline row to compare with; provisional "
                                 f"pass with {metric} = {value:.4g}.")
        return decision
    improvement = base - value
    improved = improvement >= min_delta
    decision.messages.append(
        f"{gate} gate: {metric} {value:.4g} vs {row.get('role')} '{row.get('label')}' (run {row.get('run_id')}) "
        f"{base:.4g}: improvement {improvement:.4g} {'>=' if improved else '<'} required {min_delta:.4g}.")
    decision.checks = [_ratio_check(name, limit, candidate, row) for name, limit in sorted(ratio_limits.items())]
    for check in decision.checks:
        if check.status == "skipped":
            decision.messages.append(f"{gate} gate: ratio check on '{check.metric}' skipped: the metric is missing "
                                     f"on the {'candidate' if check.candidate is None else 'baseline'}.")
        else:
            decision.messages.append(f"{gate} gate: {check.metric} ratio {check.ratio:.4g} "
                                     f"{'<=' if check.status == 'pass' else '>'} limit {check.limit:.4g}.")
    decision.passed = improved and all(c.status != "fail" for c in decision.checks)
    decision.messages.append(f"{gate} gate {'passed' if decision.passed else 'failed'}.")
    return decision


def _ratio_check(metric: str, limit: float, candidate: dict, row: dict) -> Check:
    value, base = _number(candidate.get(metric)), _number(row.get(metric))
    if value is None or base is None or base == 0:
        return Check(metric, value, base, limit, "skipped")
    return Check(metric, value, base, limit, "pass" if value / base <= limit else "fail")
