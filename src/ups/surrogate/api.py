"""A trained surrogate in use: ``Surrogate.rollout`` and ``Surrogate.solve_steady`` on fields in
physical units, NumPy or torch, on any device (``ups.load_surrogate`` builds one from a run).

The predictions are computed by the same code the evaluator scores (``LatentDynamics.rollout``,
``decoder_for``, ``decode_states``; the steady prior's ``regress``, ``sample`` and ``decode``), so
what a user calls is what ``ups evaluate`` measured.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ups.data.tasks import param_names, param_vector
from ups.errors import UPSError
from ups.stages.batch import flat_points
from ups.surrogate.spec import Prediction, TaskSpec, task_spec


class Surrogate:
    """A trained run's latent dynamics (``dynamics``: a ``LatentDynamics``, None without a transient
    stage) and steady prior (``steady``: a ``SteadyPriorStage``, None without one), in eval mode.

    ``tasks``: name -> ``TaskSpec``; ``stages``: the stages loaded; ``config``: the run's config.
    """

    def __init__(self, cfg, stages: dict, paths: dict):
        self.config, self.paths = cfg, paths
        self.stages = tuple(stages)
        transient = [s for s in ("consistency_distill", "diff_residual", "operator") if s in stages]
        self.dynamics = stages[transient[0]].dynamics if transient else None
        self.steady = stages.get("steady_prior")
        self.tasks: dict[str, TaskSpec] = {}
        stride = cfg.training.time_stride
        if self.dynamics is not None:
            order = param_names(self.dynamics.tasks)
            self.tasks.update({t.name: task_spec(t, order, stride) for t in self.dynamics.tasks})
        if self.steady is not None:
            self.tasks.update({t.name: task_spec(t, self.steady.param_order, 1) for t in self.steady.steady})
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name} ({t.kind}, grid {t.grid})" for t in self.tasks.values())
        return f"Surrogate(stages={list(self.stages)}, tasks=[{tasks}])"

    @property
    def corrected(self) -> bool:
        """Whether the rollouts can be sampled (a ``diff_residual`` corrector, maybe distilled)."""
        return self.dynamics is not None and self.dynamics.corrected

    def modules(self) -> list[torch.nn.Module]:
        return [part.model for part in (self.dynamics, self.steady) if part is not None]

    def to(self, device=None, dtype: torch.dtype | None = None) -> Surrogate:
        """Move the weights to ``device`` and/or cast them to ``dtype`` (float64 for
        ``torch.autograd.gradcheck``); returns the surrogate."""
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        for module in self.modules():
            module.to(device=self.device, dtype=self.dtype)
        return self

    # ---- rollouts -----------------------------------------------------------------
    def rollout(
        self,
        u0,
        steps: int,
        *,
        params=None,
        task: str | None = None,
        context=None,
        static=None,
        samples: int = 0,
        points=None,
        device=None,
        grad: bool = False,
        seed: int = 0,
    ) -> Prediction:
        """Roll the surrogate out ``steps`` steps of ``TaskSpec.dt`` from ``u0``.

        Args:
            u0: the start, physical units, [B, *grid, C]; or [B, T, *grid, C] with a context axis
                (its last frame is the start).
            params: the PDE parameters, {name: float or [B]} or [B, P] in ``TaskSpec.params``' order;
                None (or names left out) take the file's constant values; a parameter that varied
                between the training trajectories must be given.
            task: which transient task (needed only when the run has several).
            context: earlier frames [B, T', *grid, C]; checked, and not used: the latent operator
                steps from the last frame alone.
            static: the static field [B, *grid, S] of a task that conditions on one.
            samples: K > 0 also draws K trajectories corrected by the residual corrector.
            points: [P, d] coordinates (the file's units) to decode at instead of the grid: the
                any-point decoder, without the carried autoencoder error (known on the grid only).
            device: where to compute (default: where the surrogate is).
            grad: differentiable in ``u0`` and ``params`` (else under ``torch.inference_mode``).
            seed: the seed of the sampled residuals.
        """
        spec = self.task(task, "transient")
        if steps < 1:
            raise UPSError(f"steps={steps}: a rollout needs at least 1 step.")
        kind = type(u0)
        device = self._place(device)
        u0 = self._tensor(u0, "u0", device)
        g = len(spec.grid)
        if u0.dim() == g + 3:
            context, u0 = (u0[:, :-1] if context is None else context), u0[:, -1]
        self._check_field(u0, spec, "u0", len(spec.channels))
        if context is not None:
            self._check_context(self._tensor(context, "context", device), u0, spec)
        batch = self._batch(spec, u0, params, static, device)
        dynamics = self.dynamics
        with self._mode(grad, device):
            u0n = spec.normalizer.normalize(u0)
            z0 = dynamics.model.encoder(u0n, batch["coords"])
            shape = spec.grid
            if points is None:
                decode = dynamics.decoder_for(batch, z0, flat_points(u0n), flat_points(batch["coords"]))
            else:
                at = self._points(points, spec, device, u0.shape[0])
                decode = dynamics.decoder_for(batch, z0, None, at, carry=False)
                shape = (at.shape[1],)
            fields = dynamics.decode_states(decode, dynamics.rollout(batch, z0, steps))
            times = spec.dt * np.arange(1, steps + 1)
            out = Prediction(fields.reshape(u0.shape[0], steps, *shape, -1), times)
            if samples:
                draws = self._sampled(batch, z0, decode, steps, samples, seed)
                out.samples = draws.reshape(u0.shape[0], samples, steps, *shape, -1)
                out.mean, out.spread = out.samples.mean(dim=1), out.samples.std(dim=1, correction=0)
        return self._as(kind, out)

    def _sampled(self, batch, z0, decode, steps: int, samples: int, seed: int) -> torch.Tensor:
        if not self.corrected:
            raise UPSError(
                f"samples={samples}: this run has no residual corrector (stages diff_residual or "
                f"consistency_distill); train one, or leave samples=0."
            )
        generator = torch.Generator().manual_seed(seed)
        dynamics = self.dynamics
        runs = [dynamics.rollout(batch, z0, steps, generator) for _ in range(samples)]
        return torch.stack([dynamics.decode_states(decode, states) for states in runs], dim=1)

    def solve_steady(
        self,
        a,
        *,
        params=None,
        task: str | None = None,
        samples: int = 0,
        device=None,
        grad: bool = False,
        seed: int = 0,
    ) -> Prediction:
        """The steady solution u(x) of the coefficient ``a`` [B, *grid] or [B, *grid, 1] (physical
        units): ``fields`` the prior's regression [B, *grid, 1]; with ``samples=K`` K solutions drawn
        from the prior (``samples`` [B, K, *grid, 1], their ``mean`` and ``spread``)."""
        spec = self.task(task, "steady")
        kind = type(a)
        device = self._place(device)
        a = self._tensor(a, "a", device)
        if a.dim() == len(spec.grid) + 1:
            a = a[..., None]
        self._check_field(a, spec, "a", 1)
        batch = self._batch(spec, a, params, None, device)
        steady = self.steady
        with self._mode(grad, device):
            an = spec.input_normalizer.normalize(a)
            z_a = steady.model.encoder(an, batch["coords"], amplitude=False)
            guess = steady.regress(batch, z_a)
            coords = flat_points(batch["coords"])
            out = Prediction(steady.decode(guess, coords, batch["task_names"]).reshape(a.shape))
            if samples:
                generator = torch.Generator().manual_seed(seed)
                draws = [
                    steady.decode(
                        steady.sample(batch, z_a, guess, torch.randn(z_a.shape, generator=generator).to(z_a)),
                        coords,
                        batch["task_names"],
                    ).reshape(a.shape)
                    for _ in range(samples)
                ]
                out.samples = torch.stack(draws, dim=1)
                out.mean, out.spread = out.samples.mean(dim=1), out.samples.std(dim=1, correction=0)
        return self._as(kind, out)

    # ---- inputs -------------------------------------------------------------------
    def task(self, name: str | None, kind: str) -> TaskSpec:
        """The ``kind`` task named ``name`` (None: the only one of that kind)."""
        of_kind = [t for t in self.tasks.values() if t.kind == kind]
        what = {
            "transient": "rollout needs a time-dependent task",
            "steady": "solve_steady needs a steady task",
        }
        if not of_kind:
            raise UPSError(
                f"{what[kind]}, and this surrogate has none (stages {list(self.stages)}; tasks "
                f"{[f'{t.name} ({t.kind})' for t in self.tasks.values()]})."
            )
        if name is None:
            if len(of_kind) > 1:
                raise UPSError(
                    f"this surrogate has several {kind} tasks; choose one with task= "
                    f"{[t.name for t in of_kind]}."
                )
            return of_kind[0]
        if name not in self.tasks or self.tasks[name].kind != kind:
            raise UPSError(
                f"task={name!r} is not a {kind} task of this surrogate; choose one of "
                f"{[t.name for t in of_kind]}."
            )
        return self.tasks[name]

    def _place(self, device) -> torch.device:
        """Move the weights to ``device`` (when given) and return where they are."""
        if device is not None and torch.device(device) != self.device:
            if torch.device(device).type == "cuda" and not torch.cuda.is_available():
                raise UPSError(f"device={device!r}: no CUDA device is available here; use 'cpu'.")
            self.to(device)
        return self.device

    def _tensor(self, value, name: str, device: torch.device) -> torch.Tensor:
        """``value`` (NumPy, torch or nested lists) as a floating tensor on ``device`` in the
        surrogate's dtype, its autograd graph kept."""
        array = value if torch.is_tensor(value) else np.asarray(value)
        if array.dtype not in (torch.float32, torch.float64, np.float32, np.float64, np.int32, np.int64):
            raise UPSError(f"{name} has dtype {array.dtype}; give real numbers (float32 or float64).")
        tensor = array if torch.is_tensor(array) else torch.from_numpy(array)
        tensor = tensor.to(device=device, dtype=self.dtype)
        if not grad_safe_finite(tensor):
            raise UPSError(f"{name} holds NaN or infinite values; give finite fields.")
        return tensor

    @staticmethod
    def _check_field(u: torch.Tensor, spec: TaskSpec, name: str, channels: int) -> None:
        expected = ("B", *spec.grid, channels)
        if u.dim() != len(expected) or tuple(u.shape[1:]) != expected[1:]:
            raise UPSError(
                f"{name} has shape {tuple(u.shape)}; task '{spec.name}' takes "
                f"[B, {', '.join(map(str, expected[1:]))}] (grid {spec.grid}, {channels} channel(s)): give "
                f"fields on the grid the run was trained on (decode elsewhere with points=)."
            )

    @staticmethod
    def _check_context(context: torch.Tensor, u0: torch.Tensor, spec: TaskSpec) -> None:
        fits = context.dim() == u0.dim() + 1 and context.shape[0] == u0.shape[0]
        if not fits or context.shape[2:] != u0.shape[1:]:
            raise UPSError(
                f"context has shape {tuple(context.shape)}; give the earlier frames as [B={u0.shape[0]}, T, "
                f"{', '.join(map(str, u0.shape[1:]))}] (task '{spec.name}')."
            )

    def _points(self, points, spec: TaskSpec, device: torch.device, b: int) -> torch.Tensor:
        at = self._tensor(points, "points", device)
        d = spec.coords.shape[-1]
        if at.dim() != 2 or at.shape[1] != d or at.shape[0] < 1:
            raise UPSError(
                f"points has shape {tuple(at.shape)}; give coordinates [P, {d}] (task '{spec.name}')."
            )
        return at.expand(b, *at.shape)

    def _batch(self, spec: TaskSpec, u: torch.Tensor, params, static, device: torch.device) -> dict:
        """What the stages read of a batch: coords, dt, params, task_id, task_names (and static)."""
        b = u.shape[0]
        coords = torch.as_tensor(spec.coords, device=device, dtype=self.dtype)
        tasks = [t.name for t in self.tasks.values() if t.kind == spec.kind]
        batch = {
            "coords": coords.expand(b, *coords.shape),
            "params": self._params(params, spec, b, device),
            "task_id": torch.full((b,), tasks.index(spec.name), device=device, dtype=torch.long),
            "task_names": [spec.name] * b,
        }
        if spec.dt is not None:
            batch["dt"] = torch.full((b,), spec.dt, device=device, dtype=self.dtype)
        if spec.static_channels:
            if static is None:
                raise UPSError(
                    f"task '{spec.name}' conditions on a static field ({', '.join(spec.static_channels)}); "
                    f"give it as static=[B, {', '.join(map(str, spec.grid))}, {len(spec.static_channels)}]."
                )
            static = self._tensor(static, "static", device)
            self._check_field(static, spec, "static", len(spec.static_channels))
            batch["static"] = spec.input_normalizer.normalize(static)
        elif static is not None:
            raise UPSError(f"task '{spec.name}' has no static field; leave static=None.")
        return batch

    def _params(self, params, spec: TaskSpec, b: int, device: torch.device) -> torch.Tensor:
        """The parameter vector [B, P] of ``params`` (see ``rollout``)."""
        names = spec.params
        if params is not None and not isinstance(params, dict):
            vector = self._tensor(params, "params", device)
            if vector.dim() == 1:
                vector = vector.expand(b, -1)
            if tuple(vector.shape) != (b, len(names)):
                raise UPSError(
                    f"params has shape {tuple(vector.shape)}; give [B={b}, {len(names)}] in the order "
                    f"{list(names)}."
                )
            return vector
        given = dict(params or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise UPSError(f"params {unknown} of task '{spec.name}': it is conditioned on {list(names)}.")
        missing = [n for n in spec.varying if n not in given]
        if missing:
            raise UPSError(
                f"params for task '{spec.name}' lack {missing}, which varied between the training "
                f"trajectories; give them (params={{name: value or [B] values}})."
            )
        base = param_vector(spec.defaults, names).to(device=device, dtype=self.dtype).expand(b, -1)
        column = lambda n: self._tensor(given[n], f"params[{n!r}]", device).reshape(-1).expand(b)  # noqa: E731
        columns = [column(n) if n in given else base[:, i] for i, n in enumerate(names)]
        return torch.stack(columns, dim=1) if columns else base

    def _mode(self, grad: bool, device: torch.device):
        """inference_mode unless ``grad``; bf16 autocast on a GPU when the run trained in bf16."""
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.nullcontext() if grad else torch.inference_mode())
        if device.type == "cuda" and str(self.config.training.precision).startswith("bf16"):
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    @staticmethod
    def _as(kind: type, out: Prediction) -> Prediction:
        """``out``'s arrays as NumPy when the input was not a torch tensor."""
        if issubclass(kind, torch.Tensor):
            return out
        for name in ("fields", "samples", "mean", "spread"):
            value = getattr(out, name)
            if value is not None:
                setattr(out, name, value.detach().cpu().numpy())  # float32, or float64 when cast so
        return out


def grad_safe_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, checked without recording the check in autograd."""
    with torch.no_grad():
        return bool(torch.isfinite(tensor).all())
