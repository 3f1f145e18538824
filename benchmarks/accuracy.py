"""Accuracy against the field: UPS vs FNO and two floors, PDEBench's protocol, equal budget.

    python benchmarks/accuracy.py [--budget-s 240] [--tasks burgers_nu0.01,darcy_beta1.0] [--n 128]
                                  [--out benchmarks/results] [--seed 0]

For every task it generates the built-in data set (cached under ``<out>/data``), then trains
and evaluates side by side:

- UPS: ``ups pipeline`` (autoencoder, operator, diff_residual, consistency_distill; or
  autoencoder and steady_prior for Darcy) with every stage stopped by ``training.max_time``
  so that the stages share the budget, evaluated by ``ups evaluate`` (Lightning);
- FNO from the ``neuraloperator`` package (PDEBench's 1D settings: 12 modes, width 20,
  10 context frames; 2D: 12 modes, width 20), trained for the same budget;
- persistence (u_{t+1} = u_t; for Darcy the training mean of u) and a linear least-squares
  one-step model (for Darcy u = W a + b), the floors.

Transient tasks follow PDEBench's 1D protocol: 201 stored frames, every 5th kept (41), the
first 10 are context (never scored), the rollout covers the other 31. Every model is scored
by UPS's own metric code (``ups.eval.evaluator.suite``) on the same test trajectories, in
physical units: rollout nRMSE (mean over the 31 steps), one-step nRMSE, fRMSE bands. Cost:
milliseconds per rollout step for the whole test split in one batch (UPS: its evaluation's
``ms_per_rollout_step``, batches of ``evaluation.batch_size``).

The table (tasks x models, and the UPS/FNO ratio) is printed and written to
``<out>/accuracy.csv`` and ``<out>/accuracy.md``. Results are not committed.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import LinearLeastSquares, LinearLeastSquaresSteady, Persistence  # noqa: E402
from fno_baseline import FNO, FNOSteady  # noqa: E402

from ups.cli import main as ups  # noqa: E402
from ups.config import load_config  # noqa: E402
from ups.data.generate import generate_dataset  # noqa: E402
from ups.data.summary import load_config_tasks  # noqa: E402
from ups.eval.evaluator import suite  # noqa: E402

CONTEXT, STRIDE, FRAMES = 10, 5, 201  # PDEBench 1D: initial_step 10, reduced_resolution_t 5 of 201 frames
HORIZON = (FRAMES - 1) // STRIDE - (CONTEXT - 1)  # 31 scored steps
SCORES = ("nrmse", "rmse", "one_step_nrmse", "frmse_low", "frmse_mid", "frmse_high")
# the share of the budget each UPS stage may use (training.max_time per stage)
TRANSIENT_SHARES = {"autoencoder": 0.3, "operator": 0.5, "diff_residual": 0.1, "consistency_distill": 0.1}
STEADY_SHARES = {"autoencoder": 0.4, "steady_prior": 0.6}


@dataclass
class Task:
    name: str
    generator: str
    params: dict[str, float]
    steady: bool = False
    nx: int = 256
    reduced_resolution: int = 2


TASKS = {task.name: task for task in (
    Task("burgers_nu0.01", "burgers1d", {"nu": 0.01}),
    Task("burgers_nu0.1", "burgers1d", {"nu": 0.1}),
    Task("advection_beta0.4", "advection1d", {"beta": 0.4}),
    Task("reaction_diffusion", "reaction_diffusion1d", {"nu": 0.5, "rho": 1.0}),
    Task("darcy_beta1.0", "darcy2d", {"beta": 1.0}, steady=True, nx=64, reduced_resolution=2),
)}


@dataclass
class Row:
    task: str
    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    facts: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ data and config
def dataset(task: Task, data_dir: Path, n: int, seed: int) -> Path:
    result = generate_dataset(task.generator, data_dir, n=n, nx=task.nx, nt=1 if task.steady else FRAMES,
                              seed=seed, params=task.params, progress=False)
    return Path(result.path)


def ups_config(task: Task, data_file: Path, out: Path, seed: int) -> Path:
    """The UPS config of ``task``: its stages train until their time limit (``run_ups``), the others not at all."""
    shares = STEADY_SHARES if task.steady else TRANSIENT_SHARES
    stages = {name: {"epochs": 10_000, "patience": 10_000} if name in shares else {"epochs": 0}
              for name in ("autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior")}
    if task.steady:  # with batches of 8, a learning rate of 2e-3 beat 1e-3 on two seeds' autoencoders
        stages["steady_prior"]["optimizer"] = {"lr": 2e-3}
    config = {
        "include": str(Path(__file__).resolve().parents[1] / "configs" / "defaults.yaml"),
        "seed": seed,
        "paths": {"data_dir": str(data_file.parent), "runs_dir": str(out / "runs")},
        "data": {"tasks": [{"name": task.name, "path": data_file.name}],
                 "reduced_resolution": task.reduced_resolution},
        # 1D: 16 tokens (32 halve the autoencoder's floor but gave worse Burgers rollouts); Darcy: 64 tokens
        # (cells of 4 x 4 points). A small encoder trains faster than it loses detail at this budget: 32 channels,
        # and no convolution in 1D, one 3 x 3 on Darcy (docs/benchmarks.md)
        "latent": {"tokens": 64 if task.steady else 16, "dim": 64},
        "encoder": {"hidden": 32, "depth": 1 if task.steady else 0, "kernel_size": 3},  # no convolution in 1D
        "decoder": {"hidden": 64, "query_points": 64},
        # Darcy: batches of 8, four times the steps of 32 on its 102 train pairs (0.094 against 0.13; the
        # FNO's nRMSE barely moves with its batch size, docs/benchmarks.md)
        "training": {"batch_size": 8 if task.steady else 32, "accelerator": "auto", "time_stride": STRIDE,
                     "rollout_horizon": 4,  # 2 gave Burgers more steps but made advection unstable
                     # Darcy's epochs are 4-8 steps: validating after each took a third of the steady prior's time
                     "val_every_n_epochs": 4 if task.steady else 1,
                     "max_time": None, "latent_cache_dir": str(out / "latent_cache" / task.name)},
        # the default cosine schedule runs over each stage's time limit (ups.stages.optim)
        "diffusion": {"hidden": 64, "depth": 2, "steps_infer": 8, "val_samples": 4},
        "consistency": {"steps_infer": 1},
        "steady_prior": {"hidden": 128, "depth": 2, "steps_infer": 8},
        "evaluation": {"context_frames": CONTEXT, "report": False},
        "stages": stages,
    }
    path = out / "configs" / f"{task.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def max_time(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------------------ UPS
def run_ups(task: Task, config: Path, out: Path, budget_s: float, overrides: list[str] = ()) -> list[Row]:
    shares = STEADY_SHARES if task.steady else TRANSIENT_SHARES
    run = out / "runs" / task.name
    for last in (run, out / "latent_cache" / task.name):  # the last benchmark's, so that nothing stale is read
        shutil.rmtree(last, ignore_errors=True)
    start = time.monotonic()
    for name, share in shares.items():  # one stage at a time: each with its own wall-clock limit
        code = ups(["train", "--config", str(config), "--stage", name, "--run-dir", str(run),
                    f"training.max_time={max_time(share * budget_s)}", *overrides])
        if code != 0:
            raise SystemExit(f"UPS stage {name} failed on {task.name} (exit {code})")
    seconds = time.monotonic() - start
    prefix = out / "evaluations" / task.name
    horizon = [] if task.steady else [f"evaluation.horizon={HORIZON}"]
    if ups(["evaluate", "--config", str(config), "--run-dir", str(run), "--split", "test", "--output-prefix",
            str(prefix), *horizon, *overrides]) != 0:
        raise SystemExit(f"UPS evaluation failed on {task.name}")
    result = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    m, cost = result["metrics"], result["extra"].get("ms_per_rollout_step")
    facts = {"stages": list(shares)}
    if task.steady:
        return [Row(task.name, "UPS", {"nrmse": m["steady_nrmse"]}, seconds, facts),
                Row(task.name, "UPS regression", {"nrmse": m["steady_regression_nrmse"]}, seconds, facts)]
    keys = SCORES
    rows = [Row(task.name, "UPS", {**{k: m[k] for k in keys}, "ms_per_step": cost}, seconds, facts)]
    if "corrected_nrmse" in m:
        rows.append(Row(task.name, "UPS corrected", {**{k: m[f"corrected_{k}"] for k in keys}}, seconds, facts))
    return rows


# ------------------------------------------------------------------------------ the others
def split_arrays(config: Path, steady: bool) -> dict[str, np.ndarray]:
    """The UPS split of the task's file, as arrays in physical units: transient trajectories
    [N, 41, X, C] (every STRIDE-th frame), or steady (a, u) pairs [N, X, Y, 1]."""
    task = load_config_tasks(load_config(config))[0]
    out = {}
    for split in ("train", "test"):
        indices = task.split.indices(split)
        if steady:
            pairs = [task.file.steady_pair(i) for i in indices]
            out[f"{split}_a"] = np.stack([a for a, _ in pairs])
            out[f"{split}_u"] = np.stack([u for _, u in pairs])
        else:
            out[split] = np.stack([task.file.trajectory(i, slice(0, None, STRIDE)) for i in indices])
    return out


def scored(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    values = suite(torch.from_numpy(pred).double(), torch.from_numpy(truth).double())
    return {k: float(values[k].mean()) for k in SCORES}


def run_transient_baselines(task: Task, arrays: dict, budget_s: float, seed: int) -> list[Row]:
    train, test = arrays["train"], arrays["test"]
    context, truth = test[:, :CONTEXT], test[:, CONTEXT:CONTEXT + HORIZON]
    rows = []
    for model in (FNO(), Persistence(), LinearLeastSquares()):
        start = time.monotonic()
        facts = model.fit(train, CONTEXT, budget_s, seed)
        seconds = time.monotonic() - start
        start = time.perf_counter()
        pred = model.rollout(context, HORIZON)
        cost = (time.perf_counter() - start) * 1000 / HORIZON
        rows.append(Row(task.name, model.name, {**scored(pred, truth), "ms_per_step": cost}, seconds, facts))
    return rows


def run_steady_baselines(task: Task, arrays: dict, budget_s: float, seed: int) -> list[Row]:
    from ups.eval.metrics import nrmse

    rows = []
    mean = arrays["train_u"].mean(axis=0, keepdims=True)
    floor = np.repeat(mean, len(arrays["test_u"]), axis=0)
    truth = torch.from_numpy(arrays["test_u"]).double()
    rows.append(Row(task.name, "train mean", {"nrmse": float(nrmse(torch.from_numpy(floor).double(), truth).mean())}))
    for model in (FNOSteady(), LinearLeastSquaresSteady()):
        start = time.monotonic()
        facts = model.fit(arrays["train_a"], arrays["train_u"], budget_s, seed)
        seconds = time.monotonic() - start
        pred = torch.from_numpy(model.predict(arrays["test_a"])).double()
        rows.append(Row(task.name, model.name, {"nrmse": float(nrmse(pred, truth).mean())}, seconds, facts))
    return rows


# ------------------------------------------------------------------------------ the table
def write_tables(rows: list[Row], out: Path, budget_s: float, args) -> str:
    models = list(dict.fromkeys(r.model for r in rows))
    tasks = list(dict.fromkeys(r.task for r in rows))
    by = {(r.task, r.model): r for r in rows}
    with (out / "accuracy.csv").open("w", newline="") as handle:
        keys = sorted({k for r in rows for k in r.metrics})
        writer = csv.writer(handle)
        writer.writerow(["task", "model", *keys, "train_seconds", "facts"])
        for r in rows:
            writer.writerow([r.task, r.model, *[r.metrics.get(k, "") for k in keys], f"{r.train_seconds:.1f}",
                             json.dumps(r.facts)])
    cell = lambda t, m: f"{by[(t, m)].metrics['nrmse']:.3g}" if (t, m) in by else "–"  # noqa: E731
    lines = [f"Rollout nRMSE on the test split ({HORIZON} steps after {CONTEXT} context frames; Darcy: the "
             f"solution's nRMSE). Budget {budget_s:.0f} s of training per model and task; "
             f"{datetime.now(timezone.utc):%Y-%m-%d}, {platform.machine()}, {torch.get_num_threads()} threads"
             f"{', CUDA' if torch.cuda.is_available() else ', CPU'}; n = {args.n} samples per task, seed "
             f"{args.seed}.", "",
             "| task | " + " | ".join(models) + " | UPS / FNO |", "|---" * (len(models) + 2) + "|"]
    for t in tasks:
        ratio = ""
        if (t, "UPS") in by and (t, FNO.name) in by:
            ratio = f"{by[(t, 'UPS')].metrics['nrmse'] / by[(t, FNO.name)].metrics['nrmse']:.2f}"
        lines.append(f"| {t} | " + " | ".join(cell(t, m) for m in models) + f" | {ratio} |")
    lines += ["", "| task | model | rollout RMSE | one-step nRMSE | fRMSE low / mid / high | ms per rollout step | "
                  "training s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        bands = " / ".join(f"{m[k]:.3g}" for k in ("frmse_low", "frmse_mid", "frmse_high")) if "frmse_low" in m \
            else "–"
        one = f"{m['one_step_nrmse']:.3g}" if "one_step_nrmse" in m else "–"
        rmse = f"{m['rmse']:.3g}" if "rmse" in m else "–"
        cost = f"{m['ms_per_step']:.2f}" if m.get("ms_per_step") is not None else "–"
        lines.append(f"| {r.task} | {r.model} | {rmse} | {one} | {bands} | {cost} | {r.train_seconds:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "accuracy.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=240.0, help="training seconds per model and task")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--n", type=int, default=128, help="samples generated per task")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="ups,baselines", help="ups, baselines or both (comma-separated)")
    parser.add_argument("--ups-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every UPS command (repeatable), e.g. training.rollout_horizon=8")
    args = parser.parse_args(argv)
    unknown = [t for t in args.tasks.split(",") if t not in TASKS]
    if unknown or args.budget_s <= 0 or args.n < 10:
        parser.error(f"unknown task(s) {unknown} (valid: {', '.join(TASKS)})" if unknown
                     else "--budget-s must be > 0 and --n at least 10")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for name in args.tasks.split(","):
        task = TASKS[name]
        print(f"== {name}: data, UPS, baselines ({args.budget_s:.0f} s each)", flush=True)
        data_file = dataset(task, out / "data" / name, args.n, args.seed)
        config = ups_config(task, data_file, out, args.seed)
        if "ups" in args.models.split(","):
            rows += run_ups(task, config, out, args.budget_s, args.ups_set)
        if "baselines" in args.models.split(","):
            arrays = split_arrays(config, task.steady)
            rows += (run_steady_baselines if task.steady else run_transient_baselines)(task, arrays, args.budget_s,
                                                                                       args.seed)
        print(write_tables(rows, out, args.budget_s, args), flush=True)
    print(f"tables: {out / 'accuracy.md'}, {out / 'accuracy.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
