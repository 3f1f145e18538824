"""``ups validate-config``, ``ups data generate`` and ``ups data summary``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ups.cli.flags import add_commands, add_flag
from ups.config import to_yaml
from ups.errors import UPSError
from ups.resolve import load_config


def add_validate_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-config",
        help="check a config and print it resolved",
        description="Read CONFIG with its includes and overrides, check it against the schema "
        "and print the resolved config. Exit 2 on any problem; writes nothing.",
    )
    p.add_argument("config", type=Path, help="YAML config file")
    add_flag(p, "overrides", help="dotted overrides, e.g. training.batch_size=8")
    p.set_defaults(run=_validate_config, command="validate-config")


def add_data(sub: argparse._SubParsersAction) -> None:
    data = add_commands(sub, "data", help="built-in datasets and data summaries")
    _add_generate(data)
    p = data.add_parser(
        "summary",
        help="tasks, shapes, splits and files of a config's data",
        description="Open every task of CONFIG (lazily), split it and fit its normalisation, "
        "then print what training would see.",
    )
    add_flag(p, "config")
    add_flag(p, "overrides")
    p.set_defaults(run=_data_summary, command="data summary")


def _add_generate(data: argparse._SubParsersAction) -> None:
    # lazy: the generators (numpy, scipy, h5py) load when this parser is built, not on import
    from ups.data.generate import GENERATORS

    lines = "\n".join(f"  {g.name:22s} {g.description}" for g in GENERATORS.values())
    p = data.add_parser(
        "generate",
        help="write a built-in dataset in a PDEBench layout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Solve a PDE for random initial conditions or coefficients and write "
        f"the trajectories as a PDEBench HDF5 file.\n\ntasks:\n{lines}",
    )
    p.add_argument(
        "task", choices=sorted(GENERATORS), metavar="TASK", help="one of: " + ", ".join(GENERATORS)
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--n", type=int, help="number of trajectories (samples)")
    p.add_argument("--nx", type=int, help="stored grid points per spatial axis")
    p.add_argument("--nt", type=int, help="stored time steps, t=0 included (transient tasks)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="PDE parameter, e.g. nu=0.01 (repeatable)",
    )
    p.add_argument(
        "--layout",
        choices=["pdebench", "multigroup"],
        default="pdebench",
        help="the task's own PDEBench single-file layout, or the multi-group layout",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing file made with other settings"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_data_generate, command="data generate")


def _validate_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(to_yaml(cfg), end="")
    print(f"config OK: {args.config} ({len(cfg.data.tasks)} task(s)); nothing was written.")
    return 0


def _parse_params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(item)
            params[name.strip()] = float(value)
        except ValueError:
            raise UPSError(
                f"--param '{item}' is not of the form NAME=NUMBER (e.g. --param nu=0.01)."
            ) from None
    return params


def _data_generate(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.data.generate import generate_dataset

    result = generate_dataset(
        args.task,
        args.out,
        n=args.n,
        nx=args.nx,
        nt=args.nt,
        seed=args.seed,
        params=_parse_params(args.param),
        layout=args.layout,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"{args.task}: {result.status} -> {result.path}")
    return 0


def _data_summary(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.data.summary import load_config_tasks, summary_table

    cfg = load_config(args.config, args.overrides)
    tasks = load_config_tasks(cfg)
    print(summary_table(tasks))
    print(f"data: {len(tasks)} task(s) under {Path(cfg.paths.data_dir).resolve()}")
    return 0
