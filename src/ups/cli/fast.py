"""``ups fast-to-sota``: parse, then call ``ups.pipeline.fast_to_sota``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ups.cli.flags import add_flag, add_request_flags, one_writer, overrides_of, request_from
from ups.cli.train import refuse_requeue_without_run_folder, stage_failed
from ups.config.requests import Request
from ups.errors import UPSError
from ups.resolve import load_config, resolve_fast_to_sota
from ups.runs import RunDir, shared_run_dir


def add_fast_to_sota(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fast-to-sota",
        help="train, evaluate small, gate, evaluate full, gate, promote",
        description="Validate the config and data, train every enabled stage (reusing checkpoints "
        "already in the run folder), evaluate on the val split with cheaper settings, gate "
        "against the leaderboard's champion, evaluate on the test split, gate again and "
        "promote the candidate to champion when it passes. Writes <run>/summary.json after "
        "every step. Exit 0 when every step ran (promoted or not: see the summary), 1 when "
        "a stage fails while training, 2 on bad input.",
    )
    add_request_flags(p, Request)
    p.add_argument(
        "--run-id",
        help="run folder <paths.runs_dir>/<ID>; an existing one is continued "
        "(default: <date>-<time>-<6 hex digits>)",
    )
    add_flag(p, "devices")
    add_flag(p, "break_lock")
    p.set_defaults(run=_fast_to_sota, command="fast-to-sota")


def _fast_to_sota(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.pipeline.fast_to_sota import fast_to_sota
    from ups.pipeline.pipeline import StageFailed

    overrides = overrides_of(args)
    cfg = load_config(args.config, overrides)
    if args.run_id is not None and ("/" in args.run_id or args.run_id in ("", ".", "..")):
        raise UPSError(
            f"--run-id '{args.run_id}' must be a plain folder name (it goes under {cfg.paths.runs_dir}/)."
        )
    refuse_requeue_without_run_folder(cfg, args.run_id is not None, "--run-id")
    wanted = Path(cfg.paths.runs_dir) / args.run_id if args.run_id else None
    with (
        shared_run_dir(wanted, cfg.paths.runs_dir, flag="--run-id") as run_dir,
        one_writer(args, RunDir(run_dir).lock_path, "run folder"),
    ):
        request = request_from(Request, args, run_dir=Path(run_dir), overrides=overrides)
        try:
            summary = fast_to_sota(request, resolve_fast_to_sota(request))
        except StageFailed as exc:
            return stage_failed(
                "fast-to-sota",
                exc,
                f"the summary says where it stopped: {RunDir(run_dir).summary_path} "
                f"(run the same command again to continue)",
            )
    if summary is None:  # another rank of a multi-device run
        return 0
    for line in report(summary.to_json()):
        print(line)
    print(f"summary: {summary.path}")
    return 0


def report(data: dict) -> list[str]:
    """The stages' figures, the steps with their outcome and time, the gates' messages, the
    evaluation files, the promotion."""
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.pipeline.pipeline import stage_table
    from ups.pipeline.runner import StageRun

    run = RunDir(data["run_dir"])
    trained = data["steps"]["train"].get("stages", {})
    lines = (
        stage_table([StageRun(stage, run, None, action) for stage, action in trained.items()])
        if trained
        else []
    )
    for name, step in data["steps"].items():
        took = f" ({step['duration_s']:.1f} s)" if step.get("duration_s") is not None else ""
        why = f": {step['reason']}" if step.get("reason") else ""
        lines.append(f"{name:11s} {step['status']}{took}{why}")
    for decision in data["gates"].values():
        lines += [f"  {message}" for message in decision["messages"]]
    for kind in ("small", "full"):
        step = data["steps"][f"{kind}_eval"]
        lines += [f"{kind} evaluation {key}: {step[key]}" for key in ("json", "report") if step.get(key)]
    if (data.get("tracking") or {}).get("wandb"):
        lines.append(f"W&B run: {data['tracking']['wandb']['dir']}")
    lines.append(
        f"promoted: {'yes' if data['promoted'] else 'no'}; champion: {data['champion_run_id'] or 'none'}"
    )
    return lines
