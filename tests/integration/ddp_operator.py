"""The multi-task operator stage under Lightning DDP, with each rank's samples recorded.

Run by ``test_multitask.py`` as ``python ddp_operator.py CONFIG FROM_RUN RUN_DIR OUT [overrides]``
(the autoencoder comes from FROM_RUN, the operator trains into RUN_DIR); Lightning starts
rank 1 by running the same command again. Each rank writes
``OUT/rank<r>.json``: per epoch, its batches as lists of [task, trajectory, t0], and
``OUT/rank<r>-lr.json``: the learning rate after each optimizer step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl

from ups.engines import fit_stage
from ups.pipeline.runner import build_stage
from ups.resolve import load_config
from ups.runs import RunDir


class SampleRecorder(pl.Callback):
    def __init__(self, out: Path):
        self.out, self.epochs, self.rates = out, {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = [[name, int(i), int(t)] for name, i, t in zip(batch["task_names"], batch["index"], batch["t0"])]
        self.epochs.setdefault(str(trainer.current_epoch), []).append(ids)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module) -> None:
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.epochs))
        (self.out / f"rank{trainer.global_rank}-lr.json").write_text(json.dumps(self.rates))


def main(config: str, from_run: str, run_dir: str, out: str, *overrides: str) -> None:
    cfg = load_config(Path(config), list(overrides))
    stage = build_stage(cfg, "operator", RunDir(Path(from_run)))
    fit_stage(stage, cfg, RunDir(Path(run_dir)), engine="lightning", callbacks=[SampleRecorder(Path(out))])


if __name__ == "__main__":
    main(*sys.argv[1:])
