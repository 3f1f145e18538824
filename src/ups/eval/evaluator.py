"""Evaluation of trained stages on a split: rollouts from true initial conditions, PDEBench's
metrics on decoded fields (overall and per task), the corrector's and the steady prior's figures.

``Evaluator`` computes; ``ups.eval.run``'s ``run_lightning`` (``Trainer.test``) and ``run_native``
(a plain loop) run it over the same loaders, so both give the same numbers from the same checkpoints.

Transient tasks: per test trajectory one window from frame 0 (the initial condition, never
scored) over ``horizon`` steps of ``training.time_stride`` frames; with
``evaluation.context_frames`` C > 1 the window starts at the last of C context frames (frame
(C-1)·stride, PDEBench's protocol with ``initial_step`` C; the context is never scored). The
operator rolls out from the encoded first frame of the window; every predicted step is decoded
and compared with the truth.
Per sample, a metric is the mean over the predicted steps; the rollout curve keeps the steps.
Per channel (named as the task's file names them), the rollout's nRMSE, one-step nRMSE and RMSE
go to ``per_channel``; the mean over a task's channels of its per-channel nRMSE is its nRMSE.
With a corrector (the consistency student, else the ``diff_residual`` flow) the same suite is
computed for the corrected rollout (``corrected_*``), plus CRPS and spread-skill of
``stages.diff_residual.val_samples`` corrected first steps. Steady tasks: nRMSE of the steady prior's
sampled solution (``steady_nrmse``) and of its regression baseline. Noise is seeded per batch.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset

from ups.data.latent_pairs import WindowDataset
from ups.data.tasks import SteadyPairDataset
from ups.metrics import (
    brmse,
    correlation_time,
    crmse,
    crps,
    frmse,
    max_error,
    rmse,
    rollout_curve,
    spread_skill,
)
from ups.stages.batch import denormalize, flat_points, per_task, task_rows
from ups.stages.dynamics import rollout_start

# the metrics of ``suite`` where lower is better, nRMSE first
FIELD_METRICS = (
    "nrmse",
    "one_step_nrmse",
    "rmse",
    "max_error",
    "crmse",
    "brmse",
    "frmse_low",
    "frmse_mid",
    "frmse_high",
)


def channel_suite(pred: torch.Tensor, truth: torch.Tensor, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Per channel of a rollout: pred, truth [B, H, *S, C] -> {name: [B, C]} (``nrmse``,
    ``one_step_nrmse``, ``rmse``); averaged over channels they are ``suite``'s nRMSEs."""
    b, h, c = truth.shape[0], truth.shape[1], truth.shape[-1]
    err = (pred - truth).reshape(b, h, -1, c).pow(2).mean(dim=2).sqrt()  # [B, H, C]
    ref = truth.reshape(b, h, -1, c).pow(2).mean(dim=2).sqrt()
    per_step = err / (ref + eps)
    return {"nrmse": per_step.mean(dim=1), "one_step_nrmse": per_step[:, 0], "rmse": err.mean(dim=1)}


def suite(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """PDEBench's metrics of a rollout, per sample: pred, truth [B, H, *S, C] -> {name: [B]}."""
    b, h = truth.shape[:2]
    flat = lambda x: x.reshape(b * h, *x.shape[2:])  # noqa: E731
    per_step = lambda values: values.reshape(b, h).mean(dim=1)  # noqa: E731
    out = {
        "nrmse": rollout_curve(pred, truth).mean(dim=1),
        "one_step_nrmse": rollout_curve(pred, truth)[:, 0],
    }
    for name, metric in (("rmse", rmse), ("max_error", max_error), ("crmse", crmse), ("brmse", brmse)):
        out[name] = per_step(metric(flat(pred), flat(truth)))
    for band, values in frmse(flat(pred), flat(truth)).items():
        out[f"frmse_{band}"] = per_step(values)
    out["correlation_time"] = correlation_time(pred, truth)
    return out


class ReferenceWindows(Dataset):
    """Rollout windows plus the same frames read from another resolution's file: ``reference``
    [H+1, *S', C] (normalised like the task) and ``reference_coords`` [*S', d]."""

    def __init__(self, windows: WindowDataset, references: list):
        self.windows, self.references = windows, references
        self.task_sizes, self.task_weights = windows.task_sizes, windows.task_weights
        self.coords = [torch.from_numpy(r.coordinates()) for r in references]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int) -> dict:
        k, traj, t0 = self.windows.window(item)
        out = self.windows[item]
        w = self.windows
        frames = self.references[k].trajectory(traj, slice(t0, t0 + w.horizon * w.stride + 1, w.stride))
        out["reference"] = torch.from_numpy(w.tasks[k].normalizer.normalize(frames))
        out["reference_coords"] = self.coords[k]
        return out


