"""GridEncoder: fields on a regular 1D or 2D grid -> a fixed number of latent tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ups.models.blocks import FourierFeatures, TransformerBlock, at_least_float32, token_centres, token_grid

_HEADS = 4
_COORD_FREQS = 8
# A field's per-sample scale is floored at this (normalised units): a field that has decayed to
# nothing encodes as a flat shape at this scale instead of as amplified round-off.
AMPLITUDE_FLOOR = 1e-3


def field_amplitude(u: Tensor) -> tuple[Tensor, Tensor]:
    """u [B, *S, C] -> (mean [B, C], scale [B, C]) over the spatial axes, in float32 (or float64):
    scale = sqrt(variance + ``AMPLITUDE_FLOOR``^2)."""
    axes = tuple(range(1, u.dim() - 1))
    u = at_least_float32(u)
    mean = u.mean(dim=axes)
    variance = (u - over_space(mean, u)).pow(2).mean(dim=axes)
    return mean, (variance + AMPLITUDE_FLOOR**2).sqrt()


def over_space(x: Tensor, u: Tensor) -> Tensor:
    """x [B, C] viewed as [B, 1, ..., 1, C], to broadcast over the spatial axes of u [B, *S, C]."""
    return x.view(x.shape[0], *[1] * (u.dim() - 2), x.shape[-1])


class ConvBlock(nn.Module):
    """Residual GELU convolution at full grid resolution: [B, hidden, *S] -> [B, hidden, *S]."""

    def __init__(self, hidden: int, spatial_dims: int, kernel_size: int):
        super().__init__()
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        self.conv = conv(hidden, hidden, kernel_size, padding=kernel_size // 2, padding_mode="replicate")
        self.norm = nn.GroupNorm(1, hidden)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv(F.gelu(self.norm(h)))


def stem_key(channels: int) -> str:
    """Name of the stem (encoder) or head (decoder) for fields with ``channels`` channels."""
    return f"c{channels}"


def channel_counts(channels: int | Sequence[int]) -> list[int]:
    counts = sorted({int(channels)} if isinstance(channels, int) else {int(c) for c in channels})
    if not counts or counts[0] < 1:
        raise ValueError(f"channel counts must be positive integers, got {channels!r}")
    return counts


class GridEncoder(nn.Module):
    """Fields on a regular 1D or 2D grid -> L latent tokens of width D.

    A pointwise lift (one stem per channel count, so tasks with different channels share
    the rest of the encoder and one latent space) and ``depth`` residual convolutions (kernel
    ``kernel_size``) at the grid's own resolution, then adaptive average pooling onto a fixed
    grid of L token cells
    (L in 1D; a x b = L in 2D), a Fourier embedding of each cell's centre, one attention
    block over the tokens and a LayerNorm. Each token summarises one region of the domain,
    which gives the decoder and the operator a spatially ordered latent. No weight shape
    depends on the grid size, so the same weights encode any resolution.

    With ``amplitude`` = R > 0 channels (at least twice the widest field's channel count), each
    sample's fields are encoded as their shape (u - mean) / scale (``field_amplitude``, per
    channel), and the last R channels of every token carry the amplitude instead:
    [mean_1..mean_C, log scale_1..log scale_C, 0...]. A field 100 times smaller then encodes as
    the same shape, so the autoencoder's error scales with the field rather than with the
    dataset's global spread. ``forward(..., amplitude=False)`` encodes u as it is and writes
    mean 0 and log scale 0 there, which the decoder turns back into u itself.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        spatial_dims: int,
        tokens: int,
        dim: int,
        hidden: int = 64,
        depth: int = 2,
        kernel_size: int = 5,
        amplitude: int = 0,
    ):
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"GridEncoder supports spatial_dims 1 or 2, got {spatial_dims}")
        self.in_channels = channel_counts(in_channels)
        self.spatial_dims, self.amplitude = spatial_dims, amplitude
        if amplitude and not 2 * max(self.in_channels) <= amplitude < dim:
            raise ValueError(
                f"GridEncoder: {amplitude} amplitude channels do not fit fields of {in_channels} "
                f"channel(s) in a latent {dim} wide; it needs 2 per channel and fewer than {dim}"
            )
        self.token_grid = token_grid(tokens, spatial_dims)
        self.stems = nn.ModuleDict(
            {stem_key(c): nn.Linear(c + spatial_dims, hidden) for c in self.in_channels}
        )
        self.convs = nn.Sequential(*(ConvBlock(hidden, spatial_dims, kernel_size) for _ in range(depth)))
        self.coord_features = FourierFeatures(spatial_dims, _COORD_FREQS)
        self.to_latent = nn.Linear(hidden + self.coord_features.out_dim, dim)
        self.mix = TransformerBlock(dim, _HEADS if dim % _HEADS == 0 else 1)
        self.norm_out = nn.LayerNorm(dim)
        self.register_buffer("centres", token_centres(self.token_grid), persistent=False)

    def forward(self, u: Tensor, coords: Tensor, amplitude: bool = True) -> Tensor:
        """u [B, *S, C] (channels last), coords [B, *S, d] in [0,1]^d -> z [B, L, D]; ``amplitude``
        False: u's own values, not its shape (see the class docstring)."""
        self._check(u, coords)
        if self.amplitude:
            if amplitude:
                mean, scale = field_amplitude(u)
                u = ((u - over_space(mean, u)) / over_space(scale, u)).to(u.dtype)
            else:
                mean, scale = u.new_zeros(u.shape[0], u.shape[-1]), u.new_ones(u.shape[0], u.shape[-1])
        stem = self.stems[stem_key(u.shape[-1])]
        h = stem(torch_cat(u, coords)).movedim(-1, 1)  # [B, hidden, *S]
        h = self.convs(h)
        pool = F.adaptive_avg_pool1d if self.spatial_dims == 1 else F.adaptive_avg_pool2d
        cells = pool(h, self.token_grid).flatten(2).transpose(1, 2)  # [B, L, hidden]
        where = self.coord_features(self.centres).expand(u.shape[0], -1, -1)
        z = self.norm_out(self.mix(self.to_latent(torch_cat(cells, where))))  # [B, L, D]
        if not self.amplitude:
            return z
        carried = torch.cat([mean, scale.log()], dim=-1).to(z.dtype)  # [B, 2C]
        carried = F.pad(carried, (0, self.amplitude - carried.shape[-1]))
        return torch.cat([z[..., : -self.amplitude], carried[:, None].expand(-1, z.shape[1], -1)], dim=-1)

    def _check(self, u: Tensor, coords: Tensor) -> None:
        expected = 2 + self.spatial_dims
        if u.dim() != expected or u.shape[-1] not in self.in_channels:
            raise ValueError(
                f"GridEncoder expects u of shape [B, *S, C] with {self.spatial_dims} spatial "
                f"axes and C in {self.in_channels}, got {tuple(u.shape)}"
            )
        if coords.shape[:-1] != u.shape[:-1] or coords.shape[-1] != self.spatial_dims:
            expected_coords = (*u.shape[:-1], self.spatial_dims)
            raise ValueError(
                f"GridEncoder expects coords of shape {expected_coords}, got {tuple(coords.shape)}"
            )


