"""UPS, the Universal Physics Stack: latent neural PDE surrogates, trained by Lightning.

``ups.load_surrogate(run_dir)`` loads a trained run for use (``ups.surrogate``, docs/api.md); it is
imported on first use, so ``import ups`` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load_surrogate", "Surrogate", "Prediction", "TaskSpec"):
        import ups.surrogate  # lazy entry point: `import ups` loads no torch

        return getattr(ups.surrogate, name)
    raise AttributeError(f"module 'ups' has no attribute {name!r}")
