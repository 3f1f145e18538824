"""Stage ``consistency_distill``: a 1-2 step student of the ``diff_residual`` corrector.

The student is a ``FlowNet`` initialised from the corrector's (the teacher's) weights and used
through the consistency map f(x, s) = x + (1 - s) v_student(x, s), which sends any point of
the teacher's probability-flow ODE to its end at s = 1 (f(x, 1) = x). Consistency
distillation along the teacher sampler's own grid (``stages.diff_residual.steps_infer`` steps
of ``stages.diff_residual.sampler``): for s_n = n / N with n drawn per sample,
x_n = (1 - s_n) noise + s_n r/sigma, one teacher step gives x_{n+1} at s_{n+1}, and the loss is
MSE(f(x_n, s_n), stopgrad f(x_{n+1}, s_{n+1})) (at s_{n+1} = 1 the target is the teacher's step
itself). ``train/nrmse`` is the per-sample relative gap between the two.

Sampling takes ``stages.consistency_distill.steps_infer`` (1 or 2) student evaluations instead of the
teacher's ``velocity_evaluations(steps_infer, sampler)``. Validation (same noise for both):
``nrmse`` of op + the student's correction, ``teacher_nrmse`` of op + the teacher's,
``operator_nrmse`` of op alone, decoded one step, and ``speedup``: the measured wall-clock
sampling time of the teacher divided by the student's on the batch.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from ups.checkpoint import load_upstream
from ups.metrics import nrmse
from ups.models.flow import SAMPLERS, consistency_function, consistency_sample, sample_flow
from ups.stages.autoencoder import build_autoencoder
from ups.stages.batch import per_task, relative_rmse
from ups.stages.diff_residual import DiffResidualStage, ResidualModel, residual_flow


def timed(sample, device: torch.device) -> tuple[torch.Tensor, float]:
    """(result, wall-clock seconds) of ``sample()``, waiting for the device's queued work."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = sample()
    sync()
    return result, time.perf_counter() - start


class StudentModel(nn.Module):
    """The frozen corrector (teacher) and everything under it + the trainable student."""

    def __init__(self, teacher: ResidualModel, student: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.student = student

    @property
    def encoder(self):
        return self.teacher.encoder

    @property
    def decoder(self):
        return self.teacher.decoder

    @property
    def operator(self):
        return self.teacher.operator

    @property
    def residual_scale(self):
        return self.teacher.residual_scale


class ConsistencyStage(DiffResidualStage):
    name = "consistency_distill"
    upstream = ("diff_residual",)

    def build(self) -> nn.Module:
        frozen = self.operator_model(build_autoencoder(self.cfg, self.tasks))
        teacher = ResidualModel(frozen, residual_flow(self.cfg, self))
        load_upstream(teacher, self.upstream_checkpoints["diff_residual"], "diff_residual")
        teacher.requires_grad_(False)
        student = copy.deepcopy(teacher.flow).requires_grad_(True)
        return StudentModel(teacher, student)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.model.teacher]

    def prepare(self, device: torch.device, *, progress: bool = False) -> None:
        """Only the latent cache: the residual scale is the teacher's."""
        self.prepare_latents(device, progress=progress)

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        _, residual, pred = self.residual(batch)
        d = self.cfg.stages.diff_residual
        target_end = residual / self.model.residual_scale
        b = target_end.shape[0]
        noise = torch.randn(target_end.shape, generator=self.generator).to(target_end)
        n = torch.randint(0, d.steps_infer, (b,), generator=self.generator).to(target_end.device)
        h = 1.0 / d.steps_infer
        s_n = n.to(target_end.dtype) * h
        x_n = self._along(noise, target_end, s_n)
        step, _ = SAMPLERS[d.sampler]
        student = self.velocity(batch, pred, self.model.student)
        with torch.no_grad():
            x_next = step(self.velocity(batch, pred, self.model.teacher.flow), x_n, s_n, h)
            target = consistency_function(student, x_next, s_n + h)
        out = consistency_function(student, x_n, s_n)
        terms = {"loss": F.mse_loss(out, target)}
        per_task(terms, "nrmse", relative_rmse(out, target), batch["task_names"])
        return terms

    @staticmethod
    def _along(noise: torch.Tensor, end: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(-1, *([1] * (end.dim() - 1)))
        return (1 - s) * noise + s * end

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        z, _, pred = self.residual(batch)
        decode, truth = self.decoding(batch, z[:, 0])
        seed = self.validation_generator(batch).initial_seed()
        scale = self.model.residual_scale
        noise = torch.randn(pred.shape, generator=torch.Generator().manual_seed(seed)).to(pred)

        def student_sample() -> torch.Tensor:
            return consistency_sample(
                self.velocity(batch, pred, self.model.student),
                noise,
                self.cfg.stages.consistency_distill.steps_infer,
                torch.Generator().manual_seed(seed + 1),
            )

        student, student_time = timed(student_sample, pred.device)
        teacher, teacher_time = timed(lambda: self.sample_teacher(batch, pred, noise), pred.device)
        student, teacher = student * scale, teacher * scale

        names = batch["task_names"]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(decode(pred + student, 1), truth(1)), names)
        per_task(metrics, "teacher_nrmse", nrmse(decode(pred + teacher, 1), truth(1)), names)
        per_task(metrics, "operator_nrmse", nrmse(decode(pred, 1), truth(1)), names)
        metrics["speedup"] = torch.full((pred.shape[0],), teacher_time / max(student_time, 1e-9))
        return metrics

    def correction(
        self, batch: dict, context: torch.Tensor, generator: torch.Generator, net: nn.Module | None = None
    ) -> torch.Tensor:
        """One residual [B, L, D] for op(z_t) = ``context`` from the student, in latent units."""
        noise = torch.randn(context.shape, generator=generator).to(context)
        velocity = self.velocity(batch, context, net or self.model.student)
        return (
            consistency_sample(velocity, noise, self.cfg.stages.consistency_distill.steps_infer, generator)
            * self.model.residual_scale
        )

    def sample_teacher(self, batch: dict, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        d = self.cfg.stages.diff_residual
        return sample_flow(
            self.velocity(batch, context, self.model.teacher.flow), noise, d.steps_infer, d.sampler
        )
