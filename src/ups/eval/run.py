"""``ups evaluate``: load the best checkpoints of a run (or one checkpoint), evaluate them on a
split with the Lightning engine (``Trainer.test``) or the native loop, write the JSON, the HTML
report and a leaderboard row.

Evaluation-safe defaults: float32, no compilation, deterministic kernels where PyTorch has them
(``evaluation.precision``, ``evaluation.deterministic`` override them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from ups import tracking
from ups.atomic import atomic_write_text
from ups.checkpoint import config_hash, load_checkpoint
from ups.config import Config
from ups.config.requests import EvaluationRequest
from ups.data.latent_pairs import collate_task_batch
from ups.data.sampling import TaskBatchSampler
from ups.errors import UPSError
from ups.eval.evaluator import Evaluator
from ups.eval.leaderboard import append_leaderboard, leaderboard_row
from ups.runs import RunDir
from ups.stages.batch import to_device
from ups.stages.dynamics import rollout_start
from ups.surrogate import Surrogate
from ups.surrogate.load import load_stages, run_checkpoints

log = logging.getLogger("ups")


def checkpoints_of(request: EvaluationRequest) -> dict[str, Path]:
    """Stage -> checkpoint: the best of every trained stage of the run, or the one given."""
    if (request.checkpoint is None) == (request.run_dir is None):
        raise UPSError("give exactly one of --checkpoint P or --run-dir D.")
    if request.checkpoint is not None:
        if Path(request.checkpoint).is_dir():
            raise UPSError(
                f"--checkpoint {request.checkpoint} is a folder; give a checkpoint file "
                f"(e.g. <run>/checkpoints/operator/last.ckpt), or the run folder as --run-dir."
            )
        if not Path(request.checkpoint).is_file():
            raise UPSError(f"--checkpoint {request.checkpoint} does not exist.")
        return {load_checkpoint(request.checkpoint)["ups"]["stage"]: Path(request.checkpoint)}
    if not Path(request.run_dir).is_dir():
        raise UPSError(
            f"--run-dir {request.run_dir} is not a folder; give the run folder of `ups pipeline` "
            f"or `ups train`."
        )
    return run_checkpoints(RunDir(request.run_dir))


def build_evaluator(cfg: Config, paths: dict[str, Path]) -> Evaluator:
    """The evaluator of the surrogate of these checkpoints: the latent dynamics of the furthest
    trained transient stage (a corrector's checkpoint holds its operator) and the steady prior,
    loaded as ``ups.load_surrogate`` loads them (its examples are rolled out through it)."""
    surrogate = Surrogate(cfg, load_stages(cfg, paths), paths)
    return Evaluator(cfg, surrogate)


def default_horizon(cfg: Config, transient: list) -> int:
    """The longest rollout every transient task's trajectories allow at ``training.time_stride``
    after ``evaluation.context_frames`` (1 without transient tasks; 0 when the context leaves no
    frame, which ``WindowDataset`` then refuses)."""
    stride, start = cfg.training.time_stride, rollout_start(cfg)
    return min(((t.info.n_times - 1 - start) // stride for t in transient), default=1)


def references(cfg: Config, evaluator: Evaluator, n: int | None) -> list | None:
    """Per transient task, its trajectories at ``n`` points per axis (``--resolution``): the
    stored file down-sampled when it reaches n, else the built-in data regenerated at n into
    ``<paths.data_dir>/reference/``."""
    if n is None or evaluator.dynamics is None:
        return None
    # lazy: the generators (scipy) load only for --resolution
    from ups.eval.resolution import reference_at_resolution

    workdir = Path(cfg.paths.data_dir) / "reference"
    return [reference_at_resolution(task, n, workdir) for task in evaluator.dynamics.tasks]


def loaders(
    evaluator: Evaluator, cfg: Config, split: str, horizon: int, refs: list | None = None
) -> list[DataLoader]:
    out = []
    for dataset in evaluator.datasets(split, horizon, refs):
        if len(dataset):
            sampler = TaskBatchSampler(dataset.task_sizes, cfg.evaluation.batch_size, shuffle=False)
            out.append(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_task_batch))
    if not out:
        raise UPSError(f"the {split} split has no samples to evaluate; check data.split.")
    return out


class EvaluationModule(pl.LightningModule):
    """``Trainer.test`` drives the evaluator: test_step -> ``Evaluator.evaluate``."""

    def __init__(self, evaluator: Evaluator):
        super().__init__()
        self.evaluator = evaluator
        parts = (evaluator.dynamics, evaluator.steady)
        self.models = nn.ModuleList([part.model for part in parts if part is not None])

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.evaluator.evaluate(batch)


def run_lightning(evaluator: Evaluator, batches: list[DataLoader], device: str) -> None:
    e = evaluator.cfg.evaluation
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=e.precision,
        deterministic="warn" if e.deterministic else False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
    )
    trainer.test(EvaluationModule(evaluator), dataloaders=batches, verbose=False)


def run_native(evaluator: Evaluator, batches: list[DataLoader], device: str) -> None:
    target = torch.device(device)
    for part in (evaluator.dynamics, evaluator.steady):
        if part is not None:
            part.model.to(target).eval()
    bf16 = evaluator.cfg.evaluation.precision == "bf16-mixed"
    autocast = torch.autocast(target.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for loader in batches:
            for batch in loader:
                evaluator.evaluate(to_device(batch, target))


ENGINES = {"lightning": run_lightning, "native": run_native}


def evaluate(cfg: Config, request: EvaluationRequest) -> tuple[dict, dict[str, Path]]:
    """Evaluate; returns (the result dict, the written files by kind)."""
    if request.engine not in ENGINES:
        raise UPSError(f"unknown engine '{request.engine}'; choose lightning or native.")
    if request.device == "cuda" and not torch.cuda.is_available():
        raise UPSError("--device cuda: no CUDA device is available here; use --device cpu.")
    paths = checkpoints_of(request)
    evaluator = build_evaluator(cfg, paths)
    split = request.split or cfg.evaluation.split
    horizon = (
        request.horizon
        or cfg.evaluation.horizon
        or default_horizon(cfg, evaluator.dynamics.tasks if evaluator.dynamics is not None else [])
    )
    batches = loaders(evaluator, cfg, split, horizon, references(cfg, evaluator, request.resolution))
    ENGINES[request.engine](evaluator, batches, request.device)
    run = RunDir(run_folder(request, paths))
    result = {
        "label": request.label
        or (Path(request.run_dir).name if request.run_dir else Path(request.checkpoint).stem),
        "run_id": run.root.name,
        "role": request.role,
        "eval": request.kind or "",
        "tags": dict(request.tags),
        "split": split,
        "engine": request.engine,
        "horizon": horizon,
        "resolution": request.resolution,
        "context_frames": cfg.evaluation.context_frames if cfg.evaluation.context_frames > 1 else None,
        "tasks": ",".join(task.name for task in cfg.data.tasks),
        # a run's own files relative to it (a moved run folder reads them still); a lone file as given
        "checkpoints": {
            name: run.relative(path) if request.run_dir else str(path) for name, path in paths.items()
        },
        "config_hash": config_hash(cfg),
        **evaluator.result(),
    }
    written = write_outputs(cfg, request, result, evaluator.examples, paths)
    tracker = tracking.active()
    if tracker is not None:
        tracker.log_evaluation(request.kind or written["json"].stem, result)
    return result, written


def write_outputs(
    cfg: Config, request: EvaluationRequest, result: dict, examples: dict, paths: dict[str, Path]
) -> dict[str, Path]:
    prefix = request.output_prefix or default_prefix(request, paths, result)
    written = {"json": prefix.with_name(prefix.name + ".json")}
    atomic_write_text(written["json"], json.dumps(result, indent=2, sort_keys=True) + "\n")
    if cfg.evaluation.report:
        # lazy: matplotlib loads only when a report is written
        from ups.eval.report import write_report

        written["report"] = write_report(result, examples, prefix.with_name(prefix.name + ".html"))
    if request.leaderboard is not None:
        append_leaderboard(Path(request.leaderboard), leaderboard_row(result), run_folder(request, paths))
        written["leaderboard"] = Path(request.leaderboard)
    return written


def run_folder(request: EvaluationRequest, paths: dict[str, Path]) -> Path:
    """The run evaluated: ``--run-dir``, or the folder above a lone checkpoint's checkpoints/<stage>/."""
    return Path(request.run_dir) if request.run_dir else next(iter(paths.values())).resolve().parents[2]


def default_prefix(request: EvaluationRequest, paths: dict[str, Path], result: dict) -> Path:
    """``<run>/evaluation/<split>-h<H>[-r<N>]``."""
    run = run_folder(request, paths)
    suffix = f"-r{result['resolution']}" if result["resolution"] else ""
    return RunDir(run).evaluation_dir / f"{result['split']}-h{result['horizon']}{suffix}"
