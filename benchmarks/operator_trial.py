"""Train a fresh operator on an accuracy-benchmark run's autoencoder, and see where its rollout's error goes.

    python benchmarks/operator_trial.py --seconds 60 [--out benchmarks/results] [--task burgers_nu0.01]
                                        [--name trial] [--split val|test] [KEY=VALUE ...]

A whole benchmark run of a task takes minutes, and its autoencoder differs from run to run. This
trains only the operator, for ``--seconds``, with the KEY=VALUE overrides, on the autoencoder
and latent cache that ``accuracy.py`` trained for the task (``--from-run <out>/runs/<task>-tuned``),
into ``<out>/trials/<task>/<name>``, then prints ``rollout_anatomy.py``'s figures for it on the
validation split (choices are made there; ``--split test`` only with a warning, for a figure
that decides nothing). Trials of one run share its autoencoder, so they differ only in the operator.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ups.cli import main as ups


def max_time(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def trial(
    out: Path,
    task: str,
    name: str,
    seconds: float,
    overrides: list[str],
    horizon: int | None = None,
    split: str = "val",
) -> dict:
    """Train the operator of ``task``'s benchmark run anew; the anatomy of its rollout over ``horizon``
    steps (default: the benchmark's) on ``split``, with the trial's run folder and wall-clock seconds."""
    from accuracy import TASKS
    from rollout_anatomy import anatomy, run_of

    config, base = run_of(out, task)
    run = out / "trials" / task / name
    shutil.rmtree(run, ignore_errors=True)  # a trial of the same name before: nothing stale is read
    cache = f"training.latent_cache_dir={out / 'latent_cache' / task}"
    start = time.monotonic()
    code = ups(
        [
            "train",
            "--config",
            str(config),
            "--stage",
            "operator",
            "--run-dir",
            str(run),
            "--from-run",
            str(base),
            f"training.max_time={max_time(seconds)}",
            cache,
            *overrides,
        ]
    )
    if code != 0:
        raise SystemExit(f"the operator of trial {name} failed (exit {code})")
    found = anatomy(config, run, split, horizon or TASKS[task].horizon, [cache, *overrides])
    return {**found, "run": run, "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import TASKS
    from rollout_anatomy import warn_on_test

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="the operator's training time")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--task", default="burgers_nu0.01", choices=[name for name, task in TASKS.items() if not task.steady]
    )
    parser.add_argument("--name", default="trial", help="the trial's folder under <out>/trials/<task>/")
    parser.add_argument(
        "--split",
        default="val",
        choices=["val", "test"],
        help="scored split (default val: choices are made there)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="the benchmark run's --ups-set values, then the trial's own",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if not (args.out / "runs" / f"{args.task}-tuned" / "stage_status.json").is_file():
        parser.error(
            f"no benchmark run of {args.task} under {args.out}; run "
            f"`python benchmarks/accuracy.py --tasks {args.task} --seeds 1 --out {args.out}` first."
        )
    warn_on_test(args.split)
    found = trial(args.out, args.task, args.name, args.seconds, args.overrides, split=args.split)
    rollout, floor = found["rollout"], found["floor"]
    gain, error = found["latent"]
    print(
        f"{args.task} trial {args.name} ({' '.join(args.overrides) or 'the run settings'}), "
        f"{args.split} split: rollout nRMSE "
        f"{sum(rollout) / len(rollout):.4f} (step 1 {rollout[0]:.4f}, "
        f"step {len(rollout)} {rollout[-1]:.4f}), "
        f"autoencoder floor {sum(floor) / len(floor):.4f}; first step in latent space: gain {gain:.3f}, "
        f"increment relative error {error:.3f}; {found['seconds']:.0f} s; run {found['run']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
