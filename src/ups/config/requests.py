"""What a command asks for besides its config: fast-to-sota's ``Request``, ``EvaluationRequest``,
``TuningRequest`` and ``PredictionRequest``, each declared once.

A field with metadata is a command-line flag: ``ups.cli.flags`` makes it from the field's
name (``--run-dir`` for ``run_dir``, or ``flag``), type (a ``Path``, ``int`` or ``float``
converter; a ``bool`` is a switch), default and metadata (``help``, ``choices``, ``metavar``,
``type``, ``action``; ``alias``: a second flag meaning the default; ``group``: a group of
which exactly one is given), and builds the request from the parsed arguments. This module
imports no torch, so that the ``ups`` command parses its arguments fast.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from ups.config.engines import ENGINE_NAMES


def option(default=None, **metadata):
    return field(default=default, metadata=metadata)


@dataclass
class Request:
    """``ups fast-to-sota``: validate, train, evaluate small and full, gate, promote."""

    config: Path = field(metadata={"help": "YAML config file of the candidate"})
    run_dir: Path
    overrides: list[str] = field(default_factory=list, metadata={"help": "dotted overrides of the config"})
    engine: str = option("lightning", help="training engine (default lightning)", alias="--use-lightning")
    eval_engine: str = option(
        "lightning",
        choices=ENGINE_NAMES,
        help="evaluation engine (default lightning)",
        alias="--lightning-eval",
    )
    small_eval_config: Path | None = option(
        metavar="E1",
        help="YAML with an evaluation: section laid over the small evaluation "
        "(default: split val, no report)",
    )
    full_eval_config: Path | None = option(
        metavar="E2",
        help="YAML with an evaluation: section laid over the full evaluation (default: split test)",
    )
    improvement_metric: str | None = option(
        metavar="[metric:]NAME",
        help="the metric a candidate must lower (default: gates.improvement_metric), e.g. nrmse, "
        "corrected_nrmse, burgers1d/nrmse",
    )
    min_small_delta: float | None = option(metavar="X", help="default: gates.min_small_delta")
    min_full_delta: float | None = option(metavar="Y", help="default: gates.min_full_delta")
    force_full_eval: bool = option(False, help="run the full evaluation even if the small gate fails")
    force_train: bool = option(
        False, help="train again (the earlier training moves to <run>/superseded/<time>/)"
    )
    redo_small_eval: bool = option(False, help="evaluate again even when a result can be reused")
    redo_full_eval: bool = option(False, help="evaluate again even when a result can be reused")
    leaderboard: Path | None = option(help="leaderboard CSV (default: <paths.runs_dir>/leaderboard.csv)")


def tag(text: str) -> tuple[str, str]:
    """``--tag KEY=VALUE``: a leaderboard column."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--tag '{text}' is not of the form KEY=VALUE.")
    return key, value


@dataclass
class EvaluationRequest:
    """``ups evaluate``: which checkpoints, how, and where the results go."""

    checkpoint: Path | None = option(
        group="source", help="one checkpoint (operator, corrector or steady prior)"
    )
    run_dir: Path | None = option(
        group="source", help="a run folder: the best checkpoint of every trained stage"
    )
    engine: str = option("lightning", help="default: lightning")
    split: str | None = option(choices=("val", "test"), help="default: evaluation.split")
    horizon: int | None = option(help="rollout steps (default: evaluation.horizon, else the longest)")
    resolution: int | None = option(
        help="zero-shot: decode at N points per axis and compare with the "
        "data at N (down-sampled, or built-in data regenerated at N)"
    )
    output_prefix: Path | None = option(help="default: <run>/evaluation/<split>-h<H>[-r<N>]")
    leaderboard: Path | None = option(help="append a row to this CSV (and its .html twin)")
    label: str | None = option(help="the row's label (default: the run folder's name)")
    role: str = option(  # the leaderboard row's role (``ups.pipeline.gates``)
        "",
        choices=("baseline", "champion", "full_eval", "small_eval"),
        help="the row's role for fast-to-sota's gates (e.g. baseline: a reference to beat)",
    )
    tags: list[tuple[str, str]] = field(
        default_factory=list,
        metadata=dict(
            flag="--tag", action="append", type=tag, metavar="KEY=VALUE", help="extra columns (repeatable)"
        ),
    )
    device: str = option("cpu", choices=("cpu", "cuda"), help="default: cpu")
    kind: str | None = None  # small or full under fast-to-sota: the row's ``eval``, W&B's eval/<kind>/


@dataclass
class TuningRequest:
    """``ups train --tune-*``: Lightning's Tuner before the fit (``ups.engines.tuning``)."""

    batch_size: bool = option(False, flag="--tune-batch-size", help="find the largest batch size that fits")
    batch_size_mode: str = option(
        "power",
        flag="--tune-batch-size-mode",
        choices=("power", "binsearch"),
        help="grow by doubling, or double then bisect (default power)",
    )
    max_batch_size: int = option(
        256,
        help="stop growing here (default 256; on CPU, where running out of memory is not "
        "detectable, this and the train split's size are where growth stops)",
    )
    lr: bool = option(False, flag="--tune-lr", help="run the LR finder (curve: <run>/tuning_lr_<stage>.png)")
    lr_steps: int = option(100, flag="--tune-lr-steps", help="rates tried by the LR finder (default 100)")
    min_lr: float = 1e-6
    max_lr: float = 1.0
    apply: bool = option(
        True, flag="--no-apply-tuning", help="report the tuned values, train on the config's"
    )

    @property
    def wanted(self) -> bool:
        return self.batch_size or self.lr


@dataclass
class PredictionRequest:
    """``ups predict``: a trained run, a PDEBench-layout file of starts, and where the predictions go."""

    run_dir: Path = option(required=True, metavar="D", help="the trained run folder (or a checkpoint folder)")
    input: Path = option(
        required=True,
        metavar="FILE",
        help="PDEBench-layout HDF5 file of initial conditions (transient) or coefficients (steady)",
    )
    out: Path = option(
        required=True, metavar="OUT.h5", help="the .h5/.hdf5 file to write, in the input's PDEBench layout"
    )
    steps: int | None = option(
        metavar="N", help="rollout steps (default: as many as the input's frames cover)"
    )
    samples: int = option(
        0, metavar="K", help="sampled trajectories per start (needs a corrector; default 0)"
    )
    resolution: int | None = option(metavar="R", help="decode at R points per axis (default: the run's grid)")
    task: str | None = option(
        metavar="T", help="the run's task to predict (default: the one of the input's kind)"
    )
    batch_size: int = option(32, metavar="B", help="starts per rollout call (default 32)")
    device: str | None = option(choices=("cpu", "cuda"), help="default: cpu")
