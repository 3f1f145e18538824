"""benchmarks/accuracy.py: the UPS config it writes for each task loads, with Darcy's own settings."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from accuracy import TASKS, ups_config  # noqa: E402

from ups.config import load_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_benchmark_config_of_every_task_loads(tmp_path, name):
    task = TASKS[name]
    cfg = load_config(ups_config(task, tmp_path / "data" / "file.hdf5", tmp_path, seed=3), check_files=False)
    assert cfg.seed == 3 and cfg.data.tasks[0].name == name
    steady = cfg.stages.steady_prior
    if task.steady:  # Darcy: batches of 8 for both stages, the steady prior at 2e-3
        assert cfg.training.batch_size == 8 and steady.optimizer.lr == 2e-3 and steady.epochs == 10_000
        assert cfg.stages.operator.epochs == 0
    else:
        assert cfg.training.batch_size == 32 and steady.epochs == 0 and steady.optimizer.lr is None
