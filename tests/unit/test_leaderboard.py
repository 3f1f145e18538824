"""The leaderboard read as a file people edit: malformed rows skipped, named and kept; refused
headers and encodings; cells a spreadsheet would run neutralised; provenance the gates check."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil

import pytest

from ups.checkpoint import config_hash
from ups.config import Config
from ups.errors import UPSError
from ups.eval.leaderboard import (
    append_leaderboard,
    check_leaderboard,
    neutralised,
    read_leaderboard,
    restored,
    retire_rows,
)
from ups.pipeline.gates import gating_rows, select_baseline
from ups.runs import RunDir

HEADER = "label,run_id,role,nrmse\r\n"
ROW = "a,run-a,baseline,0.5\r\n"

# (id, the file as the user left it, how many rows it holds, the lines the reader must name as skipped)
KEPT = [
    ("extra-field", HEADER + ROW + "b,run-b,baseline,0.4,oops\r\n" + ROW, 2, ["3"]),
    ("short-row", HEADER + "b,run-b\r\n" + ROW, 1, ["2"]),
    ("quote-then-text", HEADER + '"b"x,run-b,baseline,0.4\r\n' + ROW, 1, ["2"]),
    ("empty-file", "", 0, []),
    ("header-only", HEADER, 0, []),
    ("blank-lines-and-a-bom", "\ufeff\r\n" + HEADER + "\r\n" + ROW + "\r\n", 1, []),
    ("after-a-cell-over-two-lines", HEADER + 'b,run-b,baseline,"0.4\r\nsee notes"\r\nc,d\r\n', 1, ["4"]),
]


@pytest.mark.parametrize("text, n_rows, skipped", [case[1:] for case in KEPT], ids=[case[0] for case in KEPT])
def test_a_malformed_row_is_named_skipped_and_kept_and_the_append_still_works(
    tmp_path, caplog, text, n_rows, skipped
):
    path = tmp_path / "board.csv"
    path.write_bytes(text.encode())
    with caplog.at_level(logging.WARNING, logger="ups"):
        append_leaderboard(path, {"label": "new", "run_id": "run-n", "role": "baseline", "nrmse": 0.3})
    named = [r.getMessage() for r in caplog.records]
    assert len(named) == len(skipped)
    for line, message in zip(skipped, named):
        assert f"{path}, line {line}: skipped" in message and "stays in the file" in message
    written = path.read_text(encoding="utf-8")
    for line in text.removeprefix("\ufeff").splitlines():  # nothing the user wrote is lost (but blank lines)
        assert line in written.splitlines() or not line.strip()
    board = read_leaderboard(path)
    assert board.rows[-1] == {"label": "new", "run_id": "run-n", "role": "baseline", "nrmse": "0.3"}
    assert len(board.rows) == n_rows + 1 and [m.lines for m in board.malformed] == skipped
    assert "<td>new</td>" in (tmp_path / "board.html").read_text()
    if skipped:  # the kept lines stay where they were, between the same rows
        assert retire_rows(path, "run-a", ("baseline",), "superseded") == text.count(ROW)
        assert path.read_text(encoding="utf-8").replace("superseded", "baseline") == written


# (id, the file's bytes, fragments of the error)
REFUSED = [
    (
        "duplicated-column",
        (HEADER.replace("nrmse", "role") + ROW).encode(),
        ["line 1 (the header)", "'role'"],
    ),
    ("unnamed-column", ("label,,role\r\n" + "a,b,c\r\n").encode(), ["line 1 (the header)", "column(s) 2"]),
    ("header-deleted", (ROW + ROW).encode(), ["line 1 (the header)", "'0.5', a number"]),
    (
        "not-utf8",
        (HEADER + ROW).encode() + b"caf\xe9,run-c,baseline,0.1\r\n",
        ["not UTF-8", "0xe9", "offset 50 (line 3)"],
    ),
]


@pytest.mark.parametrize("data, fragments", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_header_or_encoding_it_cannot_trust_is_refused_up_front_and_the_file_untouched(
    tmp_path, data, fragments
):
    path = tmp_path / "board.csv"
    path.write_bytes(data)
    for attempt in (lambda: check_leaderboard(path), lambda: append_leaderboard(path, {"label": "x"})):
        with pytest.raises(UPSError) as refused:
            attempt()
        assert str(path) in str(refused.value) and all(f in str(refused.value) for f in fragments)
    assert path.read_bytes() == data and not (tmp_path / "board.html").exists()


@pytest.mark.parametrize(
    "kept, new",
    [
        ('b,run-b,"baseline,0.4\r\n', {"label": "new"}),  # a quote never closed swallows what follows
        ("b,run-b,baseline,0.4,oops\r\n", {"label": "new", "crps": 0.1}),  # fits the widened header
    ],
    ids=["quote-never-closed", "fits-a-new-column"],
)
def test_a_kept_line_that_would_change_how_the_rows_read_is_set_aside_and_the_append_goes_through(
    tmp_path, caplog, kept, new
):
    path = tmp_path / "board.csv"
    path.write_bytes((HEADER + ROW + kept).encode())
    with caplog.at_level(logging.WARNING, logger="ups"):
        append_leaderboard(path, new)
    board = read_leaderboard(path)
    assert [row["label"] for row in board.rows] == ["a", "new"] and board.malformed == []
    aside = (tmp_path / "board.malformed.txt").read_bytes().decode()
    assert aside == f"# board.csv, line 3, {aside.splitlines()[0].split(', ', 2)[2]}\n{kept}"
    assert any("lines 3 would change how the rows read" in r.getMessage() for r in caplog.records)


def test_leaderboard_paths_must_end_in_csv_so_the_html_twin_is_never_the_file(tmp_path):
    with pytest.raises(UPSError, match=r"--leaderboard .*x\.html: give a file name ending in \.csv"):
        check_leaderboard(tmp_path / "x.html")
    check_leaderboard(tmp_path / "new" / "board.csv")  # not there yet: fine
    check_leaderboard(tmp_path / "BOARD.CSV")


FORMULAS = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "'=x", "''-1"]
NUMBERS = ["-0.5", "-1e-05", "+3", "0.25", "-.5"]


def test_cells_a_spreadsheet_would_run_are_neutralised_and_numbers_read_back_as_numbers(tmp_path):
    path = tmp_path / "board.csv"
    cells = {f"c{i}": value for i, value in enumerate(FORMULAS + NUMBERS + ["-inf", "plain", ""])}
    append_leaderboard(path, {"=HYPERLINK(1)": "<script>", **cells})
    with open(path, newline="", encoding="utf-8") as handle:
        header, raw = list(csv.reader(handle))
    assert header[0] == "'=HYPERLINK(1)" and raw[0] == "<script>"
    written = dict(zip(header[1:], raw[1:]))
    assert all(written[k] == "'" + v for k, v in cells.items() if v in FORMULAS + ["-inf"])
    assert [written[k] for k, v in cells.items() if v in NUMBERS] == NUMBERS
    board = read_leaderboard(path)
    assert board.columns[0] == "=HYPERLINK(1)" and board.rows == [{"=HYPERLINK(1)": "<script>", **cells}]
    assert [float(board.rows[0][k]) for k, v in cells.items() if v in NUMBERS] == [
        -0.5,
        -1e-05,
        3,
        0.25,
        -0.5,
    ]
    page = (tmp_path / "board.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "<th>=HYPERLINK(1)</th>" in page
    for value in ("'", "'a", "a'", "=", "-", "'-", *FORMULAS, *NUMBERS):
        assert restored(neutralised(value)) == value


def make_run(root, name: str, cfg: Config) -> RunDir:
    return RunDir(root / "runs" / name).init(cfg)


def test_rows_carry_their_run_folder_relative_to_the_board_and_the_runs_config_hash(tmp_path):
    cfg = Config()
    run = make_run(tmp_path, "a", cfg)
    path = tmp_path / "boards" / "board.csv"
    append_leaderboard(path, {"label": "a", "run_id": "a", "role": "baseline", "nrmse": 0.2}, run.root)
    (row,) = read_leaderboard(path).rows
    assert row["run_dir"] == "../runs/a" and row["run_config_hash"] == config_hash(cfg)
    assert row["run_config_hash"] == hashlib.sha256(run.resolved_config_path.read_bytes()).hexdigest()


def champion(path, run_root, run_id: str, nrmse: float) -> None:
    append_leaderboard(path, {"run_id": run_id, "role": "champion", "nrmse": nrmse}, run_root)


def test_gates_ignore_rows_without_provenance_or_with_another_config_and_keep_gone_folders(tmp_path, caplog):
    lab = tmp_path / "lab"
    path, cfg = lab / "board.csv", Config()
    for name in ("proven", "retrained", "gone"):
        champion(path, make_run(lab, name, cfg).root, name, 0.3)
    make_run(lab, "retrained", Config(seed=cfg.seed + 1))  # the folder holds another config now
    shutil.rmtree(lab / "runs" / "gone")
    with open(path, "a", newline="") as handle:  # a better champion, added by hand
        csv.writer(handle).writerow(["hand", "champion", "0.01", "", ""])
    with caplog.at_level(logging.WARNING, logger="ups"):
        rows = gating_rows(path)
    assert [r["run_id"] for r in rows] == ["proven", "gone"]
    assert select_baseline(rows, "nrmse", candidate_run="new")["run_id"] == "proven"
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 3
    assert "line 3 (champion of run retrained): ignored by the gates" in messages
    assert "retrained/config.resolved.yaml is not the config the row was evaluated with" in messages
    assert "line 4 (champion of run gone): its run folder" in messages and "it still gates" in messages
    assert "line(s) 5: ignored by the gates: no run_dir and run_config_hash" in messages

    shutil.move(lab, tmp_path / "moved")  # the runs and the board moved together: still proven
    assert [r["run_id"] for r in gating_rows(tmp_path / "moved" / "board.csv")] == ["proven", "gone"]


def test_an_old_leaderboard_without_provenance_gates_nothing_and_says_how_to_re_register(tmp_path, caplog):
    path = tmp_path / "board.csv"
    path.write_text("run_id,role,nrmse\r\nold,champion,0.1\r\nolder,baseline,0.2\r\nx,small_eval,0.1\r\n")
    with caplog.at_level(logging.WARNING, logger="ups"):
        assert gating_rows(path) == []
    (message,) = [r.getMessage() for r in caplog.records]
    assert "line(s) 2, 3: ignored by the gates" in message and "written before" in message
    assert (
        f"ups evaluate --config C --run-dir <its run folder> --role baseline --leaderboard {path}" in message
    )
