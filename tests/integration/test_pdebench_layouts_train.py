"""Every transient PDEBench layout trains (autoencoder + operator) and evaluates: the 1D CFD
and 2D diffusion-reaction built-in files, hand-built 2D CFD and incompressible Navier-Stokes
files. Slow (``make test-slow``): each trains two tiny stages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ups.cli import main
from ups.config import STAGE_NAMES
from ups.data.generate import generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_cfd, write_ns_incomp  # noqa: E402
from tiny_runs import write_config  # noqa: E402

pytestmark = pytest.mark.slow

OFF = [f"stages.{name}.epochs=0" for name in STAGE_NAMES if name not in ("autoencoder", "operator")]


def _cfd1d(data: Path) -> str:
    return generate_dataset("cfd1d", data, n=8, nx=32, nt=11, seed=0, progress=False).path.name


def _diffusion_reaction2d(data: Path) -> str:
    return generate_dataset("diffusion_reaction2d", data, n=8, nx=8, nt=11, seed=0, progress=False).path.name


def _cfd2d(data: Path) -> str:
    return write_cfd(
        data / "2D_CFD_Rand_M0.1_Eta0.01_Zeta0.01_periodic_128_Train.hdf5", (8, 11, 8, 8)
    ).path.name


def _ns_incomp(data: Path) -> str:
    return write_ns_incomp(data / "ns_incom_inhom_2d_512-0.h5", n=8, t=11, nx=8, ny=8).path.name


@pytest.mark.parametrize(
    "make, channels",
    [(_cfd1d, 3), (_diffusion_reaction2d, 2), (_cfd2d, 4), (_ns_incomp, 3)],
    ids=["cfd1d", "diffusion_reaction2d", "cfd2d", "ns_incomp"],
)
def test_layout_trains_and_evaluates(tmp_path, make, channels):
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "c.yaml", data, [{"name": "flow", "path": make(data)}])
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run), *OFF]) == 0
    prefix = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--config",
                str(config),
                "--run-dir",
                str(run),
                "--output-prefix",
                str(prefix),
                "evaluation.report=false",
                *OFF,
            ]
        )
        == 0
    )
    result = json.loads(prefix.with_name("eval.json").read_text())
    assert result["per_task"]["flow"]["nrmse"] > 0
    assert len(result["rollout"]["operator"]) == result["horizon"]
    per_channel = result["per_channel"]["flow"]
    assert len(per_channel["channels"]) == channels
    assert sum(per_channel["nrmse"]) / channels == pytest.approx(
        result["per_task"]["flow"]["nrmse"], rel=1e-6
    )
