"""ups.deadline: the stages' shares of one deadline, and when a stage stops training."""

import pytest
from tests.manual_clock import ManualClock

from ups import deadline
from ups.deadline import Deadline, StopRule


@pytest.fixture
def clock(monkeypatch):
    fake = ManualClock()
    monkeypatch.setattr(deadline, "clock", fake)
    return fake


SHARES = {"autoencoder": 0.3, "operator": 0.5, "diff_residual": 0.1, "consistency_distill": 0.1}


def test_each_stage_gets_its_share_of_what_is_left(clock):
    whole = Deadline.after(100)
    plan = list(SHARES)
    first = whole.for_stage("autoencoder", plan, SHARES)
    assert first.remaining() == pytest.approx(30)
    clock.advance(10)  # the autoencoder used 10 of its 30 s: the rest flows on
    second = whole.for_stage("operator", plan[1:], SHARES)
    assert second.remaining() == pytest.approx(90 * 0.5 / 0.7)
    clock.advance(second.remaining())
    last = whole.for_stage("consistency_distill", plan[3:], SHARES)
    assert last.end == whole.end  # the last stage runs to the command's deadline


def test_a_stage_past_the_deadline_gets_nothing(clock):
    whole = Deadline.after(5)
    clock.advance(7)
    assert whole.remaining() <= 0 and whole.for_stage("operator", ["operator"], SHARES).remaining() == 0


def test_the_stop_rule_keeps_a_step_and_a_validation_in_hand(clock):
    rule = StopRule(Deadline.after(20), validates=True)
    assert rule.margin == pytest.approx(0.4)  # 2% of the stage's 20 s
    rule.estimate_validation(0.1, 30)  # 3 s from one batch of 30
    for _ in range(10):
        rule.observe_step(0.5)
    assert rule.reserve() == pytest.approx(0.5 + 3 + 0.4)
    clock.advance(20 - 3.9 - 0.01)
    assert not rule.should_stop()
    clock.advance(0.02)
    assert rule.should_stop()
    rule.observe_validation(1.0)  # measured: replaces the estimate
    assert rule.reserve() == pytest.approx(0.5 + 1 + 0.4)
    assert StopRule(Deadline.after(20), validates=False).reserve() == pytest.approx(0.4)


def test_the_schedule_ends_before_the_final_validation(clock):
    rule = StopRule(Deadline.after(100), validates=True)
    rule.estimate_validation(0.5, 10)
    assert rule.schedule_seconds() == pytest.approx(100 - 5 - 1)
    clock.advance(200)
    assert rule.schedule_seconds() == 1.0
