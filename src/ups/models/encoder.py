"""GridEncoder: fields on a regular 1D or 2D grid -> a fixed number of latent tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ups.models.blocks import CrossAttentionBlock, FourierFeatures, TransformerBlock

_HEADS = 4
_COORD_FREQS = 8


class GridEncoder(nn.Module):
    """Fields on a regular 1D or 2D grid -> L latent tokens of width D.

    Patchify with a strided convolution (the grid is padded at its far edges to a multiple
    of ``patch_size``), add a Fourier embedding of each patch's mean coordinate, run
    ``depth`` self-attention blocks over the patch tokens (width ``hidden``), then pool them
    into ``tokens`` learned queries by cross-attention. The number of patches never enters a
    weight shape, so the same weights encode any grid resolution.
    """

    def __init__(self, in_channels: int, spatial_dims: int, tokens: int, dim: int, hidden: int = 64,
                 depth: int = 2, patch_size: int = 4):
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"GridEncoder supports spatial_dims 1 or 2, got {spatial_dims}")
        self.in_channels, self.spatial_dims, self.patch_size = in_channels, spatial_dims, patch_size
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        self.patchify = conv(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        self.coord_features = FourierFeatures(spatial_dims, _COORD_FREQS)
        self.coord_embed = nn.Linear(self.coord_features.out_dim, hidden)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, _HEADS) for _ in range(depth))
        self.queries = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.pool = CrossAttentionBlock(dim, hidden, _HEADS)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, u: Tensor, coords: Tensor) -> Tensor:
        """u [B, *S, C] (channels last), coords [B, *S, d] in [0,1]^d -> z [B, L, D]."""
        self._check(u, coords)
        patches = self.patchify(self._pad(u.movedim(-1, 1)))             # [B, hidden, *S/p]
        patch_coords = self._patch_means(coords.movedim(-1, 1))          # [B, d, *S/p]
        h = patches.flatten(2).transpose(1, 2)                           # [B, N, hidden]
        h = h + self.coord_embed(self.coord_features(patch_coords.flatten(2).transpose(1, 2)))
        for block in self.blocks:
            h = block(h)
        z = self.queries.expand(u.shape[0], -1, -1)                      # [B, L, D]
        return self.norm_out(self.pool(z, h))

    def _pad(self, x: Tensor) -> Tensor:
        """[B, C, *S] -> [B, C, *S'] with S' the next multiples of patch_size (edge values repeated)."""
        pad = []
        for size in reversed(x.shape[2:]):
            pad += [0, -size % self.patch_size]
        return F.pad(x, pad, mode="replicate") if any(pad) else x

    def _patch_means(self, coords: Tensor) -> Tensor:
        """[B, d, *S] -> [B, d, *S/p]: mean coordinate of each patch's real (unpadded) points."""
        pool = F.avg_pool1d if self.spatial_dims == 1 else F.avg_pool2d
        # ceil_mode averages a partial edge window over its real points only.
        return pool(coords, self.patch_size, ceil_mode=True)

    def _check(self, u: Tensor, coords: Tensor) -> None:
        expected = 2 + self.spatial_dims
        if u.dim() != expected or u.shape[-1] != self.in_channels:
            raise ValueError(f"GridEncoder expects u of shape [B, *S, C] with {self.spatial_dims} spatial "
                             f"axes and C={self.in_channels}, got {tuple(u.shape)}")
        if coords.shape[:-1] != u.shape[:-1] or coords.shape[-1] != self.spatial_dims:
            expected_coords = (*u.shape[:-1], self.spatial_dims)
            raise ValueError(f"GridEncoder expects coords of shape {expected_coords}, "
                             f"got {tuple(coords.shape)}")
