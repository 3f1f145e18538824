"""Flags declared once: those several commands take alike (``SHARED``), a request's, made from the
fields of its dataclass (``ups.config.requests``) and built back from the parsed arguments, and
the groups of subcommands. Plain argparse underneath, so its messages and exit code 2 stay."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ups.config.engines import ENGINE_NAMES
from ups.locks import folder_lock

SHARED = {  # by destination; a command, or a request's field of that name, may give its own help
    "config": {"flag": "--config", "type": Path, "required": True, "help": "YAML config file"},
    "overrides": {"flag": "overrides", "nargs": "*", "metavar": "KEY=VALUE", "help": "dotted overrides"},
    "engine": {"choices": ENGINE_NAMES, "default": "lightning", "help": "default: lightning"},
    "devices": {"type": int, "help": "devices per node (overrides training.devices)"},
    "run_dir": {"type": Path},
    "break_lock": {
        "action": "store_true",
        "help": "take over the folder's lock although a process on another host holds it "
        "(only when that process is gone: a job killed on another node)",
    },
}
CONVERTERS = (Path, int, float)  # the field types that convert their flag's text


def add_flag(parser, dest: str, **spec) -> None:
    """The flag ``dest``: the shared one of that name, if any, with ``spec`` over it."""
    spec = {**SHARED.get(dest, {}), **spec}
    flag, alias = spec.pop("flag", "--" + dest.replace("_", "-")), spec.pop("alias", None)
    if "type" in spec and "choices" not in spec:  # the metavar names the flag, not the field
        spec.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    parser.add_argument(flag, **spec, **({"dest": dest} if flag.startswith("-") else {}))
    if alias:
        default = spec["default"]
        parser.add_argument(
            alias, dest=dest, action="store_const", const=default, help=f"the same as {flag} {default}"
        )


def add_commands(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The subcommands of ``ups <name>``, which alone prints its help."""
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(commands_of=parser)
    return parser.add_subparsers(title=f"{name} commands", metavar=f"{name.upper()}_COMMAND")


def add_request_flags(parser, request: type) -> None:
    """A flag per field of the dataclass ``request`` that has metadata."""
    types = typing.get_type_hints(request)
    groups = {}
    for item in dataclasses.fields(request):
        if not item.metadata:
            continue
        spec = dict(item.metadata)
        if item.default is not dataclasses.MISSING:
            spec["default"] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            spec["default"] = item.default_factory()
        hint = types[item.name]
        kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)  # X | None: X
        if kind is bool:
            spec["action"] = "store_false" if item.default else "store_true"
        elif kind in CONVERTERS:
            spec.setdefault("type", kind)
        group = spec.pop("group", None)
        if group is not None and group not in groups:
            groups[group] = parser.add_mutually_exclusive_group(required=True)
        add_flag(groups.get(group, parser), item.name, **spec)


def request_from(request: type, args: argparse.Namespace, **given):
    """The ``request`` of the parsed ``args``: each flag's value, ``given`` over them."""
    flags = {item.name: getattr(args, item.name) for item in dataclasses.fields(request) if item.metadata}
    return request(**{**flags, **given})


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The dotted overrides, with ``--devices`` as ``training.devices`` last."""
    return [*args.overrides, *([f"training.devices={args.devices}"] if args.devices is not None else [])]


@contextmanager
def one_writer(args: argparse.Namespace, lock: Path, what: str) -> Iterator[None]:
    """The lock ``lock`` of the folder the command writes (``ups.locks``), taken with
    ``--break-lock`` as given; rank 0 alone takes it, for every rank of a multi-device run."""
    # lazy: Lightning (which reads the rank) loads only when a command runs, not for --help
    from ups.pipeline.runner import is_rank_zero

    if not is_rank_zero():
        yield
        return
    with folder_lock(lock, shlex.join(["ups", *args.argv]), what=what, break_lock=args.break_lock):
        yield
