"""The HTML report and the leaderboard: self-contained, escaped, and safe under concurrent writers."""

from __future__ import annotations

import base64
import csv
import multiprocessing
import re
from datetime import datetime, timezone

import numpy as np
import pytest

from ups.eval.leaderboard import append_leaderboard, leaderboard_row, read_leaderboard, retire_rows
from ups.eval.report import energy_spectrum, write_report

EVIL = "<script>alert(1)</script>"


def make_result(label="candidate <b>1</b>") -> dict:
    return {
        "label": label,
        "tags": {"team": "a&b"},
        "split": "test",
        "engine": "lightning",
        "checkpoints": {
            "operator": "/runs/x/checkpoints/operator/best.ckpt",
            "diff_residual": None,
            "steady_prior": None,
        },
        "config_hash": "ab12cd34",
        "horizon": 5,
        "resolution": None,
        "metrics": {"nrmse": 0.1, "rmse": 0.02, "max_error": 0.3, "correlation_time": 4.5, "crps": 0.0123},
        "per_task": {"burgers1d": {"nrmse": 0.11, "rmse": 0.021}, "darcy2d": {"steady_nrmse": 0.345}},
        "rollout": {"operator": [0.05, 0.08, 0.1, 0.12, 0.15], "corrected": [0.06, 0.09, 0.1, 0.13, 0.16]},
        "extra": {"ms_per_rollout_step": 1.2, "samples_per_second": 800.0, "n_trajectories": 13},
    }


def make_examples(n_burgers=4, n_darcy=2) -> dict:
    rng = np.random.default_rng(0)
    burgers = np.sin(np.linspace(0, 2 * np.pi, 16))[None, None, :, None] * np.ones((n_burgers, 6, 16, 1))
    darcy = rng.normal(size=(n_darcy, 6, 8, 8, 1))
    return {
        "burgers1d": {
            "truth": burgers,
            "operator": burgers + 0.1 * rng.normal(size=burgers.shape),
            "corrected": burgers + 0.05 * rng.normal(size=burgers.shape),
        },
        "darcy2d": {"truth": darcy, "operator": darcy + 0.1 * rng.normal(size=darcy.shape)},
    }


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_is_self_contained_and_holds_every_plot(tmp_path):
    path = write_report(make_result(), make_examples(n_burgers=4, n_darcy=2), tmp_path / "r" / "report.html")
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    images = embedded_pngs(page)
    # rollout curve + burgers (3 of 4 trajectories + spectrum) + darcy (2 trajectories + spectrum)
    assert len(images) == 1 + (3 + 1) + (2 + 1)
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert list(tmp_path.joinpath("r").iterdir()) == [path]  # no temporary file left behind


def test_report_metrics_table_has_overall_and_per_task_columns(tmp_path):
    page = write_report(make_result(), {}, tmp_path / "report.html").read_text()
    assert "<tr><th>metric</th><th>overall</th><th>burgers1d</th><th>darcy2d</th></tr>" in page
    assert "<tr><th>nrmse</th><td>0.1</td><td>0.11</td><td>&mdash;</td></tr>" in page
    assert "<tr><th>steady_nrmse</th><td>&mdash;</td><td>&mdash;</td><td>0.345</td></tr>" in page
    assert (
        "<td>0.0123</td>" in page and "ab12cd34" in page and "/runs/x/checkpoints/operator/best.ckpt" in page
    )


def test_report_and_leaderboard_escape_user_strings(tmp_path):
    result = make_result(label=EVIL)
    result["tags"] = {EVIL: EVIL}
    result["per_task"] = {EVIL: {"nrmse": 0.2}}
    page = write_report(result, {EVIL: make_examples()["darcy2d"]}, tmp_path / "report.html").read_text()
    append_leaderboard(tmp_path / "board.csv", leaderboard_row(result))
    board = (tmp_path / "board.html").read_text()
    for text in (page, board):
        assert "<script" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert page.count("&lt;script&gt;") >= 4  # label (title, h1), tag key and value, task


