"""The latent-dynamics stages share one core (``ups.stages.dynamics``) by composition."""

from __future__ import annotations

from ups.stages import STAGES
from ups.stages.dynamics import PARTS, spread


def test_no_stage_is_a_kind_of_another():
    pairs = [
        (a.name, b.name) for a in STAGES.values() for b in STAGES.values() if a is not b and issubclass(a, b)
    ]
    assert not pairs, f"stages inheriting from stages: {pairs}"


def test_each_latent_dynamics_stage_adds_one_part_on_top_of_its_upstream():
    assert list(PARTS) == ["operator", "diff_residual", "consistency_distill"]
    assert [STAGES[name].upstream for name in PARTS] == [("autoencoder",), ("operator",), ("diff_residual",)]


def test_spread_picks_evenly_from_first_to_last():
    assert spread([10, 11, 12, 13, 14], 3) == [10, 12, 14]
    assert spread([7, 8], 5) == [7, 8] and spread([], 4) == []
