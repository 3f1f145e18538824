"""``ups export``: a trained surrogate as ``torch.export`` programs (``.pt2``) and a JSON, runnable
where only torch and numpy are installed.

One transient task per export, float32 on CPU, the batch size free (``torch.export.Dim``):

    encode.pt2    u0 [B, *grid, C] (physical)  -> z0 [B, L, D], error [B, *grid, C]
    step.pt2      z [B, L, D], params [B, P]   -> z' [B, L, D] (one operator step of dt)
    decode.pt2    z, error, rho [C]            -> u [B, *grid, C] (physical)
    one_step.pt2  u [B, *grid, C], params      -> u' [B, *grid, C]: encode, step, decode(rho[1])

A task with a static field (the forcing of an incompressible Navier-Stokes file) adds it, [B, *grid, S]
physical, as the last input of encode and one_step, and encode's forcing tokens [B, L, D] as the
last output of encode and input of step.

``error`` is the carried autoencoder error u0 - D(P(z0)) (normalised; zeros without
``stages.operator.carry_error``) and rho[k] its factor k steps after u0 (``LatentDynamics.error_carry``):
the rollout of ``EXAMPLE`` is ``LatentDynamics.rollout`` decoded by ``decoder_for``, step for step.
The task's dt, id, grid points and normalisers are baked into the programs.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ups.atomic import atomic_folder
from ups.config.validate import blocking_file
from ups.data.tasks import param_vector
from ups.errors import UPSError

FORMAT = "ups-export/1"
# The plain-torch rollout the README gives and the tests run (docs/api.md shows the same lines).
EXAMPLE = '''\
import json

import torch


def rollout(export_dir, u0, steps, params=None, static=None):
    """u0 [B, *grid, C] in physical units (and the static field [B, *grid, S] of a task that has one)
    -> the predicted fields [B, steps, *grid, C]."""
    meta = json.load(open(f"{export_dir}/surrogate.json"))
    encode, step, decode = (
        torch.export.load(f"{export_dir}/{name}.pt2").module() for name in ("encode", "step", "decode")
    )
    u0 = torch.as_tensor(u0, dtype=torch.float32)
    if params is None:  # the training file's constant PDE parameters
        params = torch.tensor(meta["params"]["default"]).expand(len(u0), -1)
    rho = torch.tensor(meta["carry"]["rho"])  # [K + 1, C]: the carried error's factor k steps on
    static = () if static is None else (torch.as_tensor(static, dtype=torch.float32),)
    with torch.no_grad():
        z, error, *forcing = encode(u0, *static)
        out = []
        for k in range(1, steps + 1):
            z = step(z, params, *forcing)
            out.append(decode(z, error, rho[min(k, len(rho) - 1)]))
    return torch.stack(out, dim=1)
'''


class _Task(nn.Module):
    """The task's normaliser (mean, std [C]) and grid points (coords [*grid, d]) as buffers."""

    def __init__(self, spec):
        super().__init__()
        for prefix, stats in (("", field_stats(spec)), ("static_", static_stats(spec))):
            for name, values in zip(("mean", "std"), stats or ((), ())):
                self.register_buffer(prefix + name, torch.tensor(values, dtype=torch.float32))
        self.register_buffer("coords", torch.from_numpy(np.asarray(spec.coords, dtype=np.float32)))

    def grid(self, batch: int) -> Tensor:
        """[B, *grid, d]: the grid points of every sample."""
        return self.coords.expand(batch, *self.coords.shape)

    def points(self, batch: int) -> Tensor:
        """[B, Q, d]: the grid points of every sample, flattened."""
        return self.coords.reshape(1, -1, self.coords.shape[-1]).expand(batch, -1, -1)