class Evaluator:
    """The trained stages and the running sums of one evaluation."""

    def __init__(self, cfg, surrogate):
        """``surrogate``: the ``ups.surrogate.Surrogate`` evaluated, its ``dynamics`` (the
        ``LatentDynamics`` of the transient tasks, corrected when it has a corrector) and ``steady``
        (the steady_prior stage); the report's examples are rolled out through its API."""
        self.cfg, self.surrogate = cfg, surrogate
        self.dynamics, self.steady = surrogate.dynamics, surrogate.steady
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        transient = (t for t in surrogate.tasks.values() if t.kind == "transient")
        self.channel_names = {t.name: t.channels for t in transient}
        self.channel_sums: dict[tuple[str, str, str], float] = defaultdict(float)  # (task, channel, metric)
        self.channel_counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self.curves: dict[str, torch.Tensor] = {}
        self.rollout_seconds, self.rollout_steps, self.rollout_samples = 0.0, 0, 0
        self.examples: dict[str, dict] = {}  # per task, the first batch's truth and predictions (pictures)
        # evaluation.per_sample: per task, trajectory index -> {metric: value}
        self.samples: dict[str, dict[int, dict]] | None = (
            defaultdict(dict) if cfg.evaluation.per_sample else None
        )

    # ---- data ---------------------------------------------------------------------
    def datasets(self, split: str, horizon: int, references: list | None = None) -> list:
        """Rollout windows of the transient tasks (with ``references``, one reader per task at
        another resolution, whose frames are the truth and whose grid is decoded), steady pairs."""
        out = []
        if self.dynamics is not None:
            windows = WindowDataset(
                self.dynamics.tasks,
                split,
                horizon,
                self.cfg.training.time_stride,
                start=rollout_start(self.cfg),
                horizon_name="the evaluation horizon (--horizon)",
            )
            out.append(windows if references is None else ReferenceWindows(windows, references))
        if self.steady is not None:
            out.append(SteadyPairDataset(self.steady.steady, split, param_order=self.steady.param_order))
        return out

    # ---- computation --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch: dict) -> None:
        if "window" in batch:
            self.transient(batch)
        else:
            self.steady_batch(batch)

    def transient(self, batch: dict) -> None:
        dynamics, names = self.dynamics, batch["task_names"]
        window = batch.get("reference", batch["window"])  # the truth, at the evaluated resolution
        coords, steps = flat_points(batch.get("reference_coords", batch["coords"])), window.shape[1] - 1
        truth = torch.stack(
            [
                denormalize(dynamics.normalizers, names, flat_points(window[:, k]).float())
                for k in range(1, steps + 1)
            ],
            dim=1,
        )
        # the initial condition, on the trained grid
        z = dynamics.model.encoder(batch["window"][:, 0], batch["coords"])
        start = time.perf_counter()
        decode = dynamics.decoder_for(batch, z, flat_points(window[:, 0]), coords)  # timed: in every rollout
        pred = dynamics.decode_states(decode, dynamics.rollout(batch, z, steps))
        self.rollout_seconds += time.perf_counter() - start
        self.rollout_steps += steps
        self.rollout_samples += steps * window.shape[0]
        self.add(suite(pred, truth), names, "", batch["index"])
        self.add_channels(channel_suite(pred, truth), names, "")
        self.add_curve("operator", rollout_curve(pred, truth))
        example = self.keep_example(names[0], batch, window, pred)
        if dynamics.corrected:
            corrected = self.corrected(batch, z, truth, decode, names)
            if example is not None and "reference" in batch:
                example["corrected"] = self.as_grid(corrected, batch, example["truth"])

    def corrected(self, batch, z, truth, decode, names) -> torch.Tensor:
        """The corrected rollout's suite and the ensemble of corrected first steps; the corrected steps
        [B, H, Q, C]."""
        dynamics = self.dynamics
        generator = dynamics.validation_generator(batch)
        pred = dynamics.decode_states(decode, dynamics.rollout(batch, z, truth.shape[1], generator))
        self.add(suite(pred, truth), names, "corrected_", batch["index"])
        self.add_channels({"nrmse": channel_suite(pred, truth)["nrmse"]}, names, "corrected_")
        self.add_curve("corrected", rollout_curve(pred, truth))
        first = dynamics.rollout(batch, z, 1)[:, 0]
        samples = torch.stack(
            [
                decode(first + dynamics.correction(batch, first, generator), 1)
                for _ in range(max(2, self.cfg.stages.diff_residual.val_samples))
            ]
        )
        self.add(
            {"crps": crps(samples, truth[:, 0]), "spread_skill": spread_skill(samples, truth[:, 0])},
            names,
            "",
        )
        return pred

    def keep_example(self, task: str, batch: dict, window, pred) -> dict | None:
        """Up to 3 trajectories of the task's first batch as arrays [n, H+1, *S, C] (physical units):
        the truth, and the predictions of ``Surrogate.rollout`` from its first frame (what users
        call; the same numbers as the scored ``pred``, and one corrected sample with a corrector).
        At another resolution (``--resolution``) the scored predictions, whose decoding carries the
        autoencoder's error measured on that grid, which the API's ``points=`` does not."""
        if task in self.examples:
            return None
        n = min(3, window.shape[0])
        truth = denormalize(self.dynamics.normalizers, [task] * n, window[:n].float()).cpu().numpy()
        example = {"truth": truth, "channels": list(self.channel_names[task])}
        if "reference" in batch:
            example["operator"] = self.as_grid(pred, batch, truth)
        else:
            api = self.surrogate.rollout(
                torch.from_numpy(truth[:, 0]).to(window.device),
                truth.shape[1] - 1,
                task=task,
                params=batch["params"][:n],
                static=self.static(batch, task, n),
                samples=1 if self.dynamics.corrected else 0,
                seed=self.cfg.seed,
                device=window.device,
            )
            start = torch.from_numpy(truth[:, :1])
            example["operator"] = torch.cat([start, api.fields.float().cpu()], dim=1).numpy()
            if api.samples is not None:
                example["corrected"] = torch.cat([start, api.samples[:, 0].float().cpu()], dim=1).numpy()
        self.examples[task] = example
        return example

    def static(self, batch: dict, task: str, n: int) -> torch.Tensor | None:
        """The batch's first n static fields in physical units (None without one)."""
        if "static" not in batch:
            return None
        return self.surrogate.tasks[task].input_normalizer.denormalize(batch["static"][:n].float())

    @staticmethod
    def as_grid(pred: torch.Tensor, batch: dict, truth: np.ndarray) -> np.ndarray:
        """Predicted steps [B, H, Q, C] -> [n, H+1, *S, C] beside ``truth`` (its step 0 is the initial
        condition)."""
        n = truth.shape[0]
        steps = pred[:n].reshape(n, pred.shape[1], *truth.shape[2:]).cpu().numpy()
        return np.concatenate([truth[:, :1], steps], axis=1)

    def steady_batch(self, batch: dict) -> None:
        metrics = self.steady.validation_metrics(batch)
        self.add(
            {"steady_nrmse": metrics["nrmse"], "steady_regression_nrmse": metrics["regression_nrmse"]},
            batch["task_names"],
            "",
            batch["index"],
        )

    # ---- sums ---------------------------------------------------------------------
    def add(
        self,
        values: dict[str, torch.Tensor],
        names: list[str],
        prefix: str,
        indices: torch.Tensor | None = None,
    ) -> None:
        for key, per_sample in values.items():
            split: dict[str, torch.Tensor] = {}
            per_task(split, prefix + key, per_sample, names)
            for name, v in split.items():
                self.sums[name] += float(v.double().sum())
                self.counts[name] += v.numel()
            if self.samples is not None and indices is not None:
                for task, index, v in zip(names, indices.tolist(), per_sample.double().cpu().tolist()):
                    self.samples[task].setdefault(int(index), {})[prefix + key] = v

    def per_sample(self) -> dict[str, dict[str, list]]:
        """Per task: ``index`` (the trajectories' indices in the file, ascending) and each
        metric's value for them, in that order."""
        out = {}
        for task, by_index in sorted(self.samples.items()):
            order = sorted(by_index)
            keys = sorted({key for values in by_index.values() for key in values})
            out[task] = {"index": order, **{key: [by_index[i].get(key) for i in order] for key in keys}}
        return out

    def add_channels(self, values: dict[str, torch.Tensor], names: list[str], prefix: str) -> None:
        """Sum per-channel values [B, C] by task and channel name."""
        for key, per_channel in values.items():
            for task, rows in task_rows(names).items():
                picked = (per_channel if rows is None else per_channel[rows]).double()
                for name, total in zip(self.channel_names[task], picked.sum(dim=0).tolist()):
                    self.channel_sums[(task, name, prefix + key)] += total
                    self.channel_counts[(task, name, prefix + key)] += picked.shape[0]

    def per_channel(self) -> dict[str, dict[str, list]]:
        """Per transient task: ``channels`` (names, in the file's order) and each per-channel
        metric as a list in that order."""
        out: dict[str, dict[str, list]] = {}
        for task, channels in self.channel_names.items():
            keys = sorted({key for (t, _, key) in self.channel_sums if t == task})
            if keys:
                out[task] = {
                    "channels": list(channels),
                    **{
                        key: [
                            self.channel_sums[(task, c, key)] / self.channel_counts[(task, c, key)]
                            for c in channels
                        ]
                        for key in keys
                    },
                }
        return out

    def add_curve(self, name: str, curve: torch.Tensor) -> None:
        total = curve.double().sum(dim=0).cpu()
        self.curves[name] = self.curves[name] + total if name in self.curves else total
        self.counts[f"curve:{name}"] += curve.shape[0]

    def result(self) -> dict:
        """``metrics`` (overall), ``per_task``, ``per_channel`` (``Evaluator.per_channel``),
        ``rollout`` curves and ``extra`` (cost)."""
        metrics, tasks = {}, defaultdict(dict)
        for key in sorted(self.sums):
            value = self.sums[key] / max(self.counts[key], 1)
            task, _, name = key.rpartition("/")
            (tasks[task] if task else metrics)[name] = value
        rollout = {
            name: (total / self.counts[f"curve:{name}"]).tolist() for name, total in self.curves.items()
        }
        extra = {
            "ms_per_rollout_step": 1000 * self.rollout_seconds / max(self.rollout_steps, 1),
            "samples_per_second": self.rollout_samples / self.rollout_seconds
            if self.rollout_seconds
            else 0.0,
            "n_trajectories": self.counts.get("curve:operator", 0),
        }
        out = {
            "metrics": metrics,
            "per_task": dict(tasks),
            "rollout": rollout,
            "extra": extra,
            "per_channel": self.per_channel(),
        }
        if self.samples is not None:
            out["per_sample"] = self.per_sample()
        return out
