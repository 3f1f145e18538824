"""benchmarks/accuracy.py: the UPS configs it writes load, tuned and at the defaults; the FNO's
tuned settings are the validation grid's winners."""

import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from accuracy import FNO_TUNED, SPLIT, TASKS, fno_settings, ups_config  # noqa: E402
from fno_grid import REPRESENTATIVE, as_settings, read, winners  # noqa: E402
from ups.resolve import load_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_tuned_config_of_every_task_loads(tmp_path, name):
    task = TASKS[name]
    cfg = load_config(
        ups_config(task, tmp_path / "data" / "file.hdf5", tmp_path, seed=3, budget_s=90), check_files=False
    )
    assert cfg.seed == 3 and cfg.data.tasks[0].name == name and cfg.training.time_budget == 90
    assert round(cfg.data.split.train * 179) == SPLIT[0] and round(cfg.data.split.val * 179) == SPLIT[1]
    assert cfg.evaluation.per_sample and cfg.training.max_time is None
    steady = cfg.stages.steady_prior
    assert cfg.stages.diff_residual.epochs == 0 and cfg.stages.consistency_distill.epochs == 0
    if task.steady:  # Darcy: batches of 8 for both stages, the steady prior at 2e-3
        assert cfg.training.batch_size == 8 and steady.optimizer.lr == 2e-3 and steady.epochs == 10_000
        assert cfg.stages.operator.epochs == 0
    else:
        assert cfg.training.batch_size == 32 and steady.epochs == 0 and steady.optimizer.lr is None


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_defaults_config_sets_only_data_deadline_and_protocol(tmp_path, name):
    path = ups_config(
        TASKS[name], tmp_path / "data" / "file.hdf5", tmp_path, seed=1, budget_s=60, variant="defaults"
    )
    written = yaml.safe_load(path.read_text())
    assert set(written) == {"include", "seed", "paths", "data", "training", "evaluation"}
    assert written["training"] == {"time_budget": 60, "time_stride": TASKS[name].stride}
    assert set(written["evaluation"]) == {"context_frames", "report", "per_sample"}
    cfg = load_config(path, check_files=False)
    defaults = load_config(BENCHMARKS.parent / "configs" / "defaults.yaml", check_files=False)
    assert (
        cfg.latent == defaults.latent
        and cfg.stages == defaults.stages
        and cfg.optimizer == defaults.optimizer
    )


def test_the_fno_defaults_are_pdebench_settings():
    assert fno_settings(TASKS["burgers_nu0.01"], "defaults") == {"lr": 1e-3, "batch_size": 50, "unroll": None}
    assert fno_settings(TASKS["darcy_beta1.0"], "defaults") == {"lr": 1e-3, "batch_size": 20}
    assert fno_settings(TASKS["diffusion_reaction2d"], "defaults") == {
        "lr": 1e-3,
        "batch_size": 20,
        "unroll": None,
    }
    assert fno_settings(TASKS["cfd1d"], "defaults") == {"lr": 1e-3, "batch_size": 50, "unroll": None}


def test_the_new_families_protocol_is_the_documented_one():
    """Issue 28's rows (docs/benchmarks.md): every stored frame, 10 context frames, 40 scored steps."""
    dr, cfd = TASKS["diffusion_reaction2d"], TASKS["cfd1d"]
    assert (dr.nx, dr.frames, dr.stride, dr.context, dr.horizon, dr.spatial_dims) == (32, 101, 1, 10, 40, 2)
    assert (cfd.nx, cfd.frames, cfd.stride, cfd.reduced_resolution, cfd.horizon) == (256, 201, 1, 2, 40)
    assert TASKS["burgers_nu0.01"].horizon == 31 and TASKS["burgers_nu0.01"].rollout_frames == 41
    if "burgers1d" not in FNO_TUNED:
        with pytest.raises(SystemExit, match="not tuned yet"):
            fno_settings(TASKS["burgers_nu0.01"], "tuned")


def test_the_tuned_fno_settings_are_the_grid_winners():
    """Every family in FNO_TUNED has its whole grid in the committed fno_grid.csv and is its winner."""
    rows = read(BENCHMARKS / "results" / "fno_grid.csv")
    best = winners(rows)
    assert set(FNO_TUNED) <= set(REPRESENTATIVE)
    for family, settings in FNO_TUNED.items():
        assert len([r for r in rows if r["family"] == family]) == (4 if family == "darcy2d" else 12)
        assert as_settings(best[family]) == settings
