"""``ups evaluate``: parse, then call ``ups.eval.run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ups.config.validate import blocking_file
from ups.errors import UPSError
from ups.resolve import load_config
from ups.tracking import tracking


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate trained stages on a split: metrics, report, leaderboard",
        description="Roll the operator out from true initial conditions of the split (the corrector "
        "beside it when the run has one; the steady prior on steady tasks), compute "
        "PDEBench's metrics on decoded fields, and write <prefix>.json, <prefix>.html "
        "and, with --leaderboard, a CSV row (+ its HTML twin).",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config file (the run's)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="one checkpoint (operator, corrector or steady prior)")
    which.add_argument(
        "--run-dir", type=Path, help="a run folder: the best checkpoint of every trained stage"
    )
    p.add_argument(
        "--engine", choices=["lightning", "native"], default="lightning", help="default: lightning"
    )
    p.add_argument("--split", choices=["val", "test"], help="default: evaluation.split")
    p.add_argument(
        "--horizon", type=int, help="rollout steps (default: evaluation.horizon, else the longest)"
    )
    p.add_argument(
        "--resolution",
        type=int,
        help="zero-shot: decode at N points per axis and compare with the "
        "data at N (down-sampled, or built-in data regenerated at N)",
    )
    p.add_argument("--output-prefix", type=Path, help="default: <run>/evaluation/<split>-h<H>[-r<N>]")
    p.add_argument("--leaderboard", type=Path, help="append a row to this CSV (and its .html twin)")
    p.add_argument("--label", help="the row's label (default: the run folder's name)")
    p.add_argument(
        "--role",
        choices=["baseline", "champion", "full_eval", "small_eval"],
        help="the row's role for fast-to-sota's gates (e.g. baseline: a reference to beat)",
    )
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra columns (repeatable)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    p.set_defaults(run=_evaluate, command="evaluate")


def _evaluate(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.eval.run import EvaluationRequest, checkpoints_of, evaluate, run_folder

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UPSError(f"--tag '{item}' is not of the form KEY=VALUE.")
        tags[key] = value
    for flag, value in (("--horizon", args.horizon), ("--resolution", args.resolution)):
        if value is not None and value < 1:
            raise UPSError(f"{flag} {value} must be at least 1.")
    _check_output_paths(args)
    cfg = load_config(args.config, args.overrides)
    request = EvaluationRequest(
        checkpoint=args.checkpoint,
        run_dir=args.run_dir,
        engine=args.engine,
        split=args.split,
        horizon=args.horizon,
        resolution=args.resolution,
        output_prefix=args.output_prefix,
        leaderboard=args.leaderboard,
        label=args.label,
        tags=tags,
        device=args.device,
        role=args.role or "",
    )
    with tracking(cfg, run_folder(request, checkpoints_of(request))):  # the run's W&B run, with logging.wandb
        result, written = evaluate(cfg, request)
    metrics = result["metrics"]
    shown = [
        k for k in ("nrmse", "one_step_nrmse", "corrected_nrmse", "crps", "steady_nrmse") if k in metrics
    ]
    print(
        f"{result['split']} split, horizon {result['horizon']}: "
        + ", ".join(f"{k} {metrics[k]:.4g}" for k in shown)
    )
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs the command could not write at its end."""

    if args.leaderboard is not None and args.leaderboard.is_dir():
        raise UPSError(f"--leaderboard {args.leaderboard} is a folder; give the path of a CSV file.")
    for flag, path in (("--output-prefix", args.output_prefix), ("--leaderboard", args.leaderboard)):
        blocker = blocking_file(path.parent) if path is not None else None
        if blocker is not None:
            raise UPSError(f"{flag} {path}: {blocker} is a file, not a folder; choose another path.")
