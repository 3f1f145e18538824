"""Training from a file of PDEBench's size: samples/s from HDF5 (0 and 2 workers), from memory and
from the latent cache, peak memory, time to the first step, `ups data summary`, a time-limited stage.

    python benchmarks/data_scale.py [--dir data/scale] [--n 10000] [--nt 201] [--nx 1024]
                                    [--steps 100] [--warmup 5] [--rounds 1] [--batch-size 32]
                                    [--limit-s 90] [--val-max-samples V] [KEY=VALUE ...]

The file: a synthetic dataset in PDEBench's 1D single-file layout (``tensor`` [N, T, X] float32,
contiguous as PDEBench's are, ``x-coordinate``, ``t-coordinate`` of T + 1 times), each trajectory
a decaying, travelling sum of four Fourier modes. Written by this script, chunk by chunk, into
``<dir>/n<N>-t<T>-x<X>/1D_Synthetic_Sols_Nu0.01.hdf5`` (``data/`` is ignored by git), and reused
by later runs when it is whole (written to a temporary file and renamed) and of the asked size.
The default 10,000 x 201 x 1,024 is 8.2 GB, the size of PDEBench's 1D Burgers files; the latent
cache row adds an entry of the same size beside it. A disk without room for both is refused first.

What it runs, in this order, each measurement in a fresh process (``--child``, or an ``ups``
command) whose memory this one samples with its DataLoader workers' (the peaks of their summed RSS,
every 50 ms, and PSS, every second: RSS counts the pages a forked worker shares with its parent in
each process, PSS shares them out). The files a measurement reads are dropped from the page cache
before it starts (``posix_fadvise(POSIX_FADV_DONTNEED)``), and again when its training starts, so
the timed steps read from the disk as they would from a file larger than the memory.

1. ``ups data summary`` on the file: wall time and peak memory; again with ``data.max_samples`` at a
   tenth of the trajectories (the cap at work: its split).
2. One cold sequential read of the whole file: the time of one pass.
3. The training rows, ``--steps`` timed steps after ``--warmup`` (timed as in
   ``benchmarks/engine_overhead.py``: the intervals between the starts of consecutive batches),
   Lightning, ``training.batch_size`` = ``--batch-size``, validation off; ``--rounds R`` runs them
   R times, alternating, and shows medians (for a machine whose load changes):
   - HDF5, 0 and 2 workers: the autoencoder stage reading its snapshots from the file; the first
     step is timed from the process's launch (loading the tasks is one pass over the file: the
     splits' finite-value check and the normalisation);
   - NumPy array in memory: the same stage and batches, the frames of those batches read into one
     array before training and served from it, the rest of the data path unchanged;
   - latent cache: the operator stage on the same file, reading windows of cached latents (the
     entry is filled once with seeded random latents instead of encoding 2 million frames, hours
     on a CPU; the read cost does not depend on the values).
4. The data path alone (no model), per batch of the HDF5 rows' first batches: reads, item assembly
   (normalisation, tensors) and collation, for reads by file offset (``ups.data.contiguous``),
   reads through h5py (how every read went before) and the array in memory.
5. The autoencoder stage time-limited to ``--limit-s``, by ``training.max_time`` (Lightning stops
   training at the limit, then validates once and writes the checkpoints) and by
   ``training.time_budget`` (the whole command, set-up included, keeping time for the last
   validation and the checkpoints), validating on ``--val-max-samples`` snapshots
   (``training.val_max_samples``; 512 by default, a few seconds at 1,024 points on 2 CPU cores,
   where the config's default of 4,096 would take most of a 90 s stage; 0 keeps the config's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import h5py
import lightning.pytorch as pl
import numpy as np
import torch

from engine_overhead import StepClock
from ups.atomic import atomic_path
from ups.checkpoint import load_checkpoint, model_state_dict, save_checkpoint, ups_block
from ups.data.contiguous import ContiguousDataset
from ups.data.latent_cache import LatentCache, encoder_digest
from ups.data.latent_pairs import SnapshotDataset, collate_task_batch
from ups.data.splits import split_trajectories
from ups.data.summary import config_file_infos, load_config_tasks
from ups.engines import fit_stage
from ups.engines.loaders import task_batch_sampler
from ups.resolve import load_config
from ups.runs import RunDir
from ups.stages.autoencoder import AutoencoderStage
from ups.stages.operator import OperatorStage

REPO = Path(__file__).resolve().parents[1]
FILE_NAME = "1D_Synthetic_Sols_Nu0.01.hdf5"
CACHE_FOLDER = "latent_cache_random"  # beside the file: the latent cache row's entry, random latents
FORMAT = 1  # of the synthetic file; another one is rewritten
MODES = 4
GB = 1e9


# ------------------------------------------------------------------------------ the file
def synthetic_block(first: int, count: int, nt: int, nx: int, seed: int) -> np.ndarray:
    """Trajectories ``first .. first + count - 1``: float32 [count, nt, nx], each
    sum_k e^{-0.01 k^2 t} (a_k sin 2 pi k (x - c t) + b_k cos 2 pi k (x - c t)) on x in (0, 1) (cell
    centres), t in [0, 2], k = 1..4, with a_k, b_k ~ N(0, 1/k^2) and c ~ U(-1, 1) drawn per
    trajectory from ``(seed, index)``."""
    x = (np.arange(nx) + 0.5) / nx
    t = np.linspace(0.0, 2.0, nt)[None, :, None]  # [1, T, 1]
    k = np.arange(1, MODES + 1)
    draws = [np.random.default_rng([seed, first + j]) for j in range(count)]
    ab = np.stack([rng.normal(size=(2, MODES)) / k for rng in draws])  # [B, 2, K]
    c = np.array([rng.uniform(-1.0, 1.0) for rng in draws])[:, None, None]
    a, b = ab[:, None, 0], ab[:, None, 1]  # [B, 1, K]
    phase, decay = 2 * np.pi * k * c * t, np.exp(-0.01 * k**2 * t)  # [B, T, K], [1, T, K]
    sin_part = decay * (a * np.cos(phase) + b * np.sin(phase))  # of sin(2 pi k x)
    cos_part = decay * (b * np.cos(phase) - a * np.sin(phase))  # of cos(2 pi k x)
    basis = np.concatenate(
        [np.sin(2 * np.pi * k[:, None] * x), np.cos(2 * np.pi * k[:, None] * x)]
    )  # [2K, X]
    return (np.concatenate([sin_part, cos_part], axis=2) @ basis).astype(np.float32)


def file_is_whole(path: Path, n: int, nt: int, nx: int, seed: int) -> bool:
    """Whether ``path`` is this script's file of this size (it only appears whole: atomic rename)."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            made = h5.attrs.get("ups_data_scale")
    except OSError:
        made = None
    if made is None:
        raise SystemExit(
            f"{path} exists but was not written by benchmarks/data_scale.py; move it away or pass "
            f"another --dir."
        )
    return json.loads(made) == {"format": FORMAT, "n": n, "nt": nt, "nx": nx, "seed": seed}


