"""Baselines for the accuracy benchmark: the model protocols and two floors (PDEBench's FNO is in
``fno_baseline.py``).

Transient models see trajectories ``[N, T, *S, C]`` (``S`` one or two spatial axes, the time axis
already strided) and roll
out autoregressively from ``context`` frames; steady models map a coefficient field
``a [N, X, Y, 1]`` to a solution ``u [N, X, Y, 1]``. All arrays are float32 numpy in physical
units; splitting and file reading are the caller's.

- ``Persistence``: u_{t+1} = u_t. No fitting.
- ``LinearLeastSquares`` / ``LinearLeastSquaresSteady``: one affine map over the flattened
  field, u_{t+1} = W u_t + b (or u = W a + b), fitted in closed form by ridge least squares.
- ``FNO`` / ``FNOSteady`` (``fno_baseline.py``): PDEBench's FNO1d / FNO2d.

Every ``fit`` returns facts with at least ``seconds_used`` and ``parameter_count`` (real
scalars: a complex weight counts twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np


class TransientModel(Protocol):
    name: str

    def fit(self, train: np.ndarray, context: int, budget_s: float, seed: int) -> dict: ...

    def rollout(self, context_frames: np.ndarray, steps: int) -> np.ndarray: ...


class SteadyModel(Protocol):
    name: str

    def fit(self, a: np.ndarray, u: np.ndarray, budget_s: float, seed: int) -> dict: ...

    def predict(self, a: np.ndarray) -> np.ndarray: ...


def _check_trajectories(train: np.ndarray, context: int, needed_after: int = 1) -> None:
    if train.ndim not in (4, 5):
        raise ValueError(
            f"train must be [N, T, X, C] or [N, T, X, Y, C] trajectories, got shape {train.shape}"
        )
    if context < 1 or train.shape[1] < context + needed_after:
        raise ValueError(
            f"train has {train.shape[1]} frames per trajectory; context={context} "
            f"needs at least {context + needed_after}"
        )


def _check_field(a: np.ndarray, field: tuple[int, ...] | None, name: str) -> None:
    """A steady model's ``predict`` input: after ``fit``, with the grid it was fitted on."""
    if field is None:
        raise RuntimeError(f"{name}.predict called before fit")
    if a.shape[1:] != field:
        raise ValueError(
            f"{name}.predict: a must be [B, {', '.join(map(str, field))}] as in fit, got {a.shape}"
        )


def _check_context(frames: np.ndarray, context: int, field: tuple[int, ...], name: str) -> None:
    if frames.ndim != 2 + len(field) or frames.shape[1] != context or frames.shape[2:] != field:
        raise ValueError(
            f"{name}.rollout: context_frames must be [B, {context}, "
            f"{', '.join(map(str, field))}] as in fit, got {frames.shape}"
        )


class Persistence:
    """u_{t+1} = u_t: the last context frame, repeated."""

    name = "persistence"

    def fit(self, train: np.ndarray, context: int, budget_s: float, seed: int) -> dict:
        _check_trajectories(train, context)
        return {"seconds_used": 0.0, "parameter_count": 0}

    def rollout(self, context_frames: np.ndarray, steps: int) -> np.ndarray:
        """[B, context, *S, C] -> [B, steps, *S, C]."""
        return np.repeat(context_frames[:, -1:], steps, axis=1).astype(np.float32)


def _ridge_affine(pairs: Iterator[tuple[np.ndarray, np.ndarray]], ridge: float):
    """Closed-form ridge fit of y = x @ W + b from chunks of rows ``x [M, D]``, ``y [M, E]``.

    Accumulates centred second moments in float64 chunk by chunk (the pairs of a PDEBench
    training set do not fit in memory as one float64 design matrix). The penalty is
    ``ridge * trace(Cxx) / D``, i.e. relative to the mean feature variance; the bias is not
    penalised. Returns ``W [D, E]``, ``b [E]`` (float64) and the number of rows.
    """
    rows, sx, sy, sxx, sxy = 0, 0.0, 0.0, 0.0, 0.0
    for x, y in pairs:
        x, y = x.astype(np.float64), y.astype(np.float64)
        rows += len(x)
        sx, sy = sx + x.sum(0), sy + y.sum(0)
        sxx, sxy = sxx + x.T @ x, sxy + x.T @ y
    mx, my = sx / rows, sy / rows
    cxx = sxx - rows * np.outer(mx, mx)
    cxy = sxy - rows * np.outer(mx, my)
    dim = len(cxx)
    penalty = ridge * max(np.trace(cxx) / dim, np.finfo(np.float64).tiny)
    w = np.linalg.solve(cxx + penalty * np.eye(dim), cxy)
    return w, my - mx @ w, rows


