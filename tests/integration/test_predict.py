"""``ups predict`` on the fixture run (``tiny_surrogate_run``): the file it writes, read back by UPS's
reader and by plain h5py in PDEBench's key names, holds ``s.rollout``'s (or ``s.solve_steady``'s)
numbers on the same inputs; bad input is refused before any work, with exit 2 and no output."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import ups
from ups.cli import main
from ups.config import with_keys
from ups.data.generate import generate_dataset
from ups.data.pdebench import PDEBenchFile
from ups.surrogate import predict as predict_module

BURGERS = "1D_Burgers_Sols_Nu0.01.hdf5"
DARCY = "2D_DarcyFlow_beta1.0_Train.hdf5"


@pytest.fixture(scope="module")
def run(surrogate_run) -> Path:
    return surrogate_run


@pytest.fixture(scope="module")
def surrogate(run):
    return ups.load_surrogate(run)


def predict(run: Path, source: Path, out: Path, *args: str) -> int:
    return main(["predict", "--run-dir", str(run), "--input", str(source), "--out", str(out), *args])


def test_predictions_read_back_are_the_rollout_from_the_file_starts(run, surrogate, tmp_path):
    source, out = run.parent / "data" / BURGERS, tmp_path / "pred.h5"
    assert predict(run, source, out, "--steps", "3", "--batch-size", "3") == 0  # 8 starts in 3 batches
    given = PDEBenchFile(source)
    starts = np.stack([given.trajectory(i, slice(0, 1)) for i in range(given.info.n_samples)])[:, 0]
    expected = surrogate.rollout(starts, 3).fields  # [8, 3, 32, 1], the file's own parameters
    task = surrogate.tasks["burgers"]

    written = PDEBenchFile(out)
    assert (written.info.layout, written.info.n_samples, written.info.n_times) == ("single", 8, 4)
    assert written.info.params["nu"] == pytest.approx(0.01)
    for i in range(8):
        frames = written.trajectory(i)
        np.testing.assert_array_equal(frames[0], starts[i])  # frame 0: the given start
        np.testing.assert_allclose(frames[1:], expected[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written.coordinates(), given.coordinates())
    with h5py.File(out, "r") as h5:  # PDEBench's own names and shapes
        assert h5["tensor"].shape == (8, 4, 32) and h5["tensor"].dtype == np.float32
        np.testing.assert_allclose(h5["t-coordinate"][()], given.times()[0] + task.dt * np.arange(4))
        np.testing.assert_allclose(h5["x-coordinate"][()], given.coordinates()[:, 0])


def test_with_context_frames_the_last_of_them_is_the_start(run, surrogate, tmp_path, monkeypatch):
    """evaluation.context_frames 2 at time_stride 2: frames 0 and 2 are read, frame 2 is the start."""
    with_context = copy.copy(surrogate)
    with_context.config = with_keys(surrogate.config, {"evaluation.context_frames": 2})
    monkeypatch.setattr(predict_module, "load_surrogate", lambda *args, **kwargs: with_context)
    source, out = run.parent / "data" / BURGERS, tmp_path / "context.h5"
    assert predict(run, source, out) == 0
    given = PDEBenchFile(source)
    frames = np.stack([given.trajectory(i, slice(0, 3, 2)) for i in range(8)])  # [8, 2, 32, 1]
    expected = surrogate.rollout(frames, 4).fields  # 11 frames: 4 steps of 2 after frame 2
    written = PDEBenchFile(out)
    np.testing.assert_allclose(
        written.times(), given.times()[2] + surrogate.tasks["burgers"].dt * np.arange(5)
    )
    for i in range(8):
        np.testing.assert_array_equal(written.trajectory(i)[0], frames[i, 1])
        np.testing.assert_allclose(written.trajectory(i)[1:], expected[i], rtol=1e-5, atol=1e-6)


def test_samples_are_written_beside_their_mean_and_spread(run, tmp_path):
    out = tmp_path / "sampled.h5"
    assert predict(run, run.parent / "data" / BURGERS, out, "--steps", "2", "--samples", "3") == 0
    with h5py.File(out, "r") as h5:
        tensor, samples, spread = h5["tensor"][()], h5["samples"][()], h5["spread"][()]
    assert samples.shape == (8, 3, 3, 32, 1) and spread.shape == (8, 3, 32, 1)
    np.testing.assert_allclose(tensor, samples.mean(axis=1)[..., 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(samples[:, :, 0], np.repeat(samples[:, :1, 0], 3, axis=1))  # one start
    assert np.all(spread[:, 0] == 0) and np.all(spread[:, 1:] > 0)  # three draws differ after the start


def test_resolution_decodes_at_the_finer_grid_and_writes_its_coordinates(run, surrogate, tmp_path):
    source, out = run.parent / "data" / BURGERS, tmp_path / "fine.h5"
    assert predict(run, source, out, "--steps", "2", "--resolution", "64") == 0
    written = PDEBenchFile(out)
    assert written.info.spatial_shape == (64,)
    x = (np.arange(64) + 0.5) / 64  # the run's grid is 32 cell centres of (0, 1): 64 of them
    np.testing.assert_allclose(written.coordinates()[:, 0], x, atol=1e-6)
    starts = np.stack([PDEBenchFile(source).trajectory(i, slice(0, 1))[0] for i in range(8)])
    expected = surrogate.rollout(starts, 2, points=x[:, None].astype(np.float32)).fields  # [8, 2, 64, 1]
    frames = np.stack([written.trajectory(i) for i in range(8)])
    np.testing.assert_allclose(frames[:, 1:], expected, rtol=1e-5, atol=1e-6)
    fine = np.interp(x, PDEBenchFile(source).coordinates()[:, 0], starts[0, :, 0])
    np.testing.assert_allclose(frames[0, 0, 1:-1, 0], fine[1:-1], rtol=1e-5, atol=1e-6)  # interpolated


def test_a_darcy_file_gets_the_steady_solution_of_its_coefficients(run, surrogate, tmp_path):
    source, out = run.parent / "data" / DARCY, tmp_path / "darcy.h5"
    assert predict(run, source, out) == 0
    given = PDEBenchFile(source)
    a = np.stack([given.steady_pair(i)[0] for i in range(8)])
    expected = surrogate.solve_steady(a).fields  # [8, 16, 16, 1]
    written = PDEBenchFile(out)
    assert written.info.layout == "darcy" and written.info.params["beta"] == pytest.approx(1.0)
    for i in range(8):
        coefficient, solution = written.steady_pair(i)
        np.testing.assert_array_equal(coefficient, a[i])
        np.testing.assert_allclose(solution, expected[i], rtol=1e-5, atol=1e-6)


def test_ctrl_c_while_writing_leaves_nothing(run, surrogate, tmp_path, monkeypatch, capsys):
    """Interrupted after the predictions are in the file but before it is complete: no --out, no
    temporary file beside it (ups.atomic)."""
    real = predict_module.write_atomic

    def interrupted(path, result, attrs, file_format, extras):
        def stop(h5):
            extras(h5)
            raise KeyboardInterrupt

        real(path, result, attrs, file_format, stop)

    monkeypatch.setattr(predict_module, "load_surrogate", lambda *args, **kwargs: surrogate)
    monkeypatch.setattr(predict_module, "write_atomic", interrupted)
    assert predict(run, run.parent / "data" / BURGERS, tmp_path / "pred.h5", "--steps", "1") == 130
    assert "interrupted" in capsys.readouterr().err and not list(tmp_path.iterdir())


def _edited_run(run: Path, root: Path, drop: tuple[str, ...]) -> Path:
    """A copy of ``run`` whose stage_status.json forgets the stages ``drop``."""
    copy = root / f"without-{'-'.join(drop)}"
    shutil.copytree(run, copy)
    status = json.loads((copy / "stage_status.json").read_text())
    (copy / "stage_status.json").write_text(json.dumps({k: v for k, v in status.items() if k not in drop}))
    return copy


def _bad_file(kind: str, root: Path) -> Path:
    """An input that does not fit the fixture run: on a coarser grid, with two channels, or
    without the parameter nu."""
    if kind == "coarse":
        return generate_dataset("burgers1d", root / "bad", n=2, nx=16, nt=11, seed=0, progress=False).path
    path, shape = {
        "channels": ("two_channels_Nu0.01.hdf5", (2, 11, 32, 2)),
        "params": ("no_parameters.hdf5", (2, 11, 32)),
    }[kind]
    with h5py.File(root / path, "w") as h5:
        h5["tensor"] = np.zeros(shape, np.float32)
    return root / path


BAD = [  # (input: a data file name or a bad file's key, extra arguments, run: "run" or stages left out, says)
    (BURGERS, ["--steps", "0"], "run", "--steps 0 must be at least 1"),
    (BURGERS, ["--out", "{tmp}/pred.txt"], "run", "give a .h5 or .hdf5 file name"),
    (BURGERS, ["--out", "{tmp}/missing/pred.h5"], "run", "does not exist; create it"),
    (BURGERS, ["--out", "{input}"], "run", "is the --input file"),
    ("coarse", [], "run", "its grid is [16], but task 'burgers' was trained on [32]"),
    ("channels", [], "run", "its channels are ['u0', 'u1'], but task 'burgers' has ['u']"),
    ("params", [], "run", "conditioned on PDE parameter(s) ['nu'], which the file does not give"),
    (
        BURGERS,
        ["--task", "darcy"],
        "run",
        "holds transient data (layout 'single'), but --task darcy is steady",
    ),
    (
        DARCY,
        ["--task", "burgers"],
        "run",
        "holds steady data (layout 'darcy'), but --task burgers is transient",
    ),
    (DARCY, ["--resolution", "32"], "run", "solves on its own grid [16, 16] only"),
    (DARCY, ["--steps", "3"], "run", "the steady task 'darcy' has no time steps"),
    (BURGERS, ["--samples", "2"], ("diff_residual", "consistency_distill"), "needs a trained corrector"),
    (BURGERS, [], ("operator", "diff_residual", "consistency_distill"), "has no trained operator stage"),
    (DARCY, [], ("steady_prior",), "has no trained steady_prior stage"),
]


@pytest.mark.parametrize("source, extra, without, says", BAD)
def test_bad_input_is_refused_before_any_work(
    run, surrogate, tmp_path, capsys, monkeypatch, source, extra, without, says
):
    data = run.parent / "data"
    path = data / source if source in (BURGERS, DARCY) else _bad_file(source, tmp_path)
    folder = run if without == "run" else _edited_run(run, tmp_path, without)
    if without == "run":  # the fixture run, loaded once (the edited runs load their own stages)
        monkeypatch.setattr(predict_module, "load_surrogate", lambda *args, **kwargs: surrogate)
    extra = [arg.format(tmp=tmp_path, input=path) for arg in extra]
    out = tmp_path / "pred.h5"
    args = ["predict", "--run-dir", str(folder), "--input", str(path), "--out", str(out), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not any(tmp_path.glob("pred*")) and not any(tmp_path.glob(".pred*"))
