"""Field metrics in physical space, following PDEBench's definitions (docs/metrics.md gives the
formulas). Every metric returns one value per sample, [B]; evaluators average over samples."""

from __future__ import annotations

import math

import torch


def _per_channel(values: torch.Tensor) -> torch.Tensor:
    """[B, *S, C] -> [B, P, C] with P = prod(S)."""
    return values.reshape(values.shape[0], -1, values.shape[-1])


def nrmse(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalised RMSE per sample: RMSE / RMS of the target per channel, averaged over channels.

    Args:
        pred, target: [B, ..., C] (any number of point axes between batch and channels).

    Returns:
        [B]
    """
    err = _per_channel(pred - target).pow(2).mean(dim=1)
    ref = _per_channel(target).pow(2).mean(dim=1)
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


# --------------------------------------------------------------------------- PDEBench's suite
# Fields are [B, *S, C]: a batch, one or two spatial axes, channels last. Every function returns
# one value per sample, [B]; channels are averaged last, as PDEBench does.


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root-mean-square error over the grid, per channel, averaged over channels: [B]."""
    return _per_channel(pred - target).pow(2).mean(dim=1).sqrt().mean(dim=-1)


def max_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Largest absolute error over the grid, per channel, averaged over channels: [B]."""
    return _per_channel(pred - target).abs().amax(dim=1).mean(dim=-1)


def crmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Conservation error: |spatial mean of pred - spatial mean of target| per channel, averaged
    over channels (the RMSE of the spatial mean, for one sample): [B]."""
    return (_per_channel(pred).mean(dim=1) - _per_channel(target).mean(dim=1)).abs().mean(dim=-1)


def boundary_mask(spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """True at the grid points on the domain's boundary (1D: both ends; 2D: the four edges): [*S]."""
    mask = torch.zeros(spatial_shape, dtype=torch.bool)
    for axis in range(len(spatial_shape)):
        mask.movedim(axis, 0)[[0, -1]] = True  # a view: the first and last slice along the axis
    return mask


def brmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE over the boundary points only, per channel, averaged over channels: [B]."""
    mask = boundary_mask(tuple(target.shape[1:-1])).reshape(-1).to(target.device)
    return _per_channel(pred - target)[:, mask].pow(2).mean(dim=1).sqrt().mean(dim=-1)


# Fourier bands of PDEBench (wavenumbers counted in cycles per domain): low [0, 4), mid [4, 12),
# high [12, ...).
FOURIER_BANDS = {"low": (0, 4), "mid": (4, 12), "high": (12, None)}


def frmse(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Error per Fourier band: with E = FFT over the spatial axes of (pred - target) divided by
    the number of points, and |k| the (radial, in 2D) integer wavenumber, the band's value is
    sqrt(mean over its wavenumbers of |E_k|^2) per channel, averaged over channels. Returns
    ``{"low": [B], "mid": [B], "high": [B]}`` (an empty band gives 0)."""
    spatial = tuple(range(1, target.dim() - 1))
    points = math.prod(target.shape[1:-1])
    amplitude = torch.fft.fftn((pred - target).double(), dim=spatial).abs().pow(2) / points**2
    grids = torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n).abs() for n in target.shape[1:-1]], indexing="ij")
    k = torch.stack(grids).pow(2).sum(0).sqrt().reshape(-1).to(target.device)
    per_k = _per_channel(amplitude)  # [B, P, C]
    out = {}
    for name, (lo, hi) in FOURIER_BANDS.items():
        band = (k >= lo) & (k < (hi if hi is not None else math.inf))
        if not band.any():
            out[name] = torch.zeros(target.shape[0], dtype=target.dtype, device=target.device)
            continue
        out[name] = per_k[:, band].mean(dim=1).sqrt().mean(dim=-1).to(target.dtype)
    return out


def rollout_curve(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nRMSE at every predicted step: pred, target [B, H, *S, C] (step 1..H, the initial
    condition excluded) -> [B, H]."""
    b, h = target.shape[:2]
    flat = lambda x: x.reshape(b * h, *x.shape[2:])  # noqa: E731
    return nrmse(flat(pred), flat(target)).reshape(b, h)


def pearson(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation over the grid and channels, per sample: [B, ...] -> [B]."""
    p = pred.reshape(pred.shape[0], -1).double()
    t = target.reshape(target.shape[0], -1).double()
    p, t = p - p.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    return ((p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + eps)).to(pred.dtype)


def correlation_time(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """Steps a rollout stays correlated with the truth: the number of leading steps whose
    Pearson correlation is at least ``threshold`` (H when it never drops below).
    pred, target [B, H, *S, C] -> [B] (float)."""
    b, h = target.shape[:2]
    corr = torch.stack([pearson(pred[:, k], target[:, k]) for k in range(h)], dim=1)  # [B, H]
    below = corr < threshold
    first = torch.where(
        below.any(dim=1), below.float().argmax(dim=1), torch.full((b,), h, device=corr.device)
    )
    return first.to(pred.dtype)
