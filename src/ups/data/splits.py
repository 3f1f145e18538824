"""Trajectory-level train/val/test splits, deterministic from (seed, task name).

Whole trajectories go to exactly one split, so no frame of a test trajectory is ever seen
in training. The permutation is drawn from ``np.random.default_rng([seed, crc32(task)])``:
it is the same in every process and on every machine, and adding a task to a config does
not reshuffle the others.

``mode="pdebench"`` takes the test split as PDEBench's training scripts do (``test_ratio``
= the test fraction): the first ``int(N * test)`` samples in file order, or for a
multi-group file the last ``N - int(N * (1 - test))`` (PDEBench's ``FNODatasetMult``);
validation and train are then drawn, seeded, from the rest.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from ups.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_MODES = ("seeded", "pdebench")


@dataclass(frozen=True)
class Split:
    """Sorted trajectory indices of each split; ``notes`` says what was adjusted and why."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    notes: tuple[str, ...] = ()

    def indices(self, name: str) -> tuple[int, ...]:
        """The indices of split ``name`` ("train" | "val" | "test")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)


def _check_fractions(fractions, task_name: str) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise DataError(
            f"task '{task_name}': split fractions {tuple(fractions)} must be three "
            f"numbers (train, val, test)."
        )
    if any(not math.isfinite(f) or f < 0 for f in values) or sum(values) > 1 + 1e-9:
        raise DataError(
            f"task '{task_name}': split fractions (train, val, test) = {values} must "
            f"each be >= 0 and sum to at most 1 (data.split)."
        )
    return values


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Counts per split: largest-remainder rounding of fraction * n, then every positive
    fraction gets at least one trajectory, taken from the largest split that can spare one."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    target = min(n, round(sum(raw)))
    by_remainder = sorted(range(3), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in by_remainder[: max(0, target - sum(counts))]:
        counts[k] += 1
    for k in range(3):
        if fractions[k] > 0 and counts[k] == 0:
            if sum(counts) < n:
                counts[k] = 1
                continue
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] = 1
    return counts


def pdebench_test(n: int, test: float, at_end: bool) -> tuple[int, ...]:
    """PDEBench's test samples: the first ``int(n * test)``, or (``at_end``, its multi-group
    reader) the samples from ``int(n * (1 - test))`` on."""
    if at_end:
        return tuple(range(int(n * (1 - test)), n))
    return tuple(range(int(n * test)))


def split_trajectories(
    n: int,
    fractions=(0.8, 0.1, 0.1),
    seed: int = 0,
    task_name: str = "",
    need_val: bool = True,
    mode: str = "seeded",
    test_at_end: bool = False,
) -> Split:
    """Split trajectories 0..n-1 of one task into train/val/test.

    Args:
        n: number of trajectories N in the task's file.
        fractions: (train, val, test), each >= 0, summing to at most 1; what is left over
            is not used.
        seed: the data seed; with ``task_name`` it fixes the permutation.
        task_name: the task's name, mixed into the seed.
        need_val: a validation split is required. When the val fraction is 0 or too small
            to form, ``max(1, round(0.1 * n_train))`` trajectories are carved off train and
            one ``UserWarning`` says so.
        mode: ``"seeded"`` (every split drawn by the permutation) or ``"pdebench"`` (the test
            split by position, as PDEBench takes it; see the module docstring).
        test_at_end: in ``"pdebench"`` mode, the test samples are the last ones (PDEBench's
            multi-group files) rather than the first.

    Raises:
        DataError: bad fractions, or too few trajectories to leave a non-empty train split.
    """
    fractions = _check_fractions(fractions, task_name)
    if mode not in SPLIT_MODES:
        raise DataError(
            f"task '{task_name}': split mode {mode!r} is unknown; expected one of {SPLIT_MODES} "
            f"(data.split.mode)."
        )
    if int(seed) < 0:
        raise DataError(f"task '{task_name}': seed={seed} must be a non-negative integer.")
    if fractions[0] == 0:
        raise DataError(f"task '{task_name}': the train fraction is 0; set data.split.train > 0.")
    n_train, n_val, n_test = _split_counts(int(n), fractions)
    fixed_test = pdebench_test(int(n), fractions[2], test_at_end) if mode == "pdebench" else None
    if fixed_test is not None:  # the rest goes to train when the fractions cover every sample
        n_test = len(fixed_test)
        whole = sum(fractions) >= 1 - 1e-9
        n_train = int(n) - n_test - n_val if whole else min(n_train, int(n) - n_test - n_val)
    if n_train < 1:
        raise DataError(
            f"task '{task_name}': N={n} trajectories leave no training trajectory "
            f"with split fractions {fractions}; use a file with more trajectories."
        )
    notes = []
    if need_val and n_val == 0:
        carve = max(1, round(0.1 * n_train))
        if n_train - carve < 1:
            raise DataError(
                f"task '{task_name}': N={n} trajectories are too few for both a train "
                f"and a validation split; use a file with more trajectories, or set "
                f"training.skip_lightning_val=true."
            )
        n_train, n_val = n_train - carve, carve
        message = (
            f"task '{task_name}': no validation trajectories (data.split.val = "
            f"{fractions[1]}, N = {n}); carved {carve} of {n_train + carve} training "
            f"trajectories off as validation. To silence this, set data.split.val > 0, "
            f"or training.skip_lightning_val=true."
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        notes.append(message)
    for name, frac, count in zip(SPLIT_NAMES, fractions, (n_train, n_val, n_test)):
        if frac > 0 and count == 0:
            notes.append(f"task '{task_name}': split '{name}' is empty (N = {n} too small)")
    rng = np.random.default_rng([int(seed), zlib.crc32(task_name.encode("utf-8"))])
    if fixed_test is None:
        perm = rng.permutation(int(n))
        test = perm[n_train + n_val : n_train + n_val + n_test]
    else:
        perm = rng.permutation(np.setdiff1d(np.arange(int(n)), fixed_test))
        test = fixed_test
    parts = [
        tuple(sorted(int(i) for i in part))
        for part in (perm[:n_train], perm[n_train : n_train + n_val], test)
    ]
    return Split(train=parts[0], val=parts[1], test=parts[2], notes=tuple(notes))
