"""Per-channel normalisation of fields, fitted on the train split only.

Statistics are accumulated in float64, one trajectory at a time (Chan et al.'s parallel
merge of count / mean / sum of squared deviations, which does not lose precision when
the mean is large compared to the spread). The std is the population std (ddof=0),
floored at ``eps``. ``to_dict`` gives plain str/int/float/list values, so the statistics
travel in a checkpoint (``torch.load(weights_only=True)``) and in JSON, exactly (float64 values
round-trip).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

MODES = ("standard", "none")


class Normalizer:
    """Per-channel ``(x - mean) / std`` over the last (channel) axis.

    ``mode="none"`` is the identity; ``fit`` is then a no-op.
    """

    def __init__(self, mode: str = "standard", eps: float = 1e-6):
        if mode not in MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.eps = float(eps)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.count = 0

    @property
    def fitted(self) -> bool:
        return self.mode == "none" or self.mean is not None

    def fit(self, trajectories: Iterable[np.ndarray]) -> Normalizer:
        """Fit from arrays [..., C] (e.g. trajectories [T, *spatial, C]), streamed one at a
        time; returns ``self``."""
        if self.mode == "none":
            return self
        count, mean, m2 = 0, None, None
        for array in trajectories:
            x = np.asarray(array, dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            if mean is not None and x.shape[1] != mean.shape[0]:
                raise ValueError(f"channel count changed while fitting: {x.shape[1]} after {mean.shape[0]}")
            n_b, mean_b = x.shape[0], x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
        if mean is None or count == 0:
            raise ValueError("cannot fit a Normalizer on no data (the train split is empty)")
        self.mean = mean
        self.std = np.maximum(np.sqrt(m2 / count), self.eps)
        self.count = int(count)
        return self

    def _stats_like(self, x):
        if not self.fitted:
            raise RuntimeError("Normalizer is not fitted; call fit() first")
        if torch.is_tensor(x):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return (
                torch.as_tensor(self.mean, dtype=dtype, device=x.device),
                torch.as_tensor(self.std, dtype=dtype, device=x.device),
            )
        dtype = x.dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32
        return self.mean.astype(dtype), self.std.astype(dtype)

    def normalize(self, x):
        """``(x - mean) / std`` on a numpy array or torch tensor [..., C]; same type back."""
        if self.mode == "none":
            return x
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def denormalize(self, x):
        """``x * std + mean``, the inverse of ``normalize``."""
        if self.mode == "none":
            return x
        mean, std = self._stats_like(x)
        return x * std + mean

    def to_dict(self) -> dict:
        """Plain dict: ``mode``, ``eps``, ``count``, ``mean`` and ``std`` (lists of float)."""
        return {
            "mode": self.mode,
            "eps": self.eps,
            "count": self.count,
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
        }

    def __repr__(self) -> str:
        if self.mode == "none" or self.mean is None:
            return f"Normalizer(mode={self.mode!r}, fitted={self.fitted})"
        return f"Normalizer(mean={(self.mean.round(4) + 0.0).tolist()}, std={self.std.round(4).tolist()})"
