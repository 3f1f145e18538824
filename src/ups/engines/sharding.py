"""Which Lightning strategy a run gets (``training.strategy``, devices, accelerator), and fully
sharded data parallelism.

- ``auto`` / ``ddp``: Lightning's; with several devices and a stage whose steps can leave
  parameters unused (one task's stem per batch), DDP is told to look for them.
- ``fsdp`` on GPUs: Lightning's ``FSDPStrategy``, every transformer, attention and convolution
  block its own shard unit, ``training.cpu_offload_optimizer`` as FSDP's CPU offload, checkpoints
  gathered into one full state dict (``state_dict_type="full"``).
- ``fsdp`` on CPUs (where Lightning's FSDP strategy does not run): FSDP2's ``fully_shard`` under
  Lightning's ``ModelParallelStrategy`` (data-parallel size = every device, gloo), applied in
  ``StageModule.configure_model`` by ``shard_fully``; checkpoints are gathered into one full
  state dict on rank 0 (``save_distributed_checkpoint=False``), the same single-file format as
  every other run, so ``ups evaluate`` and either engine read them.
- ``fsdp`` with one device: nothing to shard; the default strategy.
"""

from __future__ import annotations

import logging

from torch import nn

from ups.config import Config
from ups.config.engines import uses_gpu
from ups.engines.speed import BLOCKS

log = logging.getLogger("ups")


def strategy_for(cfg: Config, all_parameters_used: bool):
    """The ``strategy`` argument of the run's Trainers (see the module docstring)."""
    t = cfg.training
    devices = t.devices * t.num_nodes
    if t.strategy == "fsdp" and devices > 1:
        if uses_gpu(cfg):
            from lightning.pytorch.strategies import FSDPStrategy

            return FSDPStrategy(
                auto_wrap_policy=set(BLOCKS),
                cpu_offload=t.cpu_offload_optimizer,
                state_dict_type="full",
                use_orig_params=True,
            )
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            data_parallel_size=devices,
            tensor_parallel_size=1,
            save_distributed_checkpoint=False,
            process_group_backend="gloo",
        )
    if t.strategy == "fsdp":
        log.info("training.strategy=fsdp with one device: nothing to shard, the default strategy runs")
        return "auto"
    if devices > 1 and t.strategy in ("auto", "ddp") and not all_parameters_used:
        return "ddp_find_unused_parameters_true"
    return t.strategy


def shard_fully(model: nn.Module, mesh) -> int:
    """``fully_shard`` every module of ``model`` that owns parameters itself, innermost first, so
    that each parameter is gathered by the forward of the module that uses it. Returns the
    number of shard units."""
    from torch.distributed.fsdp import fully_shard

    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    for module in reversed(owners):  # modules() is outermost first
        fully_shard(module, mesh=mesh, reshard_after_forward=True)
    return len(owners)
