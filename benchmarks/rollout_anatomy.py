"""Where a UPS rollout's error comes from, step by step (the analysis in docs/benchmarks.md).

    python benchmarks/rollout_anatomy.py [--out benchmarks/results] [--task burgers_nu0.01]
                                         [--split val|test] [KEY=VALUE ...]

It reads the run that ``accuracy.py`` trained for a transient task (``<out>/runs/<task>-tuned``,
its config ``<out>/configs/<task>-tuned.yaml``; KEY=VALUE overrides apply on top) and rolls the
operator out from the last context frame of every trajectory of the split (default: val, where
choices are made; ``--split test`` prints a warning), as the benchmark scores it. Per rollout
step it prints:

- ``rollout``: the nRMSE of the decoded rollout (the benchmark's score, averaged over steps);
- ``floor``: the nRMSE of decode(encode(truth)) on the same frame, the autoencoder's own error,
  which a rollout decoded as a state (``stages.operator.carry_error=false``) cannot go below; with the
  known frame's error carried forward (the default) it can, as long as that error persists.

For the first step it prints how well the operator predicts the change of state, in latent
space and decoded: the ``gain`` of the predicted increment along the true one (1 is right;
below 1 the operator under-moves, towards persistence) and the increment's relative error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ups.data.latent_pairs import collate_task_batch
from ups.eval.run import EvaluationRequest, build_evaluator, checkpoints_of
from ups.metrics import nrmse
from ups.resolve import load_config
from ups.stages.batch import denormalize, flat_points


def increment_fit(start: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(gain, relative error) of the predicted change ``pred - start`` against the true change
    ``truth - start``, over the whole batch: gain = <d_pred, d_true> / |d_true|^2."""
    d_pred, d_true = (pred - start).double(), (truth - start).double()
    norm = (d_true * d_true).sum()
    return float((d_pred * d_true).sum() / norm), float((d_pred - d_true).norm() / norm.sqrt())


def run_of(out: Path, task: str) -> tuple[Path, Path]:
    """(config, run folder) of ``task``'s tuned benchmark run under ``out`` (``accuracy.py``)."""
    return out / "configs" / f"{task}-tuned.yaml", out / "runs" / f"{task}-tuned"


def warn_on_test(split: str) -> None:
    if split == "test":
        print(
            "warning: scoring the test split. Choices made on it are not measurements any more: make them on "
            "--split val, and read the test split once, for the table.",
            file=sys.stderr,
        )


@torch.no_grad()
def anatomy(config: Path, run: Path, split: str, horizon: int, overrides: list[str]) -> dict:
    cfg = load_config(config, overrides)
    evaluator = build_evaluator(cfg, checkpoints_of(EvaluationRequest(run_dir=run)))
    op = evaluator.dynamics
    windows = evaluator.datasets(split, horizon)[0]
    batch = collate_task_batch([windows[i] for i in range(len(windows))])
    names, window = batch["task_names"], batch["window"]
    coords, channels = flat_points(batch["coords"]), window.shape[-1]

    def decode(z: torch.Tensor) -> torch.Tensor:  # physical units, the state z itself
        return denormalize(op.normalizers, names, op.model.decoder(z, coords, channels=channels).float())

    z = op.encode_window(batch)  # encoded truth, [B, H+1, L, D]
    pred = op.model.operator.rollout(
        z[:, 0], batch["dt"], batch["params"], batch["task_id"], horizon, op.forcing(batch)
    )
    truth = [
        denormalize(op.normalizers, names, flat_points(window[:, k]).float()) for k in range(horizon + 1)
    ]
    predicted = op.decoder_for(
        batch, z[:, 0], flat_points(window[:, 0]), coords
    )  # as the benchmark scores it
    rollout = [float(nrmse(predicted(pred[:, k], k + 1), truth[k + 1]).mean()) for k in range(horizon)]
    floor = [float(nrmse(decode(z[:, k + 1]), truth[k + 1]).mean()) for k in range(horizon)]
    return {
        "rollout": rollout,
        "floor": floor,
        "latent": increment_fit(z[:, 0], pred[:, 0], z[:, 1]),
        "decoded": increment_fit(decode(z[:, 0]), decode(pred[:, 0]), truth[1]),
        "trajectories": window.shape[0],
    }


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--task", default="burgers_nu0.01", choices=[name for name, task in TASKS.items() if not task.steady]
    )
    parser.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="default val: choices are made there"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the --ups-set values of the run")
    args = parser.parse_args(argv)
    config, run = run_of(args.out, args.task)
    if not config.is_file() or not run.is_dir():
        parser.error(
            f"no benchmark run of {args.task} under {args.out}; run "
            f"`python benchmarks/accuracy.py --tasks {args.task} --seeds 1 --out {args.out}` first."
        )
    warn_on_test(args.split)
    task = TASKS[args.task]
    found = anatomy(config, run, args.split, task.horizon, args.overrides)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(
        f"{args.task}, {args.split} split, {found['trajectories']} trajectories, {task.horizon} steps "
        f"from frame {task.context} of the kept ones"
    )
    print(f"rollout nRMSE {mean(found['rollout']):.4f}, autoencoder floor {mean(found['floor']):.4f} (means)")
    print("step  rollout  floor")
    for k in range(0, task.horizon, 5):
        print(f"{k + 1:4d}  {found['rollout'][k]:.4f}  {found['floor'][k]:.4f}")
    for space in ("latent", "decoded"):
        gain, error = found[space]
        print(f"first step, {space}: gain {gain:.3f}, increment relative error {error:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
