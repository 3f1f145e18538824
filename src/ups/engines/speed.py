"""The engines' speed settings on a stage's model: activation checkpointing
(``model.use_activation_checkpoint``) and ``torch.compile`` (``training.compile``). Both engines
and the tuner apply them the same way, after the model is built and before it trains."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ups.config import Config
from ups.models.blocks import AdaLNTransformerBlock, CrossAttentionBlock, TransformerBlock
from ups.models.encoder import ConvBlock

# the blocks activation checkpointing recomputes and FSDP shards, each as one unit
BLOCKS = (TransformerBlock, CrossAttentionBlock, AdaLNTransformerBlock, ConvBlock)


def speed_knobs(model: torch.nn.Module, cfg: Config) -> None:
    """``model.use_activation_checkpoint`` and ``training.compile`` (with ``compile_mode``) on the
    stage's model, in that order (compiled blocks then recompute through their compiled code)."""
    if cfg.model.use_activation_checkpoint:
        checkpoint_activations(model)
    if cfg.training.compile:
        compile_submodules(model, cfg.training.compile_mode)


def compile_submodules(model: torch.nn.Module, mode: str = "default") -> None:
    """``torch.compile`` each child of the stage's model (never the engine's wrapper).

    In-place ``Module.compile`` keeps state-dict key names (no ``_orig_mod.``), so checkpoints
    of compiled and eager runs are interchangeable.
    """
    for child in model.children():
        child.compile(mode=None if mode == "default" else mode)


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute the activations of every transformer, cross-attention, AdaLN and convolution
    block of ``model`` in the backward pass instead of keeping them (``torch.utils.checkpoint``,
    non-reentrant) whenever gradients are on, frozen blocks that gradients pass through included
    (the operator's decoded loss goes through the frozen decoder). Returns how many blocks now do
    so."""
    count = 0
    for module in model.modules():
        if not isinstance(module, BLOCKS) or getattr(module, "_ups_checkpointed", False):
            continue

        def forward(*args, _forward=module.forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        module.forward, module._ups_checkpointed = forward, True
        count += 1
    return count
