"""``ups predict``: a trained surrogate rolled out from the starts in a PDEBench-layout file, the
predictions written in the same layout family by UPS's own writer (``hdf5_writer``).

Transient input: frame 0 of each trajectory is the start; with ``evaluation.context_frames`` C > 1
the first C frames (``training.time_stride`` apart) are the context and the last of them the start
(as ``ups evaluate`` does). The output holds per sample the start and ``steps`` predicted
frames, at times start + k * dt. Steady input (Darcy layout): ``nu`` is the coefficient a(x), the
output's ``tensor`` the solution. PDE parameters and static fields are the file's, as UPS reads them.

Everything that can be refused is refused before the first rollout (``UPSError``: the command's
exit 2): the paths, the run's stages, the task, the grid, channels, parameters, static field, frames.
The file is written atomically: nothing is left on failure or Ctrl-C.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy.interpolate import RegularGridInterpolator

from ups.config.requests import PredictionRequest
from ups.data.generate.hdf5_writer import write_atomic
from ups.data.generate.spec import SolveResult, chunks, progress_bar
from ups.data.layouts import SPATIAL_AXES
from ups.data.pdebench import PDEBenchFile
from ups.errors import UPSError
from ups.stages.dynamics import rollout_start
from ups.surrogate.load import load_surrogate
from ups.surrogate.spec import TaskSpec

# What each input layout is written as; ns_incomp has no writer: its channels go to one `tensor`.
OUTPUT_FORMAT = {"single": "single", "cfd": "cfd", "multigroup": "multigroup", "darcy": "darcy"}
SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class Plan:
    """One prediction, checked: the input ``file`` (read as the run reads its task's data), the
    run's ``task`` (a ``TaskSpec``), ``steps`` (0: steady), the start's frame ``start`` and the
    context's frame ``stride`` in the file, and with ``--resolution`` the decoded ``points``
    [P, d] (the model's coordinates) and their grid ``shape``; ``axes`` are the written
    coordinates {"x": [X], ("y": [Y])}."""

    file: PDEBenchFile
    task: TaskSpec
    steps: int
    start: int
    stride: int
    axes: dict[str, np.ndarray]
    points: np.ndarray | None = None
    shape: tuple[int, ...] | None = None


def predict(request: PredictionRequest, progress: bool = True) -> Path:
    """Roll the run of ``request`` out from the starts in ``request.input`` (or solve its steady
    task) and write ``request.out``; returns the path written."""
    check_paths(request)
    surrogate = load_surrogate(request.run_dir, device=request.device)
    plan = plan_prediction(surrogate, request)
    arrays = predicted(surrogate, plan, request, progress)
    write_predictions(request, plan, arrays)
    return request.out


def check_paths(request: PredictionRequest) -> None:
    """Refuse, before anything is loaded, numbers out of range and an output that cannot be written."""
    for flag, value, least in (
        ("--steps", request.steps, 1),
        ("--samples", request.samples, 0),
        ("--resolution", request.resolution, 1),
        ("--batch-size", request.batch_size, 1),
    ):
        if value is not None and value < least:
            raise UPSError(f"{flag} {value} must be at least {least}.")
    out, source = Path(request.out), Path(request.input)
    if out.suffix.lower() not in SUFFIXES:
        raise UPSError(f"--out {out}: predictions are written as HDF5; give a .h5 or .hdf5 file name.")
    if not out.parent.is_dir():
        raise UPSError(f"--out {out}: the folder {out.parent} does not exist; create it or choose another.")
    if out.resolve() == source.resolve():
        raise UPSError(f"--out {out} is the --input file; write the predictions to another file.")


def plan_prediction(surrogate, request: PredictionRequest) -> Plan:
    """The checked ``Plan``: the input file against the run's task; ``UPSError`` naming the file,
    what does not fit and how to fix it."""
    cfg = surrogate.config
    data = cfg.data
    file = PDEBenchFile(
        request.input,
        reduced_resolution_t=data.reduced_resolution_t,
        sample_limit=data.sample_limit,
        allow_external_storage=data.allow_external_storage,
    )
    task = choose_task(surrogate, request, file)
    spec = next(t for t in data.tasks if t.name == task.name)
    reduction = spec.reduced_resolution or data.reduced_resolution
    if reduction != 1:  # read as the run read its task's data; a grid too small is check_fits' to name
        file = file.reopened(reduced_resolution=min(reduction, *file.info.spatial_shape))
    check_fits(file, task, reduction)
    axes = dict(zip(SPATIAL_AXES, file_axes(file)))
    if task.kind == "steady":
        for flag, value, why in (
            ("--resolution", request.resolution, f"solves on its own grid {list(task.grid)} only"),
            ("--steps", request.steps, "has no time steps"),
        ):
            if value is not None:
                raise UPSError(f"{flag} {value}: the steady task '{task.name}' {why}; leave {flag} out.")
        return Plan(file, task, 0, 0, 1, axes)
    stride = cfg.training.time_stride
    start = rollout_start(cfg)
    frames = file.info.n_times
    if frames <= start:
        raise UPSError(
            f"{file.path}: holds {frames} frames, but the run starts its rollouts from "
            f"{cfg.evaluation.context_frames} context frames {stride} apart (frame {start}); give a file "
            f"with at least {start + 1} frames."
        )
    steps = request.steps if request.steps is not None else (frames - 1 - start) // stride
    if steps < 1:
        raise UPSError(
            f"{file.path}: its {frames} frames cover no step of {stride} frames after the start "
            f"(frame {start}); say how many steps to predict with --steps."
        )
    if request.resolution is None:
        return Plan(file, task, steps, start, stride, axes)
    model_axes = [_axis_of(task.coords, k) for k in range(len(task.grid))]
    n = request.resolution
    mesh = np.meshgrid(*(refined(axis, n) for axis in model_axes), indexing="ij")
    points = np.stack(mesh, axis=-1).reshape(-1, len(mesh)).astype(np.float32)
    axes = {name: refined(axis, n) for name, axis in axes.items()}
    return Plan(file, task, steps, start, stride, axes, points, (n,) * len(mesh))


def choose_task(surrogate, request: PredictionRequest, file: PDEBenchFile) -> TaskSpec:
    """The run's task for ``file``: ``--task``, else the one task of the file's kind; refused when
    the run has no trained stage for that kind, or several tasks of it."""
    kind, path = file.info.kind, file.path
    need = "steady_prior" if kind == "steady" else "operator"
    if (surrogate.steady if kind == "steady" else surrogate.dynamics) is None:
        raise UPSError(
            f"{path} holds {kind} data (layout '{file.layout}'), but the run {request.run_dir} has no "
            f"trained {need} stage (it has: {', '.join(surrogate.stages) or 'none'}); train it "
            f"(`ups train --stage {need} --run-dir {request.run_dir}`) or give a {_other(kind)} file."
        )
    if kind == "transient" and request.samples and not surrogate.corrected:
        raise UPSError(
            f"--samples {request.samples} needs a trained corrector (stage diff_residual or "
            f"consistency_distill) in {request.run_dir}; train one, or leave --samples out."
        )
    if request.task is not None:
        if request.task not in surrogate.tasks:
            raise UPSError(f"--task {request.task}: the run has tasks {', '.join(surrogate.tasks)}.")
        task = surrogate.tasks[request.task]
        if task.kind != kind:
            raise UPSError(
                f"{path} holds {kind} data (layout '{file.layout}'), but --task {task.name} is "
                f"{task.kind}; give a {task.kind} file, or the run's {kind} task."
            )
        return task
    fitting = [t for t in surrogate.tasks.values() if t.kind == kind]
    if not fitting:
        raise UPSError(f"{path} holds {kind} data, but the run {request.run_dir} has no {kind} task.")
    if len(fitting) > 1:
        names = ", ".join(t.name for t in fitting)
        raise UPSError(f"{path}: the run has several {kind} tasks ({names}); choose one with --task.")
    return fitting[0]


def _other(kind: str) -> str:
    return "transient" if kind == "steady" else "steady"


def check_fits(file: PDEBenchFile, task: TaskSpec, reduction: int) -> None:
    """Refuse a file whose grid, channels, parameters or static field differ from ``task``'s."""
    info, path = file.info, file.path
    if tuple(info.spatial_shape) != tuple(task.grid):
        read = f" (read every {reduction}th point, as the run reads its data)" if reduction > 1 else ""
        raise UPSError(
            f"{path}: its grid is {list(info.spatial_shape)}{read}, but task '{task.name}' was trained on "
            f"{list(task.grid)}; give the starts on that grid (--resolution decodes the predictions on "
            f"another)."
        )
    if info.kind != "steady" and tuple(info.channel_names) != tuple(task.channels):
        raise UPSError(
            f"{path}: its channels are {list(info.channel_names)}, but task '{task.name}' has "
            f"{list(task.channels)}; give a file with those channels, in that order."
        )
    known = {*info.params, *info.varying_params}
    missing = [name for name in required_params(task) if name not in known]
    if missing:
        example = missing[0]
        raise UPSError(
            f"{path}: the run is conditioned on PDE parameter(s) {missing}, which the file does not give "
            f"(it gives {sorted(known) or 'none'}); write each as a root attribute "
            f"(h5py: f.attrs['{example}'] = value) or in the file name (e.g. _{example.capitalize()}0.01)."
        )
    if tuple(info.static_channels) != tuple(task.static_channels):
        raise UPSError(
            f"{path}: its static field has channels {list(info.static_channels) or 'none'}, but task "
            f"'{task.name}' is conditioned on {list(task.static_channels) or 'none'}; give a file "
            f"with that static field ('force')."
        )


def required_params(task: TaskSpec) -> list[str]:
    """The parameters of ``task`` the model is conditioned on that its training file gave (the
    others are 0 in its parameter vector)."""
    return [name for name in task.params if name in task.defaults or name in task.varying]


def file_axes(file: PDEBenchFile) -> list[np.ndarray]:
    """The file's 1-D coordinates per spatial axis, float64 (after down-sampling)."""
    coords = file.coordinates().astype(np.float64)
    return [_axis_of(coords, k) for k in range(coords.shape[-1])]


def _axis_of(coords: np.ndarray, k: int) -> np.ndarray:
    """Axis k's values of a grid of points [*S, d]."""
    return coords[tuple(slice(None) if j == k else 0 for j in range(coords.ndim - 1)) + (k,)]


def refined(axis: np.ndarray, n: int) -> np.ndarray:
    """n cell centres of the interval the cells of ``axis`` cover (its points taken as cell centres,
    [x0 - h/2, x_last + h/2]), float64 [n]: the same kind of grid as the run's, at n points."""
    half = (axis[-1] - axis[0]) / (len(axis) - 1) / 2 if len(axis) > 1 else 0.5
    low, high = axis[0] - half, axis[-1] + half
    return low + (np.arange(n) + 0.5) * (high - low) / n


def predicted(surrogate, plan: Plan, request: PredictionRequest, progress: bool) -> dict[str, np.ndarray]:
    """Every sample's prediction, float32: ``fields`` [N, T, *G, C] (T = 1 + steps, frame 0 the start;
    T = 1 steady), with ``--samples`` K the mean there and ``samples`` [N, K, T, *G, C], ``spread``
    [N, T, *G, C]; G is the run's grid, or ``plan.shape``."""
    n = plan.file.info.n_samples
    parts: dict[str, list[np.ndarray]] = {}
    with progress_bar(n, f"predict {plan.task.name}", progress) as bar:
        for rows in chunks(np.arange(n), request.batch_size):
            batch = steady_batch if plan.task.kind == "steady" else transient_batch
            for key, value in batch(surrogate, plan, rows, request).items():
                parts.setdefault(key, []).append(value)
            bar.update(len(rows))
    return {key: np.concatenate(values).astype(np.float32) for key, values in parts.items()}


def transient_batch(surrogate, plan: Plan, rows: np.ndarray, request: PredictionRequest) -> dict:
    """One batch of rollouts, as ``predicted`` gives them."""
    file, task = plan.file, plan.task
    frames = np.stack([file.trajectory(int(i), slice(0, plan.start + 1, plan.stride)) for i in rows])
    static = np.stack([file.static_field(int(i)) for i in rows]) if task.static_channels else None
    pred = surrogate.rollout(
        frames if frames.shape[1] > 1 else frames[:, 0],  # [B, C_ctx, *S, C] or [B, *S, C]
        plan.steps,
        params=batch_params(file, task, rows),
        task=task.name,
        static=static,
        samples=request.samples,
        points=plan.points,
        device=request.device,
        seed=int(rows[0]),  # each batch its own draws, the same on every run of the command
    )
    start = frames[:, -1] if plan.points is None else on_points(frames[:, -1], task, plan)
    shape = (len(rows), -1, *(plan.shape or task.grid), len(task.channels))
    if not request.samples:
        return {"fields": _with_start(start, np.asarray(pred.fields).reshape(shape))}
    samples = np.asarray(pred.samples).reshape((len(rows), request.samples, *shape[1:]))
    return {
        "fields": _with_start(start, np.asarray(pred.mean).reshape(shape)),
        "samples": np.stack([_with_start(start, samples[:, k]) for k in range(request.samples)], axis=1),
        "spread": _with_start(np.zeros_like(start), np.asarray(pred.spread).reshape(shape)),
    }


def _with_start(start: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """[B, *G, C] and [B, steps, *G, C] -> [B, 1 + steps, *G, C]."""
    return np.concatenate([start[:, None], steps], axis=1)


def on_points(start: np.ndarray, task: TaskSpec, plan: Plan) -> np.ndarray:
    """The starts [B, *S, C] interpolated (multilinearly, extrapolated at the edges) to the grid of
    ``plan.points``: [B, *plan.shape, C]."""
    axes = [_axis_of(task.coords, k) for k in range(len(task.grid))]
    moved = np.moveaxis(start, 0, -2)  # [*S, B, C]: the interpolator's values lead with the grid
    values = RegularGridInterpolator(axes, moved, bounds_error=False, fill_value=None)(plan.points)
    return np.moveaxis(values, 0, -2).reshape((len(start), *plan.shape, start.shape[-1]))


def steady_batch(surrogate, plan: Plan, rows: np.ndarray, request: PredictionRequest) -> dict:
    """One batch of steady solutions, as ``predicted`` gives them (T = 1)."""
    a = np.stack([plan.file.steady_pair(int(i))[0] for i in rows])  # [B, X, Y, 1]
    pred = surrogate.solve_steady(
        a,
        params=batch_params(plan.file, plan.task, rows),
        task=plan.task.name,
        samples=request.samples,
        device=request.device,
        seed=int(rows[0]),  # each batch its own draws, the same on every run of the command
    )
    if not request.samples:
        return {"fields": np.asarray(pred.fields)[:, None]}
    return {
        "fields": np.asarray(pred.mean)[:, None],
        "samples": np.asarray(pred.samples)[:, :, None],
        "spread": np.asarray(pred.spread)[:, None],
    }


def batch_params(file: PDEBenchFile, task: TaskSpec, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """{name: [B]} of the parameters the run is conditioned on, as the file gives them per sample."""
    names = required_params(task)
    if not names:
        return None
    per_sample = [file.params_of(int(i)) for i in rows]
    return {name: np.array([p[name] for p in per_sample], dtype=np.float32) for name in names}


def write_predictions(request: PredictionRequest, plan: Plan, arrays: dict[str, np.ndarray]) -> None:
    """``request.out`` in the input's layout family, atomically (see the module's docstring)."""
    file, task = plan.file, plan.task
    info = file.info
    fields = arrays["fields"]  # [N, T, *G, C]
    coords = dict(plan.axes)
    if task.kind == "steady":
        a = np.stack([file.steady_pair(i)[0][..., 0] for i in range(info.n_samples)])
        result = SolveResult(fields[..., 0], coords, coefficient=a)
    else:
        dt = float(task.dt)
        t0 = float(file.times()[plan.start])
        coords["t"] = t0 + dt * np.arange(fields.shape[1])
        one = len(task.channels) == 1 and info.layout in ("single", "ns_incomp")
        result = SolveResult(fields[..., 0] if one else fields, coords, channels=tuple(task.channels))
    attrs = {
        **info.params,
        "ups_predicted_by": str(request.run_dir),
        "ups_input": str(request.input),
        "ups_task": task.name,
        "ups_steps": plan.steps,
        "ups_samples": request.samples,
        "ups_channels": ",".join(task.channels),
    }

    def extras(h5: h5py.File) -> None:
        for key in ("samples", "spread"):
            if key in arrays:
                h5.create_dataset(key, data=arrays[key])
        for i, group in enumerate(
            sorted((k for k in h5 if k.isdigit()), key=int)
        ):  # multigroup: each its own
            h5[group].attrs.update({name: file.params_of(i)[name] for name in info.varying_params})

    write_atomic(request.out, result, attrs, OUTPUT_FORMAT.get(info.layout, "single"), extras)
