"""Malformed data files: each stops `ups pipeline` before any training with exit 2, a message
naming the file, the key or shape, and what was expected, and nothing written (no run folder, no
latent cache). Hostile ones (declared sizes, links, storage) are in test_hostile_hdf5.py."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_multigroup, write_single  # noqa: E402
from tiny_runs import refused_before_work  # noqa: E402


def text(path):
    path.write_text("not hdf5")


def no_tensor(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros((4, 5, 8)))


def rank_two(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=np.zeros((4, 5)))


def strings(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=np.array([b"a", b"b"]))


def nan_inside(path):
    data = np.random.default_rng(0).normal(size=(10, 6, 16)).astype(np.float32)
    data[7, 2, 5] = np.nan
    write_single(path, tensor=data)


def inf_inside(path):
    data = np.random.default_rng(0).normal(size=(10, 6, 16)).astype(np.float32)
    data[2, 0, 0] = -np.inf
    write_single(path, tensor=data)


def mixed_channels(path):
    write_multigroup(path)
    with h5py.File(path, "r+") as f:
        group = sorted(f.keys())[3]
        data = f[group]["data"][...]
        del f[group]["data"]
        f[group].create_dataset("data", data=data[..., :1])


CASES = {  # name -> (writer, fragments of the message)
    "missing file": (None, ["does not exist"]),
    "not HDF5": (text, ["not an HDF5 file"]),
    "no 'tensor' key": (no_tensor, ["cannot tell the layout", "top-level keys are [data]"]),
    "rank 2 tensor": (rank_two, ["'tensor' has shape (4, 5) (rank 2)", "expected [N, T, X]"]),
    "strings": (strings, ["'tensor' has dtype", "expected a real numeric array"]),
    "NaN in a trajectory": (nan_inside, ["tensor[7] (sample 7, shape (6, 16, 1)", "NaN or Inf"]),
    "Inf in a trajectory": (inf_inside, ["tensor[2] (sample 2", "NaN or Inf"]),
    "x-coordinate length": (
        lambda p: write_single(p, x=np.linspace(0, 1, 7)),
        ["'x-coordinate' has length 7", "expected a 1-D array of length 16"],
    ),
    "t-coordinate length": (
        lambda p: write_single(p, t_len=4),
        ["'t-coordinate' has length 4", "T=6 frames"],
    ),
    "channels differ across groups": (
        mixed_channels,
        ["'0003/data' has shape (6, 16, 12, 1)", "all groups must match"],
    ),
    "empty file (N = 0)": (
        lambda p: write_single(p, shape=(0, 6, 16)),
        ["'tensor' has shape (0, 6, 16): no samples (N)"],
    ),
    "no validation split (N = 1)": (
        lambda p: write_single(p, shape=(1, 6, 16)),
        ["N=1 trajectories are too few"],
    ),
    "trajectories too short for the windows": (
        lambda p: write_single(p, shape=(10, 4, 16)),
        ["4 frames per trajectory", "needs 5"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_data_file_is_refused_before_training_with_nothing_written(tmp_path, capsys, name):
    writer, fragments = CASES[name]
    data = tmp_path / "data"
    data.mkdir()
    path = data / "task.h5"
    if writer is not None:
        writer(path)
    err = refused_before_work(tmp_path, capsys, path)
    assert str(path) in err and all(fragment in err for fragment in fragments), err
