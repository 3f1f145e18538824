"""benchmarks/data_scale.py's file and rows: the synthetic file is PDEBench's 1D single-file layout
with the stated values, written once and reused, refused when the disk lacks room or the path holds
another file; the in-memory row serves exactly the file's frames; the memory sampler sees workers."""

import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import data_scale  # noqa: E402
from ups.data.latent_pairs import SnapshotDataset  # noqa: E402
from ups.data.pdebench import PDEBenchFile  # noqa: E402


def _args(tmp_path, n=12, nt=7, nx=16):
    return SimpleNamespace(dir=str(tmp_path), n=n, nt=nt, nx=nx, seed=0)


def test_synthetic_file_is_pdebench_single_layout_with_the_formula_values(tmp_path):
    folder, path, made = data_scale.prepare_file(_args(tmp_path))
    assert made.startswith("written") and path.name == "1D_Synthetic_Sols_Nu0.01.hdf5"
    f = PDEBenchFile(path)
    assert (f.layout, f.info.n_samples, f.info.n_times, f.info.spatial_shape) == ("single", 12, 7, (16,))
    with h5py.File(path, "r") as h5:
        assert h5["tensor"].chunks is None and h5["t-coordinate"].shape == (8,)  # contiguous; T + 1 times
        np.testing.assert_allclose(np.diff(h5["t-coordinate"][()]), 2 / 6, rtol=1e-6)
    u = f.trajectory(5)[..., 0]
    np.testing.assert_array_equal(u, data_scale.synthetic_block(5, 1, 7, 16, 0)[0])
    # trajectory 5 by the formula, at frame 3 (t = 1) and point 2 (x = 2.5 / 16)
    rng = np.random.default_rng([0, 5])
    a, b = rng.normal(size=(2, 4)) / np.arange(1, 5)
    c = rng.uniform(-1, 1)
    k, t, x = np.arange(1, 5), 1.0, 2.5 / 16
    angle = 2 * np.pi * k * (x - c * t)
    assert u[3, 2] == pytest.approx(
        np.sum(np.exp(-0.01 * k**2 * t) * (a * np.sin(angle) + b * np.cos(angle))), rel=1e-5
    )
    np.testing.assert_allclose(u.mean(axis=1), 0, atol=1e-6)  # Fourier modes 1-4 average out on the cells


def test_the_file_is_reused_when_whole_and_rewritten_at_another_size(tmp_path):
    _, path, _ = data_scale.prepare_file(_args(tmp_path))
    stamp = path.stat().st_mtime_ns
    assert data_scale.prepare_file(_args(tmp_path))[2] == "reused" and path.stat().st_mtime_ns == stamp
    other = data_scale.prepare_file(_args(tmp_path, n=5))[1]
    assert other.parent != path.parent and PDEBenchFile(other).info.n_samples == 5
    (path.parent / f".{path.name}.abc.tmp").write_bytes(b"left by a killed write")
    data_scale.prepare_file(_args(tmp_path))
    assert not list(path.parent.glob(".*.tmp"))


def test_a_foreign_file_at_the_path_is_refused(tmp_path):
    folder = tmp_path / "n12-t7-x16"
    folder.mkdir()
    with h5py.File(folder / data_scale.FILE_NAME, "w") as h5:
        h5.create_dataset("tensor", data=np.zeros((12, 7, 16), np.float32))
    with pytest.raises(SystemExit, match="not written by benchmarks/data_scale.py"):
        data_scale.prepare_file(_args(tmp_path))


def test_a_disk_without_room_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(data_scale.shutil, "disk_usage", lambda path: SimpleNamespace(free=2 * 10**9))
    with pytest.raises(SystemExit, match=r"9\.2 GB needed .* 2\.0 GB free"):
        # 5,000 trajectories of 201 x 1,024 float32: 4.1 GB for the file and for the cache entry, plus 1 GB
        data_scale.prepare_file(_args(tmp_path, n=5_000, nt=201, nx=1024))
    assert not list(tmp_path.rglob("*.hdf5"))


def test_frames_in_memory_serve_the_files_frames_for_the_first_batches(tmp_path):
    folder, path, _ = data_scale.prepare_file(_args(tmp_path, n=20))
    cfg = data_scale.load_config(data_scale.write_config(folder, tmp_path), ["training.batch_size=4"])
    tasks = data_scale.load_config_tasks(cfg)
    in_memory = data_scale.in_memory(cfg, tasks, 3)
    from_file, from_memory = SnapshotDataset(tasks, "train"), SnapshotDataset(in_memory, "train")
    batches = data_scale.first_batches(cfg, from_file, "autoencoder", 3)
    assert len(batches) == 3 and len(in_memory[0].file.frames) == len({i for b in batches for i in b})
    for item in (i for b in batches for i in b):
        np.testing.assert_array_equal(from_memory[item]["u"], from_file[item]["u"])


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads /proc (Linux)")
def test_memory_peak_sums_a_process_and_its_children(tmp_path):
    # a parent holding 100 MB, then a forked child holding those (shared) and 100 MB of its own:
    # RSS counts the shared pages twice (~300 MB), PSS once (~200 MB)
    script = (
        "import os, time, numpy as np\n"
        "a = np.ones(12_500_000)\n"
        "if os.fork() == 0:\n    b = np.ones(12_500_000); time.sleep(2.5); os._exit(0)\n"
        "time.sleep(2.5); os.wait()\n"
    )
    run = data_scale.run_measured([sys.executable, "-c", script], tmp_path / "log")
    assert run.code == 0
    assert 250 * 2**20 < run.peak_rss < 400 * 2**20
    assert 170 * 2**20 < run.peak_pss < 260 * 2**20