def torch_cat(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate on the last axis, broadcasting ``b``'s leading axes to ``a``'s."""
    shape = (*a.shape[:-1], b.shape[-1])
    return torch.cat([a, b.expand(shape)], dim=-1)


class FieldEncoder(nn.Module):
    """Fields of any supported rank -> one latent space [B, L, D]: a ``GridEncoder`` per number of
    spatial axes (``by_rank["d1"]``, ``by_rank["d2"]``), chosen from the coordinates' last axis.

    ``channels_by_rank``: {spatial axes: channel counts of the fields of that rank}; ``options``:
    ``GridEncoder``'s keyword arguments (hidden, depth, kernel_size, amplitude).
    """

    def __init__(self, channels_by_rank: dict[int, Sequence[int]], tokens: int, dim: int, **options):
        super().__init__()
        self.by_rank = nn.ModuleDict(
            {
                f"d{rank}": GridEncoder(channels, rank, tokens, dim, **options)
                for rank, channels in sorted(channels_by_rank.items())
            }
        )

    def forward(self, u: Tensor, coords: Tensor, amplitude: bool = True) -> Tensor:
        """u [B, *S, C], coords [B, *S, d] -> z [B, L, D] with the encoder of rank d."""
        return rank_module(self.by_rank, coords.shape[-1], "FieldEncoder")(u, coords, amplitude)

    @property
    def n_stems(self) -> int:
        return sum(len(enc.stems) for enc in self.by_rank.values())


def rank_module(modules: nn.ModuleDict, rank: int, owner: str) -> nn.Module:
    key = f"d{rank}"
    if key not in modules:
        raise ValueError(
            f"{owner} has networks for {sorted(modules)} spatial axes, not {rank} (coordinates' last "
            f"axis); the fields must come from tasks it was built for."
        )
    return modules[key]
