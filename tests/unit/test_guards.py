"""Stability guards (each: fallback, override, no match), activation checkpointing, compile mode,
and the config checks of the distributed knobs."""

from __future__ import annotations

import logging

import pytest
import torch

from ups.engines.guards import GUARDS, Machine, apply_guards
from ups.engines.speed import checkpoint_activations
from ups.errors import ConfigError
from ups.models.blocks import TransformerBlock
from ups.resolve import load_config as load


def load_config(path, overrides=()):
    """The schema defaults with overrides; data files need not exist (a fresh clone has none)."""
    return load(path, overrides, check_files=False)


OLD_TORCH_CPU = Machine(torch_version=(2, 3), gpu=False, cpu_bf16=False)
NEW_TORCH_GPU = Machine(torch_version=(2, 13), gpu=True, cpu_bf16=False)

CASES = {  # guard -> (overrides that match it, the fallback's effect, the override key or None)
    "compile-distributed": (
        ["training.compile=true", "training.devices=2", "training.strategy=ddp"],
        lambda cfg: cfg.training.compile is False,
        "training.force_compile_distributed",
    ),
    "bf16-on-cpu-without-bf16": (
        ["training.precision=bf16-mixed"],
        lambda cfg: cfg.training.precision == "32-true",
        "training.force_bf16_cpu",
    ),
    "compile-max-autotune-on-cpu": (
        ["training.compile=true", "training.compile_mode=max-autotune"],
        lambda cfg: cfg.training.compile_mode == "default",
        None,
    ),
    "compile-cudagraphs-with-ddp": (
        [
            "training.compile=true",
            "training.compile_mode=reduce-overhead",
            "training.devices=2",
            "training.strategy=ddp",
        ],
        lambda cfg: cfg.training.compile_mode == "default",
        "training.force_compile_distributed",
    ),
}
MACHINE = {"compile-cudagraphs-with-ddp": Machine(torch_version=(2, 13), gpu=True, cpu_bf16=False)}


def test_every_guard_has_a_test_a_reason_and_a_source():
    assert {g.name for g in GUARDS} == set(CASES)
    assert all(g.reason and g.source and g.fallback for g in GUARDS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_matching_guard_warns_and_falls_back_unless_overridden(name, caplog):
    overrides, fell_back, override = CASES[name]
    caplog.set_level(logging.WARNING, logger="ups")
    cfg = load_config(None, overrides)
    machine = MACHINE.get(name, OLD_TORCH_CPU)
    safe = apply_guards(cfg, machine)
    assert fell_back(safe) and not fell_back(cfg)
    assert f"stability guard {name}" in caplog.text and "Falling back to" in caplog.text
    caplog.clear()
    apply_guards(cfg, OLD_TORCH_CPU if machine.gpu else NEW_TORCH_GPU)  # a machine it does not hit
    assert f"stability guard {name}" not in caplog.text
    if override:
        caplog.clear()
        forced = load_config(None, [*overrides, f"{override}=true"])
        assert apply_guards(forced, machine) == forced and "Kept as configured" in caplog.text


def test_no_guard_touches_the_default_config(caplog):
    cfg = load_config(None)
    assert apply_guards(cfg, OLD_TORCH_CPU) == cfg and "stability guard" not in caplog.text


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(TransformerBlock(16, 2, 2.0), TransformerBlock(16, 2, 2.0))
    checked = torch.nn.Sequential(TransformerBlock(16, 2, 2.0), TransformerBlock(16, 2, 2.0))
    checked.load_state_dict(plain.state_dict())
    assert checkpoint_activations(checked) == 2 and checkpoint_activations(checked) == 0  # once only
    calls = []
    for block in checked:
        block.norm1.register_forward_pre_hook(lambda module, args: calls.append(module))
    x = torch.randn(3, 5, 16)
    plain(x).square().mean().backward()
    checked(x).square().mean().backward()
    assert len(calls) == 4  # forward, then again in the backward pass
    for a, b in zip(plain.parameters(), checked.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    calls.clear()
    with torch.no_grad():
        checked(x)
    assert len(calls) == 2


def test_compile_mode_reaches_torch_compile(monkeypatch):
    from ups.engines.speed import speed_knobs

    modes = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: modes.append(kw.get("mode")))
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    speed_knobs(
        model,
        load_config(None, ["training.compile=true", "training.compile_mode=max-autotune-no-cudagraphs"]),
    )
    assert modes == ["max-autotune-no-cudagraphs"] * 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.cpu_offload_optimizer=true"], "needs training.strategy=fsdp on GPUs"),
        (
            ["training.cpu_offload_optimizer=true", "training.strategy=fsdp", "training.accelerator=cpu"],
            "on GPUs",
        ),
        (
            ["training.strategy=fsdp", "stages.operator.ema_decay=0.99"],
            "EMA of weights is not available under FSDP",
        ),
    ],
)
def test_distributed_knobs_that_cannot_apply_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_fsdp_is_refused_for_stages_whose_ranks_would_run_different_modules(tmp_path):
    from ups.engines import preflight
    from ups.runs import RunDir

    class Stemmed:
        name = "operator"

        def all_parameters_used_every_step(self):
            return False

    cfg = load_config(None, ["training.strategy=fsdp", "training.devices=2"])
    with pytest.raises(Exception, match="use training.strategy=ddp for it"):
        preflight(Stemmed(), cfg, RunDir(tmp_path), engine="lightning", resume=False)


def test_cpu_offload_on_a_machine_without_gpu_is_refused_when_resolved_for_an_engine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    overrides = ["training.strategy=fsdp", "training.devices=2", "training.cpu_offload_optimizer=true"]
    load(None, overrides, check_files=False)  # the config alone could run, on a machine with GPUs
    with pytest.raises(
        ConfigError, match="with the Lightning engine on several of them .*engine lightning, 2 device.*CPU"
    ):
        load(None, overrides, check_files=False, engine="lightning")