def write_synthetic(path: Path, n: int, nt: int, nx: int, seed: int = 0, chunk_bytes: int = 64 << 20) -> None:
    """The file in PDEBench's 1D single-file layout, ``chunk_bytes`` of trajectories at a time, into
    a temporary file renamed into place when whole."""
    per_block = max(1, chunk_bytes // (nt * nx * 4))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        tensor = h5.create_dataset("tensor", shape=(n, nt, nx), dtype="float32")  # contiguous, as PDEBench's
        h5.create_dataset("x-coordinate", data=((np.arange(nx) + 0.5) / nx).astype(np.float32))
        h5.create_dataset(
            "t-coordinate", data=np.linspace(0.0, 2.0 * nt / max(1, nt - 1), nt + 1, dtype=np.float32)
        )
        h5.attrs["ups_data_scale"] = json.dumps({"format": FORMAT, "n": n, "nt": nt, "nx": nx, "seed": seed})
        started = time.perf_counter()
        for first in range(0, n, per_block):
            count = min(per_block, n - first)
            tensor[first : first + count] = synthetic_block(first, count, nt, nx, seed)
            done = first + count
            if done == n or int(10 * done / n) > int(10 * first / n):
                print(
                    f"  written {done}/{n} trajectories ({time.perf_counter() - started:.0f} s)", flush=True
                )


def check_room(folder: Path, needed: int) -> None:
    """Refuse before writing when the disk of ``folder`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"{folder}: {needed / GB:.1f} GB needed (the data file, the latent cache entry "
            f"and 1 GB for runs), {free / GB:.1f} GB free; free some space, pass another "
            f"--dir, or a smaller --n."
        )


def drop_page_cache(paths) -> None:
    """Drop the files' pages from the page cache (those mapped by a process stay)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def one_pass_seconds(path: Path) -> float:
    """Seconds of a cold sequential read of the whole file."""
    drop_page_cache([path])
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(16 << 20):
            pass
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ memory
def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (DataLoader workers), from /proc."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
        except OSError:
            continue
    return out


def memory_bytes(pid: int, file: str, key: str) -> int:
    """``key`` (``VmRSS:`` of status, ``Pss:`` of smaps_rollup) of a process, in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/{file}") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclasses.dataclass
class Measured:
    """A finished process: exit code, launch (``time.time()``), wall seconds, the peaks of its tree's
    summed RSS (sampled every 50 ms) and PSS (every second: it costs the kernel a walk of the page
    tables), its output."""

    code: int
    launched: float
    wall: float
    peak_rss: int
    peak_pss: int
    output: str


def run_measured(cmd: list[str], log_path: Path) -> Measured:
    """Run ``cmd`` (in the repository) while sampling the memory of its process tree."""
    peak_rss = peak_pss = 0
    with open(log_path, "w") as log:
        launched, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        done = threading.Event()

        def sample():
            nonlocal peak_rss, peak_pss
            count = 0
            while not done.wait(0.05):
                tree = process_tree(proc.pid)
                peak_rss = max(peak_rss, sum(memory_bytes(p, "status", "VmRSS:") for p in tree))
                if count % 20 == 0:
                    peak_pss = max(peak_pss, sum(memory_bytes(p, "smaps_rollup", "Pss:") for p in tree))
                count += 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    return Measured(code, launched, wall, peak_rss, peak_pss, log_path.read_text())


# ------------------------------------------------------------------------------ the children
class FramesInMemory:
    """A task's file whose frames ``pairs`` (trajectory, frame) are held in one NumPy array and
    read from it; asking for any other frame is an error (the row would time the file's reads)."""

    def __init__(self, file, pairs: list[tuple[int, int]]):
        self.file = file
        self.rows = {pair: row for row, pair in enumerate(pairs)}
        self.frames = np.stack([file.trajectory(i, slice(t, t + 1))[0] for i, t in pairs])

    def trajectory(self, i: int, frames: slice = slice(None)) -> np.ndarray:
        row = self.rows.get((i, frames.start))
        if row is None or frames.stop != frames.start + 1 or frames.step not in (None, 1):
            raise RuntimeError(
                f"frames {frames} of trajectory {i} are not among those held in memory: the "
                f"training batches differ from the ones the in-memory row prepared"
            )
        return self.frames[row : row + 1]

    def __getattr__(self, name):
        return getattr(self.file, name)


def first_batches(cfg, dataset, stage_name: str, count: int) -> list[list[int]]:
    """The first ``count`` training batches of epoch 0, as the engines draw them."""
    return task_batch_sampler(dataset, cfg, stage_name, train=True).epoch_batches(0)[:count]


def in_memory(cfg, tasks, batches_needed: int):
    """``tasks`` with their frames of the first ``batches_needed`` autoencoder batches in memory."""
    dataset = SnapshotDataset(tasks, "train")
    wanted: dict[int, set] = {}
    for batch in first_batches(cfg, dataset, "autoencoder", batches_needed):
        for item in batch:
            k, trajectory, frame = dataset.locate(item)
            wanted.setdefault(k, set()).add((trajectory, frame))
    return [
        dataclasses.replace(task, file=FramesInMemory(task.file, sorted(wanted.get(k, ()))))
        for k, task in enumerate(tasks)
    ]


def stop_after(batches: int, drop: list[Path]):
    """A callback that drops ``drop`` from the page cache when training starts and stops the fit
    after ``batches`` training batches."""

    class StopAfter(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            drop_page_cache(drop)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 >= batches:
                trainer.should_stop = True

    return StopAfter()


def untrained_autoencoder(cfg, tasks, root: Path):
    """A run folder holding a freshly initialised (seeded) autoencoder checkpoint."""
    stage = AutoencoderStage(cfg, tasks)
    run = RunDir(root / "autoencoder").init(cfg)
    save_checkpoint(
        {"state_dict": model_state_dict(stage), "ups": ups_block(stage, cfg, "native")},
        run.checkpoint_dir("autoencoder") / "last.ckpt",
    )
    return run


def fill_cache_randomly(stage, cfg) -> list[Path]:
    """The operator's latent cache entries, filled with seeded random latents when missing."""
    t = cfg.training
    shapes = [(task.info.n_times, *stage.dynamics.latent_shape) for task in stage.dynamics.tasks]
    pools = [
        np.random.default_rng(k).standard_normal((16, *shape), dtype=np.float32)
        for k, shape in enumerate(shapes)
    ]
    entries = LatentCache(t.latent_cache_dir).ensure(
        stage.dynamics.tasks,
        lambda k, i: pools[k][i % 16],
        encoder=encoder_digest(stage.model.encoder),
        dtype=t.latent_cache_dtype,
        latent_shape=stage.dynamics.latent_shape,
    )
    return [entry.path for entry in entries]


def child_train(kind: str, spec: dict) -> dict:
    """One timed fit: ``kind`` is ``hdf5`` (``training.num_workers`` from the overrides), ``memory``
    or ``cache``."""
    cfg = load_config(spec["config"], spec["overrides"])
    tasks = load_config_tasks(cfg)
    loaded = time.time()
    root = Path(spec["scratch"]) / spec["name"]
    batches = spec["warmup"] + spec["steps"] + 1
    drop = [task.file.path for task in tasks]
    if kind == "memory":
        stage = AutoencoderStage(cfg, in_memory(cfg, tasks, batches + 8))
    elif kind == "cache":
        source = untrained_autoencoder(cfg, tasks, root)
        upstream = {"autoencoder": load_checkpoint(source.checkpoint_dir("autoencoder") / "last.ckpt")}
        stage = OperatorStage(cfg, tasks, upstream)
        drop = fill_cache_randomly(stage, cfg)
    else:
        stage = AutoencoderStage(cfg, tasks)
    clock = StepClock(stage)
    # perf_counter is the clock's; the launch time is on the wall clock
    wall_minus_perf = time.time() - time.perf_counter()
    fit_stage(
        stage, cfg, RunDir(root / "fit").init(cfg), engine="lightning", callbacks=[stop_after(batches, drop)]
    )
    steps = clock.intervals(spec["warmup"])
    return {
        "steps": len(steps),
        "seconds": sum(steps),
        "samples": clock.samples_timed(spec["warmup"]),
        "load_s": loaded - spec["launched"],
        "first_step_s": clock.starts[0] + wall_minus_perf - spec["launched"],
    }


def child_breakdown(spec: dict) -> dict:
    """Per-batch milliseconds of the data path alone (reads, item assembly, collation) over the
    first training batches, for reads by offset, reads through h5py and frames in memory."""
    cfg = load_config(spec["config"], spec["overrides"])
    tasks = load_config_tasks(cfg)
    batches = first_batches(cfg, SnapshotDataset(tasks, "train"), "autoencoder", spec["steps"])
    out = {}
    for source in ("offset", "h5py", "memory"):
        if source == "memory":
            sources = in_memory(cfg, tasks, len(batches))
        else:
            sources = [dataclasses.replace(task, file=task.file.reopened()) for task in tasks]
        dataset = SnapshotDataset(sources, "train")
        read_seconds = [0.0]
        for task in sources:
            inner = task.file.trajectory

            def timed(i, frames=slice(None), inner=inner, read_seconds=read_seconds):
                started = time.perf_counter()
                try:
                    return inner(i, frames)
                finally:
                    read_seconds[0] += time.perf_counter() - started

            task.file.trajectory = timed
        drop_page_cache([task.file.path for task in tasks])
        direct = (
            mock.patch.object(ContiguousDataset, "probe", return_value=None)
            if source == "h5py"
            else contextlib.nullcontext()
        )
        items_s = collate_s = 0.0
        with direct:
            for batch in batches:
                started = time.perf_counter()
                items = [dataset[i] for i in batch]
                assembled = time.perf_counter()
                collate_task_batch(items)
                items_s += assembled - started
                collate_s += time.perf_counter() - assembled
        n = len(batches)
        out[source] = {
            "read_ms": 1e3 * read_seconds[0] / n,
            "assembly_ms": 1e3 * (items_s - read_seconds[0]) / n,
            "collate_ms": 1e3 * collate_s / n,
        }
    return out


def child_main(kind: str, spec_path: Path) -> int:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    spec = json.loads(spec_path.read_text())
    result = child_breakdown(spec) if kind == "breakdown" else child_train(kind, spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------ the parent
class Bench:
    """Runs the children and the commands, each a process measured by ``run_measured``."""

    def __init__(self, args, folder: Path, scratch: Path, config: Path, data_file: Path):
        self.args, self.folder, self.scratch, self.config, self.data_file = (
            args,
            folder,
            scratch,
            config,
            data_file,
        )
        self.count = 0

    def overrides(self, *extra: str) -> list[str]:
        return [f"training.batch_size={self.args.batch_size}", *self.args.overrides, *extra]

    def child(self, kind: str, *extra: str) -> tuple[dict, Measured]:
        """(result, the process) of a ``--child`` run, the file dropped from the page cache first."""
        self.count += 1
        spec = {
            "config": str(self.config),
            "overrides": self.overrides(*extra),
            "scratch": str(self.scratch),
            "name": f"run-{self.count}-{kind}",
            "steps": self.args.steps,
            "warmup": self.args.warmup,
        }
        spec_path = self.scratch / f"spec-{self.count}.json"
        drop_page_cache([self.data_file])
        spec["launched"] = time.time()
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--spec", str(spec_path)]
        run = run_measured(cmd, self.scratch / f"child-{self.count}-{kind}.log")
        lines = [line for line in run.output.splitlines() if line.startswith("RESULT ")]
        if run.code or not lines:
            raise SystemExit(
                f"the {kind} measurement failed (exit {run.code}):\n"
                + "\n".join(run.output.splitlines()[-30:])
            )
        return json.loads(lines[-1][len("RESULT ") :]), run

    def ups(self, name: str, args: list[str]) -> Measured:
        """An ``ups`` command, the file dropped from the page cache first."""
        self.count += 1
        drop_page_cache([self.data_file])
        return run_measured(
            [sys.executable, "-m", "ups", *args], self.scratch / f"ups-{self.count}-{name}.log"
        )

    def time_limited(self, key: str, value: str) -> dict:
        """The autoencoder stage under ``training.<key>=<value>``: wall time, checkpoints, steps,
        validation seconds (Lightning's Timer report)."""
        run = self.scratch / f"limited-{key}"
        overrides = self.overrides(
            f"training.{key}={value}",
            "training.lightning_profile=timer",
            *([f"training.val_max_samples={self.args.val_max_samples}"] if self.args.val_max_samples else []),
        )
        done = self.ups(
            key,
            [
                "train",
                "--config",
                str(self.config),
                "--stage",
                "autoencoder",
                "--run-dir",
                str(run),
                *overrides,
            ],
        )
        folder = run / "checkpoints" / "autoencoder"
        timer = run / "profile" / "autoencoder-timer.json"
        status = (
            json.loads((run / "stage_status.json").read_text()).get("autoencoder", {})
            if (run / "stage_status.json").is_file()
            else {}
        )
        checkpoints = sorted(folder.glob("*.ckpt"))
        return {
            "run": done,
            "best": [p.name for p in checkpoints if p.name.startswith("best")],
            "last": (folder / "last.ckpt").is_file(),
            "timer": json.loads(timer.read_text()) if timer.is_file() else {},
            "status": status,
            "written_s": max((p.stat().st_mtime for p in checkpoints), default=done.launched) - done.launched,
        }


def validation_snapshots(cfg) -> int:
    """Frames of the autoencoder's validation split (the files opened, their data not read)."""
    fractions = (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test)
    return sum(
        len(
            split_trajectories(
                info.n_samples,
                fractions,
                seed=cfg.seed,
                task_name=name,
                need_val=True,
                mode=cfg.data.split.mode,
                test_at_end=info.layout == "multigroup",
            ).val
        )
        * info.n_times
        for name, info in config_file_infos(cfg)
    )


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory / 2**30:.0f} GiB memory, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version})"
    )


