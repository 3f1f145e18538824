"""``ups cache build | info | clear``: the latent cache from the command line."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ups.cli.flags import add_commands, add_flag, one_writer
from ups.errors import UPSError
from ups.locks import describe, read_holder
from ups.resolve import load_config


def add_cache(sub: argparse._SubParsersAction) -> None:
    cache = add_commands(sub, "cache", help="the latent cache: build, info, clear")
    p = cache.add_parser(
        "build",
        help="encode every transient task into training.latent_cache_dir",
        description="Encode every frame of every transient task of CONFIG with the autoencoder "
        "of --run-dir (its best checkpoint) into training.latent_cache_dir. An entry "
        "with the same key is verified and kept (a corrupt one is re-encoded); entries "
        "of other keys (another encoder or data file) are left alone: see `ups cache "
        "info` and `ups cache clear`.",
    )
    add_flag(p, "config")
    add_flag(p, "run_dir", required=True, help="run folder whose autoencoder encodes")
    add_flag(p, "break_lock")
    add_flag(p, "overrides")
    p.set_defaults(run=_cache_build, command="cache build")
    for name, helptext, run in (
        ("info", "size, entries and keys of the latent cache", _cache_info),
        ("clear", "remove every entry of the latent cache", _cache_clear),
    ):
        p = cache.add_parser(
            name,
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + ": the folder "
            "given by --dir, or training.latent_cache_dir of --config.",
        )
        where = p.add_mutually_exclusive_group(required=True)
        add_flag(where, "config", required=False, help="YAML config file (its training.latent_cache_dir)")
        where.add_argument("--dir", type=Path, help="the cache folder")
        add_flag(p, "overrides", help="dotted overrides (with --config)")
        if name == "clear":
            add_flag(p, "break_lock")
        p.set_defaults(run=run, command=f"cache {name}")


def _cache_build(args: argparse.Namespace) -> int:
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.data.latent_cache import LatentCache
    from ups.pipeline.runner import build_latent_cache, latent_cache_root

    cfg = load_config(args.config, args.overrides)
    with one_writer(args, LatentCache(latent_cache_root(cfg)).lock_path, "latent cache"):
        entries = build_latent_cache(cfg, args.run_dir)
    for entry in entries:
        print(f"{entry.task}: {entry.status}, {list(entry.shape)} {entry.dtype} -> {entry.path}")
    print(f"cache: {Path(cfg.training.latent_cache_dir).resolve()}")
    return 0


def _cache(args: argparse.Namespace):
    """The folder of ``info`` and ``clear`` and its ``LatentCache``: ``--dir``, which must exist,
    or the config's training.latent_cache_dir, which may not have been made yet (an empty cache)."""
    # lazy: torch, Lightning and h5py load only when the command runs, not for --help
    from ups.data.latent_cache import LatentCache

    if args.dir is not None:
        if args.overrides:
            raise UPSError("overrides apply to --config only; drop them or use --config.")
        if not args.dir.exists():
            raise UPSError(
                f"--dir {args.dir} does not exist; check the path, or give --config to use its "
                f"training.latent_cache_dir."
            )
        root, where = args.dir, f"--dir {args.dir}"
    else:
        cfg = load_config(args.config, args.overrides)
        if cfg.training.latent_cache_dir is None:
            raise UPSError(
                f"{args.config} does not set training.latent_cache_dir, so it has no latent cache."
            )
        root = Path(cfg.training.latent_cache_dir)
        where = f"training.latent_cache_dir {root} (of {args.config})"
    cache = LatentCache(root)
    _check_is_cache(root, cache, where)
    return root, cache


def _check_is_cache(root: Path, cache, where: str) -> None:
    """Refuse a folder that holds files but none of a latent cache's: most likely a wrong path,
    which ``clear`` should not be pointed at."""
    if root.exists() and not root.is_dir():
        raise UPSError(f"{where} is a file, not a latent cache folder; check the path.")
    if not root.is_dir() or cache.files():
        return
    others = sorted(path.name for path in root.iterdir() if path != cache.lock_path)
    if others:
        raise UPSError(
            f"{where} is not a latent cache: it holds {len(others)} other file(s) ({', '.join(others[:3])}"
            f"{', …' if len(others) > 3 else ''}) and no *.latents entry; nothing was touched. "
            f"Check the path."
        )


def _cache_info(args: argparse.Namespace) -> int:
    root, cache = _cache(args)
    entries = cache.entries()
    total = sum(e["bytes"] for e in entries)
    print(
        f"latent cache {root.resolve()}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
        f"{total / 1e6:.1f} MB"
    )
    for entry in entries:
        print("\n".join(_describe_cache_entry(entry)))
    for tmp in cache.leftovers():
        try:
            size = tmp.stat().st_size
        except FileNotFoundError:  # a running build's, renamed into its entry since it was listed
            continue
        print(
            f"  {tmp.name}  {size / 1e6:.1f} MB  temporary file of a killed build (or of one "
            f"running now); removed by the next build or `ups cache clear`"
        )
    holder = read_holder(cache.lock_path)
    if holder is not None:
        print(f"  being written by {describe(holder)}")
    return 0


def _describe_cache_entry(entry: dict) -> list[str]:
    """An entry as a few indented lines: file, size, shape, and what its key covers."""
    name, size = Path(entry["path"]).name, f"{entry['bytes'] / 1e6:.1f} MB"
    unreadable = f"  {name}  {size}  UNREADABLE ({{}}); it is rebuilt when a run needs it"
    if "error" in entry:
        return [unreadable.format(entry["error"])]
    try:
        header = entry["header"]
        fields = header["key_fields"]
        data = fields["data_file"]
        mtime = datetime.fromtimestamp(data["mtime_ns"] / 1e9).isoformat(timespec="seconds")
    except (KeyError, TypeError, ValueError) as exc:
        return [unreadable.format(f"header lacks {exc}")]
    return [
        f"  {name}  {size}  task {header['task']}  {header['shape']} {header['dtype']}  "
        f"created {header['created']}",
        f"    key {header['key'][:20]}: encoder {fields['encoder'][:12]}, data {data['path']} "
        f"({data['bytes']} bytes, modified {mtime}), layout {fields['layout']}, "
        f"reduced_resolution {fields['reduced_resolution']}/{fields['reduced_resolution_t']} (space/time), "
        f"normalisation {fields['normalizer']['mode']}",
    ]


def _cache_clear(args: argparse.Namespace) -> int:
    root, cache = _cache(args)
    with one_writer(args, cache.lock_path, "latent cache"):
        files, freed = cache.clear()
    print(f"latent cache {root.resolve()}: removed {files} file(s), {freed / 1e6:.1f} MB freed")
    return 0
