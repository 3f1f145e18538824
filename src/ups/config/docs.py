"""Generate ``docs/configuration.md`` and ``configs/defaults.yaml`` from the schema.

    python -m ups.config.docs markdown > docs/configuration.md
    python -m ups.config.docs defaults > configs/defaults.yaml

A test checks that the committed files equal what this prints.
"""

from __future__ import annotations

import dataclasses
import sys
import typing

import yaml

from ups.config import to_yaml
from ups.config.schema import Config, TaskConfig
from ups.config.validate import schema_fields

_HEADER = """# Configuration

UPS reads one YAML file (plus the files it `include:`s) and dotted overrides from the command
line, then checks the result against a typed schema before any work starts. This page is
generated from that schema (`python -m ups.config.docs markdown`); `configs/defaults.yaml`
lists every default.

## Files, includes and overrides

- `include: other.yaml` (or a list) merges the named files first, in order, then the
  including file's own keys on top. Paths are relative to the including file; a cycle is
  refused with the chain of files named.
- Sections merge key by key; lists (such as `data.tasks`) are replaced whole.
- Overrides follow the config on the command line: `training.batch_size=8`,
  `data.tasks.0.path=other.hdf5` (a number indexes a list), `training.gradient_clip_val=null`.
  Values are read as YAML, except for string keys, which keep the text as typed.
- Relative paths under `paths.*` are relative to the working directory; a task's `path` is
  relative to `paths.data_dir`.

## Validation

`ups validate-config CONFIG [KEY=VALUE …]` runs exactly the check every command runs first,
and prints the resolved config. Every problem is listed at once, each naming the dotted key,
the file (or override) that set it, what was expected and, for a misspelt key, the closest
valid one. Any problem exits with code 2 and nothing is written. Checked:

- unknown keys (with the closest valid key, or the section the key belongs to);
- types (`true/false`, integers, numbers, strings, lists, mappings) and choices;
- bounds (for instance `stages.*.epochs >= 0`, where 0 skips a stage);
- combinations: at least one task, unique task names, a path for every task and the file
  present, split fractions summing to at most 1 with a non-empty train split,
  `stages.operator.heads` dividing `latent.dim`, an odd `encoder.kernel_size`, no FSDP or 16-mixed \
precision on `accelerator: cpu`,
  two Adam betas in [0, 1).

## Keys

"Read by" names the part of UPS that consumes a key. The `data` keys drive the readers,
splits and normalisation today; the keys of the models, stages, engines, evaluation, gates
and tracking are part of the schema (so configs are checked and stable now) and take effect
as those parts of the system land.
"""


def render_markdown() -> str:
    rows = ["| key | type | default | read by | meaning |", "|---|---|---|---|---|"]
    for path, f, tp in schema_fields(Config):
        key = ".".join(path)
        if dataclasses.is_dataclass(tp):
            rows.append(f"| **`{key}`** | section | | | {f.metadata['help']} |")
        else:
            rows.append(
                f"| `{key}` | {_type_name(tp)}{_bounds(f.metadata)} | `{_default_text(f)}` | "
                f"{f.metadata['read_by']} | {f.metadata['help']} |"
            )
    task_rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for (name,), f, tp in schema_fields(TaskConfig):
        task_rows.append(f"| `{name}` | {_type_name(tp)} | `{_default_text(f)}` | {f.metadata['help']} |")
    tasks = "\n\n### Each entry of `data.tasks`\n\n"
    return f"{_HEADER}\n" + "\n".join(rows) + tasks + "\n".join(task_rows) + "\n"


def _bounds(meta: typing.Mapping) -> str:
    signs = (("gt", ">"), ("min", "≥"), ("max", "≤"), ("lt", "<"))
    parts = [f"{sign} {meta[key]}" for key, sign in signs if meta.get(key) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return f"{_type_name(inner)} or null"
    if dataclasses.is_dataclass(tp):
        return "task entries (below)"
    return {bool: "bool", int: "int", float: "float", str: "string"}[tp]


def _default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def render_defaults() -> str:
    return (
        "# Every key with its default, generated by `python -m ups.config.docs defaults`.\n"
        "# A config only needs the keys it changes; see docs/configuration.md.\n" + to_yaml(Config())
    )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    renderers = {"markdown": render_markdown, "defaults": render_defaults}
    if what not in renderers:
        sys.exit(f"usage: python -m ups.config.docs {{{'|'.join(renderers)}}}")
    sys.stdout.write(renderers[what]())
