"""The accuracy benchmark's protocol, fixed before its first cell was run: what is compared, how
the ratio and its interval are formed, when a cell is refused, and the results file.

- A **cell** is (task, seed, budget, variant): both models trained one after the other in one
  process on the same data seed, each within the same total wall clock, scored on the same
  test trajectories. Ratios are only formed within a cell.
- The **headline** error of a task (``headline``): the rollout nRMSE for transient tasks, the
  rollout RMSE for Burgers nu = 0.1 (its fields decay to ~1e-15, where nRMSE is ill-posed), the
  steady prior's sampled solution's nRMSE for Darcy.
- Per cell, ``r = mean UPS error / mean FNO error`` over the same test trajectories. A task's
  figure is the geometric mean of ``r`` over its seeds, with a 95% two-level bootstrap interval
  (``ratio_interval``: resample seeds with replacement, then within each drawn seed its
  trajectories with replacement, paired between the models; 10,000 draws, generator seed
  ``BOOTSTRAP_SEED``). A task is a **win** when the interval lies below 1, a **loss** when it
  lies above, otherwise a **tie** (``verdict``).
- A cell whose two ``total_seconds`` differ by more than ``TOTALS_TOLERANCE`` (5%) of the larger
  is refused (``totals_agree``); for the defaults rows, UPS may stop earlier on its own epochs
  and only its running longer is refused.
- The results file (``ResultsFile``) is one CSV, a row per model and cell; a finished cell is
  written whole (atomically), a rerun of a cell replaces its rows, ``--resume`` skips cells
  already there.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 20261204
LEVEL = 0.95
TOTALS_TOLERANCE = 0.05
RMSE_TASKS = ("burgers_nu0.1",)

CELL_KEYS = ("task", "seed", "budget_s", "variant")
COLUMNS = [
    *CELL_KEYS,
    "model",
    "headline",
    "nrmse",
    "rmse",
    "one_step_nrmse",
    "frmse_low",
    "frmse_mid",
    "frmse_high",
    "ms_per_step",
    "total_seconds",
    "stage_seconds",
    "stage_steps",
    "cpu_probe_s",
    "loadavg_1m",
    "date",
    "machine",
    "test_indices",
    "per_trajectory",
    "facts",
]


def headline(task: str, steady: bool) -> str:
    """The metric a task's ratio is formed on (see the module docstring)."""
    return "rmse" if task in RMSE_TASKS else "nrmse"


def cell_ratio(ups: np.ndarray, fno: np.ndarray) -> float:
    return float(np.mean(ups) / np.mean(fno))


def ratio_interval(
    cells: list[tuple[np.ndarray, np.ndarray]], draws: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """(geometric mean of the cells' ratios, low, high): ``cells`` holds per seed the UPS and
    FNO errors of the same test trajectories, in the same order."""
    if not cells or any(len(u) != len(f) or len(u) == 0 for u, f in cells):
        raise ValueError("every cell needs the same non-zero number of UPS and FNO errors")
    point = math.exp(np.mean([math.log(cell_ratio(u, f)) for u, f in cells]))
    rng = np.random.default_rng(seed)
    logs = np.empty(draws)
    for b in range(draws):
        chosen = rng.integers(0, len(cells), size=len(cells))
        total = 0.0
        for k in chosen:
            u, f = cells[k]
            pick = rng.integers(0, len(u), size=len(u))
            total += math.log(u[pick].mean() / f[pick].mean())
        logs[b] = total / len(cells)
    tail = (1 - LEVEL) / 2
    low, high = np.exp(np.quantile(logs, [tail, 1 - tail]))
    return point, float(low), float(high)


def verdict(low: float, high: float) -> str:
    return "win" if high < 1 else "loss" if low > 1 else "tie"


def totals_agree(ups_seconds: float, fno_seconds: float, one_sided: bool = False) -> bool:
    """The two totals of a cell within ``TOTALS_TOLERANCE`` of the larger (``one_sided``: only
    UPS running longer counts)."""
    excess = ups_seconds - fno_seconds if one_sided else abs(ups_seconds - fno_seconds)
    return excess <= TOTALS_TOLERANCE * max(ups_seconds, fno_seconds)


def cpu_probe() -> float:
    """Seconds for a fixed float32 matrix-product workload (about 0.1 s on 2 cores): a cell's
    machine speed, to compare cells run at different times."""
    import torch

    a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(60):
        a = torch.tanh(a @ a * (1 / 384))
    return time.perf_counter() - start


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclass
class ResultsFile:
    """A benchmark's CSV, one row per model and cell: ``columns`` (the accuracy benchmark's
    ``COLUMNS`` by default), of which ``CELL_KEYS`` name the cell."""

    path: Path
    columns: list[str] = field(default_factory=lambda: list(COLUMNS))

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    @staticmethod
    def key(row: dict) -> tuple[str, str, str, str]:
        return (str(row["task"]), str(int(row["seed"])), f"{float(row['budget_s']):g}", str(row["variant"]))

    def has(self, key: tuple) -> bool:
        return any(self.key(row) == key for row in self.rows())

    def replace_cell(self, rows: list[dict]) -> None:
        """Write the cell of ``rows`` (all of one key), replacing its earlier rows; the file is
        rewritten through a temporary file, so a kill leaves the old one whole."""
        keys = {self.key(row) for row in rows}
        if len(keys) != 1:
            raise ValueError(f"rows of one cell expected, got {sorted(keys)}")
        kept = [row for row in self.rows() if self.key(row) not in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="raise")
            writer.writeheader()
            for row in [*kept, *rows]:
                writer.writerow({k: _cell(row.get(k)) for k in self.columns})
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def per_trajectory(row: dict) -> np.ndarray:
    return np.asarray(json.loads(row["per_trajectory"]), dtype=np.float64)
