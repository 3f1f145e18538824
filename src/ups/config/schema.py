"""The typed configuration schema: every knob, its type, default, bounds and meaning.

The dataclasses here are the single source of the defaults. ``configs/defaults.yaml`` and
``docs/configuration.md`` are generated from them (``python -m ups.config.docs``) and a test
keeps both in step.

Field metadata:
    help      one line for the docs
    min/max   inclusive bounds for numbers; ``gt``/``lt`` are exclusive bounds
    read_by   which part of UPS consumes the key (shown in the docs)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

STAGE_NAMES = ("autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior")
# Keys of earlier configs and where they live now (``ups config migrate`` rewrites them).
MOVED = {
    ("operator",): ("stages", "operator"),
    ("diffusion",): ("stages", "diff_residual"),
    ("consistency",): ("stages", "consistency_distill"),
    ("steady_prior",): ("stages", "steady_prior"),
    ("training", "rollout_horizon"): ("stages", "operator", "rollout_horizon"),
}


def knob(default, help: str, *, read_by: str, min=None, max=None, gt=None, lt=None):
    """A config field with its documentation and bounds."""
    meta = {"help": help, "read_by": read_by, "min": min, "max": max, "gt": gt, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls, help: str):
    return field(default_factory=cls, metadata={"help": help})


# ----------------------------------------------------------------------------------- data
@dataclass
class TaskConfig:
    """One PDE task: a file in a PDEBench layout."""

    name: str = knob("", "task name, used in metric keys (`val/<name>/nrmse`) and splits", read_by="data")
    path: str = knob("", "HDF5 file; relative paths are under `paths.data_dir`", read_by="data")
    layout: Literal["auto", "single", "darcy", "multigroup", "cfd", "ns_incomp"] = knob(
        "auto",
        "PDEBench layout of the file ([data.md](data.md#layouts-read)); `auto` detects it from the keys",
        read_by="data",
    )
    params: dict[str, float] = knob(
        {}, "PDE parameters that override those parsed from the file name and attributes", read_by="data"
    )
    reduced_resolution: int | None = knob(
        None,
        "this task's spatial down-sampling (`data.reduced_resolution` when unset)",
        read_by="data",
        min=1,
    )
    periodic: bool | None = knob(
        None,
        "whether the spatial domain wraps around (periodic boundaries), which the operator's locality "
        "bias follows; unset: true for 1D Burgers, advection and reaction-diffusion files (built-in or "
        "PDEBench's, all periodic, recognised by file name) and files whose name says `periodic`, "
        "false otherwise",
        read_by="operator stage",
    )
    transpose_symmetric: bool | None = knob(
        None,
        "whether swapping the two spatial axes maps the task's (a, u) pairs to pairs of the same problem "
        "(a square grid; coefficients, forcing and boundary conditions alike in x and y): the autoencoder "
        "and steady prior then train on each field or pair transposed with probability 1/2; unset: true "
        "for 2D Darcy files on a square grid (built-in or PDEBench's, recognised by file name), false "
        "otherwise; steady tasks only",
        read_by="autoencoder and steady_prior stages",
    )
    weight: float = knob(
        1.0,
        "training draws of this task per epoch, as a multiple of its samples (of the largest task's with "
        "`data.task_sampling: uniform`); >1 oversamples a small task",
        read_by="sampler",
        gt=0,
    )


@dataclass
class SplitConfig:
    mode: Literal["seeded", "pdebench"] = knob(
        "seeded",
        "`seeded`: every split drawn by a seeded permutation; `pdebench`: the test split taken as "
        "PDEBench's scripts take it (`test` is their `test_ratio`: the first int(N x test) samples in file "
        "order, the last ones for a multi-group file), validation and train drawn, seeded, from the rest",
        read_by="data",
    )
    train: float = knob(0.8, "fraction of trajectories for training", read_by="data", min=0.0, max=1.0)
    val: float = knob(
        0.1,
        "fraction for validation (0 with validation on: carved off train, with a warning)",
        read_by="data",
        min=0.0,
        max=1.0,
    )
    test: float = knob(0.1, "fraction held out for evaluation", read_by="data", min=0.0, max=1.0)


@dataclass
class DataConfig:
    tasks: list[TaskConfig] = knob(
        [TaskConfig(name="burgers1d", path="1D_Burgers_Sols_Nu0.01.hdf5")],
        "the tasks to train on (at least one); by default the built-in Burgers data",
        read_by="data",
    )
    reduced_resolution: int = knob(
        1, "keep every r-th grid point in each spatial axis", read_by="data", min=1
    )
    max_samples: int | None = knob(
        None,
        "use only the first this many samples of each file, in file order (PDEBench's `num_samples_max`), "
        "before the split; unset: all",
        read_by="data",
        min=1,
    )
    reduced_resolution_t: int = knob(1, "keep every r-th stored time step", read_by="data", min=1)
    split: SplitConfig = section(SplitConfig, "trajectory-level train/val/test split, seeded by `seed`")
    normalization: Literal["standard", "none"] = knob(
        "standard", "per-channel mean/std from the train split, or none", read_by="data"
    )
    task_sampling: Literal["proportional", "uniform"] = knob(
        "proportional",
        "how often each task's batches are drawn: in proportion to its samples (each sample "
        "once per epoch), or equally often (smaller tasks drawn again)",
        read_by="sampler",
    )


# ---------------------------------------------------------------------------- the models
@dataclass
class LatentConfig:
    tokens: int = knob(32, "number of latent tokens L", read_by="models", min=1)
    dim: int = knob(64, "width D of each latent token", read_by="models", min=1)
    amplitude: bool = knob(
        True,
        "time-dependent tasks' frames are encoded as their shape (u - mean) / scale, per sample and channel, "
        "and the mean and log scale travel in the last 2 x (channels) latent channels, so the autoencoder's "
        "error shrinks with a decaying field; steady tasks' fields are encoded as they are",
        read_by="models",
    )


@dataclass
class EncoderConfig:
    hidden: int = knob(64, "channels of the grid encoder's convolutional trunk", read_by="models", min=1)
    depth: int = knob(2, "residual convolutions at full grid resolution", read_by="models", min=0)
    kernel_size: int = knob(5, "odd kernel width of those convolutions", read_by="models", min=1)


@dataclass
class DecoderConfig:
    hidden: int = knob(128, "width of the any-point decoder", read_by="models", min=1)
    depth: int = knob(3, "number of decoder layers", read_by="models", min=1)
    fourier_features: int = knob(16, "Fourier features of the query coordinates", read_by="models", min=0)
    query_points: int = knob(
        256, "points queried per sample during autoencoder training", read_by="autoencoder stage", min=1
    )


# --------------------------------------------------------------------------- training
@dataclass
class TrainingConfig:
    batch_size: int = knob(16, "samples per optimisation step (per device)", read_by="engines", min=1)
    num_workers: int = knob(0, "DataLoader worker processes", read_by="engines", min=0)
    prefetch_factor: int | None = knob(
        None,
        "batches each worker loads ahead (PyTorch's default 2 when unset; needs num_workers > 0)",
        read_by="engines",
        min=1,
    )
    pin_memory: bool = knob(
        False, "pin host memory for faster GPU copies (ignored on CPU)", read_by="engines"
    )
    persistent_workers: bool = knob(False, "keep DataLoader workers alive between epochs", read_by="engines")
    accelerator: Literal["auto", "cpu", "gpu"] = knob("auto", "where to train", read_by="engines")
    devices: int = knob(1, "devices per node", read_by="engines", min=1)
    num_nodes: int = knob(1, "nodes (multi-node runs use Lightning's own launch)", read_by="engines", min=1)
    strategy: Literal["auto", "ddp", "fsdp"] = knob(
        "auto",
        "distribution strategy: fsdp is Lightning's FSDP on GPUs and fully_shard under Lightning's "
        "ModelParallelStrategy on CPU",
        read_by="engines",
    )
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "64-true"] = knob(
        "auto", "numeric precision; `auto` is 32-true on CPU and bf16-mixed on GPU", read_by="engines"
    )
    compile: bool = knob(False, "torch.compile the model submodules", read_by="engines")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = knob(
        "default", "torch.compile mode (with training.compile)", read_by="engines"
    )
    force_compile_distributed: bool = knob(
        False,
        "keep training.compile on with several devices even on PyTorch builds where that is known to fail "
        "(the stability guard otherwise turns it off)",
        read_by="engines",
    )
    force_bf16_cpu: bool = knob(
        False,
        "keep bf16-mixed on a CPU without native bf16 (the stability guard otherwise uses 32-true: "
        "emulated bf16 is ~36x slower)",
        read_by="engines",
    )
    cpu_offload_optimizer: bool = knob(
        False,
        "FSDP on GPUs: keep parameters, gradients and optimizer state on the CPU (needs strategy fsdp "
        "and accelerator gpu)",
        read_by="engines",
    )
    gradient_clip_val: float | None = knob(
        None, "clip gradients to this global norm (off when unset)", read_by="engines", gt=0
    )
    accumulate_grad_batches: int = knob(1, "batches accumulated per optimizer step", read_by="engines", min=1)
    ema_decay: float | None = knob(
        None, "exponential moving average of weights (off when unset)", read_by="engines", gt=0, lt=1.0
    )
    skip_lightning_val: bool = knob(
        False,
        "no validation loop, monitor or early stopping; gating is left to evaluation",
        read_by="engines",
    )
    val_every_n_epochs: int = knob(
        1,
        "validate (and write the best-k and last checkpoints) after every n-th epoch only, for epochs too "
        "short to validate after each; patience counts validations",
        read_by="engines",
        min=1,
    )
    val_max_samples: int | None = knob(
        4096,
        "validate on at most this many samples (frames, windows or pairs, by the stage): a fixed subset "
        "drawn from `seed`, the same at every validation, shared out to the tasks by size; bounds the "
        "cost of validating on a large file (evaluation always reads the whole split). The default is "
        "above every validation split of the shipped configs (at most 3,939) and caps a "
        "10,000-trajectory PDEBench file's 201,000 validation frames; null: the whole split",
        read_by="engines",
        min=1,
    )
    time_stride: int = knob(
        1, "frames between a latent pair's input and target", read_by="operator stage", min=1
    )
    latent_cache_dir: str | None = knob(
        None,
        "folder of the latent cache of the frozen encoder (off when unset); relative to the working "
        "directory",
        read_by="latent cache",
    )
    latent_cache_dtype: Literal["float16", "float32"] = knob(
        "float16", "dtype of cached latents", read_by="latent cache"
    )
    lightning_profile: Literal["none", "timer", "simple", "advanced", "pytorch"] = knob(
        "none", "profiling callbacks and profiler", read_by="engines"
    )
    max_time: str | None = knob(
        None,
        "wall-clock limit per stage, DD:HH:MM:SS; the learning-rate schedule "
        "ends at it when it comes before the last epoch",
        read_by="engines",
    )
    time_budget: float | None = knob(
        None,
        "wall-clock seconds for the whole `ups train` / `ups pipeline` command, from its start to its last "
        "checkpoint (set-up, latent cache, validations and checkpoint writes included); the stages share it "
        "by training.time_shares, a stage whose share is gone is skipped (off when unset)",
        read_by="engines",
        gt=0,
    )
    time_shares: dict[str, float] = knob(
        {
            "autoencoder": 0.3,
            "operator": 0.5,
            "diff_residual": 0.1,
            "consistency_distill": 0.1,
            "steady_prior": 0.6,
        },
        "with training.time_budget: each stage's weight; a stage gets its weight's part of the time left "
        "when it starts, relative to the stages still to run",
        read_by="engines",
    )
    nan_policy: Literal["stop", "skip_batch"] = knob(
        "stop",
        "a non-finite loss or gradient: stop (the stage ends naming the step and the loss term or "
        "parameters; its last checkpoint stays) or skip_batch (no update from that batch)",
        read_by="engines",
    )
    max_skipped_batches: int = knob(
        10, "with nan_policy=skip_batch, stop after this many", read_by="engines", min=0
    )
    deterministic: bool = knob(False, "ask PyTorch for deterministic kernels", read_by="engines")
    log_every_n_steps: int = knob(10, "training steps between logged rows", read_by="engines", min=1)


@dataclass
class CheckpointConfig:
    save_top_k: int = knob(2, "best checkpoints kept on `val/nrmse`", read_by="engines", min=1)
    every_n_steps: int | None = knob(
        None,
        "also write `last` every n optimizer steps inside an epoch, so that a resume "
        "continues on the next batch (off when unset)",
        read_by="engines",
        min=1,
    )


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"] = knob("adamw", "optimizer", read_by="stages")
    lr: float = knob(1e-3, "learning rate", read_by="stages", gt=0)
    weight_decay: float = knob(1e-4, "decoupled weight decay", read_by="stages", min=0.0)
    betas: list[float] = knob([0.9, 0.999], "Adam betas", read_by="stages")
    scheduler: Literal["none", "cosine", "step"] = knob(
        "cosine",
        "learning-rate schedule over the stage's steps (or training.max_time, if sooner)",
        read_by="stages",
    )
    warmup_steps: int = knob(0, "linear warm-up steps", read_by="stages", min=0)


@dataclass
class OptimizerOverride:
    """Per-stage overrides: a key left unset keeps the global `optimizer` value."""

    name: Literal["adamw", "adam", "sgd"] | None = knob(None, "optimizer", read_by="stages")
    lr: float | None = knob(None, "learning rate", read_by="stages", gt=0)
    weight_decay: float | None = knob(None, "decoupled weight decay", read_by="stages", min=0.0)
    scheduler: Literal["none", "cosine", "step"] | None = knob(
        None, "learning-rate schedule", read_by="stages"
    )
    warmup_steps: int | None = knob(None, "linear warm-up steps", read_by="stages", min=0)


@dataclass
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


@dataclass
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


@dataclass
class DiffResidualStageConfig(StageConfig):
    """The ``diff_residual`` stage: the flow-matching corrector of the operator's residual."""

    hidden: int = knob(128, "width of the flow-matching network", read_by="diff_residual stage", min=1)
    depth: int = knob(3, "blocks of the flow-matching network", read_by="diff_residual stage", min=1)
    steps_infer: int = knob(8, "sampler steps at inference", read_by="diff_residual stage", min=1)
    sampler: Literal["euler", "heun"] = knob("heun", "ODE sampler", read_by="diff_residual stage")
    val_samples: int = knob(
        4, "samples per input for CRPS during validation", read_by="diff_residual stage", min=1
    )


