"""The schema's ``stages`` section: each stage's budget, optimizer overrides, and its own model,
loss and windows, under ``stages.<name>`` (part of ``ups.config.schema.Config``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ups.config.knobs import knob, section


@dataclass(frozen=True)
class OptimizerOverride:
    """Per-stage overrides: a key left unset keeps the global `optimizer` value."""

    name: Literal["adamw", "adam", "sgd"] | None = knob(None, "optimizer", read_by="stages")
    lr: float | None = knob(None, "learning rate", read_by="stages", gt=0)
    weight_decay: float | None = knob(None, "decoupled weight decay", read_by="stages", min=0.0)
    scheduler: Literal["none", "cosine", "step"] | None = knob(
        None, "learning-rate schedule", read_by="stages"
    )
    warmup_steps: int | None = knob(None, "linear warm-up steps", read_by="stages", min=0)


@dataclass(frozen=True)
class StageConfig:
    epochs: int = knob(10, "training epochs; 0 skips the stage", read_by="pipeline", min=0)
    patience: int = knob(5, "validations without improvement before early stopping", read_by="engines", min=1)
    batch_size: int | None = knob(
        None, "samples per step for this stage (`training.batch_size` when unset)", read_by="engines", min=1
    )
    ema_decay: float | None = knob(
        None, "EMA of this stage's weights (`training.ema_decay` when unset)", read_by="engines", gt=0, lt=1.0
    )
    optimizer: OptimizerOverride = section(OptimizerOverride, "optimizer overrides for this stage")


@dataclass(frozen=True)
class OperatorStageConfig(StageConfig):
    """The ``operator`` stage: the latent operator's architecture, its loss and its windows."""

    depth: int = knob(4, "transformer blocks in the latent operator", read_by="models", min=1)
    heads: int = knob(4, "attention heads (must divide `latent.dim`)", read_by="models", min=1)
    mlp_ratio: float = knob(
        2.0, "hidden width of each MLP, as a multiple of `latent.dim`", read_by="models", gt=0
    )
    dropout: float = knob(0.0, "dropout inside the operator blocks", read_by="models", min=0.0, max=1.0)
    spectral_weight: float = knob(0.1, "weight of the spectral loss term", read_by="operator stage", min=0.0)
    rollout_weight: float = knob(
        1.0, "weight of the unrolled rollout loss term", read_by="operator stage", min=0.0
    )
    decoded_weight: float = knob(
        0.0,
        "weight of the optional decoded-space loss through the frozen decoder",
        read_by="operator stage",
        min=0.0,
    )
    locality: float = knob(
        2.0,
        "width, in token cells, of the operator's locality bias: a token's attention logit for a token d "
        "cells away gets -1/2 (d / locality)^2, the distance wrapping around on periodic tasks "
        "(`data.tasks[].periodic`); 0 turns it off",
        read_by="models",
        min=0.0,
    )
    subspace_dim: int = knob(
        64,
        "the operator reads and writes latents projected onto this many principal directions of the "
        "training latents (fitted before training, saved with the weights); 0, or a value of at least "
        "`latent.tokens` x `latent.dim`, turns it off",
        read_by="operator stage",
        min=0,
    )
    carry_error: bool = knob(
        True,
        "decoded predictions from a known frame u_0 add the autoencoder's error on it, u_0 - D(E(u_0)), "
        "times how much that error still correlates with the error k steps later (per task, step and "
        "channel, measured on training trajectories): D(z_k) + rho_k (u_0 - D(E(u_0))). Slowly changing "
        "fields keep most of it, so their short-horizon error drops below the autoencoder's; fields that "
        "move or steepen keep little, and decode as D(z_k). false: D(z_k) alone",
        read_by="operator stage",
    )
    rollout_horizon: int = knob(4, "steps of the unrolled rollout windows", read_by="operator stage", min=1)


@dataclass(frozen=True)
class DiffResidualStageConfig(StageConfig):
    """The ``diff_residual`` stage: the flow-matching corrector of the operator's residual."""

    hidden: int = knob(128, "width of the flow-matching network", read_by="diff_residual stage", min=1)
    depth: int = knob(3, "blocks of the flow-matching network", read_by="diff_residual stage", min=1)
    steps_infer: int = knob(8, "sampler steps at inference", read_by="diff_residual stage", min=1)
    sampler: Literal["euler", "heun"] = knob("heun", "ODE sampler", read_by="diff_residual stage")
    val_samples: int = knob(
        4, "samples per input for CRPS during validation", read_by="diff_residual stage", min=1
    )


@dataclass(frozen=True)
class ConsistencyStageConfig(StageConfig):
    """The ``consistency_distill`` stage: the corrector's 1-2 step student."""

    steps_infer: int = knob(
        1, "student sampling steps (1 or 2)", read_by="consistency_distill stage", min=1, max=2
    )


@dataclass(frozen=True)
class SteadyPriorStageConfig(StageConfig):
    """The ``steady_prior`` stage: the generative prior of steady tasks."""

    hidden: int = knob(
        128, "width of the steady-state flow-matching network", read_by="steady_prior stage", min=1
    )
    depth: int = knob(3, "blocks of the steady-state network", read_by="steady_prior stage", min=1)
    steps_infer: int = knob(8, "sampler steps at inference", read_by="steady_prior stage", min=1)


@dataclass(frozen=True)
class StagesConfig:
    autoencoder: StageConfig = section(StageConfig, "grid encoder + any-point decoder")
    operator: OperatorStageConfig = section(OperatorStageConfig, "latent operator, its loss and windows")
    diff_residual: DiffResidualStageConfig = section(
        DiffResidualStageConfig, "flow-matching corrector of the operator's residual"
    )
    consistency_distill: ConsistencyStageConfig = section(
        ConsistencyStageConfig, "1–2 step student of the corrector"
    )
    steady_prior: SteadyPriorStageConfig = section(
        SteadyPriorStageConfig, "generative prior for steady tasks"
    )
