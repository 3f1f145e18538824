"""AnyPointDecoder: latent tokens + query coordinates -> field values at those points."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ups.models.blocks import (
    CrossAttentionBlock,
    FourierFeatures,
    at_least_float32,
    locality_bias,
    token_centres,
    token_grid,
)
from ups.models.encoder import channel_counts, rank_module, stem_key

_HEADS = 4
# The MLPs run once per query point, so they dominate the cost of decoding a whole grid;
# ratio 1 keeps a 128-wide decoder about 1.6x cheaper than ratio 2.
_MLP_RATIO = 1.0
# A decoded scale is capped at exp(this) in normalised units, so a runaway rollout state cannot overflow.
_MAX_LOG_SCALE = math.log(1e6)


class AnyPointDecoder(nn.Module):
    """Latent tokens + query coordinates -> field values at those points (any resolution).

    Each query point is embedded by Fourier features of its coordinates, then refined by
    ``depth`` blocks of cross-attention to the latent tokens + MLP. The tokens carry the
    Fourier features of their cell centres (the cells of ``GridEncoder``), and the attention
    logits get a locality bias towards the cells near the point. Points never attend to each
    other, so a point's value does not depend on which other points are queried. One output
    head per channel count (``out_channels`` may list several, for tasks with different
    channels); everything before the head is shared.

    With ``amplitude`` = R > 0 (the encoder's layout, ``GridEncoder``), the blocks read only the
    first D - R channels of the tokens (the shape), and the head's output is scaled and shifted
    by the amplitude in the last R, averaged over the tokens: u = mean + exp(log scale) * head.
    ``forward(..., amplitude=False)`` returns the head's output itself, for fields encoded
    without their amplitude (whose channels then hold mean 0 and log scale 0 anyway), so that a
    predicted latent's error in those channels cannot rescale such a field.
    """

    def __init__(
        self,
        dim: int,
        coord_dims: int,
        out_channels: int | Sequence[int],
        hidden: int = 128,
        depth: int = 3,
        fourier_features: int = 16,
        amplitude: int = 0,
    ):
        super().__init__()
        self.coord_dims, self.amplitude = coord_dims, amplitude
        self.coord_features = FourierFeatures(coord_dims, fourier_features)
        self.query_embed = nn.Linear(self.coord_features.out_dim, hidden)
        self.latent_proj = nn.Linear(dim - amplitude + self.coord_features.out_dim, hidden)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(hidden, hidden, _HEADS, _MLP_RATIO) for _ in range(depth)
        )
        self.out_channels = channel_counts(out_channels)
        self.heads = nn.ModuleDict(
            {
                stem_key(c): nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, c))
                for c in self.out_channels
            }
        )

    def forward(self, z: Tensor, x: Tensor, channels: int | None = None, amplitude: bool = True) -> Tensor:
        """z [B, L, D], x [B, Q, d] in [0,1]^d -> u [B, Q, C] with C = ``channels`` (optional
        when the decoder has a single head)."""
        if x.dim() != 3 or x.shape[-1] != self.coord_dims or x.shape[0] != z.shape[0]:
            raise ValueError(
                f"AnyPointDecoder expects query points of shape [B={z.shape[0]}, Q, "
                f"d={self.coord_dims}], got {tuple(x.shape)}"
            )
        if channels is None and len(self.out_channels) == 1:
            channels = self.out_channels[0]
        if channels not in self.out_channels:
            raise ValueError(
                f"AnyPointDecoder has heads for {self.out_channels} channel(s); pass channels= one "
                f"of them (got {channels})."
            )
        grid = token_grid(z.shape[1], self.coord_dims)
        shape = z[..., : z.shape[-1] - self.amplitude]
        where = self.coord_features(token_centres(grid).to(z)).expand(z.shape[0], -1, -1)
        context = self.latent_proj(torch.cat([shape, where], dim=-1))  # [B, L, hidden]
        bias = locality_bias(x, grid)  # [B, 1, Q, L]
        h = self.query_embed(self.coord_features(x))  # [B, Q, hidden]
        for block in self.blocks:
            h = block(h, context, bias)
        out = self.heads[stem_key(channels)](h)  # [B, Q, C]
        if not (self.amplitude and amplitude):
            return out
        carried = at_least_float32(z[..., z.shape[-1] - self.amplitude :]).mean(dim=1, keepdim=True)
        # carried: [B, 1, R]
        mean, log_scale = carried[..., :channels], carried[..., channels : 2 * channels]
        return (mean + log_scale.clamp(max=_MAX_LOG_SCALE).exp() * at_least_float32(out)).to(out.dtype)


class FieldDecoder(nn.Module):
    """Latent tokens -> field values at query points of any supported rank: an ``AnyPointDecoder``
    per number of coordinate axes (``by_rank["d1"]``, ``by_rank["d2"]``), chosen from the queries.

    ``channels_by_rank``: {coordinate axes: channel counts of the fields of that rank}; ``options``:
    ``AnyPointDecoder``'s keyword arguments (hidden, depth, fourier_features, amplitude).
    """

    def __init__(self, dim: int, channels_by_rank: dict[int, Sequence[int]], **options):
        super().__init__()
        self.by_rank = nn.ModuleDict(
            {
                f"d{rank}": AnyPointDecoder(dim, rank, channels, **options)
                for rank, channels in sorted(channels_by_rank.items())
            }
        )

    def forward(self, z: Tensor, x: Tensor, channels: int | None = None, amplitude: bool = True) -> Tensor:
        """z [B, L, D], x [B, Q, d] -> u [B, Q, C] with the decoder of rank d."""
        return rank_module(self.by_rank, x.shape[-1], "FieldDecoder")(
            z, x, channels=channels, amplitude=amplitude
        )
