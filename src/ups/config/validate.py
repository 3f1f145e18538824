"""Turn a merged config tree into the typed ``Config``, collecting every problem at once.

Each problem names the dotted key, where its value was set (file or command line), what was
expected, and, for a misspelt key, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

from ups.config.load import Sources
from ups.config.schema import STAGE_NAMES, Config
from ups.errors import ConfigError


class Problems:
    """Collects schema problems with the origin of each key."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.items: list[str] = []

    def add(self, path: tuple, message: str) -> None:
        origin = self._origin(path)
        where = f" (set in {origin})" if origin else ""
        self.items.append(f"{dotted(path)}{where}: {message}")

    def raise_if_any(self, path: str | Path | None) -> None:
        """One ``ConfigError`` listing every problem of the config read from ``path``, if any."""
        if self.items:
            head = f"{path}: " if path is not None else ""
            count = len(self.items)
            lines = "\n".join(f"  - {p}" for p in self.items)
            plural = "s" if count > 1 else ""
            raise ConfigError(f"{head}{count} problem{plural} in the configuration:\n{lines}")

    def _origin(self, path: tuple) -> str | None:
        if path in self.sources:
            return self.sources[path]
        below = sorted({o for k, o in self.sources.items() if k[: len(path)] == path})
        above = [o for k, o in self.sources.items() if path[: len(k)] == k]
        found = below or above
        return ", ".join(found) if found else None


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<top level>"


def build_config(tree: dict, problems: Problems) -> Config | None:
    """The typed config, or None when ``problems`` holds at least one entry."""
    cfg = _convert(tree, Config, (), {}, problems)
    return None if problems.items else cfg


