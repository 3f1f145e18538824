"""``ups.load_surrogate``: the API users call gives what ``ups evaluate`` scores, in physical units,
NumPy or torch, differentiable on request, sampled with a corrector, decoded anywhere; bad input
and runs whose parts do not fit are refused with reasons; docs/api.md's example runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ups
from ups.checkpoint import load_checkpoint, save_checkpoint
from ups.cli import main
from ups.config import with_keys
from ups.errors import UPSError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(surrogate_run) -> Path:
    return surrogate_run


@pytest.fixture(scope="module")
def s(run):
    return ups.load_surrogate(run)


def trajectories(s, split: str):
    """(indices, trajectories [N, T, X, C]) of the split of the run's Burgers file."""
    task = s.dynamics.tasks[0]
    indices = list(task.split.indices(split))
    return indices, np.stack([task.file.trajectory(i) for i in indices])


def test_the_example_of_docs_api_md_runs(run):
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## The Python API", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code) == 1
    scope = {"run_dir": str(run)}
    exec(compile(code[0], "docs/api.md", "exec"), scope)
    assert scope["pred"].fields.shape == (1, 5, 32, 1)
    assert scope["ensemble"].samples.shape == (1, 8, 5, 32, 1)
    assert scope["fine"].fields.shape == (1, 5, 1000, 1)
    assert scope["u"].grad.shape == (1, 32, 1) and bool(scope["u"].grad.abs().sum() > 0)
    assert scope["solution"].samples.shape == (1, 4, 16, 16, 1)


def test_what_the_surrogate_knows(s):
    assert s.stages == ("consistency_distill", "diff_residual", "operator", "steady_prior")
    assert s.corrected
    burgers, darcy = s.tasks["burgers"], s.tasks["darcy"]
    assert (burgers.kind, burgers.grid, burgers.channels, burgers.coords.shape) == (
        "transient",
        (32,),
        ("u",),
        (32, 1),
    )
    times = s.dynamics.tasks[0].file.times()
    assert burgers.dt == pytest.approx(2 * (times[1] - times[0]))  # time_stride 2
    assert burgers.params == ("nu",) and burgers.defaults == {"nu": pytest.approx(0.01)}
    assert (darcy.kind, darcy.grid, darcy.dt) == ("steady", (16, 16), None)
    assert darcy.input_normalizer is not None


def test_the_api_scores_what_ups_evaluate_scores(run, s, tmp_path):
    """The test split's nRMSE of ``s.rollout`` (operator) and ``s.solve_steady`` (regression),
    per trajectory as PDEBench computes it, equals ``ups evaluate``'s figures."""
    prefix = tmp_path / "e"
    config = run / "config.resolved.yaml"
    args = ["evaluate", "--config", str(config), "--run-dir", str(run), "--engine", "native"]
    assert main([*args, "--output-prefix", str(prefix), "evaluation.report=false"]) == 0
    result = json.loads(prefix.with_name("e.json").read_text())
    _, u = trajectories(s, "test")
    steps = result["horizon"]
    truth = u[:, 2 : 2 * steps + 1 : 2]
    pred = s.rollout(u[:, 0], steps).fields
    err = np.sqrt(((pred - truth) ** 2).mean(axis=2)) / np.sqrt((truth**2).mean(axis=2))  # [N, H, C]
    assert err.mean() == pytest.approx(result["per_task"]["burgers"]["nrmse"], rel=1e-5)

    darcy = s.steady.steady[0]
    pairs = [darcy.file.steady_pair(i) for i in darcy.split.indices("test")]
    a, solution = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    regression = s.solve_steady(a).fields
    err = np.sqrt(
        ((regression - solution) ** 2).reshape(len(a), -1).mean(1) / (solution**2).reshape(len(a), -1).mean(1)
    )
    assert err.mean() == pytest.approx(result["per_task"]["darcy"]["steady_regression_nrmse"], rel=1e-5)


