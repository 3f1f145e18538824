"""The flags made from the request dataclasses (``ups.cli.flags``): no flag gives the request's
defaults, each flag reaches its field, and building the parser loads no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ups.cli import build_parser
from ups.cli.flags import request_from
from ups.config.requests import EvaluationRequest, PredictionRequest, Request, TuningRequest


def parsed(*argv: str):
    return build_parser().parse_args(list(argv))


def test_no_flags_give_the_requests_defaults():
    args = parsed("evaluate", "--config", "c.yaml", "--run-dir", "r")
    assert request_from(EvaluationRequest, args) == EvaluationRequest(run_dir=Path("r"))
    args = parsed("train", "--config", "c.yaml", "--stage", "operator")
    assert request_from(TuningRequest, args) == TuningRequest()
    args = parsed("fast-to-sota", "--config", "c.yaml")
    assert request_from(Request, args, run_dir=Path("r")) == Request(Path("c.yaml"), Path("r"))
    args = parsed("predict", "--run-dir", "r", "--input", "i.h5", "--out", "o.h5")
    assert request_from(PredictionRequest, args) == PredictionRequest(Path("r"), Path("i.h5"), Path("o.h5"))


def test_each_flag_reaches_its_field():
    args = parsed(
        *("fast-to-sota", "--config", "c.yaml", "--engine", "native", "--lightning-eval"),
        *("--small-eval-config", "e1.yaml", "--full-eval-config", "e2.yaml"),
        *("--improvement-metric", "burgers/nrmse", "--min-small-delta", "0.5", "--min-full-delta", "1"),
        *("--force-full-eval", "--force-train", "--redo-small-eval", "--redo-full-eval"),
        *("--leaderboard", "b.csv", "seed=1"),
    )
    assert request_from(Request, args, run_dir=Path("r")) == Request(
        Path("c.yaml"),
        Path("r"),
        ["seed=1"],
        "native",
        "lightning",
        Path("e1.yaml"),
        Path("e2.yaml"),
        "burgers/nrmse",
        0.5,
        1.0,
        True,
        True,
        True,
        True,
        Path("b.csv"),
    )
    args = parsed(
        *("evaluate", "--config", "c.yaml", "--checkpoint", "op.ckpt", "--engine", "native"),
        *("--split", "test", "--horizon", "3", "--resolution", "64", "--output-prefix", "out/x"),
        *("--leaderboard", "b.csv", "--label", "try", "--role", "baseline"),
        *("--tag", "lr=3e-4", "--tag", "note=a=b", "--device", "cuda"),
    )
    assert request_from(EvaluationRequest, args) == EvaluationRequest(
        Path("op.ckpt"),
        None,
        "native",
        "test",
        3,
        64,
        Path("out/x"),
        Path("b.csv"),
        "try",
        "baseline",
        [("lr", "3e-4"), ("note", "a=b")],
        "cuda",
    )
    args = parsed(
        *("train", "--config", "c.yaml", "--stage", "operator", "--tune-batch-size"),
        *("--tune-batch-size-mode", "binsearch", "--max-batch-size", "8", "--tune-lr"),
        *("--tune-lr-steps", "5", "--no-apply-tuning"),
    )
    assert request_from(TuningRequest, args) == TuningRequest(
        batch_size=True, batch_size_mode="binsearch", max_batch_size=8, lr=True, lr_steps=5, apply=False
    )
    args = parsed(
        *("predict", "--run-dir", "r", "--input", "i.h5", "--out", "o.h5", "--steps", "4"),
        *(
            "--samples",
            "2",
            "--resolution",
            "64",
            "--task",
            "burgers",
            "--batch-size",
            "8",
            "--device",
            "cuda",
        ),
    )
    assert request_from(PredictionRequest, args) == PredictionRequest(
        Path("r"), Path("i.h5"), Path("o.h5"), 4, 2, 64, "burgers", 8, "cuda"
    )


def test_the_parser_is_built_without_torch():
    code = "import sys; from ups.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
