"""PDEBench's FNO for the accuracy benchmark, from the neuraloperator package, trained within a
wall-clock budget (the protocols and array conventions are ``baselines.py``'s).

- ``FNO`` / ``FNOSteady``: neuraloperator's ``FNO`` configured as PDEBench's ``FNO1d`` /
  ``FNO2d``: width 20, 4 Fourier layers, 12 Fourier modes per axis (at most X // 2), linear
  lifting, projection 20 -> 128 -> C, 2 cells of zero padding per axis, the grid in [0, 1)
  appended as input channels. neuraloperator counts modes of both signs and keeps
  ``n // 2 + 1`` along the real-FFT axis, so PDEBench's "12 modes" is ``n_modes=(23,)`` in 1D
  and ``(24, 23)`` in 2D there; with these settings the parameter count equals PDEBench's
  printed one (23,937 for FNO1d with 10 frames of one channel; 465,377 for FNO2d on Darcy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from neuralop.models import FNO as NeuralopFNO

from baselines import _check_context, _check_field, _check_trajectories

# PDEBench's FNO settings (pdebench/models/fno): width 20, 4 layers, modes 12, Adam 1e-3 with
# weight decay 1e-4; its 1D / 2D configs train in batches of 50 / 20 (PDEBENCH_BATCH, the
# accuracy benchmark's "FNO defaults"). The class default, 32, sits between.
PDEBENCH_MODES = 12
WIDTH = 20
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 32
PDEBENCH_BATCH = {1: 50, 2: 20}


def pdebench_fno(grid: tuple[int, ...], in_channels: int, out_channels: int) -> NeuralopFNO:
    """neuraloperator's FNO with the architecture of PDEBench's FNO1d / FNO2d on ``grid``.

    Input ``[B, in_channels, *grid]`` (the grid coordinates are appended inside), output
    ``[B, out_channels, *grid]``.
    """
    kept = [min(PDEBENCH_MODES, n // 2) for n in grid]
    # neuraloperator: n modes of both signs on full-FFT axes, n // 2 + 1 on the real-FFT axis
    n_modes = tuple(2 * k for k in kept[:-1]) + (2 * kept[-1] - 1,)
    return NeuralopFNO(
        n_modes=n_modes,
        in_channels=in_channels,
        out_channels=out_channels,
        hidden_channels=WIDTH,
        n_layers=4,
        lifting_channel_ratio=0,  # PDEBench's fc0: one linear layer
        projection_channel_ratio=128 / WIDTH,  # PDEBench's fc1 (width -> 128), fc2
        use_channel_mlp=False,  # PDEBench's block: spectral conv + 1x1 conv
        domain_padding=[1 / n for n in grid],  # PDEBench pads 2 cells per axis; here 1 + 1
        positional_embedding="grid",
    )


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``; by default CUDA where torch sees a GPU, else the CPU, as UPS's
    ``training.accelerator: auto`` chooses."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def real_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def _index_batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled epochs over range(n), ``batch`` indices at a time (the last of an epoch fewer)."""
    while True:
        order = rng.permutation(n)
        for i in range(0, n, batch):
            yield order[i : i + batch]


_LOSS_WINDOW = 10


