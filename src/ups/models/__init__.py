"""The three networks of a latent PDE surrogate: encoder, latent operator, any-point decoder."""

from ups.models.decoder import AnyPointDecoder
from ups.models.encoder import GridEncoder
from ups.models.operator import LatentOperator

__all__ = ["AnyPointDecoder", "GridEncoder", "LatentOperator"]
