"""benchmarks/protocol.py: the ratio and its interval, the verdict, the totals rule, the results file."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from protocol import ResultsFile, cell_ratio, ratio_interval, totals_agree, verdict  # noqa: E402


def test_the_ratio_is_the_geometric_mean_of_the_cells_ratios():
    cells = [
        (np.array([1.0, 3.0]), np.array([2.0, 2.0])),  # r = 1
        (np.array([1.0, 1.0]), np.array([4.0, 4.0])),
    ]  # r = 1/4
    point, low, high = ratio_interval(cells, draws=500)
    assert cell_ratio(*cells[0]) == 1.0
    assert point == pytest.approx(0.5)  # sqrt(1 * 1/4)
    assert low <= point <= high


def test_the_interval_is_fixed_by_its_seed_and_narrows_with_agreeing_seeds():
    rng = np.random.default_rng(1)
    ups = [rng.lognormal(0, 0.3, 64) * 0.5 for _ in range(3)]
    fno = [rng.lognormal(0, 0.3, 64) for _ in range(3)]
    cells = list(zip(ups, fno))
    assert ratio_interval(cells, draws=400) == ratio_interval(cells, draws=400)
    point, low, high = ratio_interval(cells, draws=400)
    assert 0.4 < low < point < high < 0.65 and verdict(low, high) == "win"


def test_verdicts():
    assert verdict(0.5, 0.9) == "win" and verdict(1.1, 2.0) == "loss" and verdict(0.8, 1.2) == "tie"


def test_paired_errors_of_unequal_length_are_refused():
    with pytest.raises(ValueError):
        ratio_interval([(np.ones(3), np.ones(4))])


def test_totals_within_five_percent():
    assert totals_agree(118.0, 120.0) and totals_agree(120.0, 125.9)
    assert not totals_agree(100.0, 120.0) and not totals_agree(127.0, 120.0)
    assert totals_agree(60.0, 120.0, one_sided=True)  # defaults: UPS may stop on its own epochs
    assert not totals_agree(127.0, 120.0, one_sided=True)


def row(task, seed, model, value):
    return {
        "task": task,
        "seed": seed,
        "budget_s": "120",
        "variant": "tuned",
        "model": model,
        "headline": "nrmse",
        "nrmse": value,
        "per_trajectory": [value, value],
    }


def test_a_cell_rerun_replaces_its_rows_and_keeps_the_others(tmp_path):
    results = ResultsFile(tmp_path / "accuracy.csv")
    results.replace_cell([row("a", 1, "UPS", 0.1), row("a", 1, "FNO", 0.2)])
    results.replace_cell([row("a", 2, "UPS", 0.3), row("a", 2, "FNO", 0.4)])
    assert results.has(("a", "1", "120", "tuned")) and not results.has(("a", "3", "120", "tuned"))
    results.replace_cell([row("a", 1, "UPS", 0.5), row("a", 1, "FNO", 0.6)])
    got = {(r["seed"], r["model"]): float(r["nrmse"]) for r in results.rows()}
    assert got == {("2", "UPS"): 0.3, ("2", "FNO"): 0.4, ("1", "UPS"): 0.5, ("1", "FNO"): 0.6}
    assert json.loads(results.rows()[0]["per_trajectory"]) == [0.3, 0.3]
    with pytest.raises(ValueError):
        results.replace_cell([row("a", 1, "UPS", 0.5), row("a", 2, "FNO", 0.6)])
    assert not (tmp_path / "accuracy.csv.tmp").exists()
