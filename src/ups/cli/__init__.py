"""The ``ups`` command line: parse, then call the package.

Every command ends with one line saying where its outputs are. Bad input (a config, an
argument, a data file) prints one message without a traceback and exits with code 2; a stage
of ``ups pipeline`` that fails while training prints one line naming it and exits with code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ups import deadline
from ups.cli.cache import add_cache
from ups.cli.config import add_config
from ups.cli.data import add_data, add_validate_config
from ups.cli.evaluate import add_evaluate
from ups.cli.export import add_export
from ups.cli.fast import add_fast_to_sota
from ups.cli.predict import add_predict
from ups.cli.train import add_pipeline, add_train
from ups.errors import UPSError


def main(argv: list[str] | None = None) -> int:
    started = deadline.now()  # training.time_budget counts from here
    _quiet_third_party_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
    args.argv = sys.argv[1:] if argv is None else list(argv)  # the command line a lock names
    if not hasattr(args, "run"):  # no command, or `ups data` / `ups cache` without theirs
        getattr(args, "commands_of", parser).print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except UPSError as exc:
        print(f"ups {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ups {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_third_party_noise() -> None:
    """UPS's own INFO lines to stderr; Lightning's advertising tip, a deprecation warning raised
    inside Lightning itself and its note on frozen (eval-mode) modules, none actionable, left out."""
    ups_log = logging.getLogger("ups")
    if not ups_log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ups_log.addHandler(handler)
        ups_log.setLevel(logging.INFO)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # the frozen upstream parts of a stage are in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # epoch values are gathered over the ranks by UPS itself (all_gather_object), perf/… are rank 0's
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|perf)/")


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (test runners and
    notebooks replace it), not the stream of the moment the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ups", description="Universal Physics Stack: latent neural PDE surrogates."
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    add_validate_config(sub)
    add_train(sub)
    add_pipeline(sub)
    add_data(sub)
    add_cache(sub)
    add_config(sub)
    add_evaluate(sub)
    add_fast_to_sota(sub)
    add_predict(sub)
    add_export(sub)
    return parser
