"""Field metrics against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from ups.eval.metrics import crps, nrmse, spread_skill


def test_nrmse_is_rmse_over_rms_of_the_target_per_channel():
    target = torch.tensor([[[3.0, 1.0], [4.0, 1.0]]])          # [B=1, Q=2, C=2]
    pred = target + torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])
    # channel 0: rmse 1, rms sqrt(12.5); channel 1: rmse sqrt(2), rms 1
    assert nrmse(pred, target).item() == pytest.approx((1 / 12.5 ** 0.5 + 2 ** 0.5) / 2)


def test_crps_of_an_ensemble_by_hand():
    target = torch.tensor([[0.0, 1.0]])                          # [B=1, Q=2]
    samples = torch.tensor([[[1.0, 1.0]], [[-1.0, 3.0]]])        # [K=2, B=1, Q=2]
    # point 0: mean|x - y| = 1, mean|x_k - x_j| over 4 pairs = (0 + 2 + 2 + 0) / 4 = 1 -> 1 - 0.5 = 0.5
    # point 1: mean|x - y| = (0 + 2) / 2 = 1, spread (0 + 2 + 2 + 0) / 4 = 1 -> 0.5
    assert crps(samples[..., None], target[..., None]).tolist() == pytest.approx([0.5])
    one = crps(samples[:1, ..., None], target[..., None])
    assert one.item() == pytest.approx(0.5)                     # one member: the mean absolute error


def test_spread_skill_by_hand():
    target = torch.zeros(1, 2)
    samples = torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]]])        # mean 2 (skill 2), unbiased var 2
    expected = ((3 / 2) * 2.0) ** 0.5 / 2.0
    assert spread_skill(samples, target).item() == pytest.approx(expected)
