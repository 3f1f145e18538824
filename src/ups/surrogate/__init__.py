"""A trained surrogate in use: ``load_surrogate(run_dir)`` gives a ``Surrogate`` whose ``rollout``
and ``solve_steady`` take and return fields in physical units (docs/api.md)."""

from ups.surrogate.api import Surrogate
from ups.surrogate.load import load_surrogate
from ups.surrogate.spec import Prediction, TaskSpec

__all__ = ["Prediction", "Surrogate", "TaskSpec", "load_surrogate"]
