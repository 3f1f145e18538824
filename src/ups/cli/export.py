"""``ups export``: parse, then call ``ups.surrogate.export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ups.cli.flags import add_flag
from ups.errors import UPSError


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained surrogate as torch.export programs that run without UPS",
        description="Write the operator of one transient task of a trained run as torch.export "
        "programs (encode.pt2, step.pt2, decode.pt2, one_step.pt2: float32, CPU, any batch size) "
        "with surrogate.json (shapes, channels, grid, normalisers, dt, parameters, the carried "
        "error's factors), coords.npy and a README with a plain-torch rollout (docs/api.md).",
    )
    add_flag(p, "run_dir", required=True, help="the trained run folder (its best checkpoints)")
    add_flag(p, "out", type=Path, required=True, help="the folder to write (new, or empty)")
    add_flag(p, "task", help="the transient task to export (default: the run's only one)")
    add_flag(
        p,
        "force",
        action="store_true",
        help="replace --out when it holds an earlier export (removed once the new one is in place)",
    )
    p.set_defaults(run=_export, command="export")


def _export(args: argparse.Namespace) -> int:
    # lazy: torch loads only when the command runs, not for --help
    from ups.surrogate import load_surrogate
    from ups.surrogate.export import check_out, export

    if not Path(args.run_dir).is_dir():
        raise UPSError(f"--run-dir {args.run_dir} is not a folder; give the run folder of `ups pipeline`.")
    check_out(args.out, replace=args.force)
    s = load_surrogate(args.run_dir, device="cpu")
    meta = export(s, args.out, task=args.task, run_dir=args.run_dir, replace=args.force)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted(args.out.glob("*.pt2")))
    print(f"task {meta['task']}: dt {meta['dt']:g}, {sizes}; exported in {meta['seconds']:.1f} s")
    print(f"export: {args.out}")
    return 0
