"""The configuration as a command uses it: read, checked as a whole, or refused; then frozen.

``load_config`` is the one entry point: the keys (``ups.config.read_config``), the data files,
and for a training command the engine's rules on this machine, W&B, the Tuner's limits and
whether the data fits the stages. Every problem is reported together in one ``ConfigError``
before any work starts; the stability guards (``ups.engines.guards``) then rewrite a training
command's config, once, so everything downstream, ``config.resolved.yaml`` included, sees the
config that trains. ``resolve_fast_to_sota`` adds fast-to-sota's evaluations and plan.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ups.config import STAGE_NAMES, Config, read_config, task_path
from ups.config.engines import engine_problems, refuse_unknown_engine
from ups.config.load import read_config_tree
from ups.config.validate import Problems
from ups.errors import UPSError
from ups.tracking import check_tracking

EVAL_DEFAULTS = {
    "small": ["evaluation.split=val", "evaluation.report=false"],
    "full": ["evaluation.split=test"],
}


def load_config(
    path: str | Path | None,
    overrides: list[str] = (),
    *,
    layers: Sequence[str | Path] = (),
    check_files: bool = True,
    engine: str | None = None,
    tuning=None,
    stages: Sequence[str] | None = None,
) -> Config:
    """``read_config``'s config, or one ``ConfigError`` with every problem. ``check_files``: the
    tasks' files exist. ``engine`` (a training command): its rules, ``tuning``'s (a
    ``TuningRequest``), then the guards. ``stages`` (those asked for): ``data_problems``."""
    if engine is not None:
        refuse_unknown_engine(engine)
    cfg, problems = read_config(path, overrides, layers=layers, check_files=check_files)
    if tuning is not None:
        tuning_problems(tuning, cfg, engine, problems)
    if cfg is not None:
        files_found = not check_files or check_task_files(cfg, problems)
        engine_problems(cfg, engine, problems)
        if engine is not None:
            try:
                check_tracking(cfg)
            except UPSError as exc:
                problems.add(("logging", "wandb"), str(exc))
        if stages is not None and files_found:
            data_problems(cfg, stages, problems)
    problems.raise_if_any(path)
    if engine is None:
        return cfg
    # lazy: the guards ask torch about this machine; only a training command needs them
    from ups.engines.guards import apply_guards

    return apply_guards(cfg)


def check_task_files(cfg: Config, problems: Problems) -> bool:
    """Whether every task's file exists; a problem for each that does not."""
    found = True
    for i, task in enumerate(cfg.data.tasks):
        path = task_path(cfg, task.path) if task.path else None
        if path is not None and not path.is_file():
            # lazy: the data layer loads torch, h5py and the generators; only a missing file needs it
            from ups.data.tasks import missing_file_hint

            problems.add(
                ("data", "tasks", i, "path"), f"data file {path} does not exist. {missing_file_hint(path)}"
            )
            found = False
    return found


def tuning_problems(request, cfg: Config | None, engine: str | None, problems: Problems) -> None:
    """What Lightning's Tuner cannot do (``ups train --tune-*``)."""
    if not request.wanted:
        return
    if engine != "lightning":
        problems.items.append(
            "--tune-batch-size and --tune-lr use Lightning's Tuner; train with --engine lightning "
            "(then train with the native engine on the tuned values if you like)."
        )
    devices = cfg.training.devices * cfg.training.num_nodes if cfg is not None else 1
    if request.batch_size and devices > 1:
        problems.items.append(
            f"--tune-batch-size with {devices} devices: Lightning's batch-size finder works on one "
            f"device only; tune on one device first (--devices 1), then train on {devices} with "
            f"the batch size it finds (the per-device batch size: stages.<stage>.batch_size)."
        )
    if request.batch_size_mode not in ("power", "binsearch"):
        problems.items.append(f"--tune-batch-size-mode {request.batch_size_mode}: choose power or binsearch.")
    if request.max_batch_size < 1 or request.lr_steps < 2:
        problems.items.append("--max-batch-size must be >= 1 and --tune-lr-steps >= 2.")


def data_problems(cfg: Config, stages: Sequence[str], problems: Problems) -> None:
    """From the files' metadata: no task is on a 3D grid; when ``stages`` train latent dynamics,
    their windows (``rollout_horizon`` steps of ``time_stride`` frames) fit every trajectory."""
    # lazy: the pipeline and the data layer load torch and h5py; only a command that trains needs them
    from ups.data.summary import config_file_infos
    from ups.pipeline.pipeline import LATENT_DYNAMICS

    infos = config_file_infos(cfg)
    for i, (name, info) in enumerate(infos):
        if len(info.spatial_shape) > 2:
            problems.add(
                ("data", "tasks", i),
                f"task '{name}' ({info.path}) is on a 3D grid {'x'.join(map(str, info.spatial_shape))}: "
                f"UPS reads, splits, normalises and summarises 3D files (`ups data summary`), but its "
                f"encoder and decoder are 1D/2D, so it does not train on them; leave the task out of "
                f"data.tasks.",
            )
    if not any(name in stages and getattr(cfg.stages, name).epochs > 0 for name in LATENT_DYNAMICS):
        return
    horizon, stride = cfg.stages.operator.rollout_horizon, cfg.training.time_stride
    for name, info in infos:
        if info.kind == "transient" and info.n_times <= horizon * stride:
            problems.add(
                ("stages", "operator", "rollout_horizon"),
                f"task '{name}' ({info.path}): {info.n_times} frames per trajectory (after "
                f"data.reduced_resolution_t), but a training window of stages.operator.rollout_horizon="
                f"{horizon} steps of training.time_stride={stride} frames needs "
                f"{horizon * stride + 1}; lower one of them.",
            )


def resolve_fast_to_sota(request):
    """fast-to-sota's ``Plan`` for ``request`` (a ``fast_plan.Request``): the candidate's config
    resolved as a pipeline's, its evaluation configs, and ``fast_plan.validate``'s checks."""
    # lazy: the pipeline loads torch, Lightning and h5py; only fast-to-sota needs it
    from ups.pipeline.fast_plan import validate

    started = time.perf_counter()
    cfg = load_config(request.config, request.overrides, engine=request.engine, stages=STAGE_NAMES)
    evals = {kind: eval_config(request, kind) for kind in ("small", "full")}
    return validate(request, cfg, evals, started)


def eval_config(request, kind: str) -> Config:
    """The candidate's config for the ``kind`` evaluation: ``EVAL_DEFAULTS[kind]``, then that
    kind's evaluation config file, which may set only ``evaluation``."""
    layer = request.small_eval_config if kind == "small" else request.full_eval_config
    if layer is not None:
        tree, _ = read_config_tree(layer)
        other = sorted(set(tree) - {"evaluation"})
        if other:
            raise UPSError(
                f"--{kind}-eval-config {layer}: only an 'evaluation:' section may be set there "
                f"(found {', '.join(other)}); the trained model's settings come from --config."
            )
    return load_config(
        request.config,
        [*request.overrides, *EVAL_DEFAULTS[kind]],
        layers=[layer] if layer is not None else (),
    )
