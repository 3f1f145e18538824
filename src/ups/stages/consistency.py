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

import time

import torch
import torch.nn.functional as F

from ups.metrics import nrmse
from ups.models.flow import SAMPLERS, consistency_function, consistency_sample
from ups.stages.batch import per_task, relative_rmse
from ups.stages.dynamics import LatentStage


def timed(sample, device: torch.device) -> tuple[torch.Tensor, float]:
    """(result, wall-clock seconds) of ``sample()``, waiting for the device's queued work."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = sample()
    sync()
    return result, time.perf_counter() - start


class ConsistencyStage(LatentStage):
    name = "consistency_distill"
    upstream = ("diff_residual",)

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        dynamics = self.dynamics
        _, residual, pred = dynamics.residual(batch)
        d = self.cfg.stages.diff_residual
        target_end = residual / self.model.residual_scale
        b = target_end.shape[0]
        noise = torch.randn(target_end.shape, generator=self.generator).to(target_end)
        n = torch.randint(0, d.steps_infer, (b,), generator=self.generator).to(target_end.device)
        h = 1.0 / d.steps_infer
        s_n = n.to(target_end.dtype) * h
        x_n = self._along(noise, target_end, s_n)
        step, _ = SAMPLERS[d.sampler]
        student = dynamics.velocity(batch, pred, self.model.student)
        with torch.no_grad():
            x_next = step(dynamics.velocity(batch, pred, self.model.flow), x_n, s_n, h)
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
        dynamics = self.dynamics
        z, _, pred = dynamics.residual(batch)
        decode, truth = dynamics.decoding(batch, z[:, 0])
        seed = dynamics.validation_generator(batch).initial_seed()
        scale = self.model.residual_scale
        noise = torch.randn(pred.shape, generator=torch.Generator().manual_seed(seed)).to(pred)

        def student_sample() -> torch.Tensor:
            return consistency_sample(
                dynamics.velocity(batch, pred, self.model.student),
                noise,
                self.cfg.stages.consistency_distill.steps_infer,
                torch.Generator().manual_seed(seed + 1),
            )

        student, student_time = timed(student_sample, pred.device)
        teacher, teacher_time = timed(lambda: dynamics.sample_flow(batch, pred, noise), pred.device)
        student, teacher = student * scale, teacher * scale

        names = batch["task_names"]
        metrics: dict[str, torch.Tensor] = {}
        per_task(metrics, "nrmse", nrmse(decode(pred + student, 1), truth(1)), names)
        per_task(metrics, "teacher_nrmse", nrmse(decode(pred + teacher, 1), truth(1)), names)
        per_task(metrics, "operator_nrmse", nrmse(decode(pred, 1), truth(1)), names)
        metrics["speedup"] = torch.full((pred.shape[0],), teacher_time / max(student_time, 1e-9))
        return metrics
