"""Time per training step of the demo operator stage: the Lightning engine vs the native loop.

    python benchmarks/engine_overhead.py [--config configs/demo.yaml] [--rounds 3] [--steps 100]
                                         [--warmup 5] [--threads N] [--from-run RUN] [--profile N]
                                         [KEY=VALUE ...]

One process, same data, same batches, validation off, one epoch per fit. The engines alternate
(lightning, native, lightning, native, ...) for ``--rounds`` pairs, so that a change in machine
load during the run hits both alike. The epoch is shortened to ``--warmup + --steps + 1``
batches by training on the first items of each task of the train split (``TaskPrefix``): a
step costs the same on any items of the same shapes, and both engines see the same items.
``--threads`` sets torch's intra-op threads (default: torch's own choice); on a machine whose
cores are busy with other work, 2 threads can be many times slower than 1 (they wait on each
other), which drowns the engines' difference.

What is timed: the stage's ``training_loss`` is wrapped (on the stage object, no change to the
engines) to record the wall clock each time an engine starts a batch. The interval between two
consecutive starts is one whole step as the engine runs it: fetching and collating the batch,
forward, backward, optimizer and scheduler step, logging and every per-step hook. The first
``--warmup`` intervals are dropped, and the interval after the epoch's last batch does not exist,
so start-up (trainer and loader construction, the latent cache check in ``prepare``), validation
and checkpoint writing at the epoch end are never counted. ms/step of a round is the mean over
the timed steps (so the periodic CSV logging every ``training.log_every_n_steps`` counts at its
true rate); ``median step`` is the median single interval, the cost of a step without it.
Printed: per engine the median over rounds, and the median over rounds of the ratio
Lightning / native of each pair (the issue's goal: <= 1.05).

The autoencoder is freshly initialised (step times do not depend on its weights) unless
``--from-run`` names a run with a trained one. The data are the config's built-in files, read
from ``paths.data_dir`` when they are all there, else generated into the temporary folder; the
latent cache is filled once into that folder before the first round. ``--profile N`` then runs
one more Lightning epoch under cProfile and prints the N functions with the most own time, in
all code and in Lightning's code alone, and Lightning's own time per batch (cProfile slows
Python-heavy code more than the tensor kernels, so these figures overstate Lightning's share).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from latent_cache import ensure_data, untrained_autoencoder_run
from ups.engines import fit_stage
from ups.engines.loaders import task_batch_sampler, task_sizes
from ups.engines.settings import batch_size, training_device
from ups.pipeline.runner import build_stage
from ups.resolve import load_config
from ups.runs import RunDir

ENGINES = ("lightning", "native")


class StepClock:
    """Wraps ``stage.training_loss`` to record when each batch starts and how many samples it holds."""

    def __init__(self, stage):
        self.starts: list[float] = []
        self.samples: list[int] = []
        inner = stage.training_loss

        def timed(batch):
            self.starts.append(time.perf_counter())
            self.samples.append(len(batch["task_names"]))
            return inner(batch)

        stage.training_loss = timed

    def intervals(self, warmup: int) -> list[float]:
        """Seconds of each whole step after the first ``warmup`` ones (the last batch has none)."""
        return [b - a for a, b in zip(self.starts[warmup:], self.starts[warmup + 1 :])]

    def samples_timed(self, warmup: int) -> int:
        """Samples of the batches whose steps ``intervals`` covers."""
        return sum(self.samples[warmup:-1])


class TaskPrefix(Dataset):
    """The first ``fraction`` of each task's items of a task-grouped train split (at least one
    per task), keeping the task order and weights that the task-aware sampler reads."""

    def __init__(self, dataset, fraction: float):
        self.dataset = dataset
        sizes = task_sizes(dataset)
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        self.task_sizes = [min(n, max(1, round(n * fraction))) for n in sizes]
        self.task_weights = getattr(dataset, "task_weights", None)
        self.items = [start + i for start, n in zip(starts, self.task_sizes) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> dict:
        return self.dataset[self.items[item]]


def shorten_epoch(stage, cfg, batches: int) -> None:
    """Make ``stage``'s train epoch about ``batches`` batches long (never longer than it is).

    The split is built when the engine asks for it, after ``prepare``: the operator's windows
    only read the latent cache when it is filled before they are built.
    """
    full_split = stage.train_dataset

    def shortened():
        full = full_split()
        return TaskPrefix(
            full, min(1.0, batches / len(task_batch_sampler(full, cfg, stage.name, train=True)))
        )

    stage.train_dataset = shortened


def data_config(config: Path, root: Path, overrides: list[str]):
    """The config with the built-in data from ``paths.data_dir`` if all files are there,
    else generated into ``root/data``."""
    cfg = load_config(config, overrides, check_files=False)
    if not all((Path(cfg.paths.data_dir) / task.path).exists() for task in cfg.data.tasks):
        overrides = [*overrides, f"paths.data_dir={root / 'data'}"]
        ensure_data(load_config(config, overrides, check_files=False))
    return load_config(config, overrides)


def timed_fit(cfg, stage_name: str, source: Path, root: Path, engine: str, batches: int) -> StepClock:
    """One fit of ``stage_name`` with ``engine`` over an epoch of ``batches`` batches, into a
    fresh run folder under ``root``."""
    stage = build_stage(cfg, stage_name, RunDir(source))
    shorten_epoch(stage, cfg, batches)
    clock = StepClock(stage)
    fit_stage(stage, cfg, RunDir(tempfile.mkdtemp(dir=root)).init(cfg), engine=engine)
    return clock


def profile_lightning(cfg, source: Path, root: Path, batches: int, top: int) -> None:
    """One Lightning epoch under cProfile: the top functions by own time, all code and Lightning's
    code alone, and Lightning's own time per step."""
    profiler = cProfile.Profile()
    profiler.enable()
    clock = timed_fit(cfg, "operator", source, root, "lightning", batches)
    profiler.disable()
    stats = pstats.Stats(profiler)
    for restriction, title in (((), "all code"), (("/lightning/",), "Lightning's code")):
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats("tottime").print_stats(*restriction, top)
        body = out.getvalue()
        print(
            f"\n--- cProfile, one Lightning epoch of {len(clock.starts)} batches: top {top} by own time, "
            f"{title} ---"
        )
        print(body[body.index("   ncalls") :].rstrip())
    own = sum(row[2] for (path, _, _), row in stats.stats.items() if "/lightning/" in path)
    print(
        f"Lightning's own time (its Python code, start-up included): {own:.2f} s, "
        f"{1e3 * own / len(clock.starts):.2f} ms per batch"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--from-run", type=Path, help="run folder with a trained autoencoder")
    parser.add_argument("--rounds", type=int, default=3, help="lightning/native pairs")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per fit")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each fit")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="then profile one Lightning epoch, top N rows"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    batches = args.warmup + args.steps + 1
    with tempfile.TemporaryDirectory(prefix="ups-bench-") as tmp:
        root = Path(tmp)
        overrides = [
            "stages.operator.epochs=1",
            "training.skip_lightning_val=true",
            f"training.latent_cache_dir={root / 'cache'}",
            *args.overrides,
        ]
        cfg = data_config(args.config, root, overrides)
        source = args.from_run or untrained_autoencoder_run(cfg, root)
        build_stage(cfg, "operator", RunDir(source)).prepare(training_device(cfg))  # fill the cache once
        rows: dict[str, list[tuple[float, float, int]]] = {engine: [] for engine in ENGINES}
        for i in range(args.rounds):
            for engine in ENGINES:
                steps = timed_fit(cfg, "operator", source, root, engine, batches).intervals(args.warmup)
                rows[engine].append((statistics.fmean(steps), statistics.median(steps), len(steps)))
                print(
                    f"round {i + 1} {engine:<9} {1e3 * rows[engine][-1][0]:7.2f} ms/step "
                    f"over {len(steps)} steps",
                    flush=True,
                )
        report(cfg, args, rows)
        if args.profile:
            profile_lightning(cfg, source, root, batches, args.profile)
    return 0


