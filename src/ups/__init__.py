"""UPS, the Universal Physics Stack: latent neural PDE surrogates, trained by Lightning."""

__version__ = "0.1.0"
