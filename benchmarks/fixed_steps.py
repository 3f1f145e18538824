"""The refactoring guard: a fixed-step (epoch-limited, not time-limited) run of each task of the
accuracy benchmark, whose figures must not move when the code is reorganised.

    python benchmarks/fixed_steps.py --out DIR [--tasks T1,T2] [--n 16]
    python benchmarks/fixed_steps.py --compare BEFORE.csv AFTER.csv [--tol 1e-6]

Per task of ``accuracy.TASKS`` (its generator, grid, frames and protocol): a small file (``--n``
trajectories, data seed 0), then ``ups pipeline`` with the tuned config of ``accuracy.py`` but no
deadline and every stage the task uses trained for a fixed number of epochs (transient tasks: the
autoencoder, the operator, the residual corrector and its consistency student; Darcy: the
autoencoder and the steady prior), then ``ups evaluate`` on the test split. Every figure of the
evaluation (metrics and per-sample values) goes into ``DIR/fixed_steps.csv``, one row per
figure. ``--compare`` prints each figure that differs and exits 1 when one differs by more than
``--tol`` (relative to the larger magnitude).

Training on the CPU is deterministic for a given seed, so two runs of the same code agree exactly;
wall-clock times are not figures and are not compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import TASKS, dataset, protocol  # noqa: E402
from ups.cli import main as ups  # noqa: E402

EPOCHS_TRANSIENT = {
    "autoencoder": 2,
    "operator": 2,
    "diff_residual": 1,
    "consistency_distill": 1,
    "steady_prior": 0,
}
EPOCHS_STEADY = {
    "autoencoder": 2,
    "operator": 0,
    "diff_residual": 0,
    "consistency_distill": 0,
    "steady_prior": 3,
}


STAGE_MODELS = {
    "operator": {"rollout_horizon": 2},
    "diff_residual": {"hidden": 32, "depth": 1, "steps_infer": 2, "val_samples": 2},
    "consistency_distill": {"steps_infer": 1},
    "steady_prior": {"hidden": 32, "depth": 1, "steps_infer": 2},
}


def config_for(name: str, data_file: Path, out: Path, n: int) -> Path:
    task = TASKS[name]
    config = protocol(task, data_file, out, 0, 1.0, 179)  # the protocol's keys; the deadline is removed below
    two_d = task.spatial_dims == 2
    epochs = EPOCHS_STEADY if task.steady else EPOCHS_TRANSIENT
    config["data"]["split"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    config["training"] = {
        "time_stride": task.stride,
        "batch_size": 8,
        "accelerator": "cpu",
        "precision": "32-true",
        "num_workers": 0,
    }
    config.update(
        {
            "latent": {"tokens": 64 if two_d else 16, "dim": 32},
            "encoder": {"hidden": 16, "depth": 1 if two_d else 0, "kernel_size": 3},
            "decoder": {"hidden": 32, "query_points": 32},
            "stages": {
                stage: {"epochs": count, "patience": 100, **STAGE_MODELS.get(stage, {})}
                for stage, count in epochs.items()
            },
        }
    )
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_task(name: str, out: Path, n: int) -> dict:
    task = TASKS[name]
    data_file = dataset(task, out / "data" / name, n, 0)
    config = config_for(name, data_file, out, n)
    run = out / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    if ups(["pipeline", "--config", str(config), "--run-dir", str(run)]) != 0:
        raise SystemExit(f"{name}: `ups pipeline` failed ({config})")
    prefix = out / "evaluations" / name
    horizon = [] if task.steady else [f"evaluation.horizon={min(task.horizon, 8)}"]
    if (
        ups(
            [
                "evaluate",
                "--config",
                str(config),
                "--run-dir",
                str(run),
                "--split",
                "test",
                "--output-prefix",
                str(prefix),
                *horizon,
            ]
        )
        != 0
    ):
        raise SystemExit(f"{name}: `ups evaluate` failed")
    found = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    return {"metrics": found["metrics"], "per_sample": found.get("per_sample", {})}


def flatten(value, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}/").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}/").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix.rstrip("/"): float(value)}
    return {}


def write_figures(path: Path, figures: dict[str, float]) -> None:
    rows = "".join(f"{key},{value!r}\n" for key, value in sorted(figures.items()))
    path.write_text("figure,value\n" + rows)


def read_figures(path: Path) -> dict[str, float]:
    rows = path.read_text().splitlines()[1:]
    return {key: float(value) for key, value in (row.rsplit(",", 1) for row in rows)}


def compare(before: Path, after: Path, tol: float) -> int:
    a, b = read_figures(before), read_figures(after)
    missing = sorted(set(a) ^ set(b))
    worst, differ = 0.0, []
    for key in sorted(set(a) & set(b)):
        scale = max(abs(a[key]), abs(b[key]), 1e-30)
        rel = abs(a[key] - b[key]) / scale
        worst = max(worst, rel)
        if rel > 0:
            differ.append((rel, key))
    for rel, key in sorted(differ, reverse=True)[:20]:
        print(f"  {key}: {a[key]!r} vs {b[key]!r} (relative {rel:.2e})")
    for key in missing:
        print(f"  only in {'before' if key in a else 'after'}: {key}")
    print(
        f"{len(set(a) & set(b))} figures compared, {len(differ)} differ, "
        f"worst relative difference {worst:.2e}; {len(missing)} in one file only"
    )
    return 0 if worst <= tol and not missing else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument(
        "--n", type=int, default=16, help="trajectories per file (half train, a quarter val, test)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fixed_steps"))
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, args.tol)
    unknown = [t for t in args.tasks.split(",") if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown} (valid: {', '.join(TASKS)})")
    out = args.out.resolve()
    results = {name: run_task(name, out, args.n) for name in args.tasks.split(",")}
    path = out / "fixed_steps.csv"
    write_figures(path, flatten(results))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
