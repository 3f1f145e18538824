"""The FNO's tuning, as much as UPS had: a grid per task family, scored on the validation split.

    python benchmarks/fno_grid.py [--budget-s 60] [--families burgers1d,…] [--out benchmarks/results]

Per family, on one representative task (``REPRESENTATIVE``) with data seed 0 (where UPS's
settings were tried; the accuracy table uses seeds 1 and up), 179 trajectories split as the
benchmark splits them: lr in {1e-3, 3e-3} x batch in {8, 32} x unroll in {1, 4, the full
rollout} (Darcy: lr x batch, it has no rollout), each trial trained within ``--budget-s`` total
seconds (data preparation included) and scored by the headline error of its rollout (Darcy: of
its solution) on the **validation** split. Each trial is appended to ``<out>/fno_grid.csv`` as
it finishes; trials already there are skipped, so an interrupted grid resumes. The winners
(lowest validation error per family) are printed; ``accuracy.FNO_TUNED`` holds them.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import TASKS, N, dataset, run_fno, ups_config  # noqa: E402
from protocol import cpu_probe, headline, load_average  # noqa: E402

REPRESENTATIVE = {
    "burgers1d": "burgers_nu0.01",
    "advection1d": "advection_beta0.4",
    "reaction_diffusion1d": "reaction_diffusion",
    "darcy2d": "darcy_beta1.0",
    "diffusion_reaction2d": "diffusion_reaction2d",
    "cfd1d": "cfd1d",
}
LRS, BATCHES, UNROLLS = (1e-3, 3e-3), (8, 32), (1, 4, None)
COLUMNS = [
    "family",
    "task",
    "lr",
    "batch_size",
    "unroll",
    "val_error",
    "metric",
    "steps",
    "total_seconds",
    "cpu_probe_s",
    "loadavg_1m",
]
SEED = 0


def grid(family: str) -> list[dict]:
    if TASKS[REPRESENTATIVE[family]].steady:
        return [{"lr": lr, "batch_size": b} for lr, b in itertools.product(LRS, BATCHES)]
    return [{"lr": lr, "batch_size": b, "unroll": u} for lr, b, u in itertools.product(LRS, BATCHES, UNROLLS)]


def label(settings: dict) -> tuple[str, str, str]:
    unroll = settings.get("unroll", "-")
    return (f"{settings['lr']:g}", str(settings["batch_size"]), "full" if unroll is None else str(unroll))


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def winners(rows: list[dict]) -> dict[str, dict]:
    """Per family, the row with the lowest validation error."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["family"] not in best or float(row["val_error"]) < float(best[row["family"]]["val_error"]):
            best[row["family"]] = row
    return best


def as_settings(row: dict) -> dict:
    """A grid row as ``accuracy.FNO_TUNED`` writes it."""
    settings = {"lr": float(row["lr"]), "batch_size": int(row["batch_size"])}
    if row["unroll"] != "-":
        settings["unroll"] = None if row["unroll"] == "full" else int(row["unroll"])
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="total seconds per trial (default: half the task's cell budget, 60 s; 120 s on "
        "diffusion_reaction2d)",
    )
    parser.add_argument("--families", default=",".join(REPRESENTATIVE))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    unknown = [f for f in args.families.split(",") if f not in REPRESENTATIVE]
    if unknown:
        parser.error(f"unknown famil(ies) {unknown}; valid: {', '.join(REPRESENTATIVE)}")
    out = args.out.resolve()
    path = out / "fno_grid.csv"
    for family in args.families.split(","):
        task = TASKS[REPRESENTATIVE[family]]
        data_file = dataset(task, out / "data" / task.name / f"seed{SEED}", N, SEED)
        budget_s = args.budget_s or task.budget_s / 2
        config = ups_config(task, data_file, out / "grid", SEED, budget_s)
        for settings in grid(family):
            lr, batch, unroll = label(settings)
            if any(
                (r["family"], r["lr"], r["batch_size"], r["unroll"]) == (family, lr, batch, unroll)
                for r in read(path)
            ):
                continue
            probe, load = cpu_probe(), load_average()
            found = run_fno(task, config, budget_s, SEED, settings, split="val")
            metric = headline(task.name, task.steady)
            row = {
                "family": family,
                "task": task.name,
                "lr": lr,
                "batch_size": batch,
                "unroll": unroll,
                "val_error": f"{found['metrics'][metric].mean():.6g}",
                "metric": metric,
                "steps": found["facts"]["steps"],
                "total_seconds": f"{found['total_seconds']:.2f}",
                "cpu_probe_s": f"{probe:.4f}",
                "loadavg_1m": f"{load:.2f}",
            }
            fresh = not path.is_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                if fresh:
                    writer.writeheader()
                writer.writerow(row)
            print(
                f"{family}: lr {lr} batch {batch} unroll {unroll}: val {metric} {row['val_error']} "
                f"({row['steps']} steps, {row['total_seconds']} s)",
                flush=True,
            )
    for family, row in winners(read(path)).items():
        print(f"winner {family}: {as_settings(row)} (val {row['metric']} {row['val_error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