def test_report_rejects_mismatched_prediction_shape(tmp_path):
    examples = {"burgers1d": {"truth": np.zeros((2, 6, 16, 1)), "operator": np.zeros((2, 5, 16, 1))}}
    with pytest.raises(ValueError, match=r"burgers1d.*operator.*\(2, 5, 16, 1\)"):
        write_report(make_result(), examples, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_energy_spectrum_puts_a_pure_wave_at_its_wavenumber():
    x = np.arange(32) / 32
    wave1d = np.sin(2 * np.pi * 3 * x)[None, None, :, None]  # [1, 1, 32, 1]
    spectrum = energy_spectrum(wave1d)
    assert spectrum.shape == (17,) and int(np.argmax(spectrum)) == 3
    wave2d = np.cos(2 * np.pi * 4 * x)[None, None, :, None, None] * np.ones((1, 2, 32, 16, 1))
    assert int(np.argmax(energy_spectrum(wave2d))) == 4


def test_leaderboard_row_flattens_a_result():
    row = leaderboard_row(make_result())
    assert row["label"] == "candidate <b>1</b>" and row["tag:team"] == "a&b"
    assert row["burgers1d/rmse"] == 0.021 and row["darcy2d/steady_nrmse"] == 0.345
    assert row["nrmse"] == 0.1 and row["n_trajectories"] == 13 and row["resolution"] is None
    stamp = datetime.fromisoformat(row["timestamp"])
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 60


def test_leaderboard_columns_are_the_union_and_old_rows_are_kept(tmp_path):
    path = tmp_path / "board.csv"
    append_leaderboard(path, {"label": "a", "nrmse": 0.1})
    append_leaderboard(path, {"label": "b", "crps": 0.5, "resolution": None})
    append_leaderboard(path, {"nrmse": 0.3, "label": "c"})
    with open(path, newline="") as handle:
        assert next(csv.reader(handle)) == ["label", "nrmse", "crps", "resolution"]
    rows = read_leaderboard(path).rows
    assert rows == [
        {"label": "a", "nrmse": "0.1", "crps": "", "resolution": ""},
        {"label": "b", "nrmse": "", "crps": "0.5", "resolution": ""},
        {"label": "c", "nrmse": "0.3", "crps": "", "resolution": ""},
    ]
    assert (tmp_path / "board.html").read_text().count("<tr>") == 4  # header + 3 rows


def test_retired_rows_keep_everything_but_their_role(tmp_path):
    path = tmp_path / "board.csv"
    assert retire_rows(path, "a", ("champion",), "superseded") == 0 and not path.exists()
    for run, role in (("a", "small_eval"), ("a", "champion"), ("b", "champion"), ("a", "baseline")):
        append_leaderboard(path, {"run_id": run, "role": role, "nrmse": 0.1})
    assert retire_rows(path, "a", ("small_eval", "champion"), "superseded") == 2
    assert [(r["run_id"], r["role"], r["nrmse"]) for r in read_leaderboard(path).rows] == [
        ("a", "superseded", "0.1"),
        ("a", "superseded", "0.1"),
        ("b", "champion", "0.1"),
        ("a", "baseline", "0.1"),
    ]
    assert "superseded" in (tmp_path / "board.html").read_text()


def _append_many(path, worker: int, count: int) -> None:
    for index in range(count):
        # a new column every few rows forces header rewrites while the other process appends
        append_leaderboard(
            path,
            {
                "worker": worker,
                "index": index,
                "label": f"w{worker}-{index}" * 20,
                f"w{worker}_col{index // 5}": index,
            },
        )


def test_concurrent_appends_from_eight_processes_lose_no_row(tmp_path):
    path, writers, count = tmp_path / "board.csv", range(8), 10
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(path, w, count)) for w in writers]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
        assert process.exitcode == 0
    board = read_leaderboard(path)
    columns, rows = board.columns, board.rows
    assert len(rows) == len(writers) * count
    assert {(row["worker"], row["index"]) for row in rows} == {
        (str(w), str(i)) for w in writers for i in range(count)
    }
    for row in rows:
        assert row["label"] == f"w{row['worker']}-{row['index']}" * 20
        assert row[f"w{row['worker']}_col{int(row['index']) // 5}"] == row["index"]
    assert len(columns) == 3 + len(writers) * (count // 5)


def test_report_shows_every_channel_of_every_example_and_a_channel_table(tmp_path):
    names = ["density", "pressure", "Vx"]
    truth = np.random.default_rng(1).normal(size=(2, 4, 8, 8, 3))
    examples = {"flow": {"truth": truth, "operator": truth + 0.1, "channels": names}}
    result = make_result()
    result["per_channel"] = {"flow": {"channels": names, "nrmse": [0.1, 0.2, 0.3], "rmse": [1.0, 2.0, 3.0]}}
    page = write_report(result, examples, tmp_path / "report.html").read_text()
    assert len(embedded_pngs(page)) == 1 + 2 * 3 + 1  # rollout curve, 2 trajectories x 3 channels, spectra
    assert "<tr><th>task</th><th>channel</th><th>nrmse</th><th>rmse</th></tr>" in page
    assert "<tr><th>flow</th><th>pressure</th><td>0.2</td><td>2</td></tr>" in page
    examples["flow"]["channels"] = names[:2]
    with pytest.raises(ValueError, match="names 2 channels, its fields have 3"):
        write_report(result, examples, tmp_path / "other.html")


def test_leaderboard_keeps_per_channel_figures_in_one_column(tmp_path):
    board = tmp_path / "board.csv"
    for channels in (["u"], ["density", "pressure", "Vx"]):
        result = make_result()
        result["per_channel"] = {"flow": {"channels": channels, "nrmse": [0.5] * len(channels)}}
        append_leaderboard(board, leaderboard_row(result))
    read = read_leaderboard(board)
    columns, rows = read.columns, read.rows
    assert columns.count("per_channel") == 1 and not any("density" in c for c in columns)
    import json

    assert json.loads(rows[1]["per_channel"])["flow"]["channels"] == ["density", "pressure", "Vx"]
