"""``ups config migrate``: an old config rewritten into the keys of this version."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from ups.atomic import atomic_write_text
from ups.cli.flags import add_commands
from ups.config import read_config
from ups.config.load import read_config_tree
from ups.config.migrate import migrate
from ups.errors import UPSError


def add_config(sub: argparse._SubParsersAction) -> None:
    commands = add_commands(sub, "config", help="rewrite configs of earlier versions")
    p = commands.add_parser(
        "migrate",
        help="rewrite an old config into this version's keys",
        description="Read OLD (its includes followed and merged in), move every key that has moved "
        "(e.g. operator.* -> stages.operator.*, diffusion.* -> stages.diff_residual.*, "
        "training.rollout_horizon -> stages.operator.rollout_horizon), check the result and write it "
        "as one self-contained YAML file to --out (stdout when not given). YAML comments are not kept.",
    )
    p.add_argument("config", type=Path, metavar="OLD", help="the config to migrate")
    p.add_argument("--out", type=Path, help="where to write the migrated config (may be OLD itself)")
    p.set_defaults(run=_migrate, command="config migrate")


def _migrate(args: argparse.Namespace) -> int:
    moves: list[str] = []

    def each_file(tree: dict) -> dict:  # before the includes merge, so each file keeps its precedence
        migrated, moved = migrate(tree)
        moves.extend(moved)
        return migrated

    migrated, _ = read_config_tree(args.config, transform=each_file)
    text = yaml.safe_dump(migrated, sort_keys=False, default_flow_style=False)
    with tempfile.TemporaryDirectory() as scratch:  # the result must read as a config before it is written
        check = Path(scratch) / "migrated.yaml"
        check.write_text(text)
        _, problems = read_config(check, check_files=False)
    if problems.items:
        lines = "\n".join(f"  - {p}" for p in problems.items)
        raise UPSError(f"{args.config}: the migrated config still has problems; fix them by hand:\n{lines}")
    for move in moves:
        print(f"moved {move}", file=sys.stderr)
    if not moves:
        print(f"{args.config}: nothing to migrate (no moved keys)", file=sys.stderr)
    if args.out is None:
        print(text, end="")
        return 0
    atomic_write_text(args.out, text)
    print(f"migrated config: {args.out}")
    return 0
