"""AnyPointDecoder: latent tokens + query coordinates -> field values at those points."""

from __future__ import annotations

from torch import Tensor, nn

from ups.models.blocks import CrossAttentionBlock, FourierFeatures

_HEADS = 4
# The MLPs run once per query point, so they dominate the cost of decoding a whole grid;
# ratio 1 keeps a 128-wide decoder about 1.6x cheaper than ratio 2.
_MLP_RATIO = 1.0


class AnyPointDecoder(nn.Module):
    """Latent tokens + query coordinates -> field values at those points (any resolution).

    Each query point is embedded by Fourier features of its coordinates, then refined by
    ``depth`` blocks of cross-attention to the latent tokens + MLP. Points never attend to
    each other, so a point's value does not depend on which other points are queried and
    the field can be read at any set of points.
    """

    def __init__(self, dim: int, coord_dims: int, out_channels: int, hidden: int = 128, depth: int = 3,
                 fourier_features: int = 16):
        super().__init__()
        self.coord_dims = coord_dims
        self.coord_features = FourierFeatures(coord_dims, fourier_features)
        self.query_embed = nn.Linear(self.coord_features.out_dim, hidden)
        self.latent_proj = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(CrossAttentionBlock(hidden, hidden, _HEADS, _MLP_RATIO)
                                    for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_channels))

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """z [B, L, D], x [B, Q, d] in [0,1]^d -> u [B, Q, C]."""
        if x.dim() != 3 or x.shape[-1] != self.coord_dims or x.shape[0] != z.shape[0]:
            raise ValueError(f"AnyPointDecoder expects query points of shape [B={z.shape[0]}, Q, "
                             f"d={self.coord_dims}], got {tuple(x.shape)}")
        context = self.latent_proj(z)                   # [B, L, hidden]
        h = self.query_embed(self.coord_features(x))    # [B, Q, hidden]
        for block in self.blocks:
            h = block(h, context)
        return self.head(h)
