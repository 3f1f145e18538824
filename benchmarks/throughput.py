"""Training samples per second of each of the five stages on the demo config, Lightning engine.

    python benchmarks/throughput.py [--config configs/demo.yaml] [--steps 50] [--warmup 3]
                                    [--threads N] [KEY=VALUE ...]

The stages train in pipeline order into one temporary run folder, each for one short epoch of
about ``--warmup + --steps + 1`` batches (the first items of each task of its train split, see
``engine_overhead.TaskPrefix``), validation off; each stage's upstream is the stage trained just
before it (weights after a few steps: the step cost does not depend on them). Timing is that of
``benchmarks/engine_overhead.py``: the interval between the starts of consecutive batches, so
start-up, ``prepare`` (filling the latent cache, the residual scale) and checkpoint writing are
excluded. samples/s = samples of the timed batches / their summed intervals. What a sample is
differs by stage: a snapshot (autoencoder), a window of ``rollout_horizon + 1`` frames
(operator, diff_residual, consistency_distill), a coefficient/solution pair (steady_prior).
The data are the config's built-in files, from ``paths.data_dir`` when they are all there,
else generated into the temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from engine_overhead import StepClock, data_config, shorten_epoch
from ups.engines import fit_stage
from ups.engines.settings import batch_size
from ups.pipeline.runner import build_stage
from ups.runs import RunDir

SAMPLE = {
    "autoencoder": "snapshot",
    "operator": "window",
    "diff_residual": "window",
    "consistency_distill": "window",
    "steady_prior": "(a, u) pair",
}


def stage_throughput(
    cfg, stage_name: str, run: RunDir, batches: int, warmup: int
) -> tuple[int, float, float]:
    """(timed steps, median ms per step, samples/s) of one short Lightning fit of ``stage_name``
    in ``run``."""
    stage = build_stage(cfg, stage_name, run)
    shorten_epoch(stage, cfg, batches)
    clock = StepClock(stage)
    fit_stage(stage, cfg, run, engine="lightning")
    steps = clock.intervals(warmup)
    return len(steps), 1e3 * statistics.median(steps), clock.samples_timed(warmup) / sum(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=50, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of each stage")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ups-bench-") as tmp:
        root = Path(tmp)
        overrides = [
            *(f"stages.{name}.epochs=1" for name in SAMPLE),
            "training.skip_lightning_val=true",
            f"training.latent_cache_dir={root / 'cache'}",
            *args.overrides,
        ]
        cfg = data_config(args.config, root, overrides)
        run = RunDir(root / "run").init(cfg)
        rows = {}
        for name in SAMPLE:
            rows[name] = stage_throughput(cfg, name, run, args.warmup + args.steps + 1, args.warmup)
            print(f"{name}: {rows[name][2]:.1f} samples/s", flush=True)
        report(cfg, args, rows)
    return 0


def report(cfg, args, rows: dict) -> None:
    t = cfg.training
    print(
        f"\nLightning, one short epoch per stage, validation off, config {args.config} "
        f"{' '.join(args.overrides)}".rstrip()
    )
    print(
        f"precision {t.precision}, rollout_horizon {cfg.stages.operator.rollout_horizon}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'stage':<21}{'sample':<13}{'batch':>6}{'steps':>6}{'median ms/step':>16}{'samples/s':>11}")
    for name, (steps, ms, rate) in rows.items():
        print(f"{name:<21}{SAMPLE[name]:<13}{batch_size(cfg, name):>6}{steps:>6}{ms:>16.1f}{rate:>11.1f}")


if __name__ == "__main__":
    sys.exit(main())