@dataclass
class ConsistencyStageConfig(StageConfig):
    """The ``consistency_distill`` stage: the corrector's 1-2 step student."""

    steps_infer: int = knob(
        1, "student sampling steps (1 or 2)", read_by="consistency_distill stage", min=1, max=2
    )


@dataclass
class SteadyPriorStageConfig(StageConfig):
    """The ``steady_prior`` stage: the generative prior of steady tasks."""

    hidden: int = knob(
        128, "width of the steady-state flow-matching network", read_by="steady_prior stage", min=1
    )
    depth: int = knob(3, "blocks of the steady-state network", read_by="steady_prior stage", min=1)
    steps_infer: int = knob(8, "sampler steps at inference", read_by="steady_prior stage", min=1)


@dataclass
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


# ----------------------------------------------------------------- evaluation and beyond
@dataclass
class EvaluationConfig:
    split: Literal["val", "test"] = knob("test", "split evaluated", read_by="evaluation")
    horizon: int | None = knob(
        None, "rollout steps evaluated (the whole trajectory when unset)", read_by="evaluation", min=1
    )
    per_sample: bool = knob(
        False,
        "also write each evaluated trajectory's metrics, by its index in the file (`per_sample` in the JSON)",
        read_by="evaluation",
    )
    context_frames: int = knob(
        1,
        "frames given before the rollout, on the time_stride axis (PDEBench's initial_step): "
        "the rollout starts from the last of them and metrics count only the frames after "
        "it; 1 = from the initial condition (written blank in the leaderboard)",
        read_by="evaluation",
        min=1,
    )
    batch_size: int = knob(16, "evaluation batch size", read_by="evaluation", min=1)
    report: bool = knob(True, "write the HTML report with plots", read_by="evaluation")
    precision: Literal["32-true", "bf16-mixed"] = knob(
        "32-true", "numeric precision of evaluation", read_by="evaluation"
    )
    deterministic: bool = knob(
        True, "ask PyTorch for deterministic kernels (warn where there are none)", read_by="evaluation"
    )
    after_pipeline: bool = knob(
        False,
        "`ups pipeline` evaluates the run when its stages are done (files in <run>/evaluation/)",
        read_by="pipeline",
    )


