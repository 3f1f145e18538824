"""``ups evaluate``: parse, then call ``ups.eval.run``."""

from __future__ import annotations

import argparse

from ups.cli.flags import add_flag, add_request_flags, request_from
from ups.config.requests import EvaluationRequest
from ups.config.validate import blocking_file
from ups.errors import UPSError
from ups.eval.leaderboard import check_leaderboard
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
    add_flag(p, "config", help="YAML config file (the run's)")
    add_request_flags(p, EvaluationRequest)
    add_flag(p, "overrides")
    p.set_defaults(run=_evaluate, command="evaluate")


def _evaluate(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.eval.run import checkpoints_of, evaluate, run_folder

    request = request_from(EvaluationRequest, args)
    for flag, value in (("--horizon", request.horizon), ("--resolution", request.resolution)):
        if value is not None and value < 1:
            raise UPSError(f"{flag} {value} must be at least 1.")
    _check_output_paths(request)
    cfg = load_config(args.config, args.overrides)
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


def _check_output_paths(request: EvaluationRequest) -> None:
    """Refuse, before any work, outputs the command could not write at its end."""
    if request.leaderboard is not None:
        check_leaderboard(request.leaderboard)
    prefix = request.output_prefix
    if prefix is not None and (blocker := blocking_file(prefix.parent)) is not None:
        raise UPSError(f"--output-prefix {prefix}: {blocker} is a file, not a folder; choose another path.")