def train_within_budget(
    step: Callable[[], float],
    optimizer: torch.optim.Optimizer,
    start: float,
    budget_s: float,
    max_steps: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Run optimizer steps until ``budget_s`` seconds after ``start`` (on ``clock``), or
    until ``max_steps`` steps if that comes first.

    The clock is read between steps only, so a step started before the deadline finishes: the
    run ends within one step of the budget (``seconds_used < budget_s + max_step_seconds``).
    The learning rate follows a cosine over the run's progress, the larger of the budget's
    wall-clock fraction and the ``max_steps`` fraction (no step count is known in advance).
    ``step()`` runs one optimizer step and returns its training loss.
    Facts: steps, seconds_used, max_step_seconds, and loss_first / loss_last (mean training
    loss of the first / last up to 10 steps).
    """
    base_lr = [group["lr"] for group in optimizer.param_groups]
    losses: list[float] = []
    max_step = 0.0
    last = clock()
    while True:
        now = clock()
        if losses:
            max_step = max(max_step, now - last)
        last = now
        progress = (now - start) / budget_s if budget_s > 0 else 1.0
        if max_steps is not None:
            progress = max(progress, len(losses) / max_steps)
        if progress >= 1.0:
            break
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        for group, lr in zip(optimizer.param_groups, base_lr):
            group["lr"] = lr * cosine
        losses.append(step())
    return {
        "steps": len(losses),
        "seconds_used": now - start,
        "max_step_seconds": max_step,
        "loss_first": float(np.mean(losses[:_LOSS_WINDOW])) if losses else math.nan,
        "loss_last": float(np.mean(losses[-_LOSS_WINDOW:])) if losses else math.nan,
    }


class _ChannelNorm:
    """Per-channel mean/std of a training array whose last axis is the channel axis."""

    def __init__(self, data: np.ndarray):
        axes = tuple(range(data.ndim - 1))
        self.mean = data.mean(axis=axes, dtype=np.float64).astype(np.float32)
        std = data.std(axis=axes, dtype=np.float64)
        self.std = np.where(std > 1e-12, std, 1.0).astype(np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def decode(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


_PREDICT_CHUNK = 256


class FNO:
    """PDEBench's FNO1d / FNO2d (see ``pdebench_fno``) on trajectories ``[N, T, *S, C]`` (one or
    two spatial axes): ``context`` frames -> next frame, rolled out.

    Input: the ``context`` frames stacked along channels (frame-major, ``t * C + c``, as
    PDEBench reshapes them) plus the grid in [0, 1) per axis; output: the next frame. Fields are
    normalised by the training set's per-channel mean/std; the model works in those units.

    Training is PDEBench's "autoregressive" type: each sample is a window of ``context``
    frames of one training trajectory, rolled out ``unroll`` steps on the model's own
    predictions, the per-step MSEs summed into the loss. ``unroll=None`` (the default) is
    PDEBench's scheme: the window is the trajectory's first frames and the rollout runs to its
    end (backpropagated through all T - context steps: memory grows with T and X). An integer
    ``unroll`` draws the window's start at random per sample (``unroll=1`` is
    one-step teacher forcing). Adam (``lr``, default 1e-3; weight decay 1e-4), cosine learning
    rate over the budget, batches of ``batch_size`` (default 32) trajectories in shuffled
    epochs, float32 on ``device`` (default: ``resolve_device()``). ``max_steps`` optionally ends
    training earlier (see ``train_within_budget``); ``clock`` is the budget's clock.

    Facts: steps, epochs (samples seen / trajectories), seconds_used, max_step_seconds,
    parameter_count, unroll, lr, batch_size, device, and loss_first / loss_last (normalised MSE
    per rollout step).
    """

    name = "fno"

    def __init__(
        self,
        unroll: int | None = None,
        batch_size: int = BATCH_SIZE,
        max_steps: int | None = None,
        device: str | torch.device | None = None,
        lr: float = LEARNING_RATE,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.unroll, self.lr, self.clock = unroll, lr, clock
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.device = resolve_device(device)
        self.model: NeuralopFNO | None = None
        self.norm: _ChannelNorm | None = None
        self.context = 0
        self.field: tuple[int, ...] | None = None

    def fit(
        self, train: np.ndarray, context: int, budget_s: float, seed: int, start: float | None = None
    ) -> dict:
        """Train until ``budget_s`` seconds after ``start`` (on ``clock``; default: now), the
        normalisation and the move to the device included."""
        start = self.clock() if start is None else start
        _check_trajectories(train, context, needed_after=self.unroll or 1)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        n, t, *grid, c = train.shape
        unroll = self.unroll or t - context
        self.norm, self.context, self.field = _ChannelNorm(train), context, train.shape[2:]
        # [N, T, C, *S]: channels first, as the model takes them
        frames = torch.from_numpy(
            np.ascontiguousarray(np.moveaxis(self.norm.encode(train), -1, 2), dtype=np.float32)
        ).to(self.device)
        self.model = pdebench_fno(tuple(grid), in_channels=context * c, out_channels=c).to(self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
        batches = _index_batches(n, self.batch_size, rng)
        offsets = torch.arange(context + unroll, device=self.device)
        seen = 0

        def step() -> float:
            nonlocal seen
            idx = next(batches)
            seen += len(idx)
            first = rng.integers(0, t - context - unroll + 1, size=len(idx))
            rows = torch.from_numpy(idx).to(self.device)[:, None]
            window = frames[rows, torch.from_numpy(first).to(self.device)[:, None] + offsets]
            inputs = window[:, :context].reshape(len(idx), context * c, *grid)
            loss = 0.0
            for k in range(unroll):
                pred = self.model(inputs)
                loss = loss + torch.nn.functional.mse_loss(pred, window[:, context + k])
                inputs = torch.cat([inputs[:, c:], pred], dim=1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item() / unroll

        self.model.train()
        facts = train_within_budget(step, optimizer, start, budget_s, self.max_steps, self.clock)
        self.model.eval()
        return {
            **facts,
            "epochs": seen / n,
            "unroll": unroll,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "parameter_count": real_parameter_count(self.model),
        }

    @torch.no_grad()
    def rollout(self, context_frames: np.ndarray, steps: int) -> np.ndarray:
        """[B, context, *S, C] -> [B, steps, *S, C], each prediction fed back as the newest frame."""
        if self.model is None:
            raise RuntimeError("FNO.rollout called before fit")
        _check_context(context_frames, self.context, self.field, self.name)
        *grid, c = self.field
        out = []
        for i in range(0, len(context_frames), _PREDICT_CHUNK):
            chunk = self.norm.encode(context_frames[i : i + _PREDICT_CHUNK]).astype(np.float32)
            b = len(chunk)
            inputs = np.ascontiguousarray(np.moveaxis(chunk, -1, 2)).reshape(b, self.context * c, *grid)
            inputs = torch.from_numpy(inputs).to(self.device)
            preds = []
            for _ in range(steps):
                pred = self.model(inputs)
                preds.append(pred)
                inputs = torch.cat([inputs[:, c:], pred], dim=1)
            out.append(np.moveaxis(torch.stack(preds, dim=1).cpu().numpy(), 2, -1))
        return self.norm.decode(np.concatenate(out)).astype(np.float32)


class FNOSteady:
    """PDEBench's FNO2d (see ``pdebench_fno``) for a steady map a(x, y) -> u(x, y) (Darcy).

    Input a plus the grid (x, y) in [0, 1)^2, output u; a and u normalised by their training
    mean/std; MSE on normalised u, as PDEBench's "single" training type. Adam (``lr``, default
    1e-3; weight decay 1e-4), cosine learning rate over the budget, batches of ``batch_size``
    (default 32) in shuffled epochs, float32 on ``device`` (default: ``resolve_device()``).
    ``max_steps`` optionally ends training earlier; ``clock`` is the budget's clock.

    Facts: steps, epochs, seconds_used, max_step_seconds, parameter_count, lr, batch_size,
    device, and loss_first / loss_last (normalised MSE).
    """

    name = "fno"

    def __init__(
        self,
        batch_size: int = BATCH_SIZE,
        max_steps: int | None = None,
        device: str | torch.device | None = None,
        lr: float = LEARNING_RATE,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.lr, self.clock = lr, clock
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.device = resolve_device(device)
        self.model: NeuralopFNO | None = None
        self.norm_a: _ChannelNorm | None = None
        self.norm_u: _ChannelNorm | None = None
        self.field: tuple[int, ...] | None = None

    def fit(
        self, a: np.ndarray, u: np.ndarray, budget_s: float, seed: int, start: float | None = None
    ) -> dict:
        """Train until ``budget_s`` seconds after ``start`` (on ``clock``; default: now)."""
        start = self.clock() if start is None else start
        if a.shape != u.shape or a.ndim != 4 or a.shape[-1] != 1:
            raise ValueError(f"a and u must both be [N, X, Y, 1], got {a.shape} and {u.shape}")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.norm_a, self.norm_u, self.field = _ChannelNorm(a), _ChannelNorm(u), a.shape[1:]
        inputs = torch.from_numpy(self._channels_first(self.norm_a.encode(a))).to(self.device)
        targets = torch.from_numpy(self._channels_first(self.norm_u.encode(u))).to(self.device)
        self.model = pdebench_fno(a.shape[1:3], in_channels=1, out_channels=1).to(self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
        batches = _index_batches(len(a), self.batch_size, rng)
        seen = 0

        def step() -> float:
            nonlocal seen
            idx = torch.from_numpy(next(batches)).to(self.device)
            seen += len(idx)
            loss = torch.nn.functional.mse_loss(self.model(inputs[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item()

        self.model.train()
        facts = train_within_budget(step, optimizer, start, budget_s, self.max_steps, self.clock)
        self.model.eval()
        return {
            **facts,
            "epochs": seen / len(a),
            "lr": self.lr,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "parameter_count": real_parameter_count(self.model),
        }

    @staticmethod
    def _channels_first(field: np.ndarray) -> np.ndarray:
        """[N, X, Y, 1] -> contiguous float32 [N, 1, X, Y]."""
        return np.ascontiguousarray(field.transpose(0, 3, 1, 2), dtype=np.float32)

    @torch.no_grad()
    def predict(self, a: np.ndarray) -> np.ndarray:
        """[B, X, Y, 1] -> [B, X, Y, 1]."""
        _check_field(a, self.field, "FNOSteady")
        out = [
            self.model(torch.from_numpy(self._channels_first(self.norm_a.encode(chunk))).to(self.device))
            .cpu()
            .numpy()
            .transpose(0, 2, 3, 1)
            for chunk in (a[i : i + _PREDICT_CHUNK] for i in range(0, len(a), _PREDICT_CHUNK))
        ]
        return self.norm_u.decode(np.concatenate(out)).astype(np.float32)