def prepare_file(args) -> tuple[Path, Path, str]:
    """(folder, data file, "written in S s" or "reused") after checking the disk's room."""
    folder = Path(args.dir).expanduser().resolve() / f"n{args.n}-t{args.nt}-x{args.nx}"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by an interrupted write (a kill; Ctrl-C removes its own)
        stale.unlink()
    path = folder / FILE_NAME
    whole = file_is_whole(path, args.n, args.nt, args.nx, args.seed)
    frame_bytes = args.nt * args.nx * 4  # a latent frame (32 x 64 float16) is as large as a data frame
    cache_root = folder / CACHE_FOLDER
    cache_bytes = (
        sum(p.stat().st_size for p in cache_root.glob("*.latents")) if whole and cache_root.is_dir() else 0
    )
    check_room(
        folder, (0 if whole else args.n * frame_bytes) + max(0, args.n * frame_bytes - cache_bytes) + int(GB)
    )
    if whole:
        return folder, path, "reused"
    shutil.rmtree(cache_root, ignore_errors=True)  # its entries are keyed to the file being replaced
    print(f"writing {path} ({args.n * frame_bytes / GB:.2f} GB)", flush=True)
    started = time.perf_counter()
    write_synthetic(path, args.n, args.nt, args.nx, args.seed)
    return folder, path, f"written in {time.perf_counter() - started:.0f} s"


