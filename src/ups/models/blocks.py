"""Pieces shared by the encoder, decoder and operator.

Shapes: B batch, N tokens or points, D width, d coordinate dimensions.
All blocks are pre-norm residual blocks, so stacking them keeps activations well scaled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or in float64 when it is: a bf16 autocast's values are widened where
    precision matters, and a float64 gradient check keeps its precision."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class FourierFeatures(nn.Module):
    """Coordinates in [0,1]^d -> [x, sin(2πkx), cos(2πkx)] for k = 1..n_freqs per axis.

    ``forward``: x [..., d] -> [..., d * (1 + 2 * n_freqs)].
    Integer frequencies make the features periodic on the unit cell, the natural basis for
    fields on a periodic domain; the raw x keeps non-periodic problems distinguishable.
    """

    def __init__(self, coord_dims: int, n_freqs: int):
        super().__init__()
        self.out_dim = coord_dims * (1 + 2 * n_freqs)
        self.register_buffer(
            "freqs", 2 * math.pi * torch.arange(1, n_freqs + 1, dtype=torch.float32), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        angles = (x.unsqueeze(-1) * self.freqs).flatten(-2)  # [..., d * n_freqs]
        return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


def token_grid(tokens: int, spatial_dims: int) -> tuple[int, ...]:
    """How L latent tokens tile the domain: (L,) in 1D, (a, b) with a * b = L, a <= b, a as
    large as possible in 2D."""
    if spatial_dims == 1:
        return (tokens,)
    a = max(d for d in range(1, int(math.isqrt(tokens)) + 1) if tokens % d == 0)
    return (a, tokens // a)


def token_centres(grid: tuple[int, ...]) -> Tensor:
    """Centres of the token cells in [0,1]^d, row-major like a flattened pooled grid: [L, d]."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


def token_distance_bias(grid: tuple[int, ...], width: float, periodic: bool) -> Tensor:
    """Attention-logit bias between the tokens of ``grid``: [L, L], -1/2 (d / width)^2 for tokens
    d cells apart (Euclidean over the grid's axes). On a periodic domain the distance along each
    axis wraps around, so the first and last cells are neighbours."""
    centres = token_centres(grid) * torch.tensor(grid, dtype=torch.float32)  # in cells
    offset = (centres[:, None, :] - centres[None, :, :]).abs()  # [L, L, d]
    if periodic:
        offset = torch.minimum(offset, torch.tensor(grid, dtype=torch.float32) - offset)
    return -0.5 * offset.pow(2).sum(-1) / width**2


def locality_bias(x: Tensor, grid: tuple[int, ...]) -> Tensor:
    """Attention-logit bias favouring tokens whose cell is near each query point.

    x [B, Q, d] in [0,1]^d -> [B, 1, Q, L]: minus half the squared distance to each cell
    centre, measured in cell widths, so a point attends mostly to its own and neighbouring
    cells from the start, and learned attention refines that.
    """
    centres = token_centres(grid).to(x)  # [L, d]
    widths = torch.tensor([1.0 / n for n in grid], device=x.device, dtype=x.dtype)
    offset = (x[:, :, None, :] - centres) / widths  # [B, Q, L, d]
    return (-0.5 * offset.pow(2).sum(-1)).unsqueeze(1)


def log_frequencies(count: int, max_freq: float) -> Tensor:
    """``count`` frequencies spaced log-uniformly from 1 to ``max_freq``: [count]."""
    return torch.exp(torch.linspace(0.0, math.log(max_freq), count))


def sinusoidal(t: Tensor, freqs: Tensor, batch: int) -> Tensor:
    """Scalar per sample t [B] (or [1]) and frequencies [F] -> [sin(f t), cos(f t)]: [B, 2F]."""
    angles = t.to(freqs.dtype).reshape(-1, 1).expand(batch, 1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MLP(nn.Sequential):
    """Linear -> GELU -> (dropout) -> Linear: [..., dim] -> [..., out or dim]."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, dropout: float = 0.0):
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out or dim)
        )


class Attention(nn.Module):
    """Multi-head attention from queries [B, N, dim] to a context [B, M, context_dim] -> [B, N, dim].

    Without a context it is self-attention. Each query attends independently of the other
    queries, which the decoder relies on for resolution-free evaluation.
    """

    def __init__(self, dim: int, heads: int = 4, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"attention width {dim} is not divisible by heads={heads}; "
                "choose a width that is a multiple of the number of heads"
            )
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """``bias`` [N, M] (or broadcastable to [B, heads, N, M]) is added to the attention logits."""
        context = x if context is None else context
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(context).chunk(2, dim=-1))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).flatten(2))

    def _split(self, t: Tensor) -> Tensor:  # [B, N, dim] -> [B, heads, N, dim / heads]
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP: [B, N, dim] -> [B, N, dim]."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention + MLP: queries [B, N, dim], context [B, M, context_dim] -> [B, N, dim]."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm_q, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim)
        self.attn = Attention(dim, heads, context_dim=context_dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor, bias: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_ctx(context), bias)
        return x + self.mlp(self.norm_mlp(x))


class AdaLNTransformerBlock(nn.Module):
    """Self-attention block whose LayerNorms are modulated by a conditioning vector (DiT adaLN-Zero).

    ``forward``: x [B, N, dim], cond [B, cond_dim] -> [B, N, dim]. The modulation layer maps
    cond to (shift, scale, gate) for the attention and the MLP branch. It starts at zero, so
    both gates are 0 and the block is the identity at initialisation.
    """

    def __init__(self, dim: int, cond_dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: Tensor, cond: Tensor, bias: Tensor | None = None) -> Tensor:
        """``bias`` (broadcastable to [B, heads, N, N]) is added to the attention logits."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1, bias=bias)  # adaLN affine
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
