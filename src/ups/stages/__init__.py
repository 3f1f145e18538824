"""The training stages by name; each computes, engines run it (``ups.engines``)."""

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

__all__ = ["STAGES", "Stage"]
