"""The built-in dataset generators by name, and ``generate_dataset`` which runs one."""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from ups.data.generate import advection, burgers, cfd, darcy, diffusion_reaction, reaction_diffusion
from ups.data.generate.hdf5_writer import (
    dataset_shapes,
    describe_settings,
    read_settings,
    settings,
    write_atomic,
)
from ups.data.generate.spec import Generator
from ups.errors import UPSError

GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        burgers.GENERATOR,
        advection.GENERATOR,
        reaction_diffusion.GENERATOR,
        darcy.GENERATOR,
        cfd.GENERATOR,
        diffusion_reaction.GENERATOR,
    )
}


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate_dataset`` did: the file, "written" or "up-to-date", dataset shapes."""

    path: Path
    status: str
    task: str
    layout: str
    shapes: dict[str, tuple[int, ...]]


def generate_dataset(
    task: str,
    out_dir: str | Path,
    *,
    n: int | None = None,
    nx: int | None = None,
    nt: int | None = None,
    seed: int = 0,
    params: dict[str, float] | None = None,
    layout: str = "pdebench",
    overwrite: bool = False,
    progress: bool = True,
) -> GenerateResult:
    """Solve ``task`` for n random samples and write them under ``out_dir``.

    Missing n/nx/nt/params take the generator's defaults. If the target file exists with
    the same settings nothing is done ("up-to-date"); with other settings UPSError is
    raised unless ``overwrite``. Raises UPSError for any bad argument.
    """
    generator = _lookup(task)
    if layout not in generator.layouts:
        raise UPSError(_bad_layout_message(generator, layout))
    n = _count("n", generator.default_n if n is None else n, 1)
    nx = _count("nx", generator.default_nx if nx is None else nx, generator.min_nx)
    nt = _time_count(generator, nt)
    seed = _count("seed", seed, 0)
    full_params = _resolve_params(generator, params or {})

    path = _target_path(generator, full_params, layout, out_dir)
    attrs = settings(generator.name, layout, seed, n, nx, nt, full_params)
    if path.exists():
        existing = read_settings(path) if path.is_file() else None
        if existing is None:
            raise UPSError(f"{path} exists and is not a file; choose another --out folder.")
        if existing == attrs:
            return GenerateResult(path, "up-to-date", generator.name, layout, dataset_shapes(path))
        if not overwrite:
            raise UPSError(
                f"{path} already exists with other settings:\n"
                f"  existing:  {describe_settings(existing)}\n"
                f"  requested: {describe_settings(attrs)}\n"
                "Pass overwrite=True (--overwrite) to replace it, or choose another --out folder."
            )

    result = generator.solve(n, nx, nt, seed, full_params, progress)
    write_atomic(path, result, attrs, generator.file_format(layout))
    return GenerateResult(path, "written", generator.name, layout, dataset_shapes(path))


def _lookup(task: str) -> Generator:
    if task in GENERATORS:
        return GENERATORS[task]
    raise UPSError(
        f"unknown task {task!r}.{_did_you_mean(task, GENERATORS)} Valid tasks: {', '.join(GENERATORS)}."
    )


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _bad_layout_message(generator: Generator, layout: str) -> str:
    if generator.steady and layout == "multigroup":
        return (
            f"layout 'multigroup' stores time series; {generator.name} is steady. "
            "Use layout='pdebench' (--layout pdebench)."
        )
    return (
        f"unknown layout {layout!r} for {generator.name}.{_did_you_mean(layout, generator.layouts)} "
        f"Valid layouts: {', '.join(generator.layouts)}."
    )


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UPSError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        what = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
        raise UPSError(f"{name} must be {what}, got {value}.")
    return int(value)


def _time_count(generator: Generator, nt) -> int:
    if generator.steady:
        if nt not in (None, 1):
            raise UPSError(f"{generator.name} is steady and has no time axis; leave nt unset (got nt={nt}).")
        return 1
    nt = _count("nt", generator.default_nt if nt is None else nt, 1)
    if nt < 2:
        raise UPSError(f"nt must be >= 2 for {generator.name} (the stored times include t=0), got {nt}.")
    return nt


def _resolve_params(generator: Generator, params: dict) -> dict[str, float]:
    valid = generator.default_params
    resolved = dict(valid)
    for name, value in params.items():
        if name not in valid:
            raise UPSError(
                f"unknown parameter {name!r} for {generator.name}.{_did_you_mean(name, valid)} "
                f"Valid parameters: {', '.join(f'{k} (default {v})' for k, v in valid.items())}."
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or (name in generator.positive_params and number <= 0):
            need = "a positive finite number" if name in generator.positive_params else "a finite number"
            raise UPSError(f"parameter {name} of {generator.name} must be {need}, got {value!r}.")
        resolved[name] = number
    return resolved


def _target_path(generator: Generator, params: dict, layout: str, out_dir: str | Path) -> Path:
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UPSError(f"output folder {folder} is a file; pass a folder to --out.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UPSError(
            f"output folder {folder} cannot be made ({exc.strerror}: {exc.filename}); "
            f"pass another folder to --out."
        ) from None
    path = folder / generator.file_name(params)
    return path.with_suffix(".h5") if layout == "multigroup" else path
