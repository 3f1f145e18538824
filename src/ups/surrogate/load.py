"""``load_surrogate``: a run folder (or a checkpoint folder or file) to a ``Surrogate``.

The checkpoints are read through ``ups.checkpoint.load_checkpoint`` (sealed, verified, weights
only) and found through ``RunDir.best_checkpoint`` (relocatable); the model is rebuilt from the
run's resolved config and its data files (their grids, channels and parameters; the carried
autoencoder error is measured on their train split). ``ups evaluate`` loads through the same
``load_stages``, so the surrogate a user calls is the one evaluated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ups.checkpoint import load_checkpoint
from ups.config import Config, read_config, with_keys
from ups.data.summary import load_config_tasks
from ups.errors import UPSError
from ups.runs import RunDir
from ups.stages import stage_from_checkpoint
from ups.surrogate.api import Surrogate

# The stages a surrogate is made of; the transient ones furthest first (a corrector's checkpoint
# holds its operator), then the steady prior.
CORRECTORS = ("consistency_distill", "diff_residual")  # the faster one first
SURROGATE_STAGES = (*CORRECTORS, "operator", "steady_prior")


def load_surrogate(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    data_dir: str | Path | None = None,
    config: str | Path | Config | None = None,
) -> Surrogate:
    """The trained surrogate of ``path``: a run folder (the best checkpoint of every finished
    operator, corrector and steady_prior stage), a stage's checkpoint folder
    (``<run>/checkpoints/<stage>``: its best checkpoint) or one checkpoint file.

    Args:
        device: where the weights go (default: the CPU).
        data_dir: where the run's data files are, when not at the config's ``paths.data_dir``.
        config: the config it was trained with, when ``path`` is not inside its run folder
            (default: the run's ``config.resolved.yaml``).
    """
    run, paths = checkpoints_at(Path(path))
    cfg = run_config(config, run, data_dir)
    surrogate = Surrogate(cfg, load_stages(cfg, paths), paths)
    if surrogate.dynamics is not None and cfg.stages.operator.carry_error:
        with torch.no_grad():  # measured once, outside inference mode, so gradients can flow through it
            surrogate.dynamics.error_carry()
    return surrogate.to(device or "cpu")


def checkpoints_at(path: Path) -> tuple[RunDir | None, dict[str, Path]]:
    """(the run folder, stage -> checkpoint) of what ``load_surrogate`` was given."""
    if path.is_file():
        stage = load_checkpoint(path)["ups"]["stage"]
        root = path.resolve().parents[2]
        return (RunDir(root) if RunDir(root).resolved_config_path.is_file() else None), {stage: path}
    if not path.is_dir():
        raise UPSError(f"{path} does not exist; give a run folder, a checkpoint folder or a checkpoint file.")
    if path.parent.name == "checkpoints":
        run = RunDir(path.parent.parent)
        return run, {path.name: run.best_checkpoint(path.name)}
    run = RunDir(path.parent if path.name == "checkpoints" else path)
    if not run.status_path.is_file():
        raise UPSError(
            f"{path} is not a run folder (no {run.status_path.name}); give the folder `ups pipeline` or "
            f"`ups train` wrote, one of its checkpoints/<stage> folders, or a checkpoint file."
        )
    return run, run_checkpoints(run)


def run_checkpoints(run: RunDir) -> dict[str, Path]:
    """Stage -> the best checkpoint of every finished operator, corrector and steady_prior stage."""
    status = run.status()
    found = {s: run.best_checkpoint(s) for s in SURROGATE_STAGES if status.get(s, {}).get("state") == "done"}
    if not found:
        raise UPSError(
            f"{run.root} has no finished operator, corrector or steady_prior stage; train them first "
            f"(`ups pipeline --config C --run-dir {run.root}`)."
        )
    return found


def run_config(config: str | Path | Config | None, run: RunDir | None, data_dir) -> Config:
    """The config the surrogate is rebuilt with: ``config``, else the run's resolved one, with
    ``data_dir`` replacing ``paths.data_dir``."""
    if isinstance(config, Config):
        return config if data_dir is None else with_keys(config, {"paths.data_dir": str(data_dir)})
    if config is None:
        if run is None or not run.resolved_config_path.is_file():
            raise UPSError(
                "this checkpoint is not inside its run folder, so its config is unknown; give the config it "
                "was trained with (config=..., e.g. <run>/config.resolved.yaml)."
            )
        config = run.resolved_config_path
    cfg, problems = read_config(config, [] if data_dir is None else [f"paths.data_dir={data_dir}"])
    problems.raise_if_any(config)  # the run's config was resolved when it trained; its keys are checked again
    return cfg


def load_stages(cfg: Config, paths: dict[str, Path]) -> dict:
    """Stage name -> the stage rebuilt from its checkpoint (``stage_from_checkpoint``), refusing
    stages that do not fit together: a corrector trained on another operator than the run's, or
    checkpoints whose normalisers differ from the data files' (the data changed since training)."""
    tasks = load_config_tasks(cfg)
    checkpoints = {name: load_checkpoint(path) for name, path in paths.items()}
    for name, checkpoint in checkpoints.items():
        check_normalizers(checkpoint, tasks, paths[name])
    stages = {name: stage_from_checkpoint(cfg, tasks, ckpt) for name, ckpt in checkpoints.items()}
    transient = [name for name in SURROGATE_STAGES[:3] if name in stages]
    if not transient and "steady_prior" not in stages:
        raise UPSError(
            "nothing to use: the checkpoint is not of operator, diff_residual, consistency_distill or "
            "steady_prior."
        )
    for other in transient[1:]:
        refuse_another_operator(stages[transient[0]].model, stages[other].model, transient[0], other, paths)
    return stages


def check_normalizers(checkpoint: dict, tasks: list, path: Path) -> None:
    """Refuse a checkpoint whose stored normalisers are not those of the data files now."""
    stored = checkpoint.get("ups", {}).get("metadata", {}).get("normalizers", {})
    for task in tasks:
        saved, now = stored.get(task.name), task.normalizer.to_dict()
        if saved is None or saved.get("mean") is None or now["mean"] is None:
            continue
        same = all(np.allclose(saved[k], now[k], rtol=1e-5) for k in ("mean", "std"))
        if not same:
            raise UPSError(
                f"{path} was trained on other data for task '{task.name}' than {task.info.path} holds "
                f"now (normaliser mean {saved['mean']}, std {saved['std']} then; mean {now['mean']}, std "
                f"{now['std']} now); point paths.data_dir (data_dir=) at the files it was trained on."
            )


def refuse_another_operator(model: nn.Module, other: nn.Module, name: str, other_name: str, paths) -> None:
    """Refuse a corrector whose frozen encoder, decoder or operator differs from the run's ``other_name``
    checkpoint: it would be used with an operator it was not trained on."""
    for part in ("encoder", "decoder", "operator"):
        ours, theirs = getattr(model, part).state_dict(), getattr(other, part).state_dict()
        if any(not torch.equal(ours[key], theirs[key]) for key in ours):
            raise UPSError(
                f"the {name} checkpoint ({paths[name]}) was trained on another {part} than the {other_name} "
                f"checkpoint ({paths[other_name]}); train {name} again on this {other_name}, or evaluate "
                f"one checkpoint with --checkpoint."
            )
