"""One epoch of the demo operator stage: encoding on the fly vs a cold vs a warm latent cache.

    python benchmarks/latent_cache.py [--config configs/demo.yaml] [--repeat 1] [--nx N --n N] [KEY=VALUE ...]

Side by side in one process, same data, same batches, Lightning engine, validation off:

- on the fly: no cache; the frozen encoder encodes every frame of every window in the step
  (each frame once per window it belongs to, i.e. up to rollout_horizon + 1 times an epoch);
- cold: an empty cache; ``prepare`` encodes every frame once and writes the cache, then the
  epoch reads latents;
- warm: the cache from the cold run; ``prepare`` only verifies it (checksums), then the epoch.

Times are wall-clock seconds of ``prepare`` + one training epoch (the median of ``--repeat``
runs). The autoencoder is freshly initialised (the timings do not depend on its weights) unless
``--from-run`` names a run with a trained one. The data come from ``paths.data_dir``; missing
built-in files are generated first. ``--nx N`` (with ``--n`` trajectories) instead generates the
config's 1D built-in files at N grid points in a temporary folder, to show how the gain grows
with the grid: the encoder's cost grows with the number of grid points, the operator's does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ups.checkpoint import model_state_dict, save_checkpoint, ups_block
from ups.data.generate import generate_dataset
from ups.data.params import parse_params_from_name
from ups.data.summary import load_config_tasks
from ups.data.tasks import builtin_generator
from ups.engines import preflight
from ups.engines.lightning import fit_lightning
from ups.engines.settings import training_device
from ups.pipeline.runner import build_stage
from ups.resolve import load_config
from ups.runs import RunDir
from ups.stages.autoencoder import AutoencoderStage


def ensure_data(cfg, nx: int | None = None, n: int | None = None) -> None:
    """Generate the config's built-in data files that are missing (1D ones at ``nx`` points)."""
    data_dir = Path(cfg.paths.data_dir)
    for task in cfg.data.tasks:
        if (data_dir / task.path).exists():
            continue
        generator = builtin_generator(Path(task.path))
        if generator is None:
            raise SystemExit(f"{data_dir / task.path} is missing and is not a built-in dataset.")
        size = {} if generator == "darcy2d" else {"nx": nx, "n": n}
        generate_dataset(
            generator, data_dir, params=parse_params_from_name(task.path), progress=False, **size
        )


def untrained_autoencoder_run(cfg, root: Path) -> Path:
    """A run folder holding a freshly initialised autoencoder checkpoint."""
    stage = AutoencoderStage(cfg, load_config_tasks(cfg))
    run = RunDir(root / "autoencoder").init(cfg)
    save_checkpoint(
        {"state_dict": model_state_dict(stage), "ups": ups_block(stage, cfg, "native")},
        run.checkpoint_dir("autoencoder") / "last.ckpt",
    )
    return run.root


def one_epoch(cfg, source: Path, root: Path, cache: Path | None) -> tuple[float, float, int]:
    """(prepare seconds, epoch seconds, optimizer steps) of the operator stage."""
    training = dataclasses.replace(cfg.training, latent_cache_dir=str(cache) if cache else None)
    cfg = dataclasses.replace(cfg, training=training)
    stage = build_stage(cfg, "operator", RunDir(source))
    run = RunDir(tempfile.mkdtemp(dir=root)).init(cfg)
    preflight(stage, cfg, run, engine="lightning", resume=False)
    start = time.perf_counter()
    stage.prepare(training_device(cfg))
    prepared = time.perf_counter()
    result = fit_lightning(stage, cfg, run)
    return prepared - start, time.perf_counter() - prepared, result.global_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--from-run", type=Path, help="run folder with a trained autoencoder")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; the median is shown")
    parser.add_argument("--nx", type=int, help="generate the 1D data at this many grid points (temporary)")
    parser.add_argument("--n", type=int, help="trajectories per generated file (with --nx)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ups-bench-") as tmp:
        root = Path(tmp)
        overrides = ["stages.operator.epochs=1", "training.skip_lightning_val=true", *args.overrides]
        if args.nx:
            overrides.append(f"paths.data_dir={root / 'data'}")
        ensure_data(load_config(args.config, overrides, check_files=False), args.nx, args.n)
        cfg = load_config(args.config, overrides)
        source = args.from_run or untrained_autoencoder_run(cfg, root)
        rows = {}
        for mode in ("on the fly", "cold cache", "warm cache"):
            runs = []
            for i in range(args.repeat):
                cache = None if mode == "on the fly" else root / f"cache{i}"
                runs.append(one_epoch(cfg, source, root, cache))  # cold fills cache<i>, warm reads it
            rows[mode] = tuple(statistics.median(r[j] for r in runs) for j in range(3))
        report(cfg, args, rows)
    return 0


def report(cfg, args, rows: dict) -> None:
    t = cfg.training
    grid = "x".join(str(s) for s in load_config_tasks(cfg)[0].info.spatial_shape)
    print(
        f"\noperator stage, one epoch ({int(rows['on the fly'][2])} optimizer steps, "
        f"batch size {t.batch_size}), config {args.config} {' '.join(args.overrides)}".rstrip()
        + f"; grid {grid} points"
    )
    print(
        f"rollout_horizon {t.rollout_horizon}, time_stride {t.time_stride}, latent {cfg.latent.tokens}x"
        f"{cfg.latent.dim}, cache dtype {t.latent_cache_dtype}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'mode':<12}{'prepare s':>11}{'epoch s':>10}{'total s':>10}{'on the fly / this':>20}")
    base = sum(rows["on the fly"][:2])
    for mode, (prepare, epoch, _) in rows.items():
        print(
            f"{mode:<12}{prepare:>11.2f}{epoch:>10.2f}{prepare + epoch:>10.2f}"
            f"{base / (prepare + epoch):>19.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
