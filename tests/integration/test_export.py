"""``ups export`` on the fixture run: the programs run in a fresh Python process where ``ups`` cannot
be imported, and reproduce the surrogate's 10-step rollout to 1e-5; docs/api.md's example is the
one the export's README gives and this test runs; bad input is refused before anything is written."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tests.conftest import write_ns_incomp

import ups
from ups.cli import main
from ups.errors import UPSError
from ups.surrogate.export import transient_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exported import example_block, rollout_without_ups  # noqa: E402
from tiny_runs import write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STEPS = 10


@pytest.fixture(scope="module")
def exported(tmp_path_factory, surrogate_run) -> dict:
    root, run = tmp_path_factory.mktemp("export"), surrogate_run
    out = root / "exported"
    assert main(["export", "--run-dir", str(run), "--out", str(out)]) == 0
    return {"root": root, "run": run, "out": out, "surrogate": ups.load_surrogate(run)}


def test_the_export_runs_without_ups_and_reproduces_the_rollout(exported, tmp_path):
    s = exported["surrogate"]
    task = s.tasks["burgers"]
    data = next(t for t in s.dynamics.tasks if t.name == "burgers").file
    u0 = np.stack([data.trajectory(i, slice(0, 1))[0] for i in range(3)]).astype(np.float32)  # batch 3
    reference = s.rollout(u0, STEPS).fields  # [3, 10, 32, 1]

    readme = (exported["out"] / "README.md").read_text()
    api = (REPO / "docs" / "api.md").read_text()
    assert example_block(readme, "```python") == example_block(api, "## `ups export`")
    pred = rollout_without_ups(exported["out"], u0, STEPS, tmp_path)

    assert pred["rollout"].shape == reference.shape == (3, STEPS, *task.grid, len(task.channels))
    scale = np.abs(reference).max()
    assert np.abs(pred["rollout"] - reference).max() <= 1e-5 * scale
    assert np.abs(pred["one_step"] - reference[:, 0]).max() <= 1e-5 * scale


def test_the_json_describes_the_task(exported):
    s = exported["surrogate"]
    task = s.tasks["burgers"]
    meta = json.loads((exported["out"] / "surrogate.json").read_text())
    assert meta["task"] == "burgers" and meta["channels"] == list(task.channels) == ["u"]
    assert meta["grid"] == list(task.grid) == [32] and meta["dt"] == pytest.approx(task.dt)
    assert (
        meta["dt"] == pytest.approx(meta["time_stride"] * meta["frame_spacing"]) and meta["time_stride"] == 2
    )
    assert meta["params"] == {"names": ["nu"], "default": [pytest.approx(0.01)], "varying": []}
    assert meta["normalizer"]["mean"] == pytest.approx(task.normalizer.mean.tolist())
    assert meta["normalizer"]["std"] == pytest.approx(task.normalizer.std.tolist())
    rho = s.dynamics.error_carry()[0, :, :1].numpy()  # [K + 1, C]
    assert meta["carry"]["enabled"] and np.array(meta["carry"]["rho"]) == pytest.approx(rho)
    assert np.load(exported["out"] / meta["coords"]) == pytest.approx(task.coords)
    assert meta["programs"]["step"]["inputs"][1] == {"name": "params", "shape": ["B", 1], "dtype": "float32"}
    assert sorted(p.name for p in exported["out"].iterdir()) == [
        "README.md",
        "coords.npy",
        "decode.pt2",
        "encode.pt2",
        "one_step.pt2",
        "step.pt2",
        "surrogate.json",
    ]


@pytest.mark.slow
def test_a_task_with_a_static_forcing_takes_it_in_encode_and_its_tokens_in_step(tmp_path):
    """A tiny incompressible Navier-Stokes run (8 x 8 grid, a static forcing; about 15 s): the exported
    rollout with the forcing is the API's, and the step program reads the forcing tokens as the
    operator does."""
    data = tmp_path / "data"
    data.mkdir()
    write_ns_incomp(data / "ns.h5", n=8, t=11, nx=8, ny=8)
    config = write_config(tmp_path / "ns.yaml", data, [{"name": "ns", "path": "ns.h5"}])
    run, out = tmp_path / "run", tmp_path / "exported"
    for stage in ("autoencoder", "operator"):
        assert main(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    assert main(["export", "--run-dir", str(run), "--out", str(out)]) == 0
    s = ups.load_surrogate(run)
    ns = next(t for t in s.dynamics.tasks if t.name == "ns").file
    u0 = np.stack([ns.trajectory(i, slice(0, 1))[0] for i in range(2)]).astype(np.float32)
    static = np.stack([ns.static_field(i) for i in range(2)]).astype(np.float32)
    reference = s.rollout(u0, 4, static=static).fields  # [2, 4, 8, 8, 3]
    pred = rollout_without_ups(out, u0, 4, tmp_path, static=static)
    scale = np.abs(reference).max()
    assert np.abs(pred["rollout"] - reference).max() <= 1e-5 * scale
    assert np.abs(pred["one_step"] - reference[:, 0]).max() <= 1e-5 * scale
    step, operator = torch.export.load(out / "step.pt2").module(), s.dynamics.model.operator
    z, forcing = torch.randn(2, *s.dynamics.latent_shape), torch.randn(2, *s.dynamics.latent_shape)
    params, dt, task_id = (
        torch.zeros(2, 0),
        torch.full((2,), s.tasks["ns"].dt),
        torch.zeros(2, dtype=torch.long),
    )
    with torch.no_grad():
        assert torch.allclose(step(z, params, forcing), operator(z, dt, params, task_id, forcing), atol=1e-6)
        assert not torch.allclose(step(z, params, forcing), step(z, params, torch.zeros_like(forcing)))
    meta = json.loads((out / "surrogate.json").read_text())
    assert meta["static"]["channels"] == ["force_x", "force_y"]
    assert [i["name"] for i in meta["programs"]["step"]["inputs"]] == ["z", "params", "forcing"]


def _run_with(exported, name: str, finished: tuple[str, ...]) -> Path:
    """A copy of the fixture run whose stage_status.json keeps only the ``finished`` stages."""
    run = exported["root"] / name
    if not run.exists():
        shutil.copytree(exported["run"], run)
        status = json.loads((run / "stage_status.json").read_text())
        (run / "stage_status.json").write_text(json.dumps({k: status[k] for k in finished}))
    return run


BAD = {  # case -> (arguments with placeholders, what the message must say)
    "no operator": (["--run-dir", "{ae_only}", "--out", "{new}"], "no finished operator"),  # load_surrogate's
    "steady only": (["--run-dir", "{steady_only}", "--out", "{new}"], "only a steady prior"),
    "out not empty": (["--run-dir", "{run}", "--out", "{full}"], "exists and is not empty"),
    "force on another folder": (
        ["--run-dir", "{run}", "--out", "{full}", "--force"],
        "not an earlier export",
    ),
    "out is a file": (["--run-dir", "{run}", "--out", "{file}/x"], "is a file, not a folder"),
    "run dir missing": (["--run-dir", "{root}/nowhere", "--out", "{new}"], "is not a folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_before_anything_is_written(exported, case, capsys):
    root = exported["root"]
    (root / "full").mkdir(exist_ok=True)
    (root / "full" / "notes.txt").write_text("mine")
    (root / "a_file").write_text("")
    places = {
        "run": exported["run"],
        "root": root,
        "new": root / "new",
        "full": root / "full",
        "file": root / "a_file",
        "ae_only": _run_with(exported, "ae_only", ("autoencoder",)),
        "steady_only": _run_with(exported, "steady_only", ("autoencoder", "steady_prior")),
    }
    before = sorted(p.name for p in root.iterdir())
    args, message = BAD[case]
    assert main(["export", *(a.format(**places) for a in args)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == before  # no export, no temporary folder
    assert [p.name for p in (root / "full").iterdir()] == ["notes.txt"]


def test_the_task_is_one_of_the_runs_transient_tasks(exported):
    """Checked by ``export`` before it writes anything (here without loading the run again for the CLI)."""
    s = exported["surrogate"]
    with pytest.raises(UPSError, match=r"--task heat is not a task of this run; .* are \['burgers'\]"):
        transient_task(s, "heat", "runs/r")
    with pytest.raises(UPSError, match=r"--task darcy is a steady task; .* are \['burgers'\]"):
        transient_task(s, "darcy", "runs/r")
    several = SimpleNamespace(
        dynamics=s.dynamics,
        steady=s.steady,
        tasks={**s.tasks, "heat": replace(s.tasks["burgers"], name="heat")},
    )
    with pytest.raises(UPSError, match=r"2 transient tasks; choose one with --task: \['burgers', 'heat'\]"):
        transient_task(several, None, "runs/r")
    assert transient_task(several, "heat", "runs/r") == "heat"
