"""What both engines log of a stage's numbers: the scalars of ``training_loss`` per step
(``train/<term>``) and the per-sample metrics averaged per epoch over every rank
(``train/<metric>``, ``val/<metric>``; ``val/nrmse`` is the monitor every stage must report)."""

from __future__ import annotations

import torch

from ups.errors import UPSError

MONITOR = "val/nrmse"


class MetricMeans:
    """Averages per-sample metric values ``[B]`` over an epoch, per key.

    Sums stay on the device until ``totals`` (once per epoch), so adding costs no sync.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, values in metrics.items():
            values = values.detach().reshape(-1).double()
            self.sums[key] = self.sums[key] + values.sum() if key in self.sums else values.sum()
            self.counts[key] = self.counts.get(key, 0) + values.numel()

    @classmethod
    def from_totals(cls, totals: dict[str, list]) -> MetricMeans:
        """A meter holding the sums and counts of ``totals`` (as ``progress_record`` stores them)."""
        meter = cls()
        for key, (total, count) in totals.items():
            meter.sums[key], meter.counts[key] = torch.tensor(float(total), dtype=torch.float64), int(count)
        return meter

    def totals(self) -> dict[str, tuple[float, int]]:
        return {k: (float(self.sums[k]), self.counts[k]) for k in self.sums}

    @staticmethod
    def merge(world: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
        """Several ranks' ``totals`` added key by key."""
        merged: dict[str, tuple[float, int]] = {}
        for totals in world:
            for key, (total, count) in totals.items():
                before = merged.get(key, (0.0, 0))
                merged[key] = (before[0] + total, before[1] + count)
        return merged

    def means(self, prefix: str, world: list[dict[str, tuple[float, int]]] | None = None) -> dict[str, float]:
        """``{"<prefix>/<key>": mean}`` over this process, or over every rank's ``totals`` in ``world``."""
        merged = self.merge(world if world is not None else [self.totals()])
        return {f"{prefix}/{k}": total / max(count, 1) for k, (total, count) in sorted(merged.items())}


def validation_means(values: dict[str, float]) -> dict[str, float]:
    """Checks that a validation epoch produced ``val/nrmse`` (every stage must report it)."""
    if MONITOR not in values:
        raise UPSError("the stage's validation_metrics returned no 'nrmse'; every stage must report it.")
    return values


def split_terms(terms: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A stage's ``training_loss`` output -> (scalars logged per step, per-sample metrics averaged
    per epoch)."""
    scalars = {k: v for k, v in terms.items() if v.dim() == 0}
    return scalars, {k: v for k, v in terms.items() if v.dim() > 0}


def train_log_values(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``train/loss`` and ``train/<term>`` from the scalars of a stage's ``training_loss`` output."""
    return {f"train/{k}": v.detach() for k, v in terms.items()}
