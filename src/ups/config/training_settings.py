"""The schema's ``training``, ``checkpoint`` and ``optimizer`` sections: how every stage is
trained (part of ``ups.config.schema.Config``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ups.config.knobs import knob


@dataclass(frozen=True)
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
    slurm_requeue: bool = knob(
        False,
        "under SLURM, Lightning's auto-requeue (lightning engine): on the requeue signal the stage writes "
        "a checkpoint into its own folder and the job is requeued; the requeued command (which must name "
        "its run folder: --run-dir or --run-id) continues that run and stage",
        read_by="engines",
    )
    deterministic: bool = knob(False, "ask PyTorch for deterministic kernels", read_by="engines")
    log_every_n_steps: int = knob(10, "training steps between logged rows", read_by="engines", min=1)


@dataclass(frozen=True)
class CheckpointConfig:
    save_top_k: int = knob(2, "best checkpoints kept on `val/nrmse`", read_by="engines", min=1)
    keep_last: int = knob(
        2,
        "`last` checkpoints kept (`last.ckpt`, `last-1.ckpt`, …): a damaged newest one falls back "
        "to the previous",
        read_by="engines",
        min=1,
    )
    every_n_steps: int | None = knob(
        None,
        "also write `last` every n optimizer steps inside an epoch, so that a resume "
        "continues on the next batch (off when unset)",
        read_by="engines",
        min=1,
    )


@dataclass(frozen=True)
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
