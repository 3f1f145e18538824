"""benchmarks/baselines.py: the floors are exact where they should be; the FNOs learn within budget."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from baselines import LinearLeastSquares, LinearLeastSquaresSteady, Persistence  # noqa: E402
from fno_baseline import (
    FNO,
    FNOSteady,
    pdebench_fno,
    real_parameter_count,
    resolve_device,  # noqa: E402
    train_within_budget,
)

X = 32


def smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, ...], modes: int = 4):
    """[n, *shape] float32 random periodic fields made of the lowest ``modes`` wavenumbers per axis."""
    coords = np.meshgrid(*[np.arange(s) / s for s in shape], indexing="ij")
    out = np.zeros((n, *shape))
    for k in np.ndindex(*([modes] * len(shape))):
        phase = 2 * np.pi * sum(ki * c for ki, c in zip(k, coords))
        cos_amp, sin_amp = rng.normal(size=(2, n, *([1] * len(shape)))) / (1 + sum(k))
        out += cos_amp * np.cos(phase) + sin_amp * np.sin(phase)
    return out.astype(np.float32)


def shift_trajectories(first: np.ndarray, t: int) -> np.ndarray:
    """[N, X] initial frames -> [N, t, X, 1] trajectories of u_{t+1} = roll(u_t, 1)."""
    return np.stack([np.roll(first, k, axis=1) for k in range(t)], axis=1)[..., None]


def test_persistence_repeats_the_last_context_frame():
    rng = np.random.default_rng(0)
    context = rng.normal(size=(3, 4, X, 2)).astype(np.float32)
    model = Persistence()
    facts = model.fit(rng.normal(size=(2, 6, X, 2)).astype(np.float32), 4, budget_s=1.0, seed=0)
    out = model.rollout(context, steps=5)
    assert out.shape == (3, 5, X, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.repeat(context[:, 3:4], 5, axis=1))
    assert facts == {"seconds_used": 0.0, "parameter_count": 0}


def test_linear_least_squares_learns_a_periodic_shift_exactly():
    rng = np.random.default_rng(1)
    train = shift_trajectories(rng.normal(size=(20, X)).astype(np.float32), t=11)
    test = shift_trajectories(rng.normal(size=(5, X)).astype(np.float32), t=13)
    model = LinearLeastSquares()
    facts = model.fit(train, context=3, budget_s=10.0, seed=0)
    out = model.rollout(test[:, :3], steps=10)
    assert out.shape == (5, 10, X, 1)
    rel = np.linalg.norm(out - test[:, 3:]) / np.linalg.norm(test[:, 3:])
    assert rel < 1e-4
    assert facts["parameter_count"] == X * X + X and facts["pairs"] == 20 * 10


def test_linear_least_squares_refuses_context_of_another_length():
    rng = np.random.default_rng(2)
    model = LinearLeastSquares()
    model.fit(rng.normal(size=(4, 6, X, 1)).astype(np.float32), context=3, budget_s=1.0, seed=0)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 1\]"):
        model.rollout(np.zeros((2, 2, X, 1), np.float32), steps=1)


def test_linear_least_squares_learns_a_2d_two_channel_shift():
    """A 2D field of two channels: the map acts on the flattened points and channels."""
    rng = np.random.default_rng(11)

    def trajectories(n: int, t: int) -> np.ndarray:
        first = rng.normal(size=(n, 6, 5, 2)).astype(np.float32)
        return np.stack([np.roll(first, (k, -k), axis=(1, 2)) for k in range(t)], axis=1)

    model = LinearLeastSquares()
    facts = model.fit(trajectories(200, 4), context=2, budget_s=1.0, seed=0)
    test = trajectories(3, 6)
    out = model.rollout(test[:, :2], steps=4)
    assert out.shape == (3, 4, 6, 5, 2) and facts["parameter_count"] == 60 * 60 + 60
    np.testing.assert_allclose(out, test[:, 2:], atol=1e-3)


def test_linear_least_squares_steady_recovers_an_affine_map():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 16, 16, 1)).astype(np.float32)
    model = LinearLeastSquaresSteady()
    facts = model.fit(a, 2 * a + 1, budget_s=10.0, seed=0)
    a_test = rng.normal(size=(7, 16, 16, 1)).astype(np.float32)
    pred = model.predict(a_test)
    assert pred.shape == (7, 16, 16, 1)
    np.testing.assert_allclose(pred, 2 * a_test + 1, atol=1e-4)
    assert facts["parameter_count"] == 256 * 256 + 256


@pytest.mark.parametrize("grid, context, expected", [((256,), 10, 23_937), ((32, 32), 1, 465_377)])
def test_pdebench_fno_has_pdebench_parameter_count(grid, context, expected):
    """PDEBench prints numel (a complex weight counts once): FNO1d(10 frames), FNO2d on Darcy."""
    model = pdebench_fno(grid, in_channels=context, out_channels=1)
    assert sum(p.numel() for p in model.parameters()) == expected
    spectral = sum(p.numel() for p in model.parameters() if p.is_complex())
    assert real_parameter_count(model) == expected + spectral


def test_training_stops_at_max_steps_with_a_cosine_learning_rate():
    """With a budget far away, max_steps ends the run and sets the schedule's progress."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=2.0)
    lrs = []

    def step() -> float:
        lrs.append(optimizer.param_groups[0]["lr"])
        return 4.0 - len(lrs)

    facts = train_within_budget(step, optimizer, time.monotonic(), budget_s=1e6, max_steps=4)
    assert facts["steps"] == 4
    np.testing.assert_allclose(lrs, [2.0, 1 + np.cos(np.pi / 4), 1.0, 1 - np.cos(np.pi / 4)], rtol=1e-4)
    assert facts["loss_first"] == 1.5 and facts["loss_last"] == 1.5


