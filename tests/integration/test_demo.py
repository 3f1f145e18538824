"""The demo's promise, end to end at full size (slow: about 3 minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ups.checkpoint import load_checkpoint
from ups.cli import main
from ups.data.generate import generate_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_operator_beats_persistence_at_least_twice(tmp_path, capsys):
    data = tmp_path / "data"
    generate_dataset("burgers1d", data, params={"nu": 0.01}, progress=False)
    generate_dataset("darcy2d", data, params={"beta": 1.0}, progress=False)
    run = tmp_path / "run"
    common = ["--config", str(REPO / "configs" / "demo.yaml"), "--run-dir", str(run), f"paths.data_dir={data}"]
    assert main(["train", "--stage", "autoencoder", *common]) == 0
    assert main(["train", "--stage", "operator", *common]) == 0
    assert "x lower" in capsys.readouterr().out

    status = json.loads((run / "stage_status.json").read_text())
    rows = [r for r in _val_rows(run / "logs" / "operator" / "metrics.csv")]
    best = min(rows, key=lambda r: r["val/nrmse"])
    assert best["val/nrmse"] == pytest.approx(status["operator"]["best_score"], rel=1e-6)
    assert best["val/persistence_nrmse"] >= 2 * best["val/nrmse"]
    assert load_checkpoint(status["operator"]["best_path"])["ups"]["stage"] == "operator"


def _val_rows(path: Path):
    import csv

    for row in csv.DictReader(open(path)):
        if row.get("val/nrmse"):
            yield {k: float(v) for k, v in row.items() if v}
