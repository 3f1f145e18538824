"""Field metrics in physical space, following PDEBench's definitions."""

from __future__ import annotations

import torch


def nrmse(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalised RMSE per sample: RMSE / RMS of the target per channel, averaged over channels.

    Args:
        pred, target: [B, ..., C] (any number of point axes between batch and channels).

    Returns:
        [B]
    """
    b, c = target.shape[0], target.shape[-1]
    err = (pred - target).reshape(b, -1, c).pow(2).mean(dim=1)
    ref = target.reshape(b, -1, c).pow(2).mean(dim=1)
    return (err.sqrt() / (ref.sqrt() + eps)).mean(dim=-1)