@dataclass
class GatesConfig:
    improvement_metric: str = knob(
        "nrmse",
        "leaderboard column a candidate must lower (e.g. nrmse, corrected_nrmse, "
        "burgers1d/nrmse); --improvement-metric overrides",
        read_by="fast-to-sota",
    )
    min_small_delta: float = knob(
        0.0,
        "minimum improvement (baseline - candidate) at the small evaluation",
        read_by="fast-to-sota",
        min=0.0,
    )
    min_full_delta: float = knob(
        0.0,
        "minimum improvement (baseline - candidate) at the full evaluation",
        read_by="fast-to-sota",
        min=0.0,
    )
    ratio_limits: dict[str, float] = knob(
        {"crmse": 1.5, "brmse": 1.5},
        "metric -> largest allowed candidate/baseline ratio (conservation crmse, boundary brmse; add "
        "ms_per_rollout_step to bound the cost, a timing that varies with machine and load); a metric "
        "missing on either side is reported as skipped",
        read_by="fast-to-sota",
    )


@dataclass
class WandbConfig:
    enabled: bool = knob(
        False,
        "log to Weights & Biases: one run per run folder (its id in WANDB_CONTEXT_FILE, "
        "default <run>/wandb_context.json), files under <run>/logs/wandb/",
        read_by="tracking",
    )
    mode: Literal["offline", "online"] = knob(
        "offline",
        "offline writes the run locally only (sync it later with `wandb sync`); online needs W&B credentials",
        read_by="tracking",
    )
    project: str = knob("ups", "W&B project", read_by="tracking")
    entity: str | None = knob(None, "W&B entity (team or user)", read_by="tracking")
    group: str | None = knob(None, "W&B group of the run", read_by="tracking")
    tags: list[str] = knob([], "W&B tags of the run", read_by="tracking")


