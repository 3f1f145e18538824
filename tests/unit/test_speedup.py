"""benchmarks/speedup.py: the break-even, the resampling onto the model's grid, the solver settings'
errors against the reference, the table; and the --smoke run end to end (slow)."""

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from speedup import (  # noqa: E402
    PROBLEMS,
    Setting,
    break_even,
    dirichlet_linear_weights,
    draw_test_inputs,
    format_table,
    main,
    periodic_resample,
    smoke_problem,
    solver_rows,
    to_model_grid,
)
from ups.data.generate.spec import cell_centres  # noqa: E402


def test_break_even_is_the_fixed_cost_over_the_seconds_saved_per_query():
    assert break_even(300.0, 0.02, 0.005) == pytest.approx(20_000)
    assert break_even(300.0, 0.005, 0.005) == math.inf  # saves nothing: never repaid
    assert break_even(300.0, 0.001, 0.005) == math.inf


def test_periodic_resample_reproduces_a_trigonometric_polynomial_below_nyquist():
    x = cell_centres(16)
    points = np.array([0.0, 0.013, 0.31, 0.5, 0.977])

    def field(s):
        return 0.3 + np.sin(2 * np.pi * 3 * s) - 0.5 * np.cos(2 * np.pi * 7 * s + 0.4)

    values = np.stack([field(x), 2 * field(x)])  # [2, 16]
    assert np.allclose(periodic_resample(values, points), [field(points), 2 * field(points)], atol=1e-12)
    # its own nodes come back unchanged when there is nothing at the Nyquist mode
    assert np.allclose(periodic_resample(field(x), x), field(x), atol=1e-12)


def test_dirichlet_linear_weights_are_exact_for_linear_fields_and_zero_at_the_wall():
    w = dirichlet_linear_weights(4, np.array([0.0, 0.125, 0.3, 0.5, 1.0]))  # centres 0.125 ... 0.875
    assert w.shape == (5, 4)
    assert np.allclose(w[0], 0) and np.allclose(w[-1], 0)  # the boundary's zeros
    assert np.allclose(w[1], [1, 0, 0, 0])
    assert np.allclose(w[2] @ cell_centres(4), 0.3) and np.allclose(w[3] @ cell_centres(4), 0.5)


def test_the_reference_reaches_the_model_grid_as_the_data_loader_keeps_points():
    problem = PROBLEMS["darcy"]  # 64 stored points, every 2nd kept
    frames = np.random.default_rng(0).normal(size=(2, 64, 64))
    out = to_model_grid(frames, problem.reference, problem)
    assert out.shape == (2, 32, 32, 1) and np.array_equal(out[..., 0], frames[:, ::2, ::2].astype(np.float32))
    coarse = to_model_grid(np.ones((2, 16, 16)), Setting(16), problem)  # a constant, bilinear to the walls
    assert coarse.shape == (2, 32, 32, 1) and np.allclose(coarse[:, 8:24, 8:24], 1.0)


def test_coarser_solver_settings_are_cheaper_approximations_of_the_reference():
    """The smoke sizes of the 1D problems: the reference's error is 0, the coarser ones' small but
    not 0, and the initial conditions are the reference's first frame on the model grid."""
    for name in ("burgers", "reaction_diffusion"):
        problem = smoke_problem(PROBLEMS[name])
        start, truth, rows = solver_rows(problem, draw_test_inputs(problem, 2, 1001), repeats=1)
        assert start.shape == (2, 16, 1) and truth.shape == (2, problem.steps, 16, 1)
        assert rows[0]["nrmse"] == 0 and rows[0]["setting"].startswith("reference")
        assert all(0 < row["nrmse"] < 0.2 for row in rows[1:])


def test_format_table_names_never_for_a_surrogate_that_saves_nothing():
    row = {
        "task": "burgers",
        "setting": "UPS autoencoder+operator",
        "batch": "1",
        "seconds_per_query": "0.004",
        "nrmse": "0.05",
        "speedup": "6.5",
        "break_even_queries": "inf",
    }
    table = format_table([row, {**row, "batch": "64", "break_even_queries": "12345.6"}])
    lines = table.splitlines()
    assert lines[2].split()[-1] == "never" and lines[3].split()[-1] == "12,346"
    assert "6.5x" in lines[2] and "0.004" in lines[2]


@pytest.mark.slow
def test_smoke_run_writes_every_row_the_table_and_the_plot(tmp_path, capsys):
    assert (
        main(["--smoke", "--n-test", "4", "--repeats", "2", "--budget-s", "60", "--out", str(tmp_path)]) == 0
    )
    with (tmp_path / "speedup-smoke.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for name, problem in PROBLEMS.items():
        mine = [row for row in rows if row["task"] == name]
        settings = len(smoke_problem(problem).settings) + 1
        assert [row["method"] for row in mine] == ["solver"] * settings + ["UPS", "UPS"]
        assert [row["batch"] for row in mine[-2:]] == ["1", "4"]
        assert all(float(row["nrmse"]) < 10 and float(row["seconds_per_query"]) > 0 for row in mine)
        assert all(float(row["train_seconds"]) > 0 for row in mine)
    assert (tmp_path / "speedup-smoke.png").stat().st_size > 0
    assert "break-even" in capsys.readouterr().out
    # --resume: nothing is run again, the same rows come back
    assert main(["--smoke", "--n-test", "4", "--budget-s", "60", "--out", str(tmp_path), "--resume"]) == 0
    assert capsys.readouterr().out.count("skipped") == 3
