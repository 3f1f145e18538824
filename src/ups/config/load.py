"""Read YAML configs with ``include:`` and dotted command-line overrides.

The result is a plain nested dict plus, for every leaf key, where its value came from (a file
or the command line), so that schema errors can point at the right place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ups.errors import ConfigError

Sources = dict[tuple, str]


def read_config_tree(path: str | Path, transform=None, stack: tuple[Path, ...] = ()) -> tuple[dict, Sources]:
    """Read ``path`` and everything it includes; later values win over earlier ones.

    ``include:`` takes a path or a list of paths, relative to the including file. The included
    files are merged in order, then the including file's own keys on top. ``transform`` (a
    file's tree -> a tree) is applied to each file's own keys before they are merged
    (``ups config migrate`` moves each file's old keys, so precedence is kept). ``stack``: the
    files that include ``path``, outermost first.
    """
    path = Path(path).resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise ConfigError(f"{stack[-1]}: cyclic include ({chain}). Remove one of these includes.")
    if not path.is_file():
        where = f"{stack[-1]}: include '{path}'" if stack else f"config file '{path}'"
        if path.is_dir():
            raise ConfigError(f"{where} is a folder; give the path of a YAML file.")
        raise ConfigError(
            f"{where} does not exist. Check the path (includes are relative to the including file)."
        )
    raw = _parse_yaml(path)
    includes = raw.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: 'include' must be a path or a list of paths, got {includes!r}.")

    if transform is not None:
        raw = transform(raw)
    merged: dict = {}
    sources: Sources = {}
    for inc in includes:
        merge_into(merged, sources, *read_config_tree(path.parent / inc, transform, (*stack, path)))
    merge_into(merged, sources, raw, _leaf_sources(raw, str(path)))
    return merged, sources


def _parse_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as a text file ({exc}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (seed:, data:, …), "
            f"got a {type(data).__name__}."
        )
    return data


def _leaf_sources(tree: Any, origin: str, prefix: tuple = ()) -> Sources:
    if isinstance(tree, dict) and tree:
        out: Sources = {}
        for key, value in tree.items():
            out.update(_leaf_sources(value, origin, (*prefix, key)))
        return out
    return {prefix: origin}


def merge_into(base: dict, sources: Sources, top: dict, top_sources: Sources) -> None:
    """Deep-merge ``top`` into ``base`` (mappings merge, everything else, lists too, is replaced)
    and ``top_sources`` into ``sources``."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_into(base[key], sources, value, top_sources)
            continue
        base[key] = value
    for key in top_sources:
        _forget(sources, key)
    sources.update(top_sources)


def _forget(sources: Sources, key: tuple) -> None:
    """Drop the sources of ``key``, of the keys below it, and of a leaf above it."""
    for old in [k for k in sources if k[: len(key)] == key or key[: len(k)] == k]:
        del sources[old]


def apply_overrides(tree: dict, sources: Sources, overrides: list[str], string_keys: set[tuple]) -> None:
    """Apply ``a.b.c=value`` overrides in order.

    Values are parsed as YAML (``8`` is an int, ``[1, 2]`` a list, ``null`` None), except for keys
    the schema types as strings, which keep the text as given (``null`` or ``~`` still means None).
    A number in the path indexes a list (``data.tasks.0.path=…``).
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"command-line override '{item}' is not of the form key.sub=value "
                f"(e.g. training.batch_size=8)."
            )
        parts = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
        generic = tuple("*" if isinstance(p, int) else p for p in parts)
        if generic in string_keys and text.strip() not in ("null", "~"):
            value: Any = text
        else:
            try:
                value = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError:
                raise ConfigError(f"command-line override '{item}': the value is not valid YAML.") from None
        _set_path(tree, parts, value, item)
        _forget(sources, parts)
        sources.update(_leaf_sources(value, f"command-line override '{item}'", parts))


def _set_path(tree: dict, parts: tuple, value: Any, item: str) -> None:
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        here = ".".join(map(str, parts[: i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    f"command-line override '{item}': '{here}' indexes a list of {size} entries."
                )
        elif not isinstance(node, dict):
            raise ConfigError(f"command-line override '{item}': '{here}' is not a section.")
        elif node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int) and (not isinstance(node, list) or last >= len(node)):
        raise ConfigError(f"command-line override '{item}': index {last} is past the end of the list.")
    if not isinstance(last, int) and not isinstance(node, dict):
        raise ConfigError(f"command-line override '{item}': the parent of '{last}' is not a section.")
    node[last] = value
