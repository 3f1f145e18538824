import subprocess
import sys
import warnings

import pytest

from ups.data.splits import Split, split_trajectories
from ups.errors import DataError


def _no_warnings(*args, **kwargs) -> Split:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return split_trajectories(*args, **kwargs)


@pytest.mark.parametrize("n", [3, 10, 57, 1000])
def test_disjoint_and_covering(n):
    s = _no_warnings(n, (0.8, 0.1, 0.1), seed=0, task_name="burgers")
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(range(n))
    assert all(list(p) == sorted(p) for p in (s.train, s.val, s.test))
    assert all(len(p) >= 1 for p in parts)


def test_sizes_follow_fractions():
    s = _no_warnings(100, (0.7, 0.2, 0.1), seed=1, task_name="a")
    assert (len(s.train), len(s.val), len(s.test)) == (70, 20, 10)


def test_fractions_below_one_leave_trajectories_out():
    s = _no_warnings(100, (0.5, 0.1, 0.0), seed=1, task_name="a")
    assert (len(s.train), len(s.val), len(s.test)) == (50, 10, 0)


def test_deterministic_across_calls():
    a = split_trajectories(50, (0.8, 0.1, 0.1), seed=3, task_name="advection")
    b = split_trajectories(50, (0.8, 0.1, 0.1), seed=3, task_name="advection")
    assert a == b


def test_deterministic_across_processes():
    code = (
        "from ups.data.splits import split_trajectories as s;"
        "print(s(50, (0.8, 0.1, 0.1), seed=3, task_name='advection').val)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = split_trajectories(50, (0.8, 0.1, 0.1), seed=3, task_name="advection")
    assert out.stdout.strip() == str(here.val)


def test_seed_and_task_name_change_the_split():
    base = split_trajectories(50, (0.8, 0.1, 0.1), seed=3, task_name="advection")
    assert split_trajectories(50, (0.8, 0.1, 0.1), seed=4, task_name="advection") != base
    assert split_trajectories(50, (0.8, 0.1, 0.1), seed=3, task_name="burgers") != base


def test_fallback_carves_val_off_train_with_one_warning():
    with pytest.warns(UserWarning) as record:
        s = split_trajectories(40, (0.9, 0.0, 0.1), seed=0, task_name="burgers")
    assert len(record) == 1
    message = str(record[0].message)
    assert "burgers" in message and "carved 4 of 36" in message
    assert "data.split.val > 0" in message and "training.skip_lightning_val=true" in message
    assert (len(s.train), len(s.val), len(s.test)) == (32, 4, 4)
    assert not set(s.val) & set(s.train)
    assert s.notes and "carved" in s.notes[0]


def test_no_val_needed_means_no_fallback():
    s = _no_warnings(40, (0.9, 0.0, 0.1), seed=0, task_name="burgers", need_val=False)
    assert s.val == () and len(s.train) == 36


def test_val_fraction_too_small_still_gets_one():
    s = _no_warnings(5, (0.8, 0.1, 0.1), seed=0, task_name="t")
    assert (len(s.train), len(s.val), len(s.test)) == (3, 1, 1)


def test_two_trajectories_train_and_val_test_empty_noted():
    s = _no_warnings(2, (0.8, 0.1, 0.1), seed=0, task_name="t")
    assert (len(s.train), len(s.val), len(s.test)) == (1, 1, 0)
    assert any("'test' is empty" in n for n in s.notes)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_n_errors_with_task_and_n(n):
    with pytest.raises(DataError, match=rf"task 'tiny'.*N={n}"):
        split_trajectories(n, (0.8, 0.1, 0.1), seed=0, task_name="tiny")


@pytest.mark.parametrize("fractions", [(0.8, 0.3, 0.1), (0.9, -0.1, 0.2), (0.5, 0.5), (0, 0.5, 0.5)])
def test_bad_fractions(fractions):
    with pytest.raises(DataError, match="task 'x'"):
        split_trajectories(10, fractions, seed=0, task_name="x")


def test_fractions_summing_to_one_within_tolerance():
    s = _no_warnings(10, (0.7, 0.2, 0.1 + 1e-12), seed=0, task_name="x")
    assert len(s.train) + len(s.val) + len(s.test) == 10


def test_negative_seed_is_rejected():
    with pytest.raises(DataError, match="seed=-1"):
        split_trajectories(10, seed=-1, task_name="x")