# Budget tests: the clock decides the number of steps, so they assert only what holds for any
# number (at least one step, stopped within one step of the budget). Learning tests cap the
# steps instead, with a budget they never reach, so a loaded machine cannot fail them.
BUDGET_S = 2.0
LEARNING_STEPS = 60


def assert_stopped_at_budget(facts: dict) -> None:
    assert facts["steps"] > 0 and facts["epochs"] > 0
    assert facts["seconds_used"] <= BUDGET_S + facts["max_step_seconds"]


def assert_learned(facts: dict) -> None:
    assert facts["steps"] == LEARNING_STEPS
    assert facts["loss_last"] < 0.5 * facts["loss_first"]


def test_fno_stops_at_its_budget_and_rolls_out():
    rng = np.random.default_rng(4)
    train = shift_trajectories(smooth_fields(rng, 32, (X,)), t=8)
    test = shift_trajectories(smooth_fields(rng, 3, (X,)), t=8)
    model = FNO()
    facts = model.fit(train, context=2, budget_s=BUDGET_S, seed=0)
    assert_stopped_at_budget(facts)
    assert facts["unroll"] == 6 and facts["parameter_count"] == real_parameter_count(model.model)
    assert facts["device"] == str(resolve_device())
    out = model.rollout(test[:, :2], steps=6)
    assert out.shape == (3, 6, X, 1) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_fnos_train_on_the_gpu_where_there_is_one(monkeypatch):
    """As UPS's ``training.accelerator: auto`` does; an explicit device wins."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert FNO().device == FNOSteady().device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert FNO().device == FNOSteady().device == torch.device("cuda")
    assert FNO(device="cpu").device == FNOSteady(device="cpu").device == torch.device("cpu")


def test_fno_learns_a_shift_autoregressively():
    rng = np.random.default_rng(5)
    train = shift_trajectories(smooth_fields(rng, 32, (X,)), t=4)
    facts = FNO(max_steps=LEARNING_STEPS).fit(train, context=2, budget_s=600.0, seed=0)
    assert facts["unroll"] == 2
    assert_learned(facts)


def test_fno_learns_teacher_forced_on_random_windows():
    rng = np.random.default_rng(6)
    train = shift_trajectories(smooth_fields(rng, 16, (X,)), t=12)
    facts = FNO(unroll=1, max_steps=LEARNING_STEPS).fit(train, context=2, budget_s=600.0, seed=0)
    assert facts["unroll"] == 1
    assert_learned(facts)


def test_fno_initialisation_follows_the_seed():
    """With no time to train, the rollout is the initial network's: equal for equal seeds."""
    rng = np.random.default_rng(7)
    train = shift_trajectories(smooth_fields(rng, 4, (X,)), t=4)
    outs = []
    for seed in (3, 3, 4):
        model = FNO()
        facts = model.fit(train, context=2, budget_s=0.0, seed=seed)
        assert facts["steps"] == 0
        outs.append(model.rollout(train[:, :2], steps=2))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_fno_rollout_feeds_each_prediction_back_as_the_newest_frame():
    rng = np.random.default_rng(10)
    train = rng.normal(size=(4, 6, X, 2)).astype(np.float32)
    model = FNO()
    model.fit(train, context=3, budget_s=0.0, seed=0)
    context = train[:, :3]
    two = model.rollout(context, steps=2)
    first = model.rollout(context, steps=1)
    np.testing.assert_array_equal(two[:, :1], first)
    shifted = np.concatenate([context[:, 1:], first], axis=1)
    np.testing.assert_allclose(two[:, 1:], model.rollout(shifted, steps=1), rtol=1e-5, atol=1e-5)


