"""A leaderboard of evaluations: one CSV row per result, with an HTML twin for reading.

Columns are the union of every row's keys. Concurrent writers (several evaluations finishing at
once) serialise on an exclusive ``flock`` of ``<csv>.lock``, and each write replaces the CSV
atomically, so no row is lost or torn."""

from __future__ import annotations

import csv
import fcntl
import html
import json
from datetime import datetime, timezone
from pathlib import Path

from ups.atomic import atomic_path, atomic_write_text


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


def append_leaderboard(csv_path: Path, row: dict) -> None:
    """Append ``row`` to ``csv_path`` (new keys become new columns; old rows keep theirs, blank
    in the new ones) and rewrite the HTML twin ``<stem>.html``."""

    def add(columns: list[str], rows: list[dict]) -> None:
        columns += [key for key in row if key not in columns]
        rows.append({key: "" if value is None else str(value) for key, value in row.items()})

    _update(csv_path, add)


def retire_rows(csv_path: Path, run_id: str, roles: tuple[str, ...], new_role: str) -> int:
    """Give the rows of run ``run_id`` with a role in ``roles`` the role ``new_role`` (the rows
    stay; fast-to-sota's ``--force-train`` retires what the superseded weights scored). Returns
    how many rows changed."""
    changed = 0

    def retire(columns: list[str], rows: list[dict]) -> None:
        nonlocal changed
        for row in rows:
            if row.get("run_id") == run_id and row.get("role") in roles:
                row["role"], changed = new_role, changed + 1

    if Path(csv_path).exists():
        _update(csv_path, retire)
    return changed


def _update(csv_path: Path, change) -> None:
    """Under the lock: read the CSV, ``change(columns, rows)`` in place, write CSV and HTML."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path.with_name(csv_path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            columns, rows = read_leaderboard(csv_path)
            change(columns, rows)
            with atomic_path(csv_path) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=columns, restval="")
                    writer.writeheader()
                    writer.writerows(rows)
            _write_html(csv_path.with_suffix(".html"), columns, rows)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_leaderboard(csv_path: Path) -> tuple[list[str], list[dict]]:
    """The CSV's columns and rows (all values strings); empty when the file does not exist."""
    if not Path(csv_path).exists():
        return [], []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_html(path: Path, columns: list[str], rows: list[dict]) -> None:
    esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(row.get(c, ''))}</td>" for c in columns) + "</tr>\n" for row in rows
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>leaderboard</title><style>'
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 6px}th{background:#eee}</style></head><body>\n"
        f"<table><tr>{head}</tr>\n{body}</table>\n</body></html>\n"
    )
    atomic_write_text(path, page, encoding="utf-8")
