"""Lightning's checkpoint reads and writes, through ``ups.checkpoint`` as the native engine's.

``AtomicCheckpointIO`` is the Trainer's checkpoint plugin: every write is atomic and sealed
(``save_checkpoint``), a new ``last.ckpt`` moves the earlier ones along (``RunDir.rotate_last``,
``checkpoint.keep_last``), and every read is checked (``load_checkpoint``: the seal, then
``weights_only=True``) and re-rooted in this run folder (``reroot_model_checkpoints``), so that a
resume in a moved or copied folder keeps its best-k files and writes beside them.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from lightning.fabric.plugins import TorchCheckpointIO

from ups.checkpoint import load_checkpoint, save_checkpoint
from ups.engines.lightning_adapter import reroot_model_checkpoints
from ups.runs import RunDir


class AtomicCheckpointIO(TorchCheckpointIO):
    """The checkpoints of ``stage`` in ``run``, keeping ``keep_last`` last checkpoints."""

    def __init__(self, run: RunDir, stage: str, keep_last: int):
        super().__init__()
        self.run, self.stage, self.keep_last = run, stage, keep_last

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        last = Path(path).resolve() == self.run.last_checkpoint(self.stage).resolve()
        rotate = partial(self.run.rotate_last, self.stage, self.keep_last) if last else None
        save_checkpoint(checkpoint, path, before_replace=rotate)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        checkpoint = load_checkpoint(path)
        # ModelCheckpoint's dirpath is a realpath: the state is re-rooted to the same spelling
        reroot_model_checkpoints(checkpoint, os.path.realpath(self.run.checkpoint_dir(self.stage)))
        return checkpoint
