"""Field metrics against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from ups.metrics import (
    boundary_mask,
    brmse,
    correlation_time,
    crmse,
    crps,
    frmse,
    max_error,
    nrmse,
    pearson,
    rmse,
    rollout_curve,
    spread_skill,
)


def test_nrmse_is_rmse_over_rms_of_the_target_per_channel():
    target = torch.tensor([[[3.0, 1.0], [4.0, 1.0]]])  # [B=1, Q=2, C=2]
    pred = target + torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])
    # channel 0: rmse 1, rms sqrt(12.5); channel 1: rmse sqrt(2), rms 1
    assert nrmse(pred, target).item() == pytest.approx((1 / 12.5**0.5 + 2**0.5) / 2)


def test_crps_of_an_ensemble_by_hand():
    target = torch.tensor([[0.0, 1.0]])  # [B=1, Q=2]
    samples = torch.tensor([[[1.0, 1.0]], [[-1.0, 3.0]]])  # [K=2, B=1, Q=2]
    # point 0: mean|x - y| = 1, mean|x_k - x_j| over 4 pairs = (0 + 2 + 2 + 0) / 4 = 1 -> 1 - 0.5 = 0.5
    # point 1: mean|x - y| = (0 + 2) / 2 = 1, spread (0 + 2 + 2 + 0) / 4 = 1 -> 0.5
    assert crps(samples[..., None], target[..., None]).tolist() == pytest.approx([0.5])
    one = crps(samples[:1, ..., None], target[..., None])
    assert one.item() == pytest.approx(0.5)  # one member: the mean absolute error


def test_spread_skill_by_hand():
    target = torch.zeros(1, 2)
    samples = torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]]])  # mean 2 (skill 2), unbiased var 2
    expected = ((3 / 2) * 2.0) ** 0.5 / 2.0
    assert spread_skill(samples, target).item() == pytest.approx(expected)


def test_rmse_max_error_and_conservation_by_hand():
    target = torch.zeros(1, 2, 2)  # [B=1, X=2, C=2]
    pred = torch.tensor([[[1.0, 0.5], [-3.0, 0.5]]])
    # channel 0 errors (1, -3): rmse sqrt(5), max 3, mean error -1; channel 1 (0.5, 0.5): 0.5, 0.5, 0.5
    assert rmse(pred, target).item() == pytest.approx((5**0.5 + 0.5) / 2)
    assert max_error(pred, target).item() == pytest.approx((3 + 0.5) / 2)
    assert crmse(pred, target).item() == pytest.approx((1 + 0.5) / 2)


def test_boundary_points_and_their_rmse():
    assert boundary_mask((3, 4)).tolist() == [[True] * 4, [True, False, False, True], [True] * 4]
    assert boundary_mask((5,)).tolist() == [True, False, False, False, True]
    target = torch.zeros(1, 5, 1)
    pred = torch.tensor([3.0, 10.0, 10.0, 10.0, -1.0]).reshape(1, 5, 1)  # interior errors do not count
    assert brmse(pred, target).item() == pytest.approx(5**0.5)


def test_fourier_bands_of_a_two_mode_error():
    n = 32
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    error = torch.cos(2 * torch.pi * 2 * x) + 0.5 * torch.cos(2 * torch.pi * 13 * x)
    bands = frmse(error.reshape(1, n, 1), torch.zeros(1, n, 1, dtype=torch.float64))
    # |E_k| = amplitude / 2 at k = +-2 and +-13; low has 7 wavenumbers (|k| < 4), high 9 (12..16)
    assert bands["low"].item() == pytest.approx((2 * 0.5**2 / 7) ** 0.5)
    assert bands["mid"].item() == pytest.approx(0.0, abs=1e-12)
    assert bands["high"].item() == pytest.approx((2 * 0.25**2 / 9) ** 0.5)


def test_rollout_curve_counts_only_predicted_steps():
    target = torch.ones(2, 3, 4, 1)  # [B, H, X, C]
    pred = target + torch.tensor([0.0, 0.5, 1.0]).reshape(1, 3, 1, 1)
    assert rollout_curve(pred, target).tolist() == [[0.0, 0.5, 1.0]] * 2


def test_pearson_and_correlation_time_by_hand():
    truth = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    assert pearson(2 * truth + 1, truth).item() == pytest.approx(1.0)
    assert pearson(truth.flip(1), truth).item() == pytest.approx(-1.0)
    steps = torch.stack([truth, truth, truth], dim=1).repeat(2, 1, 1, 1)  # [B=2, H=3, X, C]
    pred = steps.clone()
    pred[0, 1] = truth.flip(1)[0]  # sample 0 decorrelates at step 2
    assert correlation_time(pred, steps).tolist() == [1.0, 3.0]


def test_channel_suite_averages_to_the_suite_nrmse():
    from ups.eval.evaluator import channel_suite, suite

    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 4, 10, 3, generator=generator) * torch.tensor([1.0, 10.0, 0.1])
    pred = truth + 0.1 * torch.randn(truth.shape, generator=generator)
    per_channel = channel_suite(pred, truth)
    assert per_channel["nrmse"].shape == (3, 3)
    torch.testing.assert_close(per_channel["nrmse"].mean(dim=1), suite(pred, truth)["nrmse"])
    torch.testing.assert_close(
        per_channel["one_step_nrmse"].mean(dim=1), suite(pred, truth)["one_step_nrmse"]
    )
    # each channel is scored against its own scale: the noise is 0.1 in every channel
    assert (
        per_channel["nrmse"][:, 1].mean()
        < per_channel["nrmse"][:, 0].mean()
        < per_channel["nrmse"][:, 2].mean()
    )
