"""The configuration as the commands use it: read, checked as a whole, or refused.

``load_config`` is the one entry point: it reads, merges, overrides and validates
(``ups.config.read_config``), checks that the data files exist (with the command that writes a
missing built-in one), and either returns a typed ``Config`` or raises one ``ConfigError``
listing every problem, before any work starts and before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ups.config import Config, raise_problems, read_config, task_path
from ups.config.validate import Problems


def load_config(
    path: str | Path | None,
    overrides: list[str] = (),
    *,
    layers: Sequence[str | Path] = (),
    check_files: bool = True,
) -> Config:
    """``read_config``'s config, or one ``ConfigError`` with every problem. With ``check_files``
    the data files named by the tasks must exist, and no file may stand where
    ``paths.runs_dir`` or ``training.latent_cache_dir`` is to be a folder."""
    cfg, problems = read_config(path, overrides, layers=layers, check_files=check_files)
    if cfg is not None and check_files:
        check_task_files(cfg, problems)
    raise_problems(path, problems)
    return cfg


def check_task_files(cfg: Config, problems: Problems) -> None:
    for i, task in enumerate(cfg.data.tasks):
        path = task_path(cfg, task.path) if task.path else None
        if path is not None and not path.is_file():
            # lazy: the data layer loads torch, h5py and the generators; only a missing file needs it
            from ups.data.tasks import missing_file_hint

            problems.add(
                ("data", "tasks", i, "path"), f"data file {path} does not exist. {missing_file_hint(path)}"
            )
