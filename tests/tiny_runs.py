"""Tiny model settings, a config writer for integration tests on built-in data, and the check that
``ups pipeline`` refuses a bad data file before any work."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {
    "latent": {"tokens": 4, "dim": 16},
    "encoder": {"hidden": 16, "depth": 1, "kernel_size": 3},
    "decoder": {"hidden": 16, "depth": 1, "fourier_features": 4, "query_points": 16},
    "training": {
        "batch_size": 16,
        "time_stride": 2,
        "accelerator": "cpu",
        "log_every_n_steps": 1,
    },
    "stages": {
        "autoencoder": {"epochs": 1},
        "operator": {"epochs": 2, "depth": 1, "heads": 2, "rollout_horizon": 2},
    },
}


# Burgers for the transient stages, Darcy for the steady prior (the demo's pairing, tiny).
BURGERS_AND_DARCY = [
    {"name": "burgers", "path": "1D_Burgers_Sols_Nu0.01.hdf5"},
    {"name": "darcy", "path": "2D_DarcyFlow_beta1.0_Train.hdf5"},
]


def generative_overrides(steps_infer: int, val_samples: int) -> list[str]:
    """Tiny flows, ``steps_infer`` sampler steps, one epoch of each generative stage."""
    return [
        "stages.diff_residual.hidden=16",
        "stages.diff_residual.depth=1",
        f"stages.diff_residual.steps_infer={steps_infer}",
        f"stages.diff_residual.val_samples={val_samples}",
        "stages.steady_prior.hidden=16",
        "stages.steady_prior.depth=1",
        f"stages.steady_prior.steps_infer={steps_infer}",
        "stages.diff_residual.epochs=1",
        "stages.consistency_distill.epochs=1",
        "stages.steady_prior.epochs=1",
    ]


def write_config(
    path: Path, data_dir: Path, tasks: list[dict], *, training: dict | None = None, data: dict | None = None
) -> Path:
    """A config file with the TINY model on ``tasks``, runs under ``path.parent / "runs"``."""
    config = {
        **TINY,
        "paths": {"data_dir": str(data_dir), "runs_dir": str(path.parent / "runs")},
        "data": {"tasks": tasks, "split": {"train": 0.5, "val": 0.25, "test": 0.25}, **(data or {})},
        "training": {**TINY["training"], **(training or {})},
    }
    path.write_text(yaml.safe_dump(config))
    return path


BURGERS = [{"name": "burgers", "path": "1D_Burgers_Sols_Nu0.01.hdf5"}]


def refused_before_work(
    tmp_path: Path, capsys, data_file: Path, data: dict | None = None, command=("pipeline",)
) -> str:
    """``ups <command>`` (default ``pipeline``) on one task of ``data_file`` (the TINY model, ``data``
    settings on top): asserts exit 2 and nothing written (no run folder, no latent cache); returns
    stderr."""
    from ups.cli import main

    cache = tmp_path / "latent_cache"
    config = write_config(
        tmp_path / "c.yaml",
        data_file.parent,
        [{"name": "t", "path": data_file.name}],
        training={"time_stride": 2, "latent_cache_dir": str(cache)},
        data=data,
    )
    run = tmp_path / "run"
    assert main([*command, "--config", str(config), "--run-dir", str(run)]) == 2
    assert not run.exists() and not cache.exists()
    return capsys.readouterr().err


def tiny_data(root: Path, *, darcy: bool = False) -> Path:
    """``root/data`` with 8 tiny built-in Burgers trajectories (and 8 Darcy pairs)."""
    from ups.data.generate import generate_dataset

    data = root / "data"
    generate_dataset("burgers1d", data, n=8, nx=32, nt=11, seed=0, progress=False)
    if darcy:
        generate_dataset("darcy2d", data, n=8, nx=16, seed=0, progress=False)
    return data


def tiny_burgers_config(root: Path) -> Path:
    """``root/tiny.yaml``: the TINY model on tiny Burgers data."""
    return write_config(root / "tiny.yaml", tiny_data(root), BURGERS)


def tiny_five_stage_config(root: Path, overrides: list[str]) -> Path:
    """``root/tiny.yaml``: the TINY model on tiny Burgers and Darcy data with ``overrides``,
    written resolved (so that commands need no overrides to see them)."""
    from ups.config import to_yaml
    from ups.resolve import load_config

    base = write_config(root / "base.yaml", tiny_data(root, darcy=True), BURGERS_AND_DARCY)
    config = root / "tiny.yaml"
    config.write_text(to_yaml(load_config(base, overrides)))
    return config


def tiny_surrogate_run(root: Path) -> Path:
    """``root/run``: every stage of ``ups pipeline`` trained on tiny Burgers (32 points, 11 frames)
    and Darcy (16 x 16) data in ``root/data`` (about 5 s on 2 cores): the fixture of the
    surrogate API, ``ups predict`` and ``ups export``."""
    from ups.cli import main

    config = tiny_five_stage_config(
        root, [*generative_overrides(steps_infer=2, val_samples=2), "evaluation.after_pipeline=false"]
    )
    assert main(["pipeline", "--config", str(config), "--run-dir", str(root / "run")]) == 0
    return root / "run"
