"""`ups export`'s artefact against the surrogate it came from, side by side in one process (CPU, float32).

    python benchmarks/export_step.py --run-dir D [--task T] [--repeats 300] [--threads 1]

Prints the export's wall time and file sizes, the largest error of the exported 10-step rollout
(README's plain-torch loop) relative to ``Surrogate.rollout``'s largest value, and the median time
of one latent step at batch 1 and 64: the operator called eagerly (as ``Surrogate.rollout`` steps)
and the ``step.pt2`` program, alternated so both see the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ups
from ups.surrogate.export import EXAMPLE, export


def median_us(fn, repeats: int) -> float:
    for _ in range(10):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--task")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = ups.load_surrogate(args.run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        meta = export(s, out, task=args.task, run_dir=args.run_dir)
        sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
        print(
            f"export: {meta['seconds']:.2f} s; "
            + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sizes.items())
        )
        spec = s.tasks[meta["task"]]
        task_data = next(t for t in s.dynamics.tasks if t.name == spec.name)
        starts = task_data.split.indices("test")[:8]
        u0 = np.stack([task_data.file.trajectory(i, slice(0, 1))[0] for i in starts]).astype(np.float32)
        namespace: dict = {}
        exec(EXAMPLE, namespace)
        reference = s.rollout(u0, 10, task=spec.name).fields
        exported = namespace["rollout"](out, u0, 10).numpy()
        error = np.abs(exported - reference).max() / np.abs(reference).max()
        print(f"10-step rollout of {len(u0)} test starts: max |exported - API| / max |API| = {error:.2e}")
        step = torch.export.load(out / "step.pt2").module()
        for batch in (1, 64):
            eager, program = step_times(s, step, spec, meta["params"]["default"], batch, args.repeats)
            print(
                f"batch {batch:3d}: one step eager {eager:8.1f} us, step.pt2 {program:8.1f} us "
                f"(x{program / eager:.2f})"
            )


def step_times(s, step, spec, params: list[float], batch: int, repeats: int) -> tuple[float, float]:
    """Median microseconds of one latent step at ``batch``: (the operator eagerly, the program),
    the median of three alternated rounds each."""
    operator = s.dynamics.model.operator
    z = torch.randn(batch, *s.dynamics.latent_shape)
    p = torch.tensor(params).expand(batch, -1)
    dt = torch.full((batch,), spec.dt)
    ids = torch.full((batch,), [t.name for t in s.dynamics.tasks].index(spec.name))
    eager, program = [], []
    with torch.inference_mode():
        for _ in range(3):
            eager.append(median_us(lambda: operator(z, dt, p, ids), repeats))
            program.append(median_us(lambda: step(z, p), repeats))
    return statistics.median(eager), statistics.median(program)


if __name__ == "__main__":
    main()
