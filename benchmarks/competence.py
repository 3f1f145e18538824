"""Issue 28's competence bar for one trained run: is the operator better than predicting no change?

    python benchmarks/competence.py --config C --run-dir R [--split test] [--horizon 20] [KEY=VALUE ...]

On every trajectory of the split (default test) it scores, from frame 0 and in physical units:

- ``one_step`` and ``rollout``: the operator's one-step nRMSE and its rollout nRMSE averaged over
  ``--horizon`` steps, from ``ups evaluate``'s own evaluator (the same figures it writes);
- ``persistence_one_step`` and ``persistence_rollout``: u_k = u_0 on the same frames;
- ``reconstruction``: the autoencoder's nRMSE, decode(encode(u)) against u, on frames 0..horizon.

It prints them and the bar: one-step below persistence and at most 1.5x the reconstruction error;
rollout at least 3x below persistence's. Exit status 0 when the bar is met, 1 when not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ups.data.latent_pairs import collate_task_batch
from ups.eval.run import EvaluationRequest, build_evaluator, checkpoints_of
from ups.metrics import nrmse
from ups.resolve import load_config
from ups.stages.batch import flat_points


@torch.no_grad()
def competence(
    config: Path, run: Path, split: str = "test", horizon: int = 20, overrides: list[str] = ()
) -> dict:
    """The bar's figures (means over the split's trajectories; several tasks are pooled)."""
    cfg = load_config(config, [*overrides, "evaluation.context_frames=1"])  # from frame 0, as persistence
    evaluator = build_evaluator(cfg, checkpoints_of(EvaluationRequest(run_dir=run)))
    op = evaluator.dynamics
    windows = evaluator.datasets(split, horizon)[0]
    size = cfg.evaluation.batch_size
    for start in range(0, len(windows), size):
        evaluator.evaluate(
            collate_task_batch([windows[i] for i in range(start, min(len(windows), start + size))])
        )
    metrics = {key: evaluator.sums[key] / evaluator.counts[key] for key in evaluator.sums}
    persistence_one, persistence_rollout, reconstruction = [], [], []
    for task in op.tasks:
        coords = torch.from_numpy(task.file.coordinates())
        stride = cfg.training.time_stride
        for trajectory in task.split.indices(split):
            u = torch.from_numpy(task.file.trajectory(trajectory, slice(0, horizon * stride + 1, stride)))
            steps = [float(nrmse(u[:1], u[k : k + 1])) for k in range(1, horizon + 1)]
            persistence_one.append(steps[0])
            persistence_rollout.append(float(np.mean(steps)))
            z = op.model.encoder(task.normalizer.normalize(u), coords.expand(len(u), *coords.shape))
            points = coords.reshape(1, -1, coords.shape[-1]).expand(len(u), -1, -1)
            decoded = task.normalizer.denormalize(op.model.decoder(z, points, channels=u.shape[-1]))
            reconstruction.append(float(nrmse(decoded, flat_points(u)).mean()))
    return {
        "one_step": metrics["one_step_nrmse"],
        "rollout": metrics["nrmse"],
        "persistence_one_step": float(np.mean(persistence_one)),
        "persistence_rollout": float(np.mean(persistence_rollout)),
        "reconstruction": float(np.mean(reconstruction)),
        "trajectories": len(persistence_one),
    }


def meets_bar(found: dict) -> dict[str, bool]:
    return {
        "one-step below persistence": found["one_step"] < found["persistence_one_step"],
        "one-step at most 1.5x the reconstruction": found["one_step"] <= 1.5 * found["reconstruction"],
        "rollout at least 3x below persistence": 3 * found["rollout"] <= found["persistence_rollout"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    found = competence(args.config, args.run_dir, args.split, args.horizon, args.overrides)
    print(f"{args.split} split, {found['trajectories']} trajectories, {args.horizon} steps from frame 0")
    print(
        f"one-step nRMSE {found['one_step']:.4g}  persistence {found['persistence_one_step']:.4g}  "
        f"({found['persistence_one_step'] / found['one_step']:.1f}x lower)  "
        f"autoencoder reconstruction {found['reconstruction']:.4g}"
    )
    print(
        f"rollout nRMSE {found['rollout']:.4g}  persistence {found['persistence_rollout']:.4g}  "
        f"({found['persistence_rollout'] / found['rollout']:.1f}x lower)"
    )
    bar = meets_bar(found)
    for name, ok in bar.items():
        print(f"{'met' if ok else 'NOT met'}: {name}")
    return 0 if all(bar.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
