"""Configuration: YAML files with ``include:``, dotted overrides, a typed schema.

``read_config`` reads, merges, overrides and validates the keys (types, bounds, rules between
keys, output folders), collecting every problem. ``ups.resolve.load_config``, the entry point,
adds the checks that need the layers above (data files, engine, tuner, data windows) and raises
one ``ConfigError`` listing every problem, before any work starts. The sections are frozen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ups.config.load import apply_overrides, merge_into, read_config_tree
from ups.config.migrate import refuse_moved_keys
from ups.config.schema import STAGE_NAMES, Config, TaskConfig
from ups.config.validate import (
    Problems,
    build_config,
    check_consistency,
    max_time_seconds,
    string_keys,
    task_path,
)

__all__ = ["STAGE_NAMES", "Config", "TaskConfig", "max_time_seconds", "task_path"]  # from the modules below


def read_config(
    path: str | Path | None,
    overrides: list[str] = (),
    *,
    layers: Sequence[str | Path] = (),
    check_files: bool = True,
) -> tuple[Config | None, Problems]:
    """Read ``path`` (None: the schema defaults), apply ``overrides``, merge the YAML files
    ``layers`` on top (in order; fast-to-sota's evaluation configs) and validate the keys: the
    config (None when a key could not be read) and the problems found.

    With ``check_files`` no file may stand where ``paths.runs_dir`` or
    ``training.latent_cache_dir`` is to be a folder.
    """
    # The tree starts from the schema defaults so that overrides can index default lists.
    tree = to_dict(Config())
    sources: dict = {}
    if path is not None:
        merge_into(tree, sources, *read_config_tree(path))
    apply_overrides(tree, sources, list(overrides), string_keys())
    for layer in layers:
        merge_into(tree, sources, *read_config_tree(layer))
    problems = Problems(sources)
    refuse_moved_keys(tree, problems, path)
    cfg = build_config(tree, problems)
    if cfg is not None:
        check_consistency(cfg, problems, check_files=check_files)
    return cfg, problems


def with_keys(cfg, changes: dict[str, Any]):
    """``cfg`` (a config or one of its sections) with the dotted keys of ``changes`` set: a new
    one, as the config is frozen."""
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        cfg = dataclasses.replace(
            cfg, **{head: with_keys(getattr(cfg, head), {rest: value}) if rest else value}
        )
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