_ROWS_PER_CHUNK = 1 << 16


class LinearLeastSquares:
    """One-step affine model on the last frame, u_{t+1} = W u_t + b over the flattened field (all
    points and channels).

    Fitted in closed form on every consecutive pair of frames of every training trajectory;
    ``budget_s`` is not enforced (the solve takes seconds at most), ``seconds_used`` reports it.
    """

    name = "linear_lstsq"

    def __init__(self, ridge: float = 1e-6):
        self.ridge = ridge
        self.weight: np.ndarray | None = None  # [D, D], D = points x channels
        self.bias: np.ndarray | None = None  # [D]
        self.field: tuple[int, ...] | None = None
        self.context = 0

    def fit(self, train: np.ndarray, context: int, budget_s: float, seed: int) -> dict:
        start = time.monotonic()
        _check_trajectories(train, context=1)
        n, t = train.shape[:2]
        dim = int(np.prod(train.shape[2:]))
        per_chunk = max(1, _ROWS_PER_CHUNK // (t - 1))

        def pairs():
            for i in range(0, n, per_chunk):
                chunk = train[i : i + per_chunk].reshape(-1, t, dim)
                yield chunk[:, :-1].reshape(-1, dim), chunk[:, 1:].reshape(-1, dim)

        self.weight, self.bias, rows = _ridge_affine(pairs(), self.ridge)
        self.field, self.context = train.shape[2:], context
        return {
            "seconds_used": time.monotonic() - start,
            "parameter_count": int(self.weight.size + self.bias.size),
            "pairs": rows,
        }

    def rollout(self, context_frames: np.ndarray, steps: int) -> np.ndarray:
        """[B, context, *S, C] -> [B, steps, *S, C]; only the last context frame is used."""
        if self.weight is None:
            raise RuntimeError("LinearLeastSquares.rollout called before fit")
        _check_context(context_frames, self.context, self.field, self.name)
        b = len(context_frames)
        frame = context_frames[:, -1].reshape(b, -1).astype(np.float64)
        out = np.empty((b, steps, frame.shape[1]), dtype=np.float32)
        for k in range(steps):
            frame = frame @ self.weight + self.bias
            out[:, k] = frame
        return out.reshape(b, steps, *self.field)


class LinearLeastSquaresSteady:
    """u = W a + b over the flattened X*Y grid, fitted in closed form by ridge least squares."""

    name = "linear_lstsq"

    def __init__(self, ridge: float = 1e-6):
        self.ridge = ridge
        self.weight: np.ndarray | None = None  # [X*Y, X*Y]
        self.bias: np.ndarray | None = None  # [X*Y]
        self.field: tuple[int, ...] | None = None

    def fit(self, a: np.ndarray, u: np.ndarray, budget_s: float, seed: int) -> dict:
        start = time.monotonic()
        if a.shape != u.shape or a.ndim != 4:
            raise ValueError(f"a and u must both be [N, X, Y, 1], got {a.shape} and {u.shape}")
        n = len(a)
        pairs = (
            (
                a[i : i + _ROWS_PER_CHUNK].reshape(-1, a[0].size),
                u[i : i + _ROWS_PER_CHUNK].reshape(-1, u[0].size),
            )
            for i in range(0, n, _ROWS_PER_CHUNK)
        )
        self.weight, self.bias, _ = _ridge_affine(pairs, self.ridge)
        self.field = a.shape[1:]
        return {
            "seconds_used": time.monotonic() - start,
            "parameter_count": int(self.weight.size + self.bias.size),
        }

    def predict(self, a: np.ndarray) -> np.ndarray:
        """[B, X, Y, 1] -> [B, X, Y, 1]."""
        _check_field(a, self.field, "LinearLeastSquaresSteady")
        flat = a.reshape(len(a), -1).astype(np.float64) @ self.weight + self.bias
        return flat.astype(np.float32).reshape(a.shape)
