"""The networks of a latent PDE surrogate: encoder, latent operator, any-point decoder, flow networks."""

from ups.models.decoder import AnyPointDecoder, FieldDecoder
from ups.models.encoder import FieldEncoder, GridEncoder
from ups.models.flow import FlowNet
from ups.models.operator import LatentOperator

__all__ = ["AnyPointDecoder", "FieldDecoder", "FieldEncoder", "FlowNet", "GridEncoder", "LatentOperator"]
