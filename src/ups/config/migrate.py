"""Keys that moved (``schema.MOVED``): refused where an old config still sets them, and rewritten
into their new places by ``migrate`` (``ups config migrate OLD.yaml``)."""

from __future__ import annotations

import copy

from ups.config.schema import MOVED
from ups.config.validate import Problems, dotted


def _take_moved(tree: dict):
    """Every moved key ``tree`` sets, taken out of it: (its old path, its new path, its value)."""
    for old, new in MOVED.items():
        node = tree
        for part in old[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and old[-1] in node:
            yield old, new, node.pop(old[-1])


def refuse_moved_keys(tree: dict, problems: Problems, path: str | None) -> None:
    """A problem for every moved key ``tree`` sets (and the key taken out, so that it is not
    reported again as unknown)."""
    how = f"`ups config migrate {path}`" if path is not None else "`ups config migrate CONFIG.yaml`"
    for old, new, value in _take_moved(tree):
        keys = [(k,) for k in value] if isinstance(value, dict) and value else [()]
        for key in keys:
            problems.add(
                (*old, *key),
                f"has moved to {dotted((*new, *key))}; set it there, or rewrite the config with {how}.",
            )


def migrate(tree: dict) -> tuple[dict, list[str]]:
    """(``tree``, one file's keys, with every moved key in its new place; one line per move). A
    section moves into its new section key by key; a key set in both places of the same file
    keeps the new place's value."""
    out, moves = copy.deepcopy(tree), []
    for old, new, value in _take_moved(out):
        node = out
        for part in new[:-1]:
            if not isinstance(node.get(part), dict):  # absent, or an empty section (None)
                node[part] = {}
            node = node[part]
        if isinstance(value, dict):
            node[new[-1]] = {**value, **(node.get(new[-1]) or {})}
        else:
            node.setdefault(new[-1], value)
        moves.append(f"{dotted(old)} -> {dotted(new)}")
    return out, moves
