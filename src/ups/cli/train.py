"""``ups train`` and ``ups pipeline``: parse, then call ``ups.pipeline``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ups import deadline
from ups.cli.flags import add_flag, add_request_flags, one_writer, overrides_of, request_from
from ups.config import STAGE_NAMES
from ups.config.requests import TuningRequest
from ups.config.validate import blocking_file
from ups.errors import UPSError
from ups.resolve import load_config
from ups.runs import RunDir, shared_run_dir
from ups.tracking import tracking


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--engine, --devices, --run-dir and --break-lock, as train and pipeline take them."""
    add_flag(p, "engine")
    add_flag(p, "devices")
    add_flag(p, "run_dir", help="run folder (default: <paths.runs_dir>/<date>-<time>-<6 hex digits>)")
    add_flag(p, "break_lock")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one stage with Lightning (or the native loop)",
        description="Train one stage of CONFIG into a run folder: resolved config, stage_status.json, "
        "checkpoints/<stage>/ (best on val/nrmse and last), logs/<stage>/metrics.csv.",
    )
    add_flag(p, "config")
    p.add_argument(
        "--stage", required=True, choices=STAGE_NAMES, metavar="STAGE", help=", ".join(STAGE_NAMES)
    )
    _add_run_arguments(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue from the stage's last checkpoint in --run-dir"
    )
    again.add_argument(
        "--force",
        action="store_true",
        help="train a stage that is done in --run-dir again; its checkpoints and logs are moved to "
        "<run>/superseded/<time>/",
    )
    p.add_argument("--from-run", type=Path, help="take upstream checkpoints from this run folder")
    add_request_flags(
        p.add_argument_group("tuning (Lightning's Tuner, before the fit; results in <run>/tuning.json)"),
        TuningRequest,
    )
    add_flag(p, "overrides")
    p.set_defaults(run=_train, command="train")