def _convert(value: Any, tp: Any, path: tuple, meta: dict, problems: Problems) -> Any:
    if dataclasses.is_dataclass(tp):
        return _convert_section(value, tp, path, problems)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path, meta, problems)
    if origin is Literal:
        if value in args:
            return value
        choices = [str(a) for a in args]
        close = [c for c in choices if c.startswith(str(value))] or difflib.get_close_matches(
            str(value), choices, n=1
        )
        hint = f" Did you mean '{close[0]}'?" if close else ""
        problems.add(path, f"expected one of {', '.join(map(str, args))}; got {value!r}.{hint}")
        return None
    if origin is list:
        if not isinstance(value, list):
            problems.add(path, f"expected a list, got {_describe(value)}.")
            return None
        return [_convert(v, args[0], (*path, i), meta, problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a mapping, got {_describe(value)}.")
            return None
        return {str(k): _convert(v, args[1], (*path, k), meta, problems) for k, v in value.items()}
    return _convert_scalar(value, tp, path, meta, problems)


def _convert_section(value: Any, cls: type, path: tuple, problems: Problems) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.add(path, f"expected a section (a mapping of keys), got {_describe(value)}.")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            problems.add((*path, key), f"unknown key.{_suggest(key, path, list(fields))}")
            continue
        kwargs[key] = _convert(item, hints[key], (*path, key), dict(fields[key].metadata), problems)
    return cls(**kwargs)


# PyYAML follows YAML 1.1, where "3e-4" (no dot) is a string; people mean a number.
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _convert_scalar(value: Any, tp: type, path: tuple, meta: dict, problems: Problems) -> Any:
    if tp is float and isinstance(value, str) and _EXPONENT_NUMBER.match(value.strip()):
        value = float(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        problems.add(path, f"expected {_TYPE_WORDS[tp]}, got {_describe(value)}.")
        return None
    if tp is float:
        value = float(value)
    if tp in (int, float):
        _check_bounds(value, path, meta, problems)
    return value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


# (bound, its word, whether a value breaks it)
_BOUNDS = (("min", ">=", operator.lt), ("max", "<=", operator.gt))
_BOUNDS += (("gt", ">", operator.le), ("lt", "<", operator.ge))


def _check_bounds(value: float, path: tuple, meta: dict, problems: Problems) -> None:
    for key, word, breaks in _BOUNDS:
        bound = meta.get(key)
        if bound is not None and breaks(value, bound):
            problems.add(path, f"must be {word} {bound}, got {value}.")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


@cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, path: tuple, siblings: list[str]) -> str:
    close = difflib.get_close_matches(str(key), siblings, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{dotted((*path, close[0]))}'?"
    elsewhere = [dotted(where) for where, _, _ in schema_fields(Config) if where[-1] == key]
    if elsewhere:
        return f" '{key}' belongs in another section: {', '.join(elsewhere)}."
    return f" Valid keys here: {', '.join(siblings)}."


def schema_fields(cls: type, prefix: tuple = ()):
    """Every field of the section ``cls`` and of the sections below, each before those inside
    it: (its key path, the field, its type)."""
    for f in dataclasses.fields(cls):
        path, tp = (*prefix, f.name), field_types(cls)[f.name]
        yield path, f, tp
        if dataclasses.is_dataclass(tp):
            yield from schema_fields(tp, path)


def string_keys(cls: type = Config, prefix: tuple = ()) -> set[tuple]:
    """Keys typed as strings; a list index appears as '*'. Overrides keep their text verbatim."""
    out: set[tuple] = set()
    for path, _, tp in schema_fields(cls, prefix):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and inner == [str]):
            out.add(path)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out |= string_keys(typing.get_args(tp)[0], (*path, "*"))
    return out


def check_consistency(cfg: Config, problems: Problems, *, check_files: bool) -> None:
    """Rules that involve more than one key, or the file system."""
    data = cfg.data
    if not data.tasks:
        problems.add(("data", "tasks"), "no tasks; add at least one entry with a name and a path.")
    seen: set[str] = set()
    for i, task in enumerate(data.tasks):
        where = ("data", "tasks", i)
        if not task.name:
            problems.add((*where, "name"), "missing; every task needs a name (e.g. burgers1d).")
        elif task.name in seen:
            problems.add((*where, "name"), f"task name '{task.name}' is used twice; names must be unique.")
        seen.add(task.name)
        if not task.path:
            problems.add((*where, "path"), "missing data path; give the HDF5 file of this task.")
    if check_files:
        _check_output_folders(cfg, problems)
    total = data.split.train + data.split.val + data.split.test
    if total > 1 + 1e-9:
        problems.add(("data", "split"), f"train + val + test = {total:g} exceeds 1.")
    if data.split.train <= 0:
        problems.add(("data", "split", "train"), "must be > 0: training needs trajectories.")
    if cfg.latent.dim % cfg.stages.operator.heads:
        problems.add(
            ("stages", "operator", "heads"),
            f"{cfg.stages.operator.heads} heads do not divide latent.dim = "
            f"{cfg.latent.dim}; choose heads that divide it.",
        )
    if cfg.training.strategy == "fsdp" and (
        cfg.training.ema_decay or any(getattr(cfg.stages, name).ema_decay for name in STAGE_NAMES)
    ):
        problems.add(
            ("training", "strategy"),
            "EMA of weights is not available under FSDP (each rank holds a "
            "shard); set training.ema_decay and stages.<stage>.ema_decay to null, "
            "or use training.strategy=ddp.",
        )
    if cfg.training.precision == "16-mixed" and cfg.training.accelerator == "cpu":
        problems.add(("training", "precision"), "16-mixed needs a GPU; on CPU use 32-true (or bf16-mixed).")
    if cfg.training.prefetch_factor is not None and cfg.training.num_workers == 0:
        problems.add(
            ("training", "prefetch_factor"),
            "only applies with worker processes; set "
            "training.num_workers > 0 or leave prefetch_factor unset.",
        )
    if cfg.encoder.kernel_size % 2 == 0:
        problems.add(
            ("encoder", "kernel_size"),
            f"must be odd (the convolution keeps the grid size), got {cfg.encoder.kernel_size}.",
        )
    for name, share in cfg.training.time_shares.items():
        if name not in STAGE_NAMES:
            problems.add(
                ("training", "time_shares", name), f"not a stage; the stages are {', '.join(STAGE_NAMES)}."
            )
        elif not isinstance(share, (int, float)) or not share > 0:
            problems.add(("training", "time_shares", name), f"must be a number > 0, got {share!r}.")
    try:
        max_time_seconds(cfg.training.max_time)
    except ValueError as e:
        problems.add(("training", "max_time"), str(e))
    betas = cfg.optimizer.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        problems.add(("optimizer", "betas"), f"expected two numbers in [0, 1), got {betas}.")


def max_time_seconds(text: str | None) -> float | None:
    """``training.max_time`` (``DD:HH:MM:SS``) in seconds; None stays None. ValueError if malformed."""
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{text!r} is not DD:HH:MM:SS; write e.g. 00:12:00:00 for twelve hours.")
    days, hours, minutes, seconds = (int(p) for p in parts)
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _check_output_folders(cfg: Config, problems: Problems) -> None:
    for where, folder in (
        (("paths", "runs_dir"), cfg.paths.runs_dir),
        (("training", "latent_cache_dir"), cfg.training.latent_cache_dir),
    ):
        blocker = blocking_file(folder) if folder else None
        if blocker is not None:
            problems.add(
                where, f"{blocker} is a file, so the folder {folder} cannot be made; choose another folder."
            )


def blocking_file(path: str | Path) -> Path | None:
    """What stops ``path`` from being a folder: ``path`` or the nearest of its parents that
    exists, when that is not a folder; None when it is one (or nothing above exists)."""
    path = Path(path).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def task_path(cfg: Config, path: str) -> Path:
    """A task's file: absolute paths as they are, relative ones under ``paths.data_dir``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(cfg.paths.data_dir).expanduser() / p
