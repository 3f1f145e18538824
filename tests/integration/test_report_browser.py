"""The report as a browser shows it: headless Chromium renders it offline, with no page errors."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from ups.eval.report import write_report

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1200, 2000
PAGE_ERRORS = ("Uncaught", ":CONSOLE", "Failed to load resource", "Not allowed to load local resource")


def find_chromium() -> str:
    """Path of chromium, installed with apt-get when missing; skips when it cannot be had."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    try:
        subprocess.run(
            "apt-get update && apt-get install -y chromium",
            shell=True,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as error:
        pytest.skip(
            f"chromium is not installed and `apt-get install chromium` failed "
            f"(needs root and a package mirror): {error}"
        )
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("apt-get installed chromium but no `chromium` executable is on PATH")
    return found


def synthetic_report(path):
    rng = np.random.default_rng(1)
    x = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    steps = np.arange(6)[:, None]
    wave = np.sin(x[None, :] - 0.3 * steps)[None, :, :, None] * np.ones((3, 1, 1, 2))  # [3, 6, 32, 2]
    field2d = rng.normal(size=(2, 6, 16, 16, 1))
    result = {
        "label": "browser <check>",
        "tags": {"kind": "synthetic"},
        "split": "test",
        "engine": "lightning",
        "checkpoints": {"operator": "/runs/x/best.ckpt", "diff_residual": None},
        "config_hash": "cafe",
        "horizon": 5,
        "resolution": None,
        "metrics": {"nrmse": 0.12, "rmse": 0.03},
        "per_task": {"wave1d": {"nrmse": 0.1}, "noise2d": {"nrmse": 0.14}},
        "rollout": {"operator": [0.05, 0.08, 0.1, 0.12, 0.15], "corrected": [0.04, 0.07, 0.09, 0.1, 0.12]},
        "extra": {"ms_per_rollout_step": 1.5},
    }
    examples = {
        "wave1d": {
            "truth": wave,
            "operator": wave + 0.1 * rng.normal(size=wave.shape),
            "corrected": wave + 0.05 * rng.normal(size=wave.shape),
        },
        "noise2d": {"truth": field2d, "operator": field2d + 0.2 * rng.normal(size=field2d.shape)},
    }
    return write_report(result, examples, path)


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = find_chromium()
    report = synthetic_report(tmp_path / "report.html")
    page = report.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # the rollout plot; per task, one panel per trajectory and channel, and one spectrum figure:
    # wave1d 3 trajectories x 2 channels, noise2d 2 x 1
    assert len(images) == 1 + (3 * 2 + 1) + (2 * 1 + 1)
    for encoded in images:
        decoded = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded, validate=True)), format="png")
        assert decoded.ndim == 3 and min(decoded.shape[:2]) > 50

    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--enable-logging=stderr",
            "--v=0",
            f"file://{report}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    page_errors = [line for line in run.stderr.splitlines() if any(mark in line for mark in PAGE_ERRORS)]
    assert not page_errors, "\n".join(page_errors)

    pixels = matplotlib.image.imread(shot)[..., :3]  # [H, W, 3] floats in [0, 1]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    distinct = np.unique((pixels * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(distinct) > 500  # plots, not a blank or text-only page
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert non_white > 0.1, f"only {non_white:.1%} of the screenshot is not white"