def stats(normalizer, channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) [channels] of ``normalizer``, or 0 and 1 when it normalises nothing."""
    if normalizer.mode == "none":
        return [0.0] * channels, [1.0] * channels
    return normalizer.mean.tolist(), normalizer.std.tolist()


def field_stats(spec) -> tuple[list[float], list[float]]:
    return stats(spec.normalizer, len(spec.channels))


def static_stats(spec) -> tuple[list[float], list[float]] | None:
    """The static field's (mean, std) [S]; None for a task without one."""
    return stats(spec.input_normalizer, len(spec.static_channels)) if spec.static_channels else None


class Encode(nn.Module):
    """u0 [B, *grid, C] physical -> (z0 [B, L, D], the carried error [B, *grid, C] normalised); with
    ``static`` [B, *grid, S] physical (a task that has one), its forcing tokens [B, L, D] too."""

    def __init__(self, model: nn.Module, task: _Task, carry: bool):
        super().__init__()
        self.encoder, self.decoder, self.operator = model.encoder, model.decoder, model.operator
        self.task, self.carry = task, carry

    def forward(self, u0: Tensor, static: Tensor | None = None) -> tuple[Tensor, ...]:
        b, channels, task = u0.shape[0], u0.shape[-1], self.task
        u = (u0 - task.mean) / task.std
        z = self.encoder(u, task.grid(b))
        if not self.carry:
            error = torch.zeros_like(u)
        else:
            start = self.decoder(self.operator.project(z), task.points(b), channels=channels)
            error = u - start.float().view_as(u)
        if static is None:
            return z, error
        forcing = self.operator.encode_forcing((static - task.static_mean) / task.static_std, task.grid(b))
        return z, error, forcing


class Step(nn.Module):
    """z [B, L, D], params [B, P] (, the static field's forcing tokens [B, L, D]) -> the operator's next
    state [B, L, D], the task's dt and id baked."""

    def __init__(self, model: nn.Module, dt: float, task_id: int):
        super().__init__()
        self.operator = model.operator
        self.register_buffer("dt", torch.tensor([dt], dtype=torch.float32))
        self.register_buffer("task_id", torch.tensor([task_id]))

    def forward(self, z: Tensor, params: Tensor, forcing: Tensor | None = None) -> Tensor:
        b = z.shape[0]
        return self.operator(z, self.dt.expand(b), params, self.task_id.expand(b), forcing)


class Decode(nn.Module):
    """z [B, L, D], error [B, *grid, C], rho [C] -> physical fields [B, *grid, C]: D(z) + rho error."""

    def __init__(self, model: nn.Module, task: _Task):
        super().__init__()
        self.decoder, self.task = model.decoder, task

    def forward(self, z: Tensor, error: Tensor, rho: Tensor) -> Tensor:
        b, channels = z.shape[0], error.shape[-1]
        decoded = self.decoder(z, self.task.points(b), channels=channels).float()
        decoded = decoded + rho * error.reshape(b, -1, channels)
        return (decoded * self.task.std + self.task.mean).view_as(error)


class OneStep(nn.Module):
    """u [B, *grid, C], params [B, P] (, static [B, *grid, S]) -> u one dt later [B, *grid, C] (physical
    units)."""

    def __init__(self, encode: Encode, step: Step, decode: Decode, rho1: Tensor):
        super().__init__()
        self.encode, self.step, self.decode = encode, step, decode
        self.register_buffer("rho1", rho1)

    def forward(self, u: Tensor, params: Tensor, static: Tensor | None = None) -> Tensor:
        z, error, *forcing = self.encode(u, static)
        return self.decode(self.step(z, params, *forcing), error, self.rho1)


