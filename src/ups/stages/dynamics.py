"""The latent dynamics of the transient tasks, one object shared by composition.

``DynamicsModel`` holds the weights. Its parts grow stage by stage, each stage training its
own part with the earlier ones frozen (``dynamics_model``):

    autoencoder           encoder, decoder
    operator              + operator (the latent time step)
    diff_residual         + flow, residual_scale (the corrector of the operator's residual)
    consistency_distill   + student (a 1-2 step copy of the flow)

A stage's checkpoint holds every part up to its own, so that checkpoint alone rebuilds the
whole (evaluation: ``dynamics_model(..., upstream=None)`` and the stage's own weights).

``LatentDynamics`` computes with them: the rollout windows and the latent cache, the one
latent ``rollout`` (optionally corrected with sampled residuals), the corrector's sampling
and the decoding with the carried autoencoder error. The operator, diff_residual and
consistency stages train through it; the evaluator rolls out through it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ups.checkpoint import load_upstream
from ups.data.latent_cache import LatentCache, LatentEntry, encoder_digest
from ups.data.latent_pairs import WindowDataset, field_normalizers, transient_tasks
from ups.data.tasks import param_names
from ups.models import LatentOperator
from ups.models.blocks import at_least_float32, token_grid
from ups.models.flow import FlowNet, consistency_sample, sample_flow
from ups.stages.autoencoder import build_autoencoder, forcing_encoder
from ups.stages.base import Stage
from ups.stages.batch import denormalize, flat_points, on_device

# The part each latent-dynamics stage adds to the model, in training order.
PARTS = {"operator": "operator", "diff_residual": "flow", "consistency_distill": "student"}
# Frames per encoder call when encoding whole trajectories: bounds memory on large 2D grids.
ENCODE_CHUNK = 32
# Train trajectories per task on which the autoencoder's error is followed over time (``error_carry``).
_CARRY_TRAJECTORIES = 8


def rollout_start(cfg) -> int:
    """The first frame of every evaluation rollout: the last of ``evaluation.context_frames``
    frames on the ``training.time_stride`` axis (0: the initial condition)."""
    return (cfg.evaluation.context_frames - 1) * cfg.training.time_stride


def spread(indices, count: int) -> list[int]:
    """Up to ``count`` of ``indices``, spread evenly from the first to the last."""
    indices = np.asarray(indices)
    return indices[
        np.unique(np.linspace(0, len(indices) - 1, min(len(indices), count)).round().astype(int))
    ].tolist()


class DynamicsModel(nn.Module):
    """encoder, decoder [, operator [, flow and residual_scale [, student]]] (see the module's text)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def parts(self) -> list[str]:
        return [name for name in ("encoder", "decoder", *PARTS.values()) if hasattr(self, name)]


def dynamics_model(cfg, tasks, stage: str, upstream: dict | None) -> DynamicsModel:
    """The model ``stage`` trains: every part up to its own. The ``upstream`` checkpoint (the stage
    before it; None when the stage's own checkpoint is loaded next) fills the earlier parts, which
    are frozen; the stage's own part is fresh."""
    transient = transient_tasks(tasks, stage)
    autoencoder = build_autoencoder(cfg, tasks)
    model = DynamicsModel(autoencoder.encoder, autoencoder.decoder)
    previous = "autoencoder"
    for name, part in PARTS.items():
        if name == stage:
            if upstream is not None:
                load_upstream(model, upstream, previous)
            model.requires_grad_(False)
        if part == "operator":
            model.operator = build_operator(cfg, transient)
        elif part == "flow":
            model.flow = flow_net(cfg, cfg.stages.diff_residual, transient)
            model.register_buffer("residual_scale", torch.ones(()))
        else:
            model.student = copy.deepcopy(model.flow).requires_grad_(True)
        if name == stage:
            return model
        previous = name
    raise ValueError(f"stage {stage} has no part in the latent dynamics; choose one of {list(PARTS)}")


def build_operator(cfg, transient: list) -> LatentOperator:
    """A fresh operator (``stages.operator.*``) for these time-dependent tasks."""
    o = cfg.stages.operator
    return LatentOperator(
        cfg.latent.tokens,
        cfg.latent.dim,
        depth=o.depth,
        heads=o.heads,
        mlp_ratio=o.mlp_ratio,
        dropout=o.dropout,
        n_params=len(param_names(transient)),
        n_tasks=len(transient),
        subspace_dim=o.subspace_dim,
        locality=o.locality,
        task_grids=[token_grid(cfg.latent.tokens, len(t.info.spatial_shape)) for t in transient],
        periodic=[t.periodic for t in transient],
        forcing=forcing_encoder(cfg, transient),
    )


def flow_net(cfg, settings, tasks: list) -> FlowNet:
    """A fresh ``FlowNet`` of ``settings``' hidden size and depth (``stages.diff_residual`` for the
    residual corrector, ``stages.steady_prior`` for the steady prior) over the latent tokens,
    conditioned per token on a latent context and on dt, the task and its PDE parameters."""
    return FlowNet(
        cfg.latent.tokens,
        cfg.latent.dim,
        context_dim=cfg.latent.dim,
        hidden=settings.hidden,
        depth=settings.depth,
        heads=cfg.stages.operator.heads,
        n_params=len(param_names(tasks)),
        n_tasks=len(tasks),
    )


class LatentDynamics:
    """The computations on a ``DynamicsModel`` for the time-dependent tasks of ``tasks``."""

    def __init__(self, cfg, tasks: list, model: DynamicsModel, stage: str):
        self.cfg, self.model = cfg, model
        self.tasks = transient_tasks(tasks, stage)
        self.normalizers = field_normalizers(self.tasks)
        self.latents: list[LatentEntry] | None = None  # the cache's entries once ``prepare_latents`` ran
        self._carry: torch.Tensor | None = None

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.cfg.latent.tokens, self.cfg.latent.dim

    @property
    def corrected(self) -> bool:
        """Whether the model has a corrector (the flow, and maybe its student)."""
        return hasattr(self.model, "flow")

    def metadata(self) -> dict:
        """The PDE parameter order and ``task_order``: the task embedding's rows, which a checkpoint
        must share with the config it is loaded under (``ups.checkpoint.check_fit``)."""
        return {"param_names": param_names(self.tasks), "task_order": [t.name for t in self.tasks]}

    # ---- data ---------------------------------------------------------------------
    def windows(self, split: str, fields: bool) -> WindowDataset:
        """Training windows of ``stages.operator.rollout_horizon`` steps; latents from the cache when
        it is filled, the fields too with ``fields``."""
        horizon, stride = self.cfg.stages.operator.rollout_horizon, self.cfg.training.time_stride
        return WindowDataset(self.tasks, split, horizon, stride, latents=self.latents, fields=fields)

    def prepare_latents(self, device: torch.device, *, progress: bool = False) -> None:
        """Fill (or verify) the latent cache of every task when ``training.latent_cache_dir`` is set."""
        t = self.cfg.training
        if t.latent_cache_dir is None:
            return
        encoder = self.model.encoder
        with on_device([encoder], device):  # eval mode: the same as when it encodes in a step
            self.latents = LatentCache(t.latent_cache_dir).ensure(
                self.tasks,
                lambda k, i: self.encode_trajectory(k, i, device),
                encoder=encoder_digest(encoder),
                dtype=t.latent_cache_dtype,
                latent_shape=self.latent_shape,
                progress=progress,
            )

    def fields(self, k: int, trajectory: int, frames: slice) -> torch.Tensor:
        """Normalised fields [F, Q, C] of those ``frames`` of one trajectory of task k at its grid points."""
        task = self.tasks[k]
        return flat_points(
            torch.from_numpy(task.normalizer.normalize(task.file.trajectory(trajectory, frames)))
        )

    def points(self, k: int, device: torch.device) -> torch.Tensor:
        """The grid points of task k, [1, Q, d]."""
        points = torch.from_numpy(self.tasks[k].file.coordinates()).to(device)
        return points.reshape(1, -1, points.shape[-1])

    @torch.no_grad()
    def encode_trajectory(
        self, k: int, trajectory: int, device: torch.device, frames: slice = slice(None)
    ) -> np.ndarray:
        """Latents of the ``frames`` (default: all) of one trajectory of task k: float32 [F, L, D]."""
        task = self.tasks[k]
        fields = torch.from_numpy(task.normalizer.normalize(task.file.trajectory(trajectory, frames)))
        coords = torch.from_numpy(task.file.coordinates()).to(device)
        out = []
        for chunk in fields.split(ENCODE_CHUNK):
            grid = coords.expand(chunk.shape[0], *coords.shape)
            out.append(self.model.encoder(chunk.to(device), grid).float().cpu())
        return torch.cat(out).numpy()

    # ---- the latent step and rollout ----------------------------------------------
    @torch.no_grad()
    def encode_window(self, batch: dict) -> torch.Tensor:
        """Latents of every frame of the window, [B, H+1, L, D]: from the cache or encoded now."""
        if "z" in batch:
            return batch["z"]
        window, coords = batch["window"], batch["coords"]
        b, h1 = window.shape[:2]
        frames = window.reshape(b * h1, *window.shape[2:])
        grid = coords.repeat_interleave(h1, dim=0)
        return self.model.encoder(frames, grid).reshape(b, h1, *self.latent_shape)

    def forcing(self, batch: dict) -> torch.Tensor | None:
        """The batch's forcing tokens (``LatentOperator.encode_forcing``), None without a static field."""
        return self.model.operator.encode_forcing(batch.get("static"), batch["coords"])

    def step(self, batch: dict, z: torch.Tensor) -> torch.Tensor:
        """One operator step of the batch's states z [B, L, D]."""
        return self.model.operator(z, batch["dt"], batch["params"], batch["task_id"], self.forcing(batch))

    def rollout(
        self, batch: dict, z0: torch.Tensor, steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The batch's latent rollout from ``z0`` [B, L, D]: [B, steps, L, D]. With ``generator`` each
        step is corrected by a residual sampled from the corrector (``correction``)."""
        correct = None if generator is None else (lambda z: self.correction(batch, z, generator))
        return self.model.operator.rollout(
            z0, batch["dt"], batch["params"], batch["task_id"], steps, self.forcing(batch), correct
        )

    # ---- the corrector ------------------------------------------------------------
    def velocity(self, batch: dict, context: torch.Tensor, net: nn.Module):
        """v(x, s) of ``net`` (the flow or the student) conditioned on ``context`` (op(z_t)) and the
        batch's dt, params and task."""
        return lambda x, s: net(x, s, context, batch["dt"], batch["params"], batch["task_id"])

    def sample_flow(self, batch: dict, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The flow's residual from ``noise`` [B, L, D] (``stages.diff_residual.steps_infer`` steps of
        its sampler), in units of ``residual_scale``."""
        d = self.cfg.stages.diff_residual
        return sample_flow(self.velocity(batch, context, self.model.flow), noise, d.steps_infer, d.sampler)

    def correction(self, batch: dict, context: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One sampled residual [B, L, D] for op(z_t) = ``context``, in latent units: from the student
        when the model has one (``stages.consistency_distill.steps_infer`` steps), else from the flow."""
        noise = torch.randn(context.shape, generator=generator).to(context)
        if hasattr(self.model, "student"):
            velocity = self.velocity(batch, context, self.model.student)
            steps = self.cfg.stages.consistency_distill.steps_infer
            residual = consistency_sample(velocity, noise, steps, generator)
        else:
            residual = self.sample_flow(batch, context, noise)
        return residual * self.model.residual_scale

    def residual(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z [B, H+1, L, D], r = z_1 - op(z_0) [B, L, D], op(z_0) [B, L, D]) with the frozen operator."""
        z = self.encode_window(batch)
        with torch.no_grad():
            pred = self.step(batch, z[:, 0])
        return z, z[:, 1] - pred, pred

    def validation_generator(self, batch: dict) -> torch.Generator:
        """Noise for validation and evaluation sampling, seeded by the batch's first window (the same
        in every epoch and engine, and independent of the training generator)."""
        first = int(batch["index"][0]) * 100_003 + int(batch["t0"][0]) * 101 + int(batch["task_id"][0])
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + first)

    # ---- decoding -----------------------------------------------------------------
    def decoding(self, batch: dict, z0: torch.Tensor):
        """(decode: (latents predicted k steps from the window's frame 0, encoded as z0; k) -> physical
        fields [B, Q, C] (``decoder_for``), truth: k -> physical frame k of the window)."""
        window, names = batch["window"], batch["task_names"]
        decode = self.decoder_for(batch, z0, flat_points(window[:, 0]), flat_points(batch["coords"]))

        def truth(k: int) -> torch.Tensor:
            return denormalize(self.normalizers, names, flat_points(window[:, k]).float())

        return decode, truth

    def decoder_for(
        self,
        batch: dict,
        z0: torch.Tensor,
        u0: torch.Tensor | None,
        coords: torch.Tensor,
        *,
        carry: bool = True,
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """decode(z, k): latents predicted k >= 1 steps after the known frame u0 [B, Q, C] (normalised,
        at ``coords`` [B, Q, d]; z0 its encoding) -> physical fields [B, Q, C] of the batch's tasks.

        With ``stages.operator.carry_error``: D(z) + rho_k (u0 - D(P(z0))), P the operator's subspace
        projection and rho_k [task, step, channel] from ``error_carry``; else D(z). An operator that
        has not moved the state (the untrained identity) then predicts u0 + (rho_k - 1)(u0 - D(P(z0))):
        persistence wherever the autoencoder's error persists. ``carry=False`` decodes D(z) alone, at
        points where u0 is not known (u0 may then be None)."""
        names = batch["task_names"]
        channels = next(t.info.n_channels for t in self.tasks if t.name == names[0])  # one task per batch
        error = None
        if self.cfg.stages.operator.carry_error and carry:
            start = self.model.decoder(self.model.operator.project(z0), coords, channels=channels)
            error = at_least_float32(u0) - at_least_float32(start)
            rho = self.error_carry().to(u0.device, error.dtype)[batch["task_id"].to(u0.device)]
            rho = rho[..., :channels]

        def decode(z: torch.Tensor, k: int) -> torch.Tensor:  # float32 or wider, whatever autocast does
            decoded = at_least_float32(self.model.decoder(z, coords, channels=channels))
            if error is not None:
                decoded = decoded + rho[:, min(k, rho.shape[1] - 1), None] * error
            return denormalize(self.normalizers, names, decoded)

        return decode

    @staticmethod
    def decode_states(decode: Callable, states: torch.Tensor) -> torch.Tensor:
        """Each step of a latent rollout [B, H, L, D] decoded by ``decode`` (``decoder_for``): the
        physical fields [B, H, Q, C]."""
        return torch.stack([decode(states[:, k], k + 1) for k in range(states.shape[1])], dim=1)

    @torch.no_grad()
    def error_carry(self) -> torch.Tensor:
        """rho [n_tasks, K+1, C_max]: per task, step lag k (in units of ``training.time_stride``) and
        channel, the least-squares factor by which the autoencoder's error on a frame predicts its
        error k steps later, <e_t, e_t+k> / <e_t, e_t> over the frames and points of up to
        ``_CARRY_TRAJECTORIES`` train trajectories, clipped to [0, 1]; e_t = u_t - D(P(E(u_t))).
        It depends only on the frozen autoencoder, the subspace and the data, so it is measured the
        first time it is needed (validation or evaluation) and is the same in every engine."""
        if self._carry is None:
            self._carry = self._measure_error_carry()
        return self._carry

    def _measure_error_carry(self) -> torch.Tensor:
        stride, tasks = self.cfg.training.time_stride, self.tasks
        device = next(self.model.decoder.parameters()).device
        lags = max((t.info.n_times - 1) // stride for t in tasks) + 1
        carry = torch.zeros(len(tasks), lags, max(t.info.n_channels for t in tasks))
        for k, task in enumerate(tasks):
            points, width = self.points(k, device), task.info.n_channels
            num = torch.zeros(lags, width, dtype=torch.float64)
            den = torch.zeros(lags, width, dtype=torch.float64)
            for trajectory in spread(task.split.indices("train"), _CARRY_TRAJECTORIES):
                frames = slice(0, None, stride)
                u = self.fields(k, trajectory, frames)
                z = self.model.operator.project(
                    torch.from_numpy(self.encode_trajectory(k, trajectory, device, frames)).to(device)
                )
                decoded = torch.cat(
                    [
                        self.model.decoder(chunk, points.expand(len(chunk), -1, -1), channels=width)
                        for chunk in z.split(ENCODE_CHUNK)
                    ]
                )
                e = (u.to(device).double() - decoded.double()).cpu()  # [F, Q, C]
                for lag in range(len(e)):
                    num[lag] += (e[: len(e) - lag] * e[lag:]).sum(dim=(0, 1))
                    den[lag] += e[: len(e) - lag].pow(2).sum(dim=(0, 1))
            carry[k, :, :width] = (num / den.clamp(min=1e-300)).clamp(0.0, 1.0).float()
        return carry


class LatentStage(Stage):
    """What the operator, diff_residual and consistency_distill stages share, none of them a kind of
    another: the model is the latent dynamics up to the stage's own part, the earlier parts frozen,
    trained and validated on rollout windows through ``self.dynamics``."""

    def build(self) -> nn.Module:
        model = dynamics_model(self.cfg, self.tasks, self.name, self.upstream_checkpoint())
        self.dynamics = LatentDynamics(self.cfg, self.tasks, model, self.name)
        return model

    def frozen_modules(self) -> list[nn.Module]:
        return [getattr(self.model, part) for part in self.model.parts() if part != PARTS[self.name]]

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """The latent cache, when ``training.latent_cache_dir`` is set."""
        self.dynamics.prepare_latents(device, progress=progress)

    def train_dataset(self) -> WindowDataset:
        return self.dynamics.windows("train", fields=self.cfg.stages.operator.decoded_weight > 0)

    def val_dataset(self) -> WindowDataset:
        return self.dynamics.windows("val", fields=True)  # the decoded metrics compare with the true fields

    def metadata(self) -> dict:
        return {**super().metadata(), **self.dynamics.metadata()}
