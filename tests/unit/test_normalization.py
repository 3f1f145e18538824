import json

import numpy as np
import pytest
import torch

from ups.data.normalization import Normalizer
from ups.data.pdebench import PDEBenchFile
from ups.data.splits import split_trajectories


def _trajectories(seed=0, n=7, shape=(5, 9, 3)):
    rng = np.random.default_rng(seed)
    scale = np.array([1.0, 10.0, 0.01])
    return [(rng.normal(size=shape) * scale + [1e4, -2.0, 0.5]).astype(np.float32) for _ in range(n)]


def test_streaming_stats_equal_numpy():
    trajs = _trajectories()
    norm = Normalizer().fit(iter(trajs))
    stacked = np.concatenate([t.reshape(-1, 3) for t in trajs]).astype(np.float64)
    np.testing.assert_allclose(norm.mean, stacked.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.std, stacked.std(axis=0), rtol=1e-9)
    assert norm.count == stacked.shape[0]


def test_std_floored_at_eps():
    norm = Normalizer(eps=1e-3).fit([np.full((4, 2), 5.0)])
    np.testing.assert_array_equal(norm.std, [1e-3, 1e-3])


def test_normalize_numpy_and_torch_round_trip():
    trajs = _trajectories()
    norm = Normalizer().fit(trajs)
    x = trajs[0].astype(np.float64)
    z = norm.normalize(x)
    np.testing.assert_allclose(
        z.reshape(-1, 3).mean(axis=0), (x.reshape(-1, 3).mean(0) - norm.mean) / norm.std, rtol=1e-10
    )
    np.testing.assert_allclose(norm.denormalize(z), x, rtol=1e-12)
    t = torch.from_numpy(trajs[1])
    zt = norm.normalize(t)
    assert zt.dtype == torch.float32
    torch.testing.assert_close(zt, torch.from_numpy(norm.normalize(trajs[1])))
    torch.testing.assert_close(norm.denormalize(zt), t, rtol=1e-5, atol=1e-2)
    assert norm.normalize(trajs[1]).dtype == np.float32


def test_mode_none_is_identity():
    norm = Normalizer("none").fit(_trajectories())
    x = _trajectories(seed=1)[0]
    assert norm.normalize(x) is x and norm.denormalize(x) is x


def test_unknown_mode_and_unfitted():
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        Normalizer("minmax")
    with pytest.raises(RuntimeError, match="not fitted"):
        Normalizer().normalize(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="no data"):
        Normalizer().fit([])


def test_dict_round_trip_exact_through_torch_and_json(tmp_path):
    norm = Normalizer().fit(_trajectories())
    state = norm.to_dict()
    torch.save({"normalizer": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["normalizer"]
    via_json = json.loads(json.dumps(state))
    for restored in (loaded, via_json):
        np.testing.assert_array_equal(np.asarray(restored["mean"], dtype=np.float64), norm.mean)
        np.testing.assert_array_equal(np.asarray(restored["std"], dtype=np.float64), norm.std)
        assert (restored["mode"], restored["eps"], restored["count"]) == (norm.mode, norm.eps, norm.count)


def test_fitted_on_train_only(tmp_path, pdebench_writers):
    # Trajectory i is filled with the value i: train-only stats differ from the file's.
    n = 20
    tensor = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 4, 8)).copy()
    w = pdebench_writers.single(tmp_path / "crafted.h5", tensor=tensor)
    f = PDEBenchFile(w.path)
    split = split_trajectories(n, (0.6, 0.2, 0.2), seed=0, task_name="crafted")
    norm = Normalizer().fit(f.trajectory(i) for i in split.train)
    train_values = np.array(split.train, dtype=np.float64)
    np.testing.assert_allclose(norm.mean, [train_values.mean()], rtol=1e-12)
    np.testing.assert_allclose(norm.std, [train_values.std()], rtol=1e-12)
    assert abs(norm.mean[0] - tensor.mean()) > 0.5  # the whole file's mean is 9.5
