"""Rules between a config, the engine that trains it and this machine: what each engine can run.

``engine_problems`` adds them to a config's problems: ``ups.resolve.load_config`` when a training
command resolves its config (reported with every other problem), and ``ups.engines.preflight``
for code that calls an engine directly. Without an engine only what no engine could run counts.
"""

from __future__ import annotations

import importlib.util

from ups.config.schema import Config
from ups.config.validate import Problems
from ups.errors import UPSError

ENGINE_NAMES = ("lightning", "native")
NATIVE_PRECISIONS = ("32-true", "bf16-mixed")


def uses_gpu(cfg: Config) -> bool:
    """Whether the config trains on GPUs here (``training.accelerator`` gpu, or auto with CUDA)."""
    accelerator = cfg.training.accelerator
    if accelerator != "auto":
        return accelerator == "gpu"
    # lazy: only an ``auto`` accelerator asks torch, so reading a config does not load it
    import torch

    return torch.cuda.is_available()


def refuse_unknown_engine(engine: str) -> None:
    if engine not in ENGINE_NAMES:
        raise UPSError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINE_NAMES)}.")


def check_engine(cfg: Config, engine: str) -> None:
    """``engine_problems`` of ``engine`` alone, raised as one ``ConfigError``."""
    refuse_unknown_engine(engine)
    problems = Problems({})
    engine_problems(cfg, engine, problems)
    problems.raise_if_any(None)


def engine_problems(cfg: Config, engine: str | None, problems: Problems) -> None:
    """What ``engine`` (None: any engine) cannot run of ``cfg`` on this machine."""
    t = cfg.training
    devices = t.devices * t.num_nodes
    if engine == "native":
        if devices > 1:
            problems.add(
                ("training", "devices"),
                f"the native engine runs on one device (training.devices={t.devices}, "
                f"training.num_nodes={t.num_nodes}); use --engine lightning for several devices.",
            )
        if t.precision not in (*NATIVE_PRECISIONS, "auto"):
            problems.add(
                ("training", "precision"),
                f"training.precision={t.precision} is Lightning-only; the native engine does 32-true and "
                f"bf16-mixed.",
            )
        if t.time_budget is not None:
            problems.add(
                ("training", "time_budget"),
                "training.time_budget is kept by the Lightning engine; use --engine lightning, or "
                "training.max_time (per stage) with the native engine.",
            )
    if (
        engine == "lightning"
        and cfg.logging.tensorboard
        and not any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
    ):
        problems.add(
            ("logging", "tensorboard"),
            "logging.tensorboard=true needs the tensorboard package: `pip install tensorboard`, "
            "or set logging.tensorboard=false (metrics.csv is written either way).",
        )
    if t.cpu_offload_optimizer:
        _check_cpu_offload(cfg, engine, devices, problems)


def _check_cpu_offload(cfg: Config, engine: str | None, devices: int, problems: Problems) -> None:
    """``training.cpu_offload_optimizer`` offloads FSDP's shards: the Lightning engine with FSDP on
    GPUs (and, when an engine trains, several GPUs of this machine)."""
    t = cfg.training
    fits = t.strategy == "fsdp" and t.accelerator != "cpu"
    found = f"strategy {t.strategy}, accelerator {t.accelerator}"
    if engine is not None:
        gpu = uses_gpu(cfg)
        fits = fits and engine == "lightning" and gpu and devices >= 2
        found += f", engine {engine}, {devices} device(s), {'GPU' if gpu else 'CPU'}"
    if not fits:
        problems.add(
            ("training", "cpu_offload_optimizer"),
            f"offloads FSDP's state to the CPU, so it needs training.strategy=fsdp on GPUs, with the "
            f"Lightning engine on several of them (found: {found}); set it false.",
        )