def report(cfg, args, rows: dict) -> None:
    t = cfg.training
    steps = rows["native"][0][2]
    print(
        f"\noperator stage, {args.rounds} rounds of one epoch per engine ({steps} timed steps each, "
        f"batch size {batch_size(cfg, 'operator')}), config {args.config} {' '.join(args.overrides)}".rstrip()
    )
    print(
        f"precision {t.precision}, log_every_n_steps {t.log_every_n_steps}, "
        f"torch threads {torch.get_num_threads()}, "
        f"Lightning progress bar {'on' if sys.stderr.isatty() else 'off'} (stderr is "
        f"{'' if sys.stderr.isatty() else 'not '}a terminal)"
    )
    print(f"{'engine':<11}{'ms/step':>9}{'median step ms':>16}{'min ms/step':>13}{'max ms/step':>13}")
    for engine, runs in rows.items():
        means = [r[0] for r in runs]
        print(
            f"{engine:<11}{1e3 * statistics.median(means):>9.2f}"
            f"{1e3 * statistics.median(r[1] for r in runs):>16.2f}"
            f"{1e3 * min(means):>13.2f}{1e3 * max(means):>13.2f}"
        )
    ratios = [lit[0] / nat[0] for lit, nat in zip(rows["lightning"], rows["native"])]
    extra = [1e3 * (lit[0] - nat[0]) for lit, nat in zip(rows["lightning"], rows["native"])]
    print(
        f"Lightning / native: median ratio {statistics.median(ratios):.3f} (per round "
        f"{', '.join(f'{r:.3f}' for r in ratios)}); Lightning adds {statistics.median(extra):+.2f} ms/step "
        f"(median over rounds); goal <= 1.05"
    )


if __name__ == "__main__":
    sys.exit(main())