def test_numpy_gives_numpy_torch_gives_torch_and_a_batch_is_its_rows(s):
    _, u = trajectories(s, "test")
    batch = s.rollout(u[:, 0], 3)
    assert isinstance(batch.fields, np.ndarray) and batch.fields.shape == (len(u), 3, 32, 1)
    assert batch.times == pytest.approx(s.tasks["burgers"].dt * np.arange(1, 4))
    alone = s.rollout(torch.from_numpy(u[1:2, 0]), 3)
    assert torch.is_tensor(alone.fields)
    np.testing.assert_allclose(alone.fields.numpy()[0], batch.fields[1], rtol=1e-5, atol=1e-6)
    # a context axis: the last frame is the start, the earlier ones are checked only
    with_context = s.rollout(u[:, :3:2], 3)
    np.testing.assert_allclose(with_context.fields, s.rollout(u[:, 2], 3).fields, rtol=1e-6)
    params = s.rollout(u[:, 0], 3, params={"nu": 0.01}).fields
    np.testing.assert_array_equal(params, batch.fields)  # the file's constant value is the default
    assert not np.allclose(s.rollout(u[:, 0], 3, params={"nu": 0.05}).fields, batch.fields)


def test_samples_are_seeded_corrected_trajectories_with_their_mean_and_spread(s):
    _, u = trajectories(s, "test")
    a = s.rollout(u[:2, 0], 3, samples=4, seed=1)
    b = s.rollout(u[:2, 0], 3, samples=4, seed=1)
    assert a.samples.shape == (2, 4, 3, 32, 1)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_allclose(a.mean, a.samples.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.spread, a.samples.std(axis=1), rtol=1e-4, atol=1e-7)
    assert (a.spread > 0).mean() > 0.99 and not np.allclose(a.samples[:, 0], a.fields)
    assert not np.allclose(s.rollout(u[:2, 0], 3, samples=4, seed=2).samples, a.samples)
    steady = s.solve_steady(np.ones((2, 16, 16)), samples=3, seed=0)
    assert steady.samples.shape == (2, 3, 16, 16, 1) and (steady.spread > 0).all()


def test_points_decode_anywhere_and_at_the_grid_points_give_the_grid(run, s):
    """Without the carried error (known on the grid only), decoding at the grid's own points is
    the rollout on the grid; between them it is a smooth field of the same scale."""
    plain = ups.load_surrogate(run, config=with_keys(s.config, {"stages.operator.carry_error": False}))
    _, u = trajectories(s, "test")
    grid = plain.rollout(u[:, 0], 2).fields
    at_points = plain.rollout(u[:, 0], 2, points=s.tasks["burgers"].coords.reshape(-1, 1)).fields
    np.testing.assert_allclose(at_points, grid, rtol=1e-5, atol=1e-6)
    fine = s.rollout(u[:, 0], 2, points=np.linspace(0.0, 1.0, 301)[:, None]).fields
    assert fine.shape == (len(u), 2, 301, 1) and np.isfinite(fine).all()