def check_out(out: Path, *, replace: bool) -> None:
    """Refuse, before any work, an ``out`` the export could not fill, or must not replace: ``replace``
    replaces only an earlier export (a folder with surrogate.json), never a run or another folder."""
    out = Path(out)
    if (blocker := blocking_file(out)) is not None:
        raise UPSError(f"--out {out}: {blocker} is a file, not a folder; choose another path.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not replace:
        raise UPSError(
            f"--out {out} exists and is not empty; choose a new folder, or add --force to replace an "
            f"earlier export there."
        )
    if not (out / "surrogate.json").is_file():
        raise UPSError(
            f"--out {out} is not an earlier export (it has no surrogate.json); --force replaces only an "
            f"export, so choose a new folder."
        )


def transient_task(s, task: str | None, run_dir) -> str:
    """The transient task to export: ``task``, or the run's only one; ``UPSError`` naming the choices."""
    if s.dynamics is None:  # ``load_surrogate`` refuses a run with neither
        raise UPSError(
            f"{run_dir} has only a steady prior; `ups export` exports the time-dependent surrogate (the "
            f"operator's encode, step and decode), so train the operator first (`ups pipeline --config C "
            f"--run-dir {run_dir}`). A steady prior is used through `ups.load_surrogate(...).solve_steady`."
        )
    transient = [name for name, spec in s.tasks.items() if spec.kind == "transient"]
    if task is None:
        if len(transient) > 1:
            raise UPSError(
                f"{run_dir} has {len(transient)} transient tasks; choose one with --task: {transient}."
            )
        task = transient[0]
    if task not in transient:
        kind = "a steady task" if task in s.tasks else "not a task of this run"
        raise UPSError(f"--task {task} is {kind}; the run's transient tasks are {transient}.")
    return task


def export_programs(s, task: str) -> tuple[dict[str, nn.Module], dict[str, tuple]]:
    """The four modules of ``task`` (float32, CPU, eval mode) and an example input of each (batch 2)."""
    dynamics, spec = s.dynamics, s.tasks[task]
    parts = nn.ModuleDict(
        {name: getattr(dynamics.model, name) for name in ("encoder", "decoder", "operator")}
    )
    model = copy.deepcopy(parts).float().cpu().eval()  # the surrogate's own stay where they are
    task_id = [t.name for t in dynamics.tasks].index(task)
    carry = bool(s.config.stages.operator.carry_error)
    rho = carry_factors(s, task)
    data = _Task(spec)
    encode, step, decode = Encode(model, data, carry), Step(model, spec.dt, task_id), Decode(model, data)
    modules = {"encode": encode, "step": step, "decode": decode}
    rho1 = rho[min(1, len(rho) - 1)].clone()
    modules["one_step"] = OneStep(encode, step, decode, rho1)
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(2, *spec.grid, len(spec.channels), generator=generator) * data.std + data.mean
    static = ()
    if spec.static_channels:
        noise = torch.randn(2, *spec.grid, len(spec.static_channels), generator=generator)
        static = (noise * data.static_std + data.static_mean,)
    params = torch.tensor(default_params(spec)).expand(2, -1).contiguous()
    with torch.no_grad():
        z, error, *forcing = encode(u, *static)
    examples = {
        "encode": (u, *static),
        "step": (z, params, *forcing),
        "decode": (z, error, rho1),
        "one_step": (u, params, *static),
    }
    return modules, examples


def carry_factors(s, task: str) -> Tensor:
    """rho [K + 1, C] of ``task``: the carried error's factor k = 0..K steps after the known frame
    (zeros [2, C] without ``stages.operator.carry_error``, whose error is zero too)."""
    if not s.config.stages.operator.carry_error:
        return torch.zeros(2, len(s.tasks[task].channels))
    names = [t.name for t in s.dynamics.tasks]
    return s.dynamics.error_carry()[names.index(task), :, : len(s.tasks[task].channels)].float().cpu()


def default_params(spec) -> list[float]:
    """The PDE parameters [P] in ``spec.params``' order: the file's constant values, 0 where it has none."""
    return param_vector(spec.defaults, spec.params).tolist()


def export(s, out: Path, *, task: str | None = None, run_dir=None, replace: bool = False) -> dict:
    """Write the programs, ``coords.npy``, ``surrogate.json`` and ``README.md`` of ``task`` into the
    folder ``out`` (all of them or nothing); returns the JSON's content with ``seconds``."""
    task = transient_task(s, task, run_dir)
    started = time.perf_counter()
    modules, examples = export_programs(s, task)
    batch = torch.export.Dim("batch", min=1)
    with atomic_folder(out, replace=replace) as tmp:
        for name, module in modules.items():
            dynamic = [{0: batch} for _ in examples[name]]  # every input's first axis is the batch's,
            if name == "decode":
                dynamic[2] = None  # but rho [C]'s: one factor per channel, shared by the batch
            with torch.no_grad():
                program = torch.export.export(module, examples[name], dynamic_shapes=tuple(dynamic))
            torch.export.save(program, tmp / f"{name}.pt2")
        np.save(tmp / "coords.npy", np.asarray(s.tasks[task].coords, dtype=np.float32))
        meta = describe(s, task)
        (tmp / "surrogate.json").write_text(json.dumps(meta, indent=1))
        (tmp / "README.md").write_text(readme(meta))
    return {**meta, "seconds": time.perf_counter() - started}


def describe(s, task: str) -> dict:
    """The JSON beside the programs: what they take and give, and what a rollout needs."""
    spec, cfg = s.tasks[task], s.config
    grid, channels = list(spec.grid), list(spec.channels)
    field = ["B", *grid, len(channels)]
    latent = ["B", cfg.latent.tokens, cfg.latent.dim]
    params = ["B", len(spec.params)]
    static = [("static", ["B", *grid, len(spec.static_channels)])] if spec.static_channels else []
    forcing = [("forcing", latent)] if spec.static_channels else []

    def io(*pairs):
        return [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in pairs]

    return {
        "format": FORMAT,
        "task": task,
        "channels": channels,
        "grid": grid,
        "coords": "coords.npy",
        "dt": spec.dt,
        "time_stride": cfg.training.time_stride,
        "frame_spacing": spec.dt / cfg.training.time_stride,
        "params": {
            "names": list(spec.params),
            "default": default_params(spec),
            "varying": list(spec.varying),
        },
        "normalizer": dict(zip(("mean", "std"), field_stats(spec))),
        "static": {
            "channels": list(spec.static_channels),
            "normalizer": dict(zip(("mean", "std"), static_stats(spec))),
        }
        if spec.static_channels
        else None,
        "latent": {"tokens": cfg.latent.tokens, "dim": cfg.latent.dim},
        "carry": {"enabled": bool(cfg.stages.operator.carry_error), "rho": carry_factors(s, task).tolist()},
        "programs": {
            "encode": {
                "inputs": io(("u0", field), *static),
                "outputs": io(("z", latent), ("error", field), *forcing),
            },
            "step": {"inputs": io(("z", latent), ("params", params), *forcing), "outputs": io(("z", latent))},
            "decode": {
                "inputs": io(("z", latent), ("error", field), ("rho", [len(channels)])),
                "outputs": io(("u", field)),
            },
            "one_step": {
                "inputs": io(("u", field), ("params", params), *static),
                "outputs": io(("u", field)),
            },
        },
        "torch": torch.__version__,
    }


def readme(meta: dict) -> str:
    params = meta["params"]
    varying = f" (give {params['varying']}: they varied in training)" if params["varying"] else ""
    return (
        f"# UPS surrogate of task `{meta['task']}` (torch.export, {meta['torch']})\n\n"
        f"Channels {meta['channels']} on a grid {meta['grid']} (points in coords.npy); one step is "
        f"dt = {meta['dt']:g} in the data's time unit. PDE parameters {params['names']}, default "
        f"{params['default']}{varying}. Shapes and normalisers: surrogate.json.\n\n"
        "A rollout with torch alone (encode once, step in latent space, decode every step):\n\n"
        f"```python\n{EXAMPLE}```\n"
    )
