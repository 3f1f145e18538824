"""The learning-rate schedule over a stage's budget: steps, and the wall clock when
``training.max_time`` is set."""

from __future__ import annotations

import math

import pytest
import torch

from ups.errors import ConfigError
from ups.resolve import load_config
from ups.stages import optim
from ups.stages.optim import BudgetSchedule, build_optimizer


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(optim.time, "monotonic", fake)
    return fake


def rates(optimizer, scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        advance(optimizer, scheduler)
    return out


def advance(optimizer, scheduler) -> None:
    optimizer.step()
    scheduler.step()


def optimizer_of(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_without_a_time_limit_the_schedule_follows_the_steps(clock):
    opt = optimizer_of()
    got = rates(opt, BudgetSchedule(opt, "cosine", warmup=2, total=10), 12)
    cosine = [0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert got == pytest.approx([0.5, 1.0, *cosine, 0.0])
    clock.now += 1e6  # the clock plays no part
    opt = optimizer_of()
    assert rates(opt, BudgetSchedule(opt, "step", warmup=0, total=9), 10) == pytest.approx(
        [1.0] * 3 + [0.1] * 3 + [0.01] * 3 + [0.001]
    )


def test_a_time_limit_decays_the_rate_by_the_time_spent(clock):
    opt = optimizer_of()
    scheduler = BudgetSchedule(opt, "cosine", warmup=0, total=1000, seconds=100.0)
    clock.now += 50.0  # half the time, 1 of 1000 steps
    advance(opt, scheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.now += 25.0
    advance(opt, scheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    clock.now += 60.0  # past the limit: the end of the schedule, not beyond
    advance(opt, scheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_a_step_with_agreed_seconds_ignores_this_process_clock_for_that_step_only(clock):
    opt = optimizer_of()
    scheduler = BudgetSchedule(opt, "cosine", warmup=0, total=1000, seconds=100.0)
    clock.now += 10.0  # this rank's clock; rank 0 says 50 s were spent
    opt.step()
    scheduler.step_with_seconds(50.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    assert scheduler.spent() == pytest.approx(10.0)  # afterwards, the own clock again
    assert "_agreed" not in scheduler.state_dict()


def test_whichever_budget_runs_out_first_sets_the_progress(clock):
    opt = optimizer_of()
    scheduler = BudgetSchedule(opt, "cosine", warmup=0, total=4, seconds=3600.0)
    assert rates(opt, scheduler, 5)[2:] == pytest.approx([0.5, 0.5 * (1 + math.cos(math.pi * 0.75)), 0.0])


def test_a_resumed_schedule_goes_on_from_the_seconds_already_spent(clock):
    opt = optimizer_of()
    first = BudgetSchedule(opt, "cosine", warmup=0, total=1000, seconds=100.0)
    clock.now += 40.0
    advance(opt, first)
    state = first.state_dict()
    assert state["seconds_before"] == pytest.approx(40.0) and "_clock" not in state
    clock.now += 500.0  # the process was down for a while: that is not training time
    opt = optimizer_of()
    second = BudgetSchedule(opt, "cosine", warmup=0, total=1000, seconds=100.0)
    second.load_state_dict(state)
    clock.now += 10.0
    advance(opt, second)
    assert second.spent() == pytest.approx(50.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_a_resume_under_a_changed_budget_follows_the_new_one(clock):
    opt = optimizer_of()
    first = BudgetSchedule(opt, "cosine", warmup=0, total=1000, seconds=100.0)
    clock.now += 40.0
    advance(opt, first)
    opt = optimizer_of()
    second = BudgetSchedule(opt, "cosine", warmup=0, total=2000, seconds=80.0)  # max_time and epochs changed
    second.load_state_dict(first.state_dict())
    assert (second.total, second.seconds) == (2000, 80.0)
    advance(opt, second)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # 40 of the new 80 s spent


def test_a_checkpoint_of_the_former_lambda_schedule_still_loads(clock):
    opt = optimizer_of()
    old = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    rates(opt, old, 3)
    opt = optimizer_of()
    scheduler = BudgetSchedule(opt, "cosine", warmup=0, total=10)
    scheduler.load_state_dict(old.state_dict())
    assert scheduler.last_epoch == 3 and scheduler.spent() == pytest.approx(0.0)


def test_build_optimizer_hands_the_time_limit_to_the_schedule():
    cfg = load_config(None, ["training.max_time=00:01:00:05"], check_files=False)
    _, scheduler = build_optimizer(cfg, "operator", [torch.nn.Parameter(torch.zeros(1))], total_steps=10)
    assert scheduler.seconds == 3605.0 and scheduler.total == 10
    cfg = load_config(None, ["optimizer.scheduler=none"], check_files=False)
    assert build_optimizer(cfg, "operator", [torch.nn.Parameter(torch.zeros(1))], total_steps=10)[1] is None


@pytest.mark.parametrize("text", ["5m", "00:10:00", "00:00:-1:00", "a:b:c:d"])
def test_a_malformed_time_limit_is_refused_with_the_key_and_a_format(text):
    with pytest.raises(ConfigError, match=r"training\.max_time.*DD:HH:MM:SS"):
        load_config(None, [f"training.max_time={text}"], check_files=False)
