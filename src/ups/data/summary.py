"""The data a config describes, loaded and summarised for people (``ups data summary``)."""

from __future__ import annotations

from ups.config import Config
from ups.data.pdebench import FileInfo
from ups.data.tasks import TaskData, load_tasks, open_task_file


def _file_options(cfg: Config) -> dict:
    """The ``data`` settings that say how every task's file is read."""
    data = cfg.data
    return dict(
        reduced_resolution=data.reduced_resolution,
        reduced_resolution_t=data.reduced_resolution_t,
        max_samples=data.max_samples,
        sample_limit=data.sample_limit,
        allow_external_storage=data.allow_external_storage,
    )


def load_config_tasks(cfg: Config) -> list[TaskData]:
    """Open, split and normalise every task of ``cfg.data``."""
    data = cfg.data
    return load_tasks(
        data.tasks,
        cfg.paths.data_dir,
        split_fractions=(data.split.train, data.split.val, data.split.test),
        seed=cfg.seed,
        need_val=not cfg.training.skip_lightning_val,
        normalization=data.normalization,
        split_mode=data.split.mode,
        **_file_options(cfg),
    )


def config_file_infos(cfg: Config) -> list[tuple[str, FileInfo]]:
    """(task name, what its file holds) for every task of ``cfg.data``: the files opened and
    validated, their data not read (cheaper than ``load_config_tasks``)."""
    options = _file_options(cfg)
    return [(spec.name, open_task_file(spec, cfg.paths.data_dir, **options).info) for spec in cfg.data.tasks]


def summary_table(tasks: list[TaskData]) -> str:
    """One block per task: file, layout, shapes, parameters, split sizes, normalisation."""
    blocks = []
    for task in tasks:
        info = task.info
        grid = " x ".join(map(str, info.spatial_shape))
        if info.kind == "steady":
            shape = f"{info.n_samples} pairs  a(x) -> u(x) on {grid}"
        else:
            shape = (
                f"{info.n_samples} trajectories x {info.n_times} steps on {grid}, "
                f"channels {', '.join(info.channel_names)}"
            )
            if info.static_channels:
                shape += f"; static {', '.join(info.static_channels)}"
        params = ", ".join(f"{k}={v:g}" for k, v in sorted(info.params.items())) or "none"
        split = task.split
        lines = [
            f"task {task.name} ({info.kind}, {info.layout} layout)",
            f"  file    {info.path}",
            f"  data    {shape}",
            f"  params  {params}",
            f"  split   train {len(split.train)} / val {len(split.val)} / test {len(split.test)}",
            f"  norm    {task.normalizer!r}"
            + (f"; input {task.input_normalizer!r}" if task.input_normalizer else ""),
        ]
        lines += [f"  note    {note}" for note in (*info.notes, *split.notes)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
