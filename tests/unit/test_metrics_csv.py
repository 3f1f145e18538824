"""metrics.csv (``ups.engines.metrics_csv``): appended a row at a time, rewritten only when a new
column appears and then atomically, so that no kill loses the history; a resume rewrites nothing."""

from __future__ import annotations

import csv
import gc
import io
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.engines.metrics_csv import MetricsCSV  # noqa: E402
from ups.runs import RunDir  # noqa: E402


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def history(tmp_path: Path) -> Path:
    writer = MetricsCSV(tmp_path / "metrics.csv", append=False)
    for step in range(3):
        writer.log({"train/loss": 1.0 / (step + 1), "epoch": 0, "step": step})
    return writer.path


def test_rows_are_appended_and_a_new_column_widens_the_header(tmp_path):
    path = history(tmp_path)
    writer = MetricsCSV(path, append=True)
    writer.log({"val/nrmse": 0.5, "epoch": 0, "step": 2})
    assert list(rows(path)[0]) == ["epoch", "step", "train/loss", "val/nrmse"]
    assert [r["val/nrmse"] for r in rows(path)] == ["", "", "", "0.5"]
    assert [r["train/loss"] for r in rows(path)][:3] == ["1.0", "0.5", "0.3333333333333333"]
    assert not list(tmp_path.glob(".*.tmp"))


class Died(RuntimeError):
    pass


def dying_writerows(self, rowdicts):
    """Writes one row of the history into the new file, then dies."""
    for row in rowdicts:
        self.writerow(row)
        raise Died("killed in the middle of the rewrite")


def test_an_exception_in_the_middle_of_a_rewrite_keeps_the_whole_history(tmp_path, monkeypatch):
    path = history(tmp_path)
    before = path.read_bytes()
    writer = MetricsCSV(path, append=True)
    monkeypatch.setattr(csv.DictWriter, "writerows", dying_writerows)
    with pytest.raises(Died):
        writer.log({"val/nrmse": 0.5, "step": 3})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def killing_writerows(self, rowdicts):
    """Writes one row of the history into the new file, flushes it, then SIGKILLs the process."""
    self.writerow(next(iter(rowdicts)))
    for handle in gc.get_objects():
        name = getattr(handle, "name", None) if isinstance(handle, io.TextIOWrapper) else None
        if isinstance(name, str) and name.endswith(".tmp") and not handle.closed:
            handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_sigkill_in_the_middle_of_a_rewrite_keeps_the_whole_history(tmp_path):
    path = history(tmp_path)
    before = path.read_bytes()
    pid = os.fork()
    if pid == 0:  # the child: no torch work, only the writer, which kills itself half-way
        try:
            csv.DictWriter.writerows = killing_writerows
            MetricsCSV(path, append=True).log({"val/nrmse": 0.5, "step": 3})
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert path.read_bytes() == before
    (leftover,) = tmp_path.glob(".metrics.csv.*.tmp")  # the half-written new file (a resume removes it)
    assert leftover.read_bytes().count(b"\n") == 2  # its header and one row


def test_a_row_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = history(tmp_path)
    with path.open("ab") as f:
        f.write(b"0,3,0.2")  # no line end: the process died in the middle of the append
    MetricsCSV(path, append=True).log({"train/loss": 0.125, "epoch": 1, "step": 3})
    assert [(r["step"], r["train/loss"]) for r in rows(path)][-2:] == [
        ("2", "0.3333333333333333"),
        ("3", "0.125"),
    ]


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_a_resumed_stage_appends_without_rewriting_its_history(tmp_path, engine, monkeypatch):
    cfg = toy_config()
    run = RunDir(tmp_path / "run").init(cfg)
    fit_stage(ToyStage(cfg), cfg, run, engine=engine)
    path = run.metrics_csv("autoencoder")
    before = path.read_bytes()

    def no_rewrite(self):
        raise AssertionError("metrics.csv rewritten on resume")

    monkeypatch.setattr(MetricsCSV, "_write_header", no_rewrite)
    more = with_keys(cfg, {"stages.autoencoder.epochs": 3})
    fit_stage(ToyStage(more), more, run, engine=engine, resume=True)
    after = path.read_bytes()
    assert after.startswith(before) and len(rows(path)) > len(before.splitlines()) - 1
    assert sorted({int(r["epoch"]) for r in rows(path) if r["epoch"]}) == [0, 1, 2]
