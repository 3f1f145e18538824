"""Tiny model settings and a config writer for integration tests on built-in data."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {
    "latent": {"tokens": 4, "dim": 16},
    "encoder": {"hidden": 16, "depth": 1, "kernel_size": 3},
    "decoder": {"hidden": 16, "depth": 1, "fourier_features": 4, "query_points": 16},
    "operator": {"depth": 1, "heads": 2},
    "training": {"batch_size": 16, "rollout_horizon": 2, "time_stride": 2, "accelerator": "cpu",
                 "log_every_n_steps": 1},
    "stages": {"autoencoder": {"epochs": 1}, "operator": {"epochs": 2}},
}


def write_config(path: Path, data_dir: Path, tasks: list[dict], *, training: dict | None = None,
                 data: dict | None = None) -> Path:
    """A config file with the TINY model on ``tasks``, runs under ``path.parent / "runs"``."""
    config = {**TINY,
              "paths": {"data_dir": str(data_dir), "runs_dir": str(path.parent / "runs")},
              "data": {"tasks": tasks, "split": {"train": 0.5, "val": 0.25, "test": 0.25}, **(data or {})},
              "training": {**TINY["training"], **(training or {})}}
    path.write_text(yaml.safe_dump(config))
    return path
