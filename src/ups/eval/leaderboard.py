"""A leaderboard of evaluations: one CSV row per result, with an HTML twin for reading.

Columns are the union of every row's keys. Concurrent writers (several evaluations finishing at
once) serialise on an exclusive ``flock`` of ``<csv>.lock``, and each write replaces the CSV
atomically, so no row is lost or torn.

The CSV is read as a file people edit:

- A row with more or fewer fields than the header (or not valid CSV) is skipped with a warning
  naming its line, and kept in the file as written by every rewrite, at its place. A rewrite
  whose kept lines would change how the rows read (a quote never closed swallowing the rows
  after it, or a line that fits the header once it gains columns) is refused, naming them.
- A header with an empty, duplicated or numeric column name, and a file that is not UTF-8, are
  refused (``UPSError`` naming the file, the line or byte offset, and the fix): a guess could
  mislabel or drop a column. ``check_leaderboard`` does this before a command's work.
- Cells a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or
  a carriage return) are written behind a single quote, numbers such as ``-0.5`` excepted, and
  read back without it. The HTML twin escapes every cell.

Each row appended for a run carries its provenance (``PROVENANCE``): ``run_dir``, the run folder
relative to the CSV's folder (moving both together keeps it true), and ``run_config_hash``, the
sha256 of the folder's ``config.resolved.yaml``. ``ups.pipeline.gates.gating_rows`` checks them.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import html
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_path, atomic_write_text
from ups.config.validate import blocking_file
from ups.errors import UPSError
from ups.runs import RunDir

log = logging.getLogger("ups")
PROVENANCE = ("run_dir", "run_config_hash")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WARNED: set[str] = set()  # the warnings given so far (``warn_once``)


@dataclass
class Malformed:
    """A record the reader skipped; rewrites keep it as written, before row ``before``."""

    before: int
    lines: str  # "7", or "7-9" for a record over several lines
    text: str
    why: str


@dataclass
class Leaderboard:
    """A leaderboard as read: its columns, its rows (every cell a string) and the line each
    row starts on, and the records skipped."""

    path: Path
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)


def leaderboard_row(result: dict) -> dict:
    """Flatten an evaluation result: identity (label, run, role, how it was evaluated), ``tag:<k>``,
    metrics, ``<task>/<metric>``, extras, ``per_channel`` (one column: the result's per-channel
    figures as JSON, so channels never add columns) and a UTC ISO timestamp."""
    row = {k: result.get(k) for k in ("label", "run_id", "role", "eval")}
    row.update({f"tag:{k}": v for k, v in (result.get("tags") or {}).items()})
    settings = ("split", "horizon", "context_frames", "resolution", "tasks", "engine", "config_hash")
    row.update({k: result.get(k) for k in settings})
    row.update(result.get("metrics") or {})
    for task, metrics in (result.get("per_task") or {}).items():
        row.update({f"{task}/{name}": value for name, value in metrics.items()})
    row.update(result.get("extra") or {})
    row["per_channel"] = json.dumps(result.get("per_channel") or {}, sort_keys=True)
    row["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def run_config_hash(run: Path) -> str | None:
    """sha256 of the run folder's ``config.resolved.yaml`` (``ups.checkpoint.config_hash`` of the
    config it records); None when there is none."""
    try:
        return hashlib.sha256(RunDir(run).resolved_config_path.read_bytes()).hexdigest()
    except OSError:
        return None


def provenance(csv_path: Path, run: Path) -> dict[str, str]:
    """The ``PROVENANCE`` cells of a row of ``run`` on the leaderboard ``csv_path``."""
    where = os.path.relpath(Path(run).resolve(), Path(csv_path).resolve().parent)
    return {"run_dir": where, "run_config_hash": run_config_hash(run) or ""}


def append_leaderboard(csv_path: Path, row: dict, run: Path | None = None) -> None:
    """Append ``row`` to ``csv_path``, with the provenance of the run folder ``run`` when given
    (new keys become new columns; old rows keep theirs, blank in the new ones), and rewrite the
    HTML twin ``<stem>.html``."""
    row = {**row, **(provenance(csv_path, run) if run is not None else {})}

    def add(board: Leaderboard) -> None:
        board.columns += [key for key in row if key not in board.columns]
        board.rows.append({key: "" if value is None else str(value) for key, value in row.items()})

    _update(csv_path, add)


def retire_rows(csv_path: Path, run_id: str, roles: tuple[str, ...], new_role: str) -> int:
    """Give the rows of run ``run_id`` with a role in ``roles`` the role ``new_role`` (the rows
    stay; fast-to-sota's ``--force-train`` retires what the superseded weights scored). Returns
    how many rows changed."""
    changed = 0

    def retire(board: Leaderboard) -> None:
        nonlocal changed
        for row in board.rows:
            if row.get("run_id") == run_id and row.get("role") in roles:
                row["role"], changed = new_role, changed + 1

    if Path(csv_path).exists():
        _update(csv_path, retire)
    return changed


def check_leaderboard(csv_path: Path) -> None:
    """Refuse, before a command's work, a leaderboard it could not append to: a name not ending
    in ``.csv`` (its HTML twin ``<stem>.html`` could be the file itself), a folder, a path under a
    file, an existing file that is not UTF-8 or whose header is refused."""
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        raise UPSError(f"--leaderboard {csv_path} is a folder; give the path of a CSV file.")
    if csv_path.suffix.lower() != ".csv":
        raise UPSError(
            f"--leaderboard {csv_path}: give a file name ending in .csv (the HTML twin is written "
            f"beside it as {csv_path.with_suffix('.html').name}), e.g. {csv_path.with_suffix('.csv')}."
        )
    if (blocker := blocking_file(csv_path.parent)) is not None:
        raise UPSError(f"--leaderboard {csv_path}: {blocker} is a file, not a folder; choose another path.")
    _load(csv_path)


def read_leaderboard(csv_path: Path) -> Leaderboard:
    """The leaderboard at ``csv_path`` (empty when there is none), with a warning per record
    skipped. ``UPSError`` when it is not UTF-8 or its header is refused."""
    board = _load(Path(csv_path))
    for skipped in board.malformed:
        warn_once(
            f"leaderboard {board.path}, line {skipped.lines}: skipped, {skipped.why}; it stays in "
            f"the file as written (fix or delete it)."
        )
    return board


def warn_once(message: str) -> None:
    """A warning the first time this process meets ``message`` (a command reads its leaderboard
    several times)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _update(csv_path: Path, change) -> None:
    """Under the lock: read the CSV, ``change(board)`` in place, write CSV and HTML."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path.with_name(csv_path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            board = read_leaderboard(csv_path)
            change(board)
            text = _render(board)
            if not _reads_back(board, text):  # a kept line would change how the rows read
                _set_aside(board)
                text = _render(board)
            with atomic_path(csv_path) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as handle:
                    handle.write(text)
            _write_html(csv_path.with_suffix(".html"), board)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def neutralised(cell: str) -> str:
    """``cell`` as written: behind a single quote when a spreadsheet would run it (or when it
    already starts with quotes before such a character, so that ``restored`` is exact)."""
    risky = cell.lstrip("'")[:1] in FORMULA_STARTS
    return "'" + cell if risky and not NUMBER.fullmatch(cell) else cell


def restored(cell: str) -> str:
    """The cell ``neutralised`` wrote."""
    return cell[1:] if cell[:1] == "'" and neutralised(cell[1:]) == cell else cell


def _render(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([neutralised(name) for name in board.columns])
    kept = {}
    for skipped in board.malformed:
        kept.setdefault(skipped.before, []).append(skipped.text)
    for index in range(len(board.rows) + 1):
        for text in kept.get(index, []):
            out.write(text if text.endswith(("\n", "\r")) else text + "\r\n")
        if index < len(board.rows):
            writer.writerow([neutralised(board.rows[index].get(c, "")) for c in board.columns])
    return out.getvalue()


def _reads_back(board: Leaderboard, text: str) -> bool:
    """Whether ``text`` reads back as ``board``: a kept line may not change how the rows read (a
    quote opened and never closed swallows the rows after it; a line with extra fields fits once
    the header gains columns)."""
    again = _parse(text, board.path)

    def content(b: Leaderboard) -> tuple:
        cells = [[row.get(c, "") for c in b.columns] for row in b.rows]
        return b.columns, cells, [skipped.text.rstrip("\r\n") for skipped in b.malformed]

    return content(again) == content(board)


def _set_aside(board: Leaderboard) -> None:
    """Move the skipped records out of the leaderboard, appended as written to
    ``<stem>.malformed.txt`` beside it, with a warning naming their lines and that file."""
    aside = board.path.with_name(board.path.stem + ".malformed.txt")
    with open(aside, "a", encoding="utf-8", newline="") as handle:
        for skipped in board.malformed:
            handle.write(f"# {board.path.name}, line {skipped.lines}, {skipped.why}:\n{skipped.text}")
            handle.write("" if skipped.text.endswith(("\n", "\r")) else "\n")
    log.warning(
        "leaderboard %s: lines %s would change how the rows read once rewritten; moved as written "
        "to %s (fix them there and add them back, or delete them).",
        board.path,
        ", ".join(skipped.lines for skipped in board.malformed),
        aside,
    )
    board.malformed.clear()


def _load(csv_path: Path) -> Leaderboard:
    if not csv_path.exists():
        return Leaderboard(csv_path)
    try:
        data = csv_path.read_bytes()
    except OSError as exc:
        raise UPSError(f"cannot read the leaderboard {csv_path}: {exc.strerror}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UPSError(
            f"leaderboard {csv_path} is not UTF-8: the byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} (line {line}) cannot be decoded. Save the file as UTF-8 (a spreadsheet's "
            f"'CSV UTF-8', or `iconv -f latin1 -t utf-8`), or move it away to start a new leaderboard."
        ) from None
    return _parse(text.removeprefix("\ufeff"), csv_path)


def _parse(text: str, csv_path: Path) -> Leaderboard:
    """The leaderboard in ``text``: the first record is the header (blank lines skipped)."""
    board, taken = Leaderboard(csv_path), []

    def lines():
        for line in io.StringIO(text, newline=""):
            taken.append(line)
            yield line

    reader, first, header = csv.reader(lines(), strict=True), 1, None
    while True:
        try:
            record, why = next(reader), None
        except StopIteration:
            break
        except csv.Error as exc:
            record, why = None, f"it is not valid CSV ({exc})"
        raw, start, first = "".join(taken), first, first + len(taken)
        taken.clear()
        where = str(start) if first - start == 1 else f"{start}-{first - 1}"
        if record == []:  # a blank line
            continue
        if header is None:
            header = board.columns = _checked_header(record, why, csv_path, where)
        elif why is not None or len(record) != len(header):
            why = why or f"it has {len(record)} fields where the header has {len(header)} columns"
            board.malformed.append(Malformed(len(board.rows), where, raw, why))
        else:
            board.rows.append(dict(zip(header, map(restored, record))))
            board.lines.append(start)
    return board


def _checked_header(record: list[str] | None, why: str | None, csv_path: Path, where: str) -> list[str]:
    """The column names of the header ``record``, or ``UPSError`` saying what is wrong with it."""
    problem = why
    names = [restored(name) for name in record or []]
    empty = [str(i) for i, name in enumerate(names, 1) if not name.strip()]
    twice = sorted({name for name in names if names.count(name) > 1})
    numbers = [name for name in names if NUMBER.fullmatch(name.strip())]
    if problem is None and empty:
        problem = f"column(s) {', '.join(empty)} have no name"
    if problem is None and twice:
        problem = (
            f"it names {', '.join(repr(n) for n in twice)} more than once, so reading it would drop "
            f"a column; rename or delete the repeated names (and their cells in every row)"
        )
    if problem is None and numbers:
        problem = f"a column is named {numbers[0]!r}, a number: the first line looks like a row, not a header"
    if problem is not None:
        raise UPSError(
            f"leaderboard {csv_path}, line {where} (the header): {problem}. Fix the header line, or "
            f"move the file away to start a new leaderboard."
        )
    return names


def _write_html(path: Path, board: Leaderboard) -> None:
    esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    head = "".join(f"<th>{esc(c)}</th>" for c in board.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(row.get(c, ''))}</td>" for c in board.columns) + "</tr>\n"
        for row in board.rows
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>leaderboard</title><style>'
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 6px}th{background:#eee}</style></head><body>\n"
        f"<table><tr>{head}</tr>\n{body}</table>\n</body></html>\n"
    )
    atomic_write_text(path, page, encoding="utf-8")
