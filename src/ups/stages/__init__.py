"""The training stages by name; each computes, engines run it (``ups.engines``)."""

from ups.checkpoint import load_into
from ups.stages.autoencoder import AutoencoderStage
from ups.stages.base import Stage
from ups.stages.consistency import ConsistencyStage
from ups.stages.diff_residual import DiffResidualStage
from ups.stages.operator import OperatorStage
from ups.stages.steady_prior import SteadyPriorStage

STAGES: dict[str, type[Stage]] = {
    s.name: s
    for s in (AutoencoderStage, OperatorStage, DiffResidualStage, ConsistencyStage, SteadyPriorStage)
}

__all__ = ["STAGES", "Stage", "stage_from_checkpoint"]


def stage_from_checkpoint(cfg, tasks, checkpoint: dict) -> Stage:
    """The Stage of ``checkpoint`` in eval mode, every part from the checkpoint itself (it holds its
    upstream parts too), EMA weights when it kept them."""
    stage = STAGES[checkpoint["ups"]["stage"]](cfg, tasks, upstream=None)
    load_into(stage, checkpoint, ema="ema_state_dict" in checkpoint)
    stage.set_train_mode(False)
    return stage