def write_config(folder: Path, scratch: Path) -> Path:
    config = scratch / "data_scale.yaml"
    config.write_text(  # every other key at the schema's default (configs/defaults.yaml)
        f"paths: {{data_dir: {folder}, runs_dir: {scratch / 'runs'}}}\n"
        "data:\n"
        f"  tasks:\n    - {{name: synthetic, path: {FILE_NAME}, periodic: true}}\n"
        "training:\n"
        "  accelerator: cpu\n"
        f"  latent_cache_dir: {folder / CACHE_FOLDER}\n"
    )
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=str(REPO / "data" / "scale"),
        help="where the file (and the latent cache entry) is written and reused (default: data/scale)",
    )
    parser.add_argument("--n", type=int, default=10_000, help="trajectories (default 10000)")
    parser.add_argument("--nt", type=int, default=201, help="frames per trajectory (default 201)")
    parser.add_argument("--nx", type=int, default=1024, help="grid points (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic data")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each row")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="training.batch_size (default 32, as the issue's; configs/defaults.yaml has 16)",
    )
    parser.add_argument("--limit-s", type=float, default=90.0, help="the time-limited stage's seconds")
    parser.add_argument(
        "--val-max-samples",
        type=int,
        default=512,
        help="training.val_max_samples of the time-limited stage (default 512: about 5%% of 90 s "
        "on 2 CPU cores at 1,024 points; 0: the config's default)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of the training rows, alternating (median shown)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every row")
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.spec)
    if not hasattr(os, "posix_fadvise") or not Path("/proc/self/status").exists():
        raise SystemExit(
            "this benchmark needs Linux (posix_fadvise to drop the page cache, /proc for memory)."
        )
    folder, data_file, made = prepare_file(args)
    with tempfile.TemporaryDirectory(prefix="run-", dir=folder) as tmp:
        scratch = Path(tmp)
        bench = Bench(args, folder, scratch, write_config(folder, scratch), data_file)
        results = measure(bench)
        report(args, bench, data_file, made, results)
    return 0


