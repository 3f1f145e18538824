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


def crps(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Continuous ranked probability score of an ensemble, per sample, in the field's units.

    The ensemble estimator mean_k |X_k - y| - 1/2 mean_{k,j} |X_k - X_j| at every point and
    channel, averaged over points and channels (lower is better; equals the MAE for one member).

    Args:
        samples: [K, B, ..., C] ensemble members; target: [B, ..., C].

    Returns:
        [B]
    """
    k, b = samples.shape[:2]
    members = samples.reshape(k, b, -1)
    skill = (members - target.reshape(1, b, -1)).abs().mean(dim=0)
    spread = (members[:, None] - members[None]).abs().mean(dim=(0, 1))
    return (skill - 0.5 * spread).mean(dim=-1)


def spread_skill(samples: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Spread-skill ratio per sample: sqrt((K+1)/K * mean ensemble variance) / RMSE of the ensemble
    mean (1 for a calibrated ensemble; < 1 over-confident, > 1 under-confident).

    Args:
        samples: [K, B, ..., C] with K >= 2; target: [B, ..., C].

    Returns:
        [B]
    """
    k, b = samples.shape[:2]
    members = samples.reshape(k, b, -1)
    variance = members.var(dim=0, unbiased=True).mean(dim=-1)
    skill = (members.mean(dim=0) - target.reshape(b, -1)).pow(2).mean(dim=-1).sqrt()
    return ((k + 1) / k * variance).sqrt() / (skill + eps)
