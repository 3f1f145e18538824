"""Stability guards: known-bad combinations of settings and machines, checked before a stage
trains. A matching guard logs a warning with its reason and applies its safe fallback, unless its
override key is set (then it only warns). Both engines run ``apply_guards``.

Each guard is one row of ``GUARDS``: what it matches, why it is bad and where that is known from,
the fallback, and the override.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import torch

from ups.config import Config
from ups.config.engines import uses_gpu

log = logging.getLogger("ups")


@dataclass(frozen=True)
class Machine:
    """What the guards look at besides the config."""

    torch_version: tuple[int, int]
    gpu: bool
    cpu_bf16: bool  # fast bf16 matmuls on this CPU (AMX)

    @staticmethod
    def here(cfg: Config) -> Machine:
        major, minor = (int(part) for part in torch.__version__.split(".")[:2])
        return Machine((major, minor), uses_gpu(cfg), _cpu_has_bf16())


def _cpu_has_bf16() -> bool:
    """AMX tiles: where CPU bf16 matmuls are fast. AVX512-BF16 alone is not enough (see the guard)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


@dataclass(frozen=True)
class Guard:
    name: str
    matches: Callable[[Config, Machine], bool]
    reason: str
    source: str
    fallback: str  # what the fallback does, in words
    apply: Callable[[Config], Config]  # the fallback
    override: str | None  # the config key that keeps the setting (None: no override)


def _training(cfg: Config, **changes) -> Config:
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes))


def _devices(cfg: Config) -> int:
    return cfg.training.devices * cfg.training.num_nodes


GUARDS = (
    Guard(
        "compile-distributed",
        lambda cfg, m: cfg.training.compile and _devices(cfg) > 1 and m.torch_version < (2, 4),
        "torch.compile with several devices crashed on PyTorch builds before 2.4 (DDP with activation "
        "checkpointing and dynamic shapes), and DDP splits the compiled graph at its buckets",
        "pytorch/pytorch#118984 (compile + DDP + checkpoint crash, 2.2.0), pytorch/pytorch#108966",
        "training.compile=false",
        lambda cfg: _training(cfg, compile=False),
        "training.force_compile_distributed",
    ),
    Guard(
        "bf16-on-cpu-without-bf16",
        lambda cfg, m: not m.gpu and cfg.training.precision == "bf16-mixed" and not m.cpu_bf16,
        "bf16 autocast on a CPU without AMX runs its matmuls far slower than float32: measured ~36x slower "
        "on this project's CI machines, whose CPUs do have AVX512-BF16",
        "UPS measurement on 2-core AVX512-BF16 machines; PyTorch CPU autocast docs (AMX for bf16 speed)",
        "training.precision=32-true",
        lambda cfg: _training(cfg, precision="32-true"),
        "training.force_bf16_cpu",
    ),
    Guard(
        "compile-cudagraphs-with-ddp",
        lambda cfg, m: (
            m.gpu
            and cfg.training.compile
            and cfg.training.compile_mode == "reduce-overhead"
            and _devices(cfg) > 1
        ),
        "compile mode reduce-overhead (CUDA graphs) under DDP crashes in the CUDA caching allocator when "
        "evaluation follows training steps",
        "pytorch/pytorch#128218",
        "training.compile_mode=default",
        lambda cfg: _training(cfg, compile_mode="default"),
        "training.force_compile_distributed",
    ),
    Guard(
        "compile-max-autotune-on-cpu",
        lambda cfg, m: (
            not m.gpu
            and cfg.training.compile
            and cfg.training.compile_mode in ("reduce-overhead", "max-autotune")
        ),
        "CUDA graphs (compile modes reduce-overhead and max-autotune) do not exist on CPU; PyTorch skips "
        "them with a warning per graph",
        "PyTorch docs, torch.compile (mode)",
        "training.compile_mode=default",
        lambda cfg: _training(cfg, compile_mode="default"),
        None,
    ),
)


def apply_guards(cfg: Config, machine: Machine | None = None) -> Config:
    """The config with the fallback of every matching guard applied (or only warned about, when
    the guard's override is set)."""
    machine = machine or Machine.here(cfg)
    for guard in GUARDS:
        if not guard.matches(cfg, machine):
            continue
        forced = guard.override is not None and reduce(getattr, guard.override.split("."), cfg)
        if forced:
            log.warning(
                "stability guard %s: %s (%s). Kept as configured because %s=true.",
                guard.name,
                guard.reason,
                guard.source,
                guard.override,
            )
            continue
        log.warning(
            "stability guard %s: %s (%s). Falling back to %s%s.",
            guard.name,
            guard.reason,
            guard.source,
            guard.fallback,
            f"; set {guard.override}=true to keep the setting" if guard.override else "",
        )
        cfg = guard.apply(cfg)
    return cfg