@dataclass
class LoggingConfig:
    tensorboard: bool = knob(
        False, "also log to TensorBoard (CSV logs are always written)", read_by="tracking"
    )
    wandb: WandbConfig = section(WandbConfig, "Weights & Biases, offline by default")


@dataclass
class PathsConfig:
    data_dir: str = knob(
        "data/builtin", "folder of the data files; relative to the working directory", read_by="data"
    )
    runs_dir: str = knob(
        "runs", "folder of run folders; relative to the working directory", read_by="engines"
    )


@dataclass
class ModelConfig:
    use_activation_checkpoint: bool = knob(
        False,
        "recompute the activations of the transformer and convolution blocks in the backward pass "
        "(less memory, about a third more compute)",
        read_by="engines",
    )


@dataclass
class Config:
    seed: int = knob(0, "seed of splits, initialisation and sampling", read_by="everything", min=0)
    data: DataConfig = section(DataConfig, "what to train on")
    latent: LatentConfig = section(LatentConfig, "the latent space")
    encoder: EncoderConfig = section(EncoderConfig, "grid encoder")
    decoder: DecoderConfig = section(DecoderConfig, "any-point decoder")
    model: ModelConfig = section(ModelConfig, "settings of every model")
    training: TrainingConfig = section(TrainingConfig, "batching, loaders, precision, distribution")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpointing")
    optimizer: OptimizerConfig = section(OptimizerConfig, "optimizer and schedule of every stage")
    stages: StagesConfig = section(StagesConfig, "each stage's budget, optimizer, loss and model")
    evaluation: EvaluationConfig = section(EvaluationConfig, "evaluation settings")
    gates: GatesConfig = section(GatesConfig, "promotion gates")
    logging: LoggingConfig = section(LoggingConfig, "loggers")
    paths: PathsConfig = section(PathsConfig, "where data and runs live")
