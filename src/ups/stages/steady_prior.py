"""Stage ``steady_prior``: a generative prior in latent space for steady problems, z(a) -> z(u).

For each steady pair (Darcy: coefficient a(x) -> solution u(x)) the frozen autoencoder gives
z(a) and z(u). Two networks with the same backbone (``FlowNet``, per-token context z(a), global
conditioning on task and PDE parameters) train together, in one optimiser and budget:

- a regression g(z(a)) of z(u) (plain MSE; its input x and flow time s are zero), the prior's
  conditional mean;
- a conditional flow of what the regression misses, r = (z(u) - g(z(a))) / sigma, with g's
  output detached (rectified flow matching, MSE(v(x_s, s), r - noise)). sigma, the buffer
  ``residual_scale``, is the RMS spread of the train solutions' latents about their mean, so
  an untrained regression leaves a residual of about unit scale, like the noise.

A sample is g(z(a)) + sigma * (the flow integrated from noise), so samples are centred on the
regression, and the flow only has to learn the spread about it, as the ``diff_residual``
corrector does around the operator. Loss = flow + regression; ``train/nrmse`` is the flow's
per-sample relative velocity error.

Validation, decoded on the whole grid in physical units: ``nrmse`` of the solution sampled
in ``stages.steady_prior.steps_infer`` steps of ``stages.diff_residual.sampler``; ``regression_nrmse`` of the
regression alone; ``reconstruction_nrmse`` of decoding z(u) itself (the autoencoder's floor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ups.checkpoint import load_upstream
from ups.data.latent_pairs import tasks_of_kind
from ups.data.tasks import SteadyPairDataset, param_names
from ups.metrics import nrmse
from ups.models.blocks import at_least_float32
from ups.models.flow import FlowNet, flow_matching_pair, sample_flow
from ups.stages.autoencoder import build_autoencoder
from ups.stages.base import Stage
from ups.stages.batch import (
    batches_of,
    denormalize,
    evenly_spaced,
    flat_points,
    on_device,
    per_task,
    relative_rmse,
    transpose_half,
)
from ups.stages.dynamics import flow_net

# Train pairs encoded to measure the spread of the solutions' latents (residual_scale).
_SCALE_PAIRS = 1024


class SteadyPriorModel(nn.Module):
    def __init__(self, autoencoder: nn.Module, flow: FlowNet, regression: FlowNet):
        super().__init__()
        self.encoder, self.decoder = autoencoder.encoder, autoencoder.decoder
        self.flow = flow
        self.regression = regression
        self.register_buffer("residual_scale", torch.ones(()))


class SteadyPriorStage(Stage):
    name = "steady_prior"
    upstream = ("autoencoder",)

    def build(self) -> nn.Module:
        cfg = self.cfg
        self.steady = tasks_of_kind(self.tasks, "steady", self.name)
        self.normalizers = {t.name: t.normalizer for t in self.steady}
        self.param_order = param_names(self.steady)
        self.transposed_names = {t.name for t in self.steady if t.transpose_symmetric}
        autoencoder = build_autoencoder(cfg, self.tasks)
        if self.upstream_checkpoint() is not None:
            load_upstream(autoencoder, self.upstream_checkpoint(), "autoencoder")
        autoencoder.requires_grad_(False)
        p = cfg.stages.steady_prior
        return SteadyPriorModel(autoencoder, flow_net(cfg, p, self.steady), flow_net(cfg, p, self.steady))

    def frozen_modules(self) -> list[nn.Module]:
        return [self.model.encoder, self.model.decoder]

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """``residual_scale``: the RMS of z(u) about its mean over the train pairs (at most
        ``_SCALE_PAIRS``, evenly spread), encoded in batches of 64."""
        pairs = self.train_dataset()
        picks = evenly_spaced(len(pairs), _SCALE_PAIRS)
        latents = []
        with torch.no_grad(), on_device(self.frozen_modules(), device):
            for batch in batches_of(pairs, picks, self.collate, 64, device):
                latents.append(
                    self.model.encoder(batch["target"], batch["coords"], amplitude=False).double().cpu()
                )
        z_u = torch.cat(latents)
        spread = float((z_u - z_u.mean(dim=0)).pow(2).mean().sqrt())
        self.model.residual_scale.fill_(max(spread, 1e-8))

    def train_dataset(self):
        return SteadyPairDataset(self.steady, "train", param_order=self.param_order)

    def val_dataset(self):
        return SteadyPairDataset(self.steady, "val", param_order=self.param_order)

    # ---- computation --------------------------------------------------------------
    @torch.no_grad()
    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(z(a), z(u)), each [B, L, D]; steady fields do not carry their amplitude (``latent.amplitude``)."""
        coords = batch["coords"]
        return (
            self.model.encoder(batch["input"], coords, amplitude=False),
            self.model.encoder(batch["target"], coords, amplitude=False),
        )

    def velocity(self, batch: dict, z_a: torch.Tensor):
        return lambda x, s: self.model.flow(x, s, z_a, None, batch["params"], batch["task_id"])

    def regress(self, batch: dict, z_a: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(z_a.shape[0], device=z_a.device, dtype=z_a.dtype)
        return self.model.regression(
            torch.zeros_like(z_a), zeros, z_a, None, batch["params"], batch["task_id"]
        )

    def sample(
        self, batch: dict, z_a: torch.Tensor, guess: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """A solution latent [B, L, D]: the regression's ``guess`` plus the flow's residual integrated
        from ``noise``."""
        residual = sample_flow(
            self.velocity(batch, z_a),
            noise,
            self.cfg.stages.steady_prior.steps_infer,
            self.cfg.stages.diff_residual.sampler,
        )
        return guess + self.model.residual_scale * residual

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        if batch["task_names"][0] in self.transposed_names:  # a pair transposed is a pair of the same problem
            a, u = transpose_half([batch["input"], batch["target"]], self.generator)
            batch = {**batch, "input": a, "target": u}
        z_a, z_u = self.encode(batch)
        guess = self.regress(batch, z_a)
        residual = (z_u - guess.detach()) / self.model.residual_scale
        x_s, s, target, _ = flow_matching_pair(residual, self.generator)
        v = self.velocity(batch, z_a)(x_s, s)
        flow, regression = F.mse_loss(v, target), F.mse_loss(guess, z_u)
        terms = {"loss": flow + regression, "flow": flow, "regression": regression}
        per_task(terms, "nrmse", relative_rmse(v, target), batch["task_names"])
        return terms

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        z_a, z_u = self.encode(batch)
        first = int(batch["index"][0]) * 101 + int(batch["task_id"][0])
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + first)
        noise = torch.randn(z_a.shape, generator=generator).to(z_a)
        guess = self.regress(batch, z_a)
        sampled = self.sample(batch, z_a, guess, noise)
        names, coords = batch["task_names"], flat_points(batch["coords"])
        truth = denormalize(self.normalizers, names, flat_points(batch["target"]).float())
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(self.decode(sampled, coords, names), truth), names)
        per_task(metrics, "regression_nrmse", nrmse(self.decode(guess, coords, names), truth), names)
        per_task(metrics, "reconstruction_nrmse", nrmse(self.decode(z_u, coords, names), truth), names)
        return metrics

    def decode(self, z: torch.Tensor, coords: torch.Tensor, names: list[str]) -> torch.Tensor:
        """Solution latents z [B, L, D] -> the physical solution [B, Q, 1] at ``coords`` [B, Q, d] of
        the named tasks (float32 or wider whatever the autocast precision)."""
        field = self.model.decoder(z, coords, channels=1, amplitude=False)  # steady: no amplitude carried
        return denormalize(self.normalizers, names, at_least_float32(field))

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "param_names": self.param_order,
            "task_order": [t.name for t in self.steady],
        }