def _train(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.engines.tuning import tuned_overrides
    from ups.pipeline.runner import is_rank_zero, train_stage, tune_stage

    tuning = request_from(TuningRequest, args)
    cfg = _training_config(args, "the run folder whose stage should continue", tuning=tuning)
    if tuning.wanted and args.resume:
        raise UPSError(
            "--tune-* with --resume: a resumed stage keeps the batch size and learning rate it started "
            "with; tune when the stage starts."
        )
    if args.resume:  # a stage tuned when it started resumes with its tuned values
        tuned = tuned_overrides(Path(args.run_dir), args.stage)
        if tuned:
            cfg = _training_config(args, "", extra=tuned)
    with (
        shared_run_dir(args.run_dir, cfg.paths.runs_dir) as run_dir,
        one_writer(args, RunDir(run_dir).lock_path, "run folder"),
    ):
        if tuning.wanted:
            tuned = tune_stage(
                cfg, args.stage, run_dir, tuning, engine=args.engine, force=args.force, from_run=args.from_run
            )
            if tuned:
                cfg = _training_config(args, "", extra=tuned)
        with tracking(cfg, run_dir, rank_zero=is_rank_zero()):
            done = train_stage(
                cfg,
                args.stage,
                run_dir,
                engine=args.engine,
                resume=args.resume,
                force=args.force,
                from_run=args.from_run,
                deadline=_deadline(cfg, args),
            )
    if not is_rank_zero():  # the other ranks of a multi-device run print nothing
        return 0
    for line in _train_report(done):
        print(line)
    print(f"run: {done.run.root}")
    return 0


def _training_config(args: argparse.Namespace, resume_needs: str, extra: list[str] = (), **checks):
    """The config of ``train`` and ``pipeline``, with ``--devices`` as training.devices (and
    ``extra`` overrides last: the tuned values); ``checks``: ``load_config``'s ``tuning`` or ``stages``."""
    cfg = load_config(args.config, [*overrides_of(args), *extra], engine=args.engine, **checks)
    refuse_requeue_without_run_folder(cfg, bool(args.run_dir), "--run-dir")
    if args.resume and not args.run_dir:
        raise UPSError(f"--resume needs --run-dir: {resume_needs}.")
    if args.resume and not RunDir(args.run_dir).status_path.is_file():
        raise UPSError(
            f"--resume: --run-dir {args.run_dir} is not a run folder (it has no stage_status.json); "
            f"check the path, or drop --resume to start a new run there."
        )
    blocker = blocking_file(args.run_dir) if args.run_dir else None
    if blocker is not None:
        raise UPSError(
            f"--run-dir {args.run_dir}: {blocker} is a file, so the run folder cannot be made there; "
            f"choose another --run-dir."
        )
    return cfg


def refuse_requeue_without_run_folder(cfg, named: bool, flag: str) -> None:
    """``training.slurm_requeue``: the requeued job runs its command again, which must therefore
    name its run folder, or it would start a new run (``ups.engines.slurm``)."""
    if cfg.training.slurm_requeue and not named:
        raise UPSError(
            f"training.slurm_requeue=true needs {flag}: a requeued job runs the same command again and "
            f"must find the same run folder; add {flag} to the command."
        )


def requeued(cfg, run_dir: Path) -> bool:
    """A job SLURM requeued (``SLURM_RESTART_COUNT`` > 0) under ``training.slurm_requeue``: its
    ``ups pipeline`` continues the run folder it started, as ``--resume`` would."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return cfg.training.slurm_requeue and restarts > 0 and RunDir(run_dir).status_path.is_file()


def _deadline(cfg, args: argparse.Namespace):
    """``training.time_budget`` seconds after the command started, or None."""
    budget = cfg.training.time_budget
    return None if budget is None else deadline.Deadline.after(budget, start=args.started)


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="train every enabled stage in order into one run folder",
        description=f"Train the stages of CONFIG with stages.<stage>.epochs > 0 in order "
        f"({' -> '.join(STAGE_NAMES)}; steady_prior only with a steady task) into one "
        f"run folder, each on its upstream stages' best checkpoints from that run. "
        f"Logged steps run on across stages; with logging.tensorboard all stages "
        f"write one TensorBoard run, logs/tensorboard/. Ends with a table of the "
        f"stages' figures. Exit 1 when a stage fails while training (later stages "
        f"are not started; continue with --resume), 2 on bad input.",
    )
    add_flag(p, "config")
    p.add_argument(
        "--stages", metavar="A,B,…", help="only these stages (comma-separated), still in pipeline order"
    )
    _add_run_arguments(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir: keep done stages, resume a half-done one from its last.ckpt",
    )
    add_flag(p, "overrides")
    p.set_defaults(run=_pipeline, command="pipeline")


def _pipeline(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.pipeline.pipeline import StageFailed, run_pipeline, stage_table
    from ups.pipeline.runner import is_rank_zero

    stages = [name.strip() for name in args.stages.split(",") if name.strip()] if args.stages else None
    cfg = _training_config(
        args, "the run folder to continue", stages=STAGE_NAMES if stages is None else stages
    )
    with (
        shared_run_dir(args.run_dir, cfg.paths.runs_dir) as run_dir,
        one_writer(args, RunDir(run_dir).lock_path, "run folder"),
        tracking(cfg, run_dir, rank_zero=is_rank_zero()),
    ):
        try:
            done = run_pipeline(
                cfg,
                run_dir,
                stages=stages,
                engine=args.engine,
                resume=args.resume or requeued(cfg, run_dir),
                deadline=_deadline(cfg, args),
            )
        except StageFailed as exc:
            return stage_failed(
                "pipeline", exc, f"later stages were not started (resume: {_resume_command(args, run_dir)})"
            )
        if not is_rank_zero():  # the other ranks of a multi-device run print nothing
            return 0
        for line in stage_table(done):
            print(line)
        if cfg.evaluation.after_pipeline:
            # lazy: torch, Lightning and h5py load only when the command runs, not for --help
            from ups.eval.run import EvaluationRequest, evaluate

            _, written = evaluate(cfg, EvaluationRequest(run_dir=run_dir, engine=args.engine))
            for kind, path in written.items():
                print(f"evaluation {kind}: {path}")
    print(f"run: {run_dir}")
    return 0


def stage_failed(command: str, exc, then: str) -> int:
    """Exit code 1, after one line naming the stage that failed while training (``exc``, a
    ``StageFailed``), its error's first line and ``then``: how to go on."""
    error = str(exc.error).strip().splitlines()
    why = f"{type(exc.error).__name__}: {error[0] if error else ''}"
    print(f"ups {command}: stage {exc.stage} failed: {why}; {then}", file=sys.stderr)
    return 1


def _resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    words = ["ups", "pipeline", "--config", str(args.config), "--run-dir", str(run_dir)]
    for flag, value in (
        ("--stages", args.stages),
        ("--devices", args.devices),
        ("--engine", None if args.engine == "lightning" else args.engine),
    ):
        if value:
            words += [flag, str(value)]
    return shlex.join([*words, "--resume", *args.overrides])


def _train_report(done) -> list[str]:
    result = done.result
    if result is None:
        if done.action != "skipped":
            return [f"{done.stage}: {done.action}: {done.run.status().get(done.stage, {}).get('reason', '')}"]
        return [f"{done.stage}: skipped (stages.{done.stage}.epochs is 0)"]
    lines = [
        f"{done.stage}: {result.epochs_run} epoch(s), {result.global_step} optimizer steps"
        + (", stopped early" if result.stopped_early else "")
    ]
    if not result.val_history:
        return lines + [f"no validation: last checkpoint -> {result.last_path}"]
    best = min(result.val_history, key=lambda row: row["val/nrmse"])
    lines.append(f"best val/nrmse {best['val/nrmse']:.4g} (epoch {best['epoch']}) -> {result.best_path}")
    if "val/persistence_nrmse" in best:
        model, persistence = best["val/nrmse"], best["val/persistence_nrmse"]
        verdict = (
            f"{persistence / model:.1f}x lower"
            if model <= persistence
            else f"{model / persistence:.1f}x higher: worse than predicting no change"
        )
        lines.append(
            f"decoded one-step val nRMSE {model:.4g} vs persistence (u_t+1 = u_t) "
            f"{persistence:.4g} on the same pairs: {verdict}"
        )
    if "val/rollout_nrmse" in best:
        lines.append(
            f"rollout val nRMSE (mean over the stages.operator.rollout_horizon steps): "
            f"{best['val/rollout_nrmse']:.4g}"
        )
    return lines
