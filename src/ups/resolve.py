"""The configuration as a command uses it: read, checked as a whole, or refused.

``load_config`` is the one entry point. It reads, merges, overrides and validates the keys
(``ups.config.read_config``), checks that the data files exist (naming the command that writes a
missing built-in one) and, for a training command (``engine`` given), what that engine can run
on this machine; every problem is reported together in one ``ConfigError``, before any work
starts and before anything is written. A training command's config then goes through the
stability guards (``ups.engines.guards``) here, once, so the stage, the engine's checks, the
engine and ``config.resolved.yaml`` all see the config that trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ups.config import Config, read_config, task_path
from ups.config.engines import engine_problems, refuse_unknown_engine
from ups.config.validate import Problems
from ups.errors import UPSError
from ups.tracking import check_tracking


def load_config(
    path: str | Path | None,
    overrides: list[str] = (),
    *,
    layers: Sequence[str | Path] = (),
    check_files: bool = True,
    engine: str | None = None,
) -> Config:
    """``read_config``'s config, or one ``ConfigError`` with every problem. With ``check_files``
    the data files named by the tasks must exist, and no file may stand where
    ``paths.runs_dir`` or ``training.latent_cache_dir`` is to be a folder. With ``engine`` (a
    training command) the engine's rules apply, then the guards."""
    if engine is not None:
        refuse_unknown_engine(engine)
    cfg, problems = read_config(path, overrides, layers=layers, check_files=check_files)
    if cfg is not None:
        if check_files:
            check_task_files(cfg, problems)
        engine_problems(cfg, engine, problems)
        if engine is not None:
            try:
                check_tracking(cfg)
            except UPSError as exc:
                problems.add(("logging", "wandb"), str(exc))
    problems.raise_if_any(path)
    if engine is None:
        return cfg
    # lazy: the guards ask torch about this machine; only a training command needs them
    from ups.engines.guards import apply_guards

    return apply_guards(cfg)


def check_task_files(cfg: Config, problems: Problems) -> None:
    for i, task in enumerate(cfg.data.tasks):
        path = task_path(cfg, task.path) if task.path else None
        if path is not None and not path.is_file():
            # lazy: the data layer loads torch, h5py and the generators; only a missing file needs it
            from ups.data.tasks import missing_file_hint

            problems.add(
                ("data", "tasks", i, "path"), f"data file {path} does not exist. {missing_file_hint(path)}"
            )
