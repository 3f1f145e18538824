"""benchmarks/data_scale.py end to end at a tiny size (24 trajectories of 11 x 32; about two minutes
on 2 cores, so `make test-slow`): every row is measured and printed, the time-limited stages end
with their checkpoints written, the scratch folder goes. The file's writing and reuse are tested in
tests/unit/test_data_scale.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = ("HDF5, 0 workers", "HDF5, 2 workers", "NumPy array in memory", "latent cache")


@pytest.mark.slow
def test_data_scale_runs_end_to_end_at_a_tiny_size(tmp_path):
    cmd = [
        sys.executable,
        "benchmarks/data_scale.py",
        "--dir",
        str(tmp_path),
        "--n",
        "24",
        "--nt",
        "11",
        "--nx",
        "32",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--limit-s",
        "15",
        "--val-max-samples",
        "64",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "24 x 11 x 32 float32, contiguous; written in" in out
    lines = out.splitlines()
    table = lines.index(next(line for line in lines if line.startswith("source ")))
    for row, line in zip(ROWS, lines[table + 1 : table + 1 + len(ROWS)]):
        assert line.startswith(row), line
        stage, sample, ms, rate, versus, rss, pss, first = line[len(row) :].split()
        assert float(ms) > 0 and float(rate) > 0, line
        assert 100 < float(rss) < 4000 and 0 < float(pss) <= float(rss), line  # MB: a process with torch
        assert (stage, sample) == (
            ("operator", "window") if row == "latent cache" else ("autoencoder", "snapshot")
        )
        if row.startswith("HDF5"):
            assert re.fullmatch(r"\d+\.\d\dx", versus) and float(first) > 0, line
        else:
            assert versus == ("1.00x" if row.startswith("NumPy") else "-") and first == "-", line
    assert re.search(r"^ups data summary: [\d.]+ s, peak RSS \d+ MB", out, re.M)
    # 2 of 24 trajectories: the cap keeps the first two, split 1 / 1 / 0 (train first, then val)
    assert re.search(
        r"^ups data summary with data.max_samples=2: .* its split: 1 / 1 / 0 trajectories$", out, re.M
    )
    for source in ("by file offset (now)", "through h5py (before)", "NumPy array in memory"):
        assert re.search(rf"^{re.escape(source)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), source
    assert "validating 33 of the split's 33 frames (training.val_max_samples=64) in 2 batches of 32" in out
    for key in ("max_time", "time_budget"):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"training.{key}:"))
        assert "done, exit 0" in line and "last.ckpt written" in line and "best best-epoch" in line, line
    assert not list(tmp_path.glob("*/run-*")), "the scratch folder is removed"
