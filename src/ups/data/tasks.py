"""Tasks of a config (``data.tasks``): their files, splits, normalisers, and the steady pairs.

A task is one PDEBench file plus a name. ``load_tasks`` opens and validates every file,
splits its trajectories (``splits.split_trajectories``) and fits its normaliser on the
train split only. ``SteadyPairDataset`` reads one pair per item through the file's lazy,
per-process HDF5 handle, so it works with any number of DataLoader workers (the transient
tasks' datasets are in ``ups.data.latent_pairs``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ups.config.schema import SAMPLE_LIMIT, TaskConfig
from ups.data.generate.registry import GENERATORS
from ups.data.normalization import Normalizer
from ups.data.params import parse_params_from_name
from ups.data.pdebench import FileInfo, PDEBenchFile
from ups.data.splits import SPLIT_NAMES, Split, split_trajectories
from ups.errors import ConfigError, DataError

_PERIODIC_NAME = re.compile(r"(^|_)periodic(_|\.)", re.I)
# File-name patterns of the datasets `ups data generate` writes, and the generator name.
_BUILTIN_FILES = (
    (re.compile(r"burgers", re.I), "burgers1d"),
    (re.compile(r"advection", re.I), "advection1d"),
    (re.compile(r"reacdiff|reaction.?diffusion", re.I), "reaction_diffusion1d"),
    (re.compile(r"darcy", re.I), "darcy2d"),
    (re.compile(r"^1D_CFD_Rand_.*_periodic", re.I), "cfd1d"),
    (re.compile(r"^2D_diff-react", re.I), "diffusion_reaction2d"),
)


@dataclass
class TaskData:
    """A loaded task. ``normalizer`` is for the fields (transient) or the solution u(x)
    (steady); ``input_normalizer`` is for the coefficient a(x) of a steady task, or for the
    static field of a transient one that has it (``info.static_channels``: the forcing of an
    incompressible Navier-Stokes file), None otherwise."""

    spec: TaskConfig
    file: PDEBenchFile
    info: FileInfo
    split: Split
    normalizer: Normalizer
    input_normalizer: Normalizer | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def periodic(self) -> bool:
        """``periodic`` of the task's config; unset, whether its file is of a periodic built-in PDE or
        its name says ``periodic`` (as PDEBench's CFD files do)."""
        if self.spec.periodic is not None:
            return self.spec.periodic
        path = self.info.path
        generator = GENERATORS.get(builtin_generator(path) or "")
        return bool(_PERIODIC_NAME.search(path.name)) or (
            generator is not None and generator.periodic and len(self.info.spatial_shape) == 1
        )

    @property
    def transpose_symmetric(self) -> bool:
        """``transpose_symmetric`` of the task's config (checked at loading, ``square_steady``); unset,
        whether its file is of a built-in PDE that is symmetric so (Darcy) on a square 2D grid."""
        if self.spec.transpose_symmetric is not None:
            return self.spec.transpose_symmetric
        generator = GENERATORS.get(builtin_generator(self.info.path) or "")
        return bool(generator is not None and generator.transpose_symmetric and square_steady(self.info))


def square_steady(info: FileInfo) -> bool:
    """Whether a file holds steady pairs on a square 2D grid, the only ones drawn transposed."""
    shape = info.spatial_shape
    return info.kind == "steady" and len(shape) == 2 and shape[0] == shape[1]


def builtin_generator(path: Path) -> str | None:
    """The ``ups data generate`` task that writes files named like ``path``, if any."""
    return next((generator for pattern, generator in _BUILTIN_FILES if pattern.search(path.name)), None)


def missing_file_hint(path: Path) -> str:
    """How to get a missing data file: the generator command for a built-in file name."""
    generator = builtin_generator(path)
    if generator is None:
        return "Check paths.data_dir and the task's path."
    known = GENERATORS[generator].default_params
    params = "".join(f" --param {k}={v}" for k, v in parse_params_from_name(path.name).items() if k in known)
    return (
        f"It looks like a built-in dataset: write it with "
        f"`ups data generate {generator} --out {path.parent}{params}`."
    )


def open_task_file(
    spec: TaskConfig,
    data_dir: str | Path,
    *,
    reduced_resolution: int = 1,
    reduced_resolution_t: int = 1,
    max_samples: int | None = None,
    sample_limit: int = SAMPLE_LIMIT,
    allow_external_storage: bool = False,
) -> PDEBenchFile:
    """The task's file, opened and validated (what it holds is in ``.info``; nothing is read
    beyond its coordinates). Relative paths resolve against ``data_dir``; the other arguments are
    ``PDEBenchFile``'s."""
    data_dir = Path(data_dir).expanduser()
    path = Path(spec.path).expanduser()
    if not path.is_absolute():
        path = data_dir / path
    if not path.exists():
        raise DataError(
            f"task '{spec.name}': data file {path} does not exist (path {spec.path!r} under "
            f"data_dir {data_dir}). {missing_file_hint(path)}"
        )
    return PDEBenchFile(
        path,
        layout=spec.layout,
        reduced_resolution=spec.reduced_resolution or reduced_resolution,
        reduced_resolution_t=reduced_resolution_t,
        params_override=spec.params,
        max_samples=max_samples,
        sample_limit=sample_limit,
        allow_external_storage=allow_external_storage,
    )


def _load_task(file: PDEBenchFile, spec: TaskConfig, split_options: dict, normalization: str) -> TaskData:
    """Split the opened ``file`` of task ``spec`` (``splits.split_trajectories``'s ``split_options``),
    refuse NaN or Inf in any split and fit the normalisers on the train split."""
    path, info = file.path, file.info
    if spec.transpose_symmetric and not square_steady(info):
        raise ConfigError(
            f"data.tasks[{spec.name}].transpose_symmetric is true, but {path} holds {info.kind} "
            f"data on a grid of shape {list(info.spatial_shape)}: transposed training pairs are only "
            "drawn for steady tasks on a square 2D grid; set it false or remove it."
        )
    try:
        split = split_trajectories(
            info.n_samples, **split_options, task_name=spec.name, test_at_end=info.layout == "multigroup"
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    read = file.steady_pair if info.kind == "steady" else file.trajectory
    held_out = [*split.val, *split.test]  # the train split is checked while fitting
    for _ in finite(file, held_out, read):
        pass
    if info.kind == "steady":
        input_norm = Normalizer(normalization).fit(pair[0] for pair in finite(file, split.train, read))
        norm = Normalizer(normalization).fit(file.steady_pair(i)[1] for i in split.train)
        return TaskData(spec, file, info, split, norm, input_norm)
    norm = Normalizer(normalization).fit(finite(file, split.train, read))
    static = None
    if info.static_channels:  # the operator's conditioning field, normalised by its train split's statistics
        for _ in finite_static(file, held_out):
            pass
        static = Normalizer(normalization).fit(finite_static(file, split.train))
    return TaskData(spec, file, info, split, norm, static)


def finite(file: PDEBenchFile, indices, read):
    """``read(i)`` for each sample, refusing one with NaN or Inf: the file, dataset, sample,
    shape and first bad index are named (before training; the arrays are read once anyway to fit
    the normalisers)."""
    for i in indices:
        arrays = read(i)
        channels = file.info.channel_names if not isinstance(arrays, tuple) else ()
        for key, array in zip(file.data_keys(i), arrays if isinstance(arrays, tuple) else (arrays,)):
            _refuse_non_finite(file, key, i, array, channels)
        yield arrays


def finite_static(file: PDEBenchFile, indices):
    """``file.static_field(i)`` for each sample, refusing one with NaN or Inf (as ``finite``)."""
    for i in indices:
        field = file.static_field(i)
        _refuse_non_finite(file, "the static field 'force'", i, field)
        yield field


def _refuse_non_finite(
    file: PDEBenchFile, key: str, i: int, array: np.ndarray, channels: Sequence[str] = ()
) -> None:
    """A DataError naming the file, ``key``, sample, shape and first bad index (and its channel, when
    ``channels`` names more than one) if ``array`` holds NaN or Inf."""
    if np.isfinite(array).all():
        return
    first = tuple(int(v) for v in np.argwhere(~np.isfinite(array))[0])
    channel = f" (channel {channels[first[-1]]})" if len(channels) > 1 else ""
    raise DataError(
        f"{file.path}: {key} (sample {i}, shape {tuple(array.shape)} after down-sampling) holds NaN or "
        f"Inf, first at index {first}{channel}; clean the file or drop that sample."
    )


def load_tasks(
    specs: Sequence[TaskConfig],
    data_dir: str | Path,
    *,
    reduced_resolution: int = 1,
    reduced_resolution_t: int = 1,
    split_fractions=(0.8, 0.1, 0.1),
    seed: int = 0,
    need_val: bool = True,
    normalization: str = "standard",
    split_mode: str = "seeded",
    max_samples: int | None = None,
    sample_limit: int = SAMPLE_LIMIT,
    allow_external_storage: bool = False,
) -> list[TaskData]:
    """Open, validate, split and fit normalisers for every task, in ``specs`` order.

    Relative paths resolve against ``data_dir``; ``max_samples`` keeps the first samples of
    each file (``sample_limit`` and ``allow_external_storage`` as in ``PDEBenchFile``), ``split_mode``
    is ``splits.split_trajectories``'s ``mode``. Normalisers are fitted on the train split only,
    streaming one trajectory at a time (one pass over the train trajectories).

    Raises:
        DataError: no tasks, duplicate names, a missing or malformed file, too few
            trajectories for the split.
    """
    if not specs:
        raise DataError("data.tasks is empty; list at least one task (name + path).")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"data.tasks has duplicate task names {duplicates}; names must be unique.")
    file_options = dict(
        reduced_resolution=reduced_resolution,
        reduced_resolution_t=reduced_resolution_t,
        max_samples=max_samples,
        sample_limit=sample_limit,
        allow_external_storage=allow_external_storage,
    )
    split_options = dict(fractions=split_fractions, seed=seed, need_val=need_val, mode=split_mode)
    return [
        _load_task(open_task_file(spec, data_dir, **file_options), spec, split_options, normalization)
        for spec in specs
    ]


def param_names(tasks: Sequence[TaskData]) -> list[str]:
    """Sorted union of PDE parameter names: the order of the conditioning vector."""
    return sorted({name for task in tasks for name in (*task.info.params, *task.info.varying_params)})


def param_vector(params: dict[str, float], order: Sequence[str]) -> torch.Tensor:
    """float32 [P]: ``params`` in ``order``, 0 where a parameter is missing."""
    return torch.tensor([params.get(name, 0.0) for name in order], dtype=torch.float32)


class SteadyPairDataset(Dataset):
    """Steady (Darcy) pairs of one split of the steady tasks (transient tasks are left out).

    Item: ``input`` a(x) float32 [*spatial, 1] and ``target`` u(x) [*spatial, 1], each
    normalised by its own normaliser, ``coords`` [*spatial, d], ``params`` [P] in ``param_order``
    (0 where a task lacks a parameter), ``task`` (name), ``task_id`` (position among the steady
    tasks), ``index`` (sample index in its file). Items of one task are contiguous.
    """

    def __init__(
        self,
        tasks: Sequence[TaskData],
        split: str = "train",
        param_order: Sequence[str] | None = None,
    ):
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        self.tasks = [t for t in tasks if t.info.kind == "steady"]
        self.param_order = list(param_order) if param_order is not None else param_names(tasks)
        self._coords = [torch.from_numpy(t.file.coordinates()) for t in self.tasks]
        self.index_map = [(k, i) for k, t in enumerate(self.tasks) for i in t.split.indices(split)]
        self.task_sizes = [len(t.split.indices(split)) for t in self.tasks]
        self.task_weights = [t.spec.weight for t in self.tasks]  # ``data.tasks[*].weight``

    def __len__(self) -> int:
        return len(self.index_map)

    def __getitem__(self, item: int) -> dict:
        k, i = self.index_map[item]
        task = self.tasks[k]
        a, u = task.file.steady_pair(i)
        return {
            "input": torch.from_numpy(task.input_normalizer.normalize(a)),
            "target": torch.from_numpy(task.normalizer.normalize(u)),
            "coords": self._coords[k],
            "params": param_vector(task.file.params_of(i), self.param_order),
            "task": task.name,
            "task_id": k,
            "index": i,
        }
