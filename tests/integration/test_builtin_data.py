"""Generators and readers together: what `ups data generate` writes, UPS reads back exactly."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from ups.cli import main
from ups.data.generate import GENERATORS, generate_dataset
from ups.data.latent_pairs import WindowDataset
from ups.data.pdebench import PDEBenchFile
from ups.data.summary import load_config_tasks, summary_table
from ups.data.tasks import SteadyPairDataset
from ups.resolve import load_config

SMALL = dict(n=6, nx=32, nt=11)


@pytest.fixture(scope="module")
def builtin_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("builtin")
    for task, gen in GENERATORS.items():
        sizes = {k: v for k, v in SMALL.items() if not (gen.steady and k == "nt")}
        generate_dataset(task, out, seed=1, progress=False, **sizes)
    return out


@pytest.mark.parametrize("task", ["burgers1d", "advection1d", "reaction_diffusion1d"])
def test_transient_files_read_back_exactly_with_parameters(builtin_dir, task):
    gen = GENERATORS[task]
    path = builtin_dir / gen.file_name(gen.default_params)
    reader = PDEBenchFile(path)
    info = reader.info
    assert (info.layout, info.kind) == ("single", "transient")
    assert (info.n_samples, info.n_times, info.spatial_shape, info.n_channels) == (6, 11, (32,), 1)
    assert info.params == pytest.approx(gen.default_params)
    with h5py.File(path, "r") as f:
        raw = f["tensor"][3]
    np.testing.assert_array_equal(reader.trajectory(3)[..., 0], raw)

    half = PDEBenchFile(path, reduced_resolution=2, reduced_resolution_t=5)
    assert (half.info.n_times, half.info.spatial_shape) == (3, (16,))
    np.testing.assert_array_equal(half.trajectory(3)[..., 0], raw[::5, ::2])


def test_darcy_file_reads_back_as_steady_pairs(builtin_dir):
    gen = GENERATORS["darcy2d"]
    path = builtin_dir / gen.file_name(gen.default_params)
    reader = PDEBenchFile(path)
    assert (reader.info.layout, reader.info.kind, reader.info.spatial_shape) == ("darcy", "steady", (32, 32))
    assert reader.info.params == pytest.approx({"beta": 1.0})
    a, u = reader.steady_pair(2)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(a[..., 0], f["nu"][2])
        np.testing.assert_array_equal(u[..., 0], f["tensor"][2, 0])


def test_multigroup_layout_from_the_generator_reads_like_the_single_file(tmp_path):
    single = generate_dataset("burgers1d", tmp_path / "s", seed=4, progress=False, **SMALL).path
    groups = generate_dataset(
        "burgers1d", tmp_path / "g", seed=4, layout="multigroup", progress=False, **SMALL
    ).path
    a, b = PDEBenchFile(single), PDEBenchFile(groups)
    assert b.info.layout == "multigroup"
    assert (b.info.n_samples, b.info.n_times, b.info.spatial_shape) == (
        a.info.n_samples,
        a.info.n_times,
        a.info.spatial_shape,
    )
    assert b.info.params == pytest.approx(a.info.params)
    np.testing.assert_array_equal(a.trajectory(5), b.trajectory(5))
    np.testing.assert_allclose(a.coordinates(), b.coordinates())
    np.testing.assert_allclose(a.times(), b.times())


def test_config_tasks_give_normalised_datasets(builtin_dir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "paths": {"data_dir": str(builtin_dir)},
                "data": {
                    "tasks": [
                        {"name": "burgers1d", "path": "1D_Burgers_Sols_Nu0.01.hdf5"},
                        {"name": "darcy2d", "path": "2D_DarcyFlow_beta1.0_Train.hdf5"},
                    ],
                    "split": {"train": 0.5, "val": 0.25, "test": 0.25},
                },
            }
        )
    )
    tasks = load_config_tasks(load_config(config))
    burgers, darcy = tasks
    assert sorted(burgers.split.train + burgers.split.val + burgers.split.test) == list(range(6))
    train = WindowDataset([burgers], "train", horizon=burgers.info.n_times - 1, stride=1, start=0)
    fields = np.concatenate([train[i]["window"].numpy() for i in range(len(train))])
    assert abs(fields.mean()) < 1e-5 and fields.std() == pytest.approx(1.0, abs=1e-4)
    pairs = SteadyPairDataset([darcy], "val")
    assert pairs[0]["input"].shape == (32, 32, 1) and pairs[0]["target"].shape == (32, 32, 1)
    text = summary_table(tasks)
    assert (
        "task burgers1d (transient, single layout)" in text and "task darcy2d (steady, darcy layout)" in text
    )
    s = burgers.split
    assert f"split   train {len(s.train)} / val {len(s.val)} / test {len(s.test)}" in text
    assert len(s.train) == 3


def test_cli_generate_then_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["data", "generate", "advection1d", "--out", "d", "--n", "5", "--nx", "16", "--nt", "6", "--quiet"]
    assert main(args) == 0
    assert "advection1d: written -> d/1D_Advection_Sols_beta0.4.hdf5" in capsys.readouterr().out
    assert main(args) == 0
    assert "up-to-date" in capsys.readouterr().out
    assert main([*args[:-1], "--seed", "9", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err

    assert main(["data", "summary", "--config", "cfg.yaml"]) == 2
    (tmp_path / "cfg.yaml").write_text(
        "paths: {data_dir: d}\ndata: {tasks: [{name: adv, path: 1D_Advection_Sols_beta0.4.hdf5}]}\n"
    )
    assert main(["data", "summary", "--config", "cfg.yaml"]) == 0
    out = capsys.readouterr().out
    assert "task adv (transient, single layout)" in out and "params  beta=0.4" in out
    assert out.strip().splitlines()[-1].startswith("data: 1 task(s) under ")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--param", "nu"], "NAME=NUMBER"),
        (["--param", "mu=0.1"], "mu"),
        (["--n", "0"], "n"),
    ],
)
def test_cli_generate_rejects_bad_arguments_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "d"
    assert main(["data", "generate", "burgers1d", "--out", str(out), "--quiet", *args]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_unknown_task_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "generate", "burgrs1d", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "burgrs1d" in capsys.readouterr().err
