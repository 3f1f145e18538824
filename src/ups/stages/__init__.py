"""The training stages by name; each computes, engines run it (``ups.engines``)."""

from ups.stages.autoencoder import AutoencoderStage
from ups.stages.base import Stage
from ups.stages.operator import OperatorStage

STAGES: dict[str, type[Stage]] = {s.name: s for s in (AutoencoderStage, OperatorStage)}

__all__ = ["STAGES", "Stage"]
