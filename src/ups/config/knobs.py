"""``knob`` and ``section``: how a schema field carries its documentation and bounds."""

from __future__ import annotations

import copy
from dataclasses import field


def knob(default, help: str, *, read_by: str, min=None, max=None, gt=None, lt=None):
    """A config field with its documentation and bounds."""
    meta = {"help": help, "read_by": read_by, "min": min, "max": max, "gt": gt, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls, help: str):
    return field(default_factory=cls, metadata={"help": help})