ROWS = (
    ("HDF5, 0 workers", "hdf5", "autoencoder", ["training.num_workers=0"]),
    ("HDF5, 2 workers", "hdf5", "autoencoder", ["training.num_workers=2"]),
    ("NumPy array in memory", "memory", "autoencoder", ["training.num_workers=0"]),
    ("latent cache", "cache", "operator", ["training.num_workers=0"]),
)


def measure(bench: Bench) -> dict:
    out: dict = {name: [] for name, *_ in ROWS}
    print("ups data summary", flush=True)
    out["summary"] = bench.ups(
        "summary", ["data", "summary", "--config", str(bench.config), *bench.overrides()]
    )
    cap = max(1, bench.args.n // 10)
    print(f"ups data summary, data.max_samples={cap}", flush=True)
    out["summary_capped"] = bench.ups(
        "summary-capped",
        ["data", "summary", "--config", str(bench.config), *bench.overrides(f"data.max_samples={cap}")],
    )
    print("one pass over the file", flush=True)
    out["one_pass"] = one_pass_seconds(bench.data_file)
    for round_ in range(
        bench.args.rounds
    ):  # rows alternate, so a change in the machine's load hits them alike
        for name, kind, _, extra in ROWS:
            print(f"{name} (round {round_ + 1} of {bench.args.rounds})", flush=True)
            out[name].append(bench.child(kind, "training.skip_lightning_val=true", *extra))
    print("the data path alone", flush=True)
    out["breakdown"] = bench.child("breakdown")[0]
    limit = round(bench.args.limit_s)
    for key, value in (
        ("max_time", f"00:{limit // 3600:02d}:{limit % 3600 // 60:02d}:{limit % 60:02d}"),
        ("time_budget", f"{bench.args.limit_s:g}"),
    ):
        print(f"time-limited autoencoder stage, training.{key}={value}", flush=True)
        out[key] = bench.time_limited(key, value)
    return out


def median(values) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def report(args, bench: Bench, data_file: Path, made: str, out: dict) -> None:
    cfg = load_config(bench.config, bench.overrides())
    size, mb = data_file.stat().st_size, 2**20
    print(
        f"\nfile {data_file} ({size / GB:.2f} GB, {args.n} x {args.nt} x {args.nx} float32, "
        f"contiguous; {made})"
    )
    print(f"machine: {machine()}")
    print(
        (
            f"config: configs/defaults.yaml, training.batch_size={args.batch_size} {' '.join(args.overrides)}"
        ).rstrip()
        + f"; Lightning, validation off; {args.steps} timed steps after {args.warmup}, "
        f"median of {args.rounds} round(s); the page cache dropped before each row and when "
        f"its training starts"
    )
    rate = {name: median(r["samples"] / r["seconds"] for r, _ in out[name]) for name, *_ in ROWS}
    memory_rate = rate["NumPy array in memory"]
    print(
        f"\n{'source':<24}{'stage':<13}{'sample':<10}{'ms/step':>9}{'samples/s':>11}{'vs memory':>11}"
        f"{'peak RSS MB':>13}{'peak PSS MB':>13}{'first step s':>14}"
    )
    for name, kind, stage, _ in ROWS:
        runs = out[name]
        ms = median(1e3 * r["seconds"] / r["steps"] for r, _ in runs)
        versus = f"{rate[name] / memory_rate:.2f}x" if kind != "cache" else "-"
        first = f"{median(r['first_step_s'] for r, _ in runs):.1f}" if kind == "hdf5" else "-"
        print(
            f"{name:<24}{stage:<13}{'window' if kind == 'cache' else 'snapshot':<10}{ms:>9.1f}"
            f"{rate[name]:>11.1f}{versus:>11}{max(m.peak_rss for _, m in runs) / mb:>13.0f}"
            f"{max(m.peak_pss for _, m in runs) / mb:>13.0f}{first:>14}"
        )
    first = out["HDF5, 0 workers"][0][0]
    print(
        f"\ntime to the first step (HDF5, 0 workers, from the process's launch): "
        f"{first['first_step_s']:.1f} s; the tasks were loaded (one pass: the splits' finite-value check "
        f"and the normalisation) at {first['load_s']:.1f} s; a cold sequential read of the whole file takes "
        f"{out['one_pass']:.1f} s ({size / out['one_pass'] / 1e6:.0f} MB/s)"
    )
    summary = out["summary"]
    print(
        f"ups data summary: {summary.wall:.1f} s, peak RSS {summary.peak_rss / mb:.0f} MB, PSS "
        f"{summary.peak_pss / mb:.0f} MB (exit {summary.code})"
    )
    capped, cap = out["summary_capped"], max(1, args.n // 10)
    kept = re.search(r"split\s+train (\d+) / val (\d+) / test (\d+)", capped.output)
    print(
        f"ups data summary with data.max_samples={cap}: {capped.wall:.1f} s, "
        f"peak RSS {capped.peak_rss / mb:.0f} MB "
        f"(exit {capped.code}); its split: {' / '.join(kept.groups()) if kept else '?'} trajectories"
    )
    print(
        f"\nthe data path alone, ms per batch of {args.batch_size} (the first {args.steps} training batches, "
        f"one process, the page cache dropped first):"
    )
    print(f"{'reads':<24}{'read':>8}{'assembly':>10}{'collate':>9}{'total':>8}")
    for source, label in (
        ("offset", "by file offset (now)"),
        ("h5py", "through h5py (before)"),
        ("memory", "NumPy array in memory"),
    ):
        row = out["breakdown"][source]
        total = row["read_ms"] + row["assembly_ms"] + row["collate_ms"]
        print(
            f"{label:<24}{row['read_ms']:>8.2f}{row['assembly_ms']:>10.2f}{row['collate_ms']:>9.2f}{total:>8.2f}"
        )
    val = args.val_max_samples or cfg.training.val_max_samples
    whole = validation_snapshots(cfg)
    val_batches = math.ceil(min(val or whole, whole) / args.batch_size)
    print(
        f"\nthe autoencoder stage limited to {args.limit_s:g} s, validating {min(val or whole, whole)} of "
        f"the split's {whole} frames (training.val_max_samples={val}) in {val_batches} batches of "
        f"{args.batch_size}:"
    )
    for key in ("max_time", "time_budget"):
        row = out[key]
        done, timer, status = row["run"], row["timer"], row["status"]
        fit = (
            f"training {timer['train_seconds']:.1f} s, its last validation {timer['validate_seconds']:.1f} s"
            if timer
            else "no timer report"
        )
        if timer:
            fit += f", {timer['validate_seconds'] / val_batches:.2f} s per validation batch"
        state = status.get("state", "?") + (f" ({status['reason']})" if status.get("reason") else "")
        written = (
            f"last.ckpt {'written' if row['last'] else 'missing'}, best {', '.join(row['best']) or 'none'}"
        )
        print(
            f"  training.{key}: {state}, exit {done.code}; last checkpoint written {row['written_s']:.1f} s "
            f"after the command's launch, which ended after {done.wall:.1f} s; "
            f"stage {status.get('seconds')} s ({fit}); "
            f"{status.get('global_step')} steps, best val/nrmse {status.get('best_score')}; peak RSS "
            f"{done.peak_rss / mb:.0f} MB; {written}"
        )
        if done.code:
            print("\n".join(done.output.splitlines()[-15:]))


if __name__ == "__main__":
    sys.exit(main())
