"""``ups predict``'s writer (``ups.surrogate.predict.write_predictions``) on the layouts the fixture
run does not train on: each input layout's predictions read back by ``PDEBenchFile`` in the same
layout family, with their channels, times and per-trajectory parameters; the samples beside them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ups.config.requests import PredictionRequest
from ups.data.pdebench import PDEBenchFile
from ups.surrogate.predict import Plan, file_axes, write_predictions


def _written_back(source: Path, out: Path, samples: int = 0):
    """Predictions of 2 steps (random numbers) for every start of ``source``, written to ``out``;
    returns what was written and the file read back."""
    file = PDEBenchFile(source)
    info = file.info
    task = SimpleNamespace(
        name="t", kind="transient", channels=info.channel_names, grid=info.spatial_shape, dt=0.25
    )
    plan = Plan(file, task, 2, 0, 1, dict(zip("xyz", file_axes(file))))
    rng = np.random.default_rng(0)
    shape = (info.n_samples, 3, *info.spatial_shape, info.n_channels)
    arrays = {"fields": rng.normal(size=shape).astype(np.float32)}
    if samples:
        arrays["samples"] = rng.normal(size=(shape[0], samples, *shape[1:])).astype(np.float32)
        arrays["spread"] = arrays["samples"].std(axis=1)
    write_predictions(PredictionRequest(Path("run"), source, out, samples=samples), plan, arrays)
    return arrays, PDEBenchFile(out)


@pytest.mark.parametrize(
    "layout, written_as, names",
    [
        ("cfd", "cfd", ("density", "pressure", "Vx")),
        ("multigroup", "multigroup", ("u0", "u1")),
        ("ns_incomp", "single", ("u0", "u1", "u2")),  # no writer of its own: one `tensor`
    ],
)
def test_each_layout_is_written_in_its_family(pdebench_writers, tmp_path, layout, written_as, names):
    source = tmp_path / f"in_{layout}_Nu0.5.h5"
    if layout == "multigroup":
        pdebench_writers.multigroup(source, n=3, group_attrs=lambda i: {"Du": 0.1, "amp": float(i)})
    else:
        getattr(pdebench_writers, layout)(source)
    arrays, back = _written_back(source, tmp_path / "out.h5", samples=2 if layout == "multigroup" else 0)
    assert back.info.layout == written_as and back.info.channel_names == names
    for i in range(back.info.n_samples):
        np.testing.assert_array_equal(back.trajectory(i), arrays["fields"][i])
        assert back.params_of(i)["nu"] == 0.5  # the input's parameters, from its name
    t0 = PDEBenchFile(source).times()[0]
    np.testing.assert_allclose(back.times(), t0 + 0.25 * np.arange(3), rtol=1e-6)
    np.testing.assert_allclose(back.coordinates(), PDEBenchFile(source).coordinates())
    if layout == "multigroup":  # per-trajectory parameters stay on their groups
        assert [back.params_of(i)["amp"] for i in range(3)] == [0.0, 1.0, 2.0]
        assert back.info.params["du"] == pytest.approx(0.1)
