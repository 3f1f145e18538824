"""One self-contained HTML report of an evaluation: run identity, metrics, rollout error curve,
example fields and energy spectra. Every plot is an inline base64 PNG, so the file opens offline."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ups.atomic import atomic_write_text  # noqa: E402
from ups.eval.evaluator import FIELD_METRICS  # noqa: E402

MAX_TRAJECTORIES = 3
PREDICTIONS = ("operator", "corrected")
METRIC_ORDER = (*FIELD_METRICS, "correlation_time", "corrected_nrmse", "crps", "spread_skill", "steady_nrmse")
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1150px}table{border-collapse:collapse}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
    "img{max-width:100%;display:block;margin:0.5em 0}"
)


def write_report(result: dict, examples: dict, path: Path) -> Path:
    """Write the report for one evaluation ``result`` to ``path`` (atomically) and return ``path``.

    ``examples``: {task: {"truth": [n, H+1, X(, Y), C], "operator": same, "corrected": optional,
    "channels": optional names of the C channels}}. Every channel of every example is shown.
    """
    path = Path(path)
    body = [
        _header(result),
        _metrics_table(result),
        _channel_table(result.get("per_channel") or {}),
        _rollout_curve(result.get("rollout") or {}),
    ]
    body += [_task_section(task, arrays) for task, arrays in examples.items()]
    title = _esc(result.get("label", "evaluation"))
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    atomic_write_text(path, page, encoding="utf-8")
    return path


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _format(value) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _esc(value)


def _header(result: dict) -> str:
    items = [
        (k.replace("_", " "), result.get(k))
        for k in ("split", "engine", "config_hash", "horizon", "resolution")
    ]
    items += [(f"tag {k}", v) for k, v in (result.get("tags") or {}).items()]
    items += [(f"checkpoint {k}", v) for k, v in (result.get("checkpoints") or {}).items()]
    items += [(k, v) for k, v in (result.get("extra") or {}).items()]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_format(v)}</td></tr>" for k, v in items)
    return f"<h1>{_esc(result.get('label', 'evaluation'))}</h1>\n<table>{rows}</table>"


def _metrics_table(result: dict) -> str:
    columns = {"overall": result.get("metrics") or {}, **(result.get("per_task") or {})}
    names = {name for metrics in columns.values() for name in metrics}
    ordered = [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))
    head = "<tr><th>metric</th>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"
    rows = "".join(
        f"<tr><th>{_esc(m)}</th>"
        + "".join(f"<td>{_format(col.get(m))}</td>" for col in columns.values())
        + "</tr>"
        for m in ordered
    )
    return f"<h2>Metrics</h2>\n<table>{head}{rows}</table>"


def _channel_table(per_channel: dict) -> str:
    """Per task and channel, the per-channel metrics (tasks with one channel included)."""
    if not per_channel:
        return ""
    keys = sorted({key for figures in per_channel.values() for key in figures if key != "channels"})
    head = "<tr><th>task</th><th>channel</th>" + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>"
    rows = "".join(
        f"<tr><th>{_esc(task)}</th><th>{_esc(channel)}</th>"
        + "".join(f"<td>{_format(figures[k][c] if k in figures else None)}</td>" for k in keys)
        + "</tr>"
        for task, figures in per_channel.items()
        for c, channel in enumerate(figures["channels"])
    )
    return f"<h2>Metrics per channel</h2>\n<table>{head}{rows}</table>"


def _png(fig) -> str:
    """The figure as an inline ``<img>``; the figure is closed either way."""
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    finally:
        plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _rollout_curve(rollout: dict) -> str:
    if not rollout:
        return ""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in rollout.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", label=name)
    ax.set(xlabel="rollout step", ylabel="nRMSE", title="nRMSE against rollout step")
    ax.legend()
    return "<h2>Rollout error</h2>\n" + _png(fig)


def _task_section(task: str, arrays: dict) -> str:
    truth = np.asarray(arrays["truth"], dtype=np.float64)
    if truth.ndim not in (4, 5):
        raise ValueError(
            f"examples[{task!r}]['truth'] has shape {truth.shape}; expected [n, H+1, X, C] "
            "or [n, H+1, X, Y, C]"
        )
    preds = {k: np.asarray(arrays[k], dtype=np.float64) for k in PREDICTIONS if arrays.get(k) is not None}
    if not preds:
        raise ValueError(
            f"examples[{task!r}] has no prediction; give 'operator' (and optionally 'corrected')"
        )
    for name, pred in preds.items():
        if pred.shape != truth.shape:
            raise ValueError(f"examples[{task!r}][{name!r}] has shape {pred.shape}, truth has {truth.shape}")
    channels = list(arrays.get("channels") or [f"channel {c}" for c in range(truth.shape[-1])])
    if len(channels) != truth.shape[-1]:
        raise ValueError(
            f"examples[{task!r}] names {len(channels)} channels, its fields have {truth.shape[-1]}"
        )
    parts = [f"<h2>Task {_esc(task)}</h2>"]
    for i in range(min(len(truth), MAX_TRAJECTORIES)):
        for c, channel in enumerate(channels):
            parts.append(
                _trajectory_panels(truth[i], {name: pred[i] for name, pred in preds.items()}, i, c, channel)
            )
    parts.append(_spectrum_plot(truth, preds, channels))
    return "\n".join(parts)


def _trajectory_panels(truth: np.ndarray, preds: dict, index: int, c: int, channel: str) -> str:
    """One row per prediction: truth | prediction | |error|, of channel ``c``. 1D fields
    [H+1, X, C] as space-time images (step down, x across); 2D fields [H+1, X, Y, C] at the last step."""
    show = (lambda f: f[:, :, c]) if truth.ndim == 3 else (lambda f: f[-1, :, :, c])
    fig, axes = plt.subplots(len(preds), 3, figsize=(11, 3 * len(preds)), squeeze=False, layout="constrained")
    vmin, vmax = show(truth).min(), show(truth).max()
    for row, (name, pred) in zip(axes, preds.items()):
        panels = [
            ("truth", show(truth), (vmin, vmax)),
            (name, show(pred), (vmin, vmax)),
            (f"|{name} - truth|", np.abs(show(pred) - show(truth)), (None, None)),
        ]
        for ax, (title, field, (lo, hi)) in zip(row, panels):
            image = ax.imshow(field, aspect="auto", origin="upper", vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(title)
            ax.set(xlabel="x", ylabel="step" if truth.ndim == 3 else "y")
            fig.colorbar(image, ax=ax)
    fig.suptitle(f"trajectory {index}, {channel}" + (" (last step)" if truth.ndim == 4 else ""))
    return _png(fig)


def energy_spectrum(fields: np.ndarray) -> np.ndarray:
    """Mean |FFT|^2 against integer wavenumber |k|, averaged over trajectories, steps and channels
    (pass one channel, ``fields[..., c:c + 1]``, for its own spectrum).

    Args:
        fields: [n, T, X, C] or [n, T, X, Y, C].

    Returns:
        [K], K = min spatial size // 2 + 1.
    """
    spatial = tuple(range(2, fields.ndim - 1))
    power = np.abs(np.fft.fftn(fields, axes=spatial)) ** 2
    power = power.mean(axis=(0, 1, -1))
    grids = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in power.shape], indexing="ij")
    radius = np.rint(np.sqrt(sum(g**2 for g in grids))).astype(int)
    n_k = min(power.shape) // 2 + 1
    totals = np.bincount(radius.ravel(), weights=power.ravel(), minlength=n_k)[:n_k]
    counts = np.bincount(radius.ravel(), minlength=n_k)[:n_k]
    return totals / np.maximum(counts, 1)


def _spectrum_plot(truth: np.ndarray, preds: dict, channels: list[str]) -> str:
    """One energy-spectrum panel per channel."""
    fig, axes = plt.subplots(1, len(channels), figsize=(6 * min(len(channels), 3), 3.5), squeeze=False)
    for c, (ax, channel) in enumerate(zip(axes[0], channels)):
        for name, fields in {"truth": truth, **preds}.items():
            ax.semilogy(
                energy_spectrum(fields[..., c : c + 1]),
                label=name,
                linestyle="-" if name == "truth" else "--",
            )
        ax.set(xlabel="wavenumber |k|", ylabel="mean |FFT|²", title=f"energy spectrum, {channel}")
        ax.legend()
    return _png(fig)