def test_fno_learns_2d_two_channel_trajectories_as_pdebench_fno2d():
    """[N, T, X, Y, C]: the context frames' channels stacked as input, every channel predicted."""
    rng = np.random.default_rng(12)
    first = np.stack([smooth_fields(rng, 16, (16, 16)), smooth_fields(rng, 16, (16, 16))], axis=-1)
    train = np.stack([np.roll(first, k, axis=1) for k in range(5)], axis=1)
    model = FNO(unroll=1, max_steps=LEARNING_STEPS)
    facts = model.fit(train, context=2, budget_s=600.0, seed=0)
    assert_learned(facts)
    assert model.model.in_channels == 4 and model.model.out_channels == 2
    out = model.rollout(train[:3, :2], steps=3)
    assert out.shape == (3, 3, 16, 16, 2) and out.dtype == np.float32
    one = model.rollout(train[:3, :2], steps=1)
    np.testing.assert_array_equal(out[:, :1], one)


def test_fno_refuses_trajectories_shorter_than_context_plus_unroll():
    train = np.zeros((4, 5, X, 1), np.float32)
    with pytest.raises(ValueError, match="has 5 frames per trajectory; context=3 needs at least 6"):
        FNO(unroll=3).fit(train, context=3, budget_s=1.0, seed=0)


def test_fno_steady_stops_at_its_budget_and_predicts():
    rng = np.random.default_rng(8)
    a = smooth_fields(rng, 64, (16, 16))[..., None]
    model = FNOSteady()
    facts = model.fit(a, 2 * a + 1, budget_s=BUDGET_S, seed=0)
    assert_stopped_at_budget(facts)
    assert facts["device"] == str(resolve_device())
    pred = model.predict(a[:5])
    assert pred.shape == (5, 16, 16, 1) and pred.dtype == np.float32 and np.isfinite(pred).all()


def test_fno_steady_learns_an_affine_map():
    rng = np.random.default_rng(9)
    a = smooth_fields(rng, 32, (16, 16))[..., None]
    model = FNOSteady(batch_size=16, max_steps=LEARNING_STEPS)
    assert_learned(model.fit(a, 2 * a + 1, budget_s=600.0, seed=0))
