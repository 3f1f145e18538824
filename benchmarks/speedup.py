"""The speed-up over the solver: UPS against the built-in generators' solvers, the same frames
from the same inputs, side by side in one run, with each side's error and the break-even.

    python benchmarks/speedup.py [--problems burgers,reaction_diffusion,darcy] [--budget-s 180]
                                 [--seed 1] [--n-test 64] [--repeats 5] [--out benchmarks/results]
                                 [--resume] [--smoke]

Per problem (a cell), in one process:

- **Training** (timed): the problem's data file from its built-in generator (``n_train``
  trajectories at the stored grid, data seed ``--seed``; the seconds include writing the file),
  then ``ups pipeline`` with ``training.time_budget = --budget-s`` (one deadline from the call's
  start to its last checkpoint) on the accuracy benchmark's tuned settings (``accuracy.ups_config``):
  autoencoder + operator for the transient problems, autoencoder + steady prior for Darcy.
- **Test inputs**: ``--n-test`` initial conditions (Darcy: coefficients) drawn as the generator
  draws them, with the test seed ``1000 + --seed`` (none of them was trained on).
- **What both sides produce**: the scored frames on the model's grid: every ``time_stride``-th
  stored frame after the initial condition (40 steps on the 1D problems), at the stored grid's
  every ``reduced_resolution``-th point; Darcy: the solution u on that grid.
- **The solver** (``SOLVERS``): the generator's own solver, batched in its chunks as ``ups data
  generate`` runs it, timed for the solve only (not the file writing, not the resampling):
  at the generator's default settings (the **reference**, whose frames every error is measured
  against) and at coarser, cheaper settings (fewer grid points, longer internal steps). Coarse
  frames are brought onto the model's grid by spectral (Fourier) interpolation on the periodic
  1D problems and by bilinear interpolation with the boundary's zeros on Darcy; the reference
  reaches it by keeping every ``reduced_resolution``-th point, as the data loader does. Each
  setting runs ``--repeats`` times or until 10 s are spent (at least once); its time per query
  is the median run's time / the number of inputs.
- **UPS**: ``ups.load_surrogate`` (timed: the load), then ``s.rollout(u0, steps)`` (Darcy:
  ``s.solve_steady(a)``) from the reference's initial conditions on the model's grid, on CPU,
  at batch 1 and batch 64 after untimed warm-up queries (batch 1: three; batch 64: the scored
  predictions); time per query = the median of ``--repeats`` timed queries, fewer once 10 s
  are spent (batch 64: / 64).
- **Errors**: nRMSE per test input against the reference (``ups.metrics``: the rollout's per-step
  nRMSE averaged over the steps; Darcy: the solution's nRMSE), the mean over the inputs.
- **Break-even**: the queries after which (data generation + training + load) seconds are repaid
  by (reference solver - UPS) seconds per query; never when UPS is not faster.

Each finished problem replaces its rows in ``<out>/speedup.csv`` (``--resume`` skips problems
already there); the table is printed and the plot (``<out>/speedup.png``) drawn from the CSV.
``--smoke``: tiny sizes and models (about 10 s per problem), written to ``speedup-smoke.*``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import STEADY_SHARES, TASKS, TRANSIENT_SHARES, Task, dataset, ups_config  # noqa: E402
from protocol import CELL_KEYS, ResultsFile, cpu_probe, load_average  # noqa: E402
from ups import deadline  # noqa: E402
from ups.cli import main as ups_cli  # noqa: E402
from ups.data.generate import burgers, darcy  # noqa: E402
from ups.data.generate import reaction_diffusion as fisher  # noqa: E402
from ups.data.generate.initial_conditions import N_MODES, draw_sine_modes  # noqa: E402
from ups.data.generate.spec import cell_centres, chunks, progress_bar  # noqa: E402
from ups.metrics import nrmse, rollout_curve  # noqa: E402

TEST_SEED_OFFSET = 1000
TIMING_SECONDS = 10.0  # a solver setting's or UPS batch's repeats stop once this much was spent (>= 1 run)
UPS_BATCH = 64
WARMUP = 3  # untimed batch-1 UPS queries first; at batch 64 the predictions scored are the warm-up
COLUMNS = [
    *CELL_KEYS,
    "method",
    "setting",
    "grid",
    "dt",
    "batch",
    "seconds_per_query",
    "nrmse",
    "speedup",
    "break_even_queries",
    "repeats",
    "n_test",
    "n_train",
    "test_seed",
    "data_seconds",
    "train_seconds",
    "load_seconds",
    "cpu_probe_s",
    "loadavg_1m",
    "date",
    "machine",
    "torch",
]


@dataclass(frozen=True)
class Setting:
    """A solver setting: ``grid`` points per axis and the internal time step ``dt`` (``None``: the
    generator's own rule); ``reference`` is the generator at its defaults."""

    grid: int
    dt: float | None = None
    reference: bool = False

    @property
    def label(self) -> str:
        if self.reference:
            return f"reference ({self.grid} pts, generator defaults)"
        return f"{self.grid} pts" + (f", dt {self.dt:.3g}" if self.dt else "")


@dataclass(frozen=True)
class Problem:
    """A row group of the table: accuracy's ``task`` (generator, parameters, stored grid, stride),
    ``n_train`` training trajectories, and the coarse solver ``settings``, cheapest first."""

    name: str
    task: Task
    settings: tuple[Setting, ...]
    n_train: int = 128

    @property
    def steps(self) -> int:
        """Scored frames after the initial condition (0: steady)."""
        return 0 if self.task.steady else (self.task.frames - 1) // self.task.stride

    @property
    def model_points(self) -> np.ndarray:
        """The model's grid along each axis [X']: every ``reduced_resolution``-th stored cell centre."""
        return cell_centres(self.task.nx)[:: self.task.reduced_resolution]

    @property
    def reference(self) -> Setting:
        return Setting(self.task.nx, None, reference=True)


# The 1D files store the scored frames alone (41, every 0.05 / 0.025 time units, time_stride 1): the
# frames PDEBench's protocol keeps of 201 (the accuracy benchmark's), without five times the snapshots
# to validate the autoencoder on within the deadline.
# The coarse settings, cheapest first. Burgers: the generator's step keeps dt <= dx / |u|max (|u| <= 2);
# 0.05 is one step per scored frame (the longest a setting can take), stable here on 16 and 32 points;
# 64 points at 4 times the generator's CFL, 128 at it. Fisher-KPP: its splitting is stable at any step
# (exact sub-flows); the generator's is 2.5e-4. Darcy: the grid alone (a direct solve has no step).
PROBLEMS = {
    p.name: p
    for p in (
        Problem(
            "burgers",
            replace(TASKS["burgers_nu0.01"], frames=41, stride=1),
            (
                Setting(16, 0.05),
                Setting(32, 0.05),
                Setting(64, 4 / (64 * N_MODES)),
                Setting(128, 1 / (128 * N_MODES)),
            ),
        ),
        Problem(
            "reaction_diffusion",
            replace(TASKS["reaction_diffusion"], frames=41, stride=1),
            (
                Setting(8, 0.025),
                Setting(16, 0.025),
                Setting(32, 0.025),
                Setting(32, 5e-3),
                Setting(64, 5e-3),
                Setting(64, 1e-3),
                Setting(128, 1e-3),
            ),
        ),
        Problem("darcy", TASKS["darcy_beta1.0"], (Setting(8), Setting(16), Setting(32))),
    )
}

# --smoke: tiny files and models; a few seconds per problem
SMOKE_TASK = {
    "burgers": {"nx": 32, "frames": 11},
    "reaction_diffusion": {"nx": 32, "frames": 11},
    "darcy": {"nx": 16},
}
SMOKE_MODEL = {
    "latent": {"tokens": 4, "dim": 16},
    "encoder": {"hidden": 16, "depth": 1, "kernel_size": 3},
    "decoder": {"hidden": 16, "depth": 1, "fourier_features": 4, "query_points": 16},
}
SMOKE_STAGES = {
    "autoencoder": {"epochs": 1},
    "operator": {"depth": 1, "heads": 2, "rollout_horizon": 2},
    "steady_prior": {"hidden": 16, "depth": 1, "steps_infer": 2},
}


def smoke_problem(problem: Problem) -> Problem:
    task = replace(problem.task, **SMOKE_TASK[problem.name])
    coarse = tuple(s for s in problem.settings if s.grid < task.nx)[:2]
    return replace(problem, task=task, settings=coarse, n_train=12)


# ------------------------------------------------------------------------------ resampling
def periodic_resample(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Fourier interpolation of periodic samples at the n cell centres of (0, 1), values [..., n],
    to ``points`` [P] in [0, 1) -> [..., P]. Modes |m| < n/2 are kept, the Nyquist mode dropped (as
    the generators' own ``burgers.resample_to_centres``), so a trigonometric polynomial of degree
    < n/2 is reproduced exactly."""
    n = values.shape[-1]
    m = np.arange(n // 2 + 1)
    weight = np.where(m == 0, 1.0, 2.0)
    if n % 2 == 0:
        weight[-1] = 0.0
    coefficients = np.fft.rfft(values, axis=-1) / n * weight
    # sample j sits at (j + 1/2) / n, so mode m's phase at x is 2 pi m (x - 1 / (2n))
    phase = np.exp(2j * np.pi * np.outer(m, np.asarray(points) - 0.5 / n))
    return np.real(coefficients @ phase)


def dirichlet_linear_weights(n: int, points: np.ndarray) -> np.ndarray:
    """Linear interpolation from the n cell centres of (0, 1), with the value 0 on the boundary
    x = 0 and x = 1, to ``points`` [P] -> weights [P, n]."""
    nodes = np.concatenate([[0.0], cell_centres(n), [1.0]])
    weights = np.stack([np.interp(points, nodes, row) for row in np.eye(n + 2)], axis=1)
    return weights[:, 1:-1]


def to_model_grid(frames: np.ndarray, setting: Setting, problem: Problem) -> np.ndarray:
    """A solver's output on its own grid, [B, T, n] (1D) or [B, n, n] (Darcy), onto the model's
    grid with a channel axis: [B, T, X', 1] or [B, X', Y', 1]."""
    points = problem.model_points
    if setting.grid == problem.task.nx:  # the stored grid: keep every r-th point, as the data loader does
        r = problem.task.reduced_resolution
        out = frames[..., ::r, ::r] if problem.task.steady else frames[..., ::r]
    elif problem.task.steady:
        w = dirichlet_linear_weights(setting.grid, points)
        out = np.einsum("pi,bij,qj->bpq", w, frames, w)
    else:
        out = periodic_resample(frames, points)
    return out[..., None].astype(np.float32)


# ------------------------------------------------------------------------------ the solvers
def draw_test_inputs(problem: Problem, n: int, seed: int):
    """The test inputs as the generator draws them with ``seed``: sine modes of the initial
    conditions, or Darcy coefficients [n, nx, nx]."""
    rng = np.random.default_rng(seed)
    if problem.task.generator == "darcy2d":
        return darcy.random_coefficient(rng, n, problem.task.nx)
    if problem.task.generator == "burgers1d":
        return draw_sine_modes(rng, n, max_wavenumber=burgers.MAX_WAVENUMBER)
    return draw_sine_modes(rng, n)


def frame_times(problem: Problem) -> np.ndarray:
    """The initial condition's and the scored frames' times [steps + 1]."""
    t_final = burgers.T_FINAL if problem.task.generator == "burgers1d" else fisher.T_FINAL
    return np.linspace(0.0, t_final, problem.steps + 1)


def solve_burgers(problem: Problem, setting: Setting, modes) -> np.ndarray:
    """Frames [B, steps + 1, grid]: the reference is the generator's ``solve_modes`` (its fine grid
    and step per sample); a coarse setting runs the same ETDRK4 integrator on ``grid`` points."""
    nu, times = problem.task.params["nu"], frame_times(problem)
    if setting.reference:
        return burgers.solve_modes(modes, nu, setting.grid, times, progress_bar(len(modes), "", False))
    x = cell_centres(setting.grid)
    return np.concatenate(
        [
            burgers.evolve(modes[rows].evaluate(x), nu, times, setting.dt, setting.grid)
            for rows in chunks(np.arange(len(modes)), burgers.CHUNK)
        ]
    )


def solve_fisher(problem: Problem, setting: Setting, modes) -> np.ndarray:
    """Frames [B, steps + 1, grid] of the generator's Strang splitting with step ``dt``. The initial
    condition is the generator's: the sine series rescaled to [0, 1] by its extremes on the stored
    grid, here evaluated on ``grid`` points."""
    fine = modes.evaluate(cell_centres(problem.task.nx))
    low, high = fine.min(axis=-1, keepdims=True), fine.max(axis=-1, keepdims=True)
    u0 = (modes.evaluate(cell_centres(setting.grid)) - low) / (high - low)
    nu, rho = problem.task.params["nu"], problem.task.params["rho"]
    dt = setting.dt or fisher.DT_MAX
    return np.concatenate(
        [
            fisher.evolve(u0[rows], nu, rho, frame_times(problem), dt)
            for rows in chunks(np.arange(len(u0)), fisher.CHUNK)
        ]
    )


def solve_darcy(problem: Problem, setting: Setting, a: np.ndarray) -> np.ndarray:
    """Solutions [B, grid, grid] of the generator's finite volumes, one sparse LU per sample; a
    coarse grid takes each cell's coefficient as the mean of the stored cells it covers."""
    n, f = len(a), problem.task.nx // setting.grid
    coarse = a.reshape(n, setting.grid, f, setting.grid, f).mean(axis=(2, 4))
    return np.stack([darcy.solve_pressure(c, problem.task.params["beta"]) for c in coarse])


SOLVERS: dict[str, Callable] = {
    "burgers1d": solve_burgers,
    "reaction_diffusion1d": solve_fisher,
    "darcy2d": solve_darcy,
}
SOLVER_BATCH = {"burgers1d": burgers.CHUNK, "reaction_diffusion1d": fisher.CHUNK, "darcy2d": 1}


def timed(run: Callable[[], object], repeats: int, budget_s: float) -> tuple[object, float, int]:
    """(the last result, the median seconds of a run, runs): ``repeats`` runs, fewer once
    ``budget_s`` is spent, at least one."""
    seconds, result = [], None
    while len(seconds) < repeats and (not seconds or sum(seconds) < budget_s):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds), len(seconds)


def solver_rows(problem: Problem, inputs, repeats: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(the reference's initial conditions on the model grid [B, X', 1] (Darcy: the coefficients
    [B, X', Y']), its scored frames [B, steps, X', 1] (Darcy: [B, X', Y', 1]), a row per setting)."""
    solve = SOLVERS[problem.task.generator]
    n = len(inputs)
    rows, truth = [], None
    for setting in (problem.reference, *reversed(problem.settings)):
        frames, seconds, runs = timed(lambda s=setting: solve(problem, s, inputs), repeats, TIMING_SECONDS)
        scored = to_model_grid(frames if problem.task.steady else frames[:, 1:], setting, problem)
        if setting.reference:
            truth, first = scored, frames[:, 0]
        rows.append(
            {
                "method": "solver",
                "setting": setting.label,
                "grid": setting.grid,
                "dt": setting.dt or "",
                "batch": min(n, SOLVER_BATCH[problem.task.generator]),
                "seconds_per_query": seconds / n,
                "nrmse": error(problem, scored, truth),
                "repeats": runs,
            }
        )
        print(
            f"   solver {setting.label}: {seconds / n * 1e3:.3g} ms/query, nRMSE {rows[-1]['nrmse']:.3g}",
            flush=True,
        )
    r = problem.task.reduced_resolution  # UPS starts from what the reference starts from, on its grid
    start = inputs[:, ::r, ::r] if problem.task.steady else to_model_grid(first, problem.reference, problem)
    return start.astype(np.float32), truth, rows


def error(problem: Problem, pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the inputs of the nRMSE (transient: per step, averaged over the steps)."""
    p, t = torch.from_numpy(np.asarray(pred, np.float64)), torch.from_numpy(np.asarray(truth, np.float64))
    per = nrmse(p, t) if problem.task.steady else rollout_curve(p, t).mean(dim=1)
    return float(per.mean())


# ------------------------------------------------------------------------------ UPS
def train(problem: Problem, out: Path, seed: int, budget_s: float, smoke: bool) -> tuple[Path, float, float]:
    """(the run folder, data-generation seconds, training seconds): a fresh data file, then ``ups
    pipeline`` within ``budget_s``."""
    task, data_dir = problem.task, out / "data" / problem.name
    run = out / "runs" / problem.name
    for stale in (data_dir, run, out / "latent_cache" / task.name):
        shutil.rmtree(stale, ignore_errors=True)
    start = deadline.now()
    data_file = dataset(task, data_dir, problem.n_train, seed)
    data_seconds = deadline.now() - start
    config = training_config(problem, data_file, out, seed, budget_s, smoke)
    start = deadline.now()
    if ups_cli(["pipeline", "--config", str(config), "--run-dir", str(run)]) != 0:
        raise SystemExit(f"speedup: UPS failed to train on {problem.name} ({config})")
    seconds = deadline.now() - start
    status = json.loads((run / "stage_status.json").read_text())
    for stage in STEADY_SHARES if problem.task.steady else TRANSIENT_SHARES:
        if status[stage].get("state") != "done":
            raise SystemExit(
                f"speedup: {problem.name}'s {stage} stage did not train within {budget_s:g} s "
                f"({status[stage].get('reason', status[stage].get('state'))}); nothing is written. Run the "
                f"benchmark with nothing else on the machine, or give it a larger --budget-s."
            )
    return run, data_seconds, seconds


def training_config(
    problem: Problem, data_file: Path, out: Path, seed: int, budget_s: float, smoke: bool
) -> Path:
    """The accuracy benchmark's tuned config of the task, with all of the file to train on (the test
    inputs are drawn apart) and, with ``smoke``, a tiny model trained one epoch per stage."""
    path = ups_config(problem.task, data_file, out, seed, budget_s)
    config = yaml.safe_load(path.read_text())
    # 6 validation trajectories of 128: a validation costs half of accuracy's 13 within the same deadline
    config["data"]["split"] = {"train": 0.95, "val": 0.05, "test": 0.0}
    config["evaluation"].pop("context_frames", None)
    if smoke:
        config.update(SMOKE_MODEL)
        config["training"].update({"batch_size": 16, "val_every_n_epochs": 1})
        for name, values in SMOKE_STAGES.items():
            if config["stages"][name].get("epochs") != 0:
                config["stages"][name].update({**values, "epochs": 1})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ups_rows(
    problem: Problem, run: Path, start: np.ndarray, truth: np.ndarray, repeats: int
) -> tuple[float, list[dict]]:
    """(load seconds, UPS's rows at batch 1 and 64) from ``start`` (initial conditions [B, X', 1] or
    coefficients [B, X', Y']) against the reference's ``truth``."""
    import ups

    begin = time.perf_counter()
    s = ups.load_surrogate(run, device="cpu")
    load_seconds = time.perf_counter() - begin
    spec = s.tasks[problem.task.name]
    expected = (len(problem.model_points),) * problem.task.spatial_dims
    if tuple(spec.grid) != expected or not np.allclose(
        spec.coords[(0,) * (len(expected) - 1)][..., -1], problem.model_points, atol=1e-6
    ):
        raise SystemExit(
            f"speedup: {problem.name}'s model grid {spec.grid} is not the benchmark's {expected} "
            f"(cell centres {problem.model_points[:3]}...); the data file and the config disagree"
        )

    def query(x: np.ndarray) -> np.ndarray:
        if problem.task.steady:
            return s.solve_steady(x, task=problem.task.name).fields
        return s.rollout(x, problem.steps, task=problem.task.name).fields

    # the predictions scored, in batches of 64, are the warm-up of the batch-64 timing
    pred = np.concatenate([query(start[rows]) for rows in chunks(np.arange(len(start)), UPS_BATCH)])
    nrmse_ups = error(problem, pred, truth)
    for _ in range(WARMUP):  # the first calls at a new batch size were 10-100x slower
        query(start[:1])
    rows = []
    for batch in (1, min(UPS_BATCH, len(start))):
        picks = iter([start[(i * batch) % len(start) :][:batch] for i in range(repeats)])
        _, seconds, runs = timed(lambda picks=picks: query(next(picks)), repeats, TIMING_SECONDS)
        rows.append(
            {
                "method": "UPS",
                "setting": f"UPS ({'+'.join(s.stages)})",
                "grid": len(problem.model_points),
                "batch": batch,
                "seconds_per_query": seconds / batch,
                "nrmse": nrmse_ups,
                "repeats": runs,
            }
        )
        print(
            f"   UPS batch {batch}: {seconds / batch * 1e3:.3g} ms/query, nRMSE {nrmse_ups:.3g}", flush=True
        )
    return load_seconds, rows


# ------------------------------------------------------------------------------ a cell, the table, the plot
def break_even(fixed_seconds: float, solver_seconds: float, ups_seconds: float) -> float:
    """Queries after which ``fixed_seconds`` (data generation + training + load) are repaid by the
    seconds UPS saves per query over the solver; ``inf`` when it saves none."""
    saved = solver_seconds - ups_seconds
    return fixed_seconds / saved if saved > 0 else float("inf")


def run_cell(problem: Problem, args, out: Path) -> list[dict]:
    """Every row of ``problem``: UPS trained, the solver's settings and UPS side by side."""
    probe, load = cpu_probe(), load_average()
    test_seed = TEST_SEED_OFFSET + args.seed
    print(f"== {problem.name}: data and training ({args.budget_s:g} s)", flush=True)
    run, data_seconds, train_seconds = train(problem, out, args.seed, args.budget_s, args.smoke)
    print(f"== {problem.name}: {args.n_test} test inputs, seed {test_seed}", flush=True)
    inputs = draw_test_inputs(problem, args.n_test, test_seed)
    start, truth, rows = solver_rows(problem, inputs, args.repeats)
    load_seconds, found = ups_rows(problem, run, start, truth, args.repeats)
    reference = rows[0]["seconds_per_query"]
    fixed = data_seconds + train_seconds + load_seconds
    for row in found:
        row["break_even_queries"] = break_even(fixed, reference, row["seconds_per_query"])
    common = {
        "task": problem.name,
        "seed": args.seed,
        "budget_s": f"{args.budget_s:g}",
        "variant": "smoke" if args.smoke else "full",
        "n_test": args.n_test,
        "n_train": problem.n_train,
        "test_seed": test_seed,
        "data_seconds": round(data_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "cpu_probe_s": round(probe, 4),
        "loadavg_1m": round(load, 2),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "torch": torch.__version__,
    }
    return [
        {
            **common,
            **row,
            "speedup": reference / row["seconds_per_query"],
            "seconds_per_query": float(f"{row['seconds_per_query']:.6g}"),
            "nrmse": float(f"{row['nrmse']:.6g}"),
        }
        for row in [*rows, *found]
    ]


def format_table(rows: list[dict]) -> str:
    """The rows (as read from the CSV) as an aligned text table."""
    head = (
        f"{'problem':<20}{'method / setting':<42}{'batch':>6}{'s/query':>11}{'nRMSE':>10}{'speed-up':>10}"
        f"{'break-even':>12}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        even = row.get("break_even_queries", "")
        even = "" if even in ("", None) else "never" if float(even) == float("inf") else f"{float(even):,.0f}"
        lines.append(
            f"{row['task']:<20}{row['setting']:<42}{int(row['batch']):>6}{float(row['seconds_per_query']):>11.3g}"
            f"{float(row['nrmse']):>10.3g}{float(row['speedup']):>9.3g}x{even:>12}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """nRMSE against seconds per query, log-log, a panel per problem: the solver's coarse settings as
    a curve, the reference as a vertical line (its error is 0 by definition), UPS as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    problems = list(dict.fromkeys(row["task"] for row in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(4.5 * len(problems), 4), squeeze=False)
    for ax, name in zip(axes[0], problems):
        mine = [row for row in rows if row["task"] == name]
        solver = sorted(
            (r for r in mine if r["method"] == "solver" and float(r["nrmse"]) > 0),
            key=lambda r: float(r["seconds_per_query"]),
        )
        ax.plot(
            [float(r["seconds_per_query"]) for r in solver],
            [float(r["nrmse"]) for r in solver],
            "o-",
            color="tab:gray",
            label="solver, coarser settings",
        )
        for r in solver:
            ax.annotate(
                f"{r['grid']}" + (f", {float(r['dt']):.2g}" if r["dt"] else ""),
                (float(r["seconds_per_query"]), float(r["nrmse"])),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        for r in mine:
            if r["method"] == "solver" and float(r["nrmse"]) == 0:
                ax.axvline(float(r["seconds_per_query"]), color="black", ls=":", label="solver, reference")
            elif r["method"] == "UPS":
                ax.plot(
                    float(r["seconds_per_query"]),
                    float(r["nrmse"]),
                    "s" if int(r["batch"]) == 1 else "D",
                    label=f"UPS, batch {r['batch']}",
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="seconds per query",
            ylabel="nRMSE vs the reference",
            title=name,
        )
        for axis in (ax.xaxis, ax.yaxis):  # decades only: minor labels overlap on a short axis
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problems", default=",".join(PROBLEMS), help=f"comma-separated, of {', '.join(PROBLEMS)}"
    )
    parser.add_argument("--budget-s", type=float, default=180.0, help="UPS's training wall clock per problem")
    parser.add_argument(
        "--seed", type=int, default=1, help="data and training seed; test inputs: 1000 + seed"
    )
    parser.add_argument("--n-test", type=int, default=64, help="test inputs per problem")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per solver setting and UPS batch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--resume", action="store_true", help="skip problems already in the results CSV")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and models: a check that it runs")
    args = parser.parse_args(argv)
    names = args.problems.split(",")
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown or args.budget_s <= 0 or args.n_test < 1 or args.repeats < 1:
        parser.error(
            f"unknown problem(s) {unknown} (valid: {', '.join(PROBLEMS)})"
            if unknown
            else "--budget-s must be > 0, --n-test and --repeats >= 1"
        )
    out = args.out.resolve()
    stem = "speedup-smoke" if args.smoke else "speedup"
    work = out / stem  # data, configs, runs and caches (git ignores them)
    results = ResultsFile(out / f"{stem}.csv", COLUMNS)
    variant = "smoke" if args.smoke else "full"
    keys = {n: (n, str(args.seed), f"{args.budget_s:g}", variant) for n in names}
    for name in names:
        if args.resume and results.has(keys[name]):
            print(f"== {name}: in {results.path}, skipped")
            continue
        problem = smoke_problem(PROBLEMS[name]) if args.smoke else PROBLEMS[name]
        results.replace_cell(run_cell(problem, args, work))
    rows = [row for row in results.rows() if results.key(row) in keys.values()]
    first = rows[0]
    print(
        f"\n{format_table(rows)}\n\nUPS and the solver on CPU ({first['machine']}, torch {first['torch']}); "
        f"seed {args.seed}, {args.n_test} test inputs (seed {first['test_seed']}); results {results.path}"
    )
    plot(rows, out / f"{stem}.png")
    print(f"plot: {out / f'{stem}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
