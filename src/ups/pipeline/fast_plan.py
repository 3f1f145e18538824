"""fast-to-sota's request and its validation: every check that needs no training, before
anything is written (see ``ups.pipeline.fast_to_sota``). ``ups.resolve.resolve_fast_to_sota``
resolves the configs and calls ``validate``."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ups.config import Config, to_dict
from ups.config.requests import Request
from ups.data.latent_pairs import WindowDataset
from ups.data.summary import load_config_tasks
from ups.errors import UPSError
from ups.eval.leaderboard import check_leaderboard
from ups.eval.run import default_horizon
from ups.pipeline.gates import gate_metric
from ups.pipeline.pipeline import planned_stages, resume_action
from ups.pipeline.runner import checked_stage
from ups.runs import RunDir, externally_launched
from ups.stages.dynamics import rollout_start

NOT_TRAINING = ("evaluation", "gates", "logging")  # config sections that do not change the weights


@dataclass
class Plan:
    """What ``validate`` resolved: configs, gate settings, leaderboard; when it began (perf_counter)."""

    cfg: Config
    evals: dict[str, Config]
    metric: str
    deltas: dict[str, float]
    leaderboard: Path
    run: RunDir
    started: float


def training_hash(tree: dict) -> str:
    kept = {key: value for key, value in tree.items() if key not in NOT_TRAINING}
    kept["paths"] = {key: value for key, value in tree.get("paths", {}).items() if key != "runs_dir"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def validate(request: Request, cfg: Config, evals: dict[str, Config], started: float) -> Plan:
    """Every check of the plan that needs no training, on the configs ``resolve_fast_to_sota``
    resolved (the candidate's ``cfg``, the evaluations' ``evals``); writes nothing."""
    if request.eval_engine not in ("lightning", "native"):  # --engine: refused by load_config
        raise UPSError(f"--eval-engine {request.eval_engine}: choose lightning or native.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", request.run_dir.name):
        raise UPSError(
            f"run id '{request.run_dir.name}': use letters, digits, '.', '_' and '-' only, "
            f"starting with a letter or digit."
        )
    tasks = [task.name for task in cfg.data.tasks]
    metric = gate_metric(
        request.improvement_metric or cfg.gates.improvement_metric, tasks, "the improvement metric"
    )
    for name, limit in cfg.gates.ratio_limits.items():
        gate_metric(name, tasks, "gates.ratio_limits key")
        if not limit > 0:
            raise UPSError(f"gates.ratio_limits.{name} = {limit}: a ratio limit must be > 0.")
    deltas = {
        "small": cfg.gates.min_small_delta if request.min_small_delta is None else request.min_small_delta,
        "full": cfg.gates.min_full_delta if request.min_full_delta is None else request.min_full_delta,
    }
    for kind, delta in deltas.items():
        if delta < 0:
            raise UPSError(f"--min-{kind}-delta {delta}: a minimum improvement must be >= 0.")
    leaderboard = Path(request.leaderboard or Path(cfg.paths.runs_dir) / "leaderboard.csv")
    check_leaderboard(leaderboard)
    plan = planned_stages(cfg)
    check_available(metric, plan)
    run = RunDir(request.run_dir)
    if request.force_train and externally_launched():
        raise UPSError(
            "--force-train under torchrun or SLURM: the ranks start together and could read the earlier "
            "training while rank 0 moves it; retrain into a new --run-id instead."
        )
    if not request.force_train:
        refuse_other_training(run, cfg)
    for stage in plan:  # the first stage to train now, through the engines' preflight
        action = "trained" if request.force_train else resume_action(run, stage)
        if action != "already done":
            checked_stage(cfg, stage, run, engine=request.engine, resume=action == "resumed")
            break
    check_evaluations(evals, load_config_tasks(cfg))
    return Plan(cfg, evals, metric, deltas, leaderboard, run, started)


def check_available(metric: str, plan: list[str]) -> None:
    """The improvement metric must be one the planned stages produce."""
    name = metric.rpartition("/")[2]
    needs = (
        ("consistency_distill", "diff_residual")
        if name.startswith("corrected_") or name == "crps"
        else ("steady_prior",)
        if name.startswith("steady_")
        else ("operator",)
    )
    if not set(needs) & set(plan):
        raise UPSError(
            f"the improvement metric '{metric}' comes from the {' or '.join(needs)} stage, which this "
            f"config does not train (stages.<stage>.epochs or its tasks); choose another metric."
        )


def check_evaluations(evals: dict[str, Config], tasks: list) -> None:
    """Each evaluation's split has trajectories and they are long enough for its horizon. The
    evaluation configs differ from the candidate's in ``evaluation`` only, so ``tasks`` (the
    candidate's) serve both."""
    transient = [task for task in tasks if task.info.kind == "transient"]
    if not transient:
        return
    for kind, cfg in evals.items():
        e, stride = cfg.evaluation, cfg.training.time_stride
        horizon = e.horizon or default_horizon(cfg, transient)
        windows = WindowDataset(
            transient,
            e.split,
            horizon,
            stride,
            start=rollout_start(cfg),
            horizon_name=f"the {kind} evaluation's evaluation.horizon",
        )
        if len(windows) == 0:
            raise UPSError(
                f"the {kind} evaluation's split '{e.split}' has no trajectories; set data.split."
                f"{e.split} > 0 or choose another split in its evaluation config."
            )


def refuse_other_training(run: RunDir, cfg: Config) -> None:
    """Reusing checkpoints trained with another training config would gate the wrong model."""
    resolved = run.resolved_config_path
    if not any(entry.get("state") == "done" for entry in run.status().values()) or not resolved.is_file():
        return
    import yaml

    if training_hash(yaml.safe_load(resolved.read_text())) != training_hash(to_dict(cfg)):
        raise UPSError(
            f"run folder {run.root} holds stages trained with another training config "
            f"({resolved} differs outside evaluation/gates/logging); retrain with --force-train, "
            f"or use a new --run-id."
        )
