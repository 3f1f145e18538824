"""Stage ``diff_residual``: a flow-matching corrector of the frozen operator's one-step residual.

The operator's prediction op(z_t) misses r = z_{t+1} - op(z_t). A conditional flow (noise ->
r / sigma, sigma the residual's RMS over the train windows, stored as the buffer
``residual_scale``) is learned with the velocity network ``FlowNet`` conditioned per token on
op(z_t) and globally on dt, task and PDE parameters. Loss (rectified flow matching):
MSE(v(x_s, s), r/sigma - noise) at x_s = (1 - s) noise + s r/sigma, s ~ U(0, 1);
``train/nrmse`` is ||v - target|| / ||target|| per sample.

The operator, encoder and decoder are frozen teachers from the operator's best checkpoint
(which holds the autoencoder it was trained on; EMA weights when kept). Sampling integrates
the flow with ``stages.diff_residual.steps_infer`` steps of ``stages.diff_residual.sampler`` (euler or heun).

Validation, decoded on the whole grid in physical units (noise seeded per batch, so both
engines and every epoch draw the same):
- ``nrmse``: one step of op + one sampled correction; ``operator_nrmse``: op alone, same pairs;
- ``ensemble_nrmse``: the mean of ``stages.diff_residual.val_samples`` corrected predictions;
- ``crps`` and ``spread_skill`` of that ensemble;
- ``rollout_nrmse`` / ``operator_rollout_nrmse``: mean over the rollout horizon, corrected at
  every step (one sample) / operator alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ups.checkpoint import load_upstream
from ups.data.tasks import param_names
from ups.metrics import crps, nrmse, spread_skill
from ups.models.flow import FlowNet, flow_matching_pair, sample_flow
from ups.stages.autoencoder import build_autoencoder
from ups.stages.batch import (
    batches_of,
    denormalize,
    evenly_spaced,
    flat_points,
    on_device,
    per_task,
    relative_rmse,
)
from ups.stages.operator import OperatorStage

# Train windows used to measure the residual's scale (shared evenly by the tasks).
_SCALE_WINDOWS = 2048


class ResidualModel(nn.Module):
    """Frozen encoder, decoder and operator + the trainable residual flow and its scale."""

    def __init__(self, frozen: nn.Module, flow: FlowNet):
        super().__init__()
        self.encoder, self.decoder, self.operator = frozen.encoder, frozen.decoder, frozen.operator
        self.flow = flow
        self.register_buffer("residual_scale", torch.ones(()))


def residual_flow(cfg, stage: OperatorStage) -> FlowNet:
    d = cfg.stages.diff_residual
    return FlowNet(
        cfg.latent.tokens,
        cfg.latent.dim,
        context_dim=cfg.latent.dim,
        hidden=d.hidden,
        depth=d.depth,
        heads=cfg.stages.operator.heads,
        n_params=len(param_names(stage.dyn_tasks)),
        n_tasks=len(stage.dyn_tasks),
    )


class DiffResidualStage(OperatorStage):
    name = "diff_residual"
    upstream = ("operator",)

    def build(self) -> nn.Module:
        frozen = self.frozen_operator()
        return ResidualModel(frozen, residual_flow(self.cfg, self))

    def frozen_operator(self) -> nn.Module:
        """Encoder, decoder and operator with the operator checkpoint's weights, frozen."""
        frozen = self.operator_model(build_autoencoder(self.cfg, self.tasks))
        load_upstream(frozen, self.upstream_checkpoints["operator"], "operator")
        return frozen.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.model.encoder, self.model.decoder, self.model.operator]

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """The latent cache (when on), then ``residual_scale``: the residual's RMS over up to
        2048 train windows, spread evenly over each task and encoded one task at a time."""
        self.prepare_latents(device, progress=progress)
        windows = self._windows("train", fields=self.latents is None)
        share = max(1, _SCALE_WINDOWS // len(windows.task_sizes))
        total, count = 0.0, 0
        with torch.no_grad(), on_device(self.frozen_modules(), device):
            for start, size in zip(np.cumsum([0] + windows.task_sizes[:-1]).tolist(), windows.task_sizes):
                picks = [start + i for i in evenly_spaced(size, share)]
                for batch in batches_of(windows, picks, self.collate, 256, device):
                    residual = self.residual(batch)[1]
                    total, count = total + float(residual.double().pow(2).sum()), count + residual.numel()
        self.model.residual_scale.fill_(max((total / max(count, 1)) ** 0.5, 1e-8))

    # ---- computation --------------------------------------------------------------
    def residual(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z [B, H+1, L, D], r = z_1 - op(z_0) [B, L, D], op(z_0) [B, L, D]) with the frozen operator."""
        z = self.encode_window(batch)
        with torch.no_grad():
            pred = self.model.operator(
                z[:, 0], batch["dt"], batch["params"], batch["task_id"], self.forcing(batch)
            )
        return z, z[:, 1] - pred, pred

    def velocity(self, batch: dict, context: torch.Tensor, net: FlowNet | None = None):
        """v(x, s) of the flow conditioned on ``context`` (op(z_t)) and the batch's dt, params, task."""
        net = net or self.model.flow
        return lambda x, s: net(x, s, context, batch["dt"], batch["params"], batch["task_id"])

    def correction(
        self, batch: dict, context: torch.Tensor, generator: torch.Generator, net: FlowNet | None = None
    ) -> torch.Tensor:
        """One sampled residual [B, L, D] for op(z_t) = ``context``, in latent units."""
        noise = torch.randn(context.shape, generator=generator).to(context)
        d = self.cfg.stages.diff_residual
        return (
            sample_flow(self.velocity(batch, context, net), noise, d.steps_infer, d.sampler)
            * self.model.residual_scale
        )

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        _, residual, pred = self.residual(batch)
        x_s, s, target, _ = flow_matching_pair(residual / self.model.residual_scale, self.generator)
        v = self.velocity(batch, pred)(x_s, s)
        terms = {"loss": F.mse_loss(v, target)}
        per_task(terms, "nrmse", relative_rmse(v, target), batch["task_names"])
        return terms

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        generator = self.validation_generator(batch)
        z, _, pred = self.residual(batch)
        corrected = [
            pred + self.correction(batch, pred, generator)
            for _ in range(self.cfg.stages.diff_residual.val_samples)
        ]
        decode, truth = self.decoding(batch, z[:, 0])
        samples = torch.stack([decode(c, 1) for c in corrected])
        names = batch["task_names"]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(samples[0], truth(1)), names)
        per_task(metrics, "operator_nrmse", nrmse(decode(pred, 1), truth(1)), names)
        per_task(metrics, "ensemble_nrmse", nrmse(samples.mean(dim=0), truth(1)), names)
        per_task(metrics, "crps", crps(samples, truth(1)), names)
        if len(samples) > 1:
            per_task(metrics, "spread_skill", spread_skill(samples, truth(1)), names)
        steps = batch["window"].shape[1] - 1
        rollouts = {
            "rollout_nrmse": self.rollout(
                batch, z[:, 0], steps, correct=lambda step: self.correction(batch, step, generator)
            ),
            "operator_rollout_nrmse": self.rollout(batch, z[:, 0], steps),
        }
        for key, states in rollouts.items():
            errors = [nrmse(decode(states[:, k], k + 1), truth(k + 1)) for k in range(steps)]
            per_task(metrics, key, torch.stack(errors).mean(0), names)
        return metrics

    def decoding(self, batch: dict, z0: torch.Tensor):
        """(decode: (latents predicted k steps from the window's frame 0, encoded as z0; k) -> physical
        fields [B, Q, C] (``decoder_for``), truth: k -> physical frame k of the window)."""
        window, names = batch["window"], batch["task_names"]
        decode = self.decoder_for(batch, z0, flat_points(window[:, 0]), flat_points(batch["coords"]))

        def truth(k: int) -> torch.Tensor:
            return denormalize(self.normalizers, names, flat_points(window[:, k]).float())

        return decode, truth

    def validation_generator(self, batch: dict) -> torch.Generator:
        """Noise for validation sampling, seeded by the batch's first window (same in every epoch
        and engine, and independent of the training generator)."""
        first = int(batch["index"][0]) * 100_003 + int(batch["t0"][0]) * 101 + int(batch["task_id"][0])
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + first)