def test_grad_passes_gradcheck_in_u0_and_params(run):
    s = ups.load_surrogate(run).to(dtype=torch.float64)
    task = s.dynamics.tasks[0]
    u0 = torch.from_numpy(task.file.trajectory(0, slice(0, 1))).double().requires_grad_(True)
    nu = torch.tensor([0.01], dtype=torch.float64, requires_grad=True)
    fn = lambda u, p: s.rollout(u, 2, params={"nu": p}, grad=True).fields  # noqa: E731
    assert torch.autograd.gradcheck(fn, (u0, nu), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    steady = lambda a: s.solve_steady(a, grad=True).fields  # noqa: E731
    a = torch.from_numpy(s.steady.steady[0].file.steady_pair(0)[0][None]).double().requires_grad_(True)
    assert torch.autograd.gradcheck(steady, (a,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_without_grad_nothing_is_recorded(s):
    u0 = torch.zeros(1, 32, 1, requires_grad=True)
    assert not s.rollout(u0, 1).fields.requires_grad


BAD_CALLS = {
    "another grid": (lambda s: s.rollout(np.zeros((1, 16, 1)), 2), "takes [B, 32, 1]"),
    "other channels": (lambda s: s.rollout(np.zeros((1, 32, 2)), 2), "takes [B, 32, 1]"),
    "no batch axis": (lambda s: s.rollout(np.zeros((32, 1)), 2), "has shape (32, 1)"),
    "NaN": (lambda s: s.rollout(np.full((1, 32, 1), np.nan), 2), "NaN or infinite"),
    "no steps": (lambda s: s.rollout(np.zeros((1, 32, 1)), 0), "at least 1 step"),
    "unknown parameter": (lambda s: s.rollout(np.zeros((1, 32, 1)), 1, params={"beta": 1.0}), "['beta']"),
    "params of another size": (
        lambda s: s.rollout(np.zeros((2, 32, 1)), 1, params=np.ones((2, 3))),
        "[B=2, 1]",
    ),
    "unknown task": (lambda s: s.rollout(np.zeros((1, 32, 1)), 1, task="darcy"), "not a transient task"),
    "points of another rank": (
        lambda s: s.rollout(np.zeros((1, 32, 1)), 1, points=np.zeros((5, 2))),
        "[P, 1]",
    ),
    "context of another grid": (
        lambda s: s.rollout(np.zeros((1, 32, 1)), 1, context=np.zeros((1, 2, 31, 1))),
        "earlier frames",
    ),
    "static without one": (
        lambda s: s.rollout(np.zeros((1, 32, 1)), 1, static=np.zeros((1, 32, 1))),
        "no static",
    ),
    "steady of another grid": (lambda s: s.solve_steady(np.zeros((1, 8, 8))), "takes [B, 16, 16, 1]"),
    "strings": (lambda s: s.rollout(np.array([["a"] * 32]), 1), "real numbers"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_is_refused_with_what_does_not_fit(s, case):
    call, expected = BAD_CALLS[case]
    with pytest.raises(UPSError) as refused:
        call(s)
    assert expected in str(refused.value)


def test_an_operator_alone_cannot_sample_nor_solve(run):
    operator = ups.load_surrogate(run / "checkpoints" / "operator")
    assert operator.stages == ("operator",) and not operator.corrected
    with pytest.raises(UPSError, match="no residual corrector"):
        operator.rollout(np.zeros((1, 32, 1)), 1, samples=2)
    with pytest.raises(UPSError, match="solve_steady needs a steady task"):
        operator.solve_steady(np.zeros((1, 16, 16)))


def test_runs_whose_parts_do_not_fit_are_refused_with_the_checkpoints_reasons(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    moved = ups.load_surrogate(copy)  # a copied run loads from its own files
    assert moved.paths["operator"].is_relative_to(copy)
    best = moved.paths["diff_residual"]
    checkpoint = load_checkpoint(best)
    key = next(k for k in checkpoint["state_dict"] if ".operator." in f".{k}")
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 1.0
    save_checkpoint(checkpoint, best)
    with pytest.raises(UPSError, match="trained on another operator"):
        ups.load_surrogate(copy)
    other = with_keys(moved.config, {"stages.operator.depth": 2})
    with pytest.raises(UPSError, match=r"does not fit stage 'operator'(.|\n)*missing keys"):
        ups.load_surrogate(run / "checkpoints" / "operator", config=other)
    best.write_bytes(best.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(UPSError, match="sha256"):
        ups.load_surrogate(copy)


def test_other_data_than_the_run_trained_on_is_refused(run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(run.parent / "data", data)
    burgers = next(data.glob("1D_Burgers*"))
    import h5py

    with h5py.File(burgers, "r+") as f:
        f["tensor"][...] = f["tensor"][...] * 2.0
    with pytest.raises(UPSError, match="trained on other data for task 'burgers'"):
        ups.load_surrogate(run, data_dir=data)
    with pytest.raises(UPSError, match="not a run folder"):
        ups.load_surrogate(tmp_path)


def test_import_ups_loads_no_torch():
    code = "import sys, ups\nassert 'torch' not in sys.modules\nups.load_surrogate\n"
    code += "assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
