"""The operator stage on the latent cache: same numbers as encoding on the fly, never stale,
self-healing, and the ``ups cache`` commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from ups.checkpoint import load_checkpoint, stage_weights
from ups.cli import main
from ups.data.generate import generate_dataset
from ups.pipeline.runner import train_stage
from ups.resolve import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import BURGERS, tiny_burgers_config, write_config  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config path, run folder with a trained autoencoder)."""
    root = tmp_path_factory.mktemp("cache_training")
    config = tiny_burgers_config(root)
    run = root / "run"
    assert main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    return config, run


def operator_losses(config, ae_run, run_dir, *overrides) -> list[float]:
    cfg = load_config(config, list(overrides))
    return train_stage(cfg, "operator", run_dir, engine="native", from_run=ae_run).result.train_losses


@pytest.mark.parametrize("dtype, rel", [("float32", 1e-6), ("float16", 2e-3)])
def test_cache_on_and_off_give_the_same_training_losses(trained, tmp_path, dtype, rel):
    config, ae_run = trained
    on_the_fly = operator_losses(config, ae_run, tmp_path / "off")
    cached = operator_losses(
        config,
        ae_run,
        tmp_path / "on",
        f"training.latent_cache_dir={tmp_path / 'cache'}",
        f"training.latent_cache_dtype={dtype}",
    )
    assert len(cached) == len(on_the_fly) == 2 * 2
    # float32: bit-identical on this machine's kernels; the tolerance only allows batched CPU
    # kernels to sum in another order elsewhere. float16: its rounding (about 2e-4 measured).
    assert cached == pytest.approx(on_the_fly, rel=rel, abs=0)
    if dtype == "float16":
        assert cached != pytest.approx(on_the_fly, rel=1e-7, abs=0)  # the cache did round


def test_the_operator_subspace_is_fitted_from_the_cache_as_on_the_fly_and_saved(trained, tmp_path, caplog):
    config, ae_run = trained
    caplog.set_level(logging.INFO, logger="ups.stages.operator")
    fits = {}
    cached = [f"training.latent_cache_dir={tmp_path / 'cache'}", "training.latent_cache_dtype=float32"]
    for name, cache in (("off", []), ("on", cached)):
        cfg = load_config(config, ["stages.operator.subspace_dim=5", *cache])
        run = train_stage(cfg, "operator", tmp_path / name, engine="native", from_run=ae_run).result
        weights = stage_weights(load_checkpoint(run.best_path))
        assert bool(weights["operator.subspace_fitted"])
        basis = weights["operator.subspace_basis"].double()
        fits[name] = (weights["operator.subspace_mean"], basis.T @ basis)  # the projection, sign-free
    torch.testing.assert_close(fits["on"][0], fits["off"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(fits["on"][1], fits["off"][1], atol=1e-5, rtol=0)
    kept = [r.getMessage() for r in caplog.records if "latent subspace keeps" in r.getMessage()]
    assert len(kept) == 2 and all("5-dimensional" in line for line in kept)


def test_corrupt_entries_are_reencoded_and_training_continues(trained, tmp_path, caplog):
    config, ae_run = trained
    cache = tmp_path / "cache"
    reference = operator_losses(config, ae_run, tmp_path / "clean", f"training.latent_cache_dir={cache}")
    (entry,) = cache.glob("*.latents")
    data = bytearray(entry.read_bytes())
    for damage in ("truncate", "flip"):
        if damage == "truncate":
            entry.write_bytes(bytes(data[: len(data) // 2]))
        else:
            data[100] ^= 0x10
            entry.write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ups"):
            losses = operator_losses(config, ae_run, tmp_path / damage, f"training.latent_cache_dir={cache}")
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "corrupt" in r.getMessage()
        ]
        assert len(warnings) == 1 and entry.name in warnings[0]
        assert losses == pytest.approx(reference, rel=1e-6)
        data = bytearray(entry.read_bytes())


def test_cache_commands_build_info_clear_and_miss_after_retraining(trained, tmp_path, capsys):
    config, ae_run = trained
    cache = tmp_path / "cache"
    build = [
        "cache",
        "build",
        "--config",
        str(config),
        "--run-dir",
        str(ae_run),
        f"training.latent_cache_dir={cache}",
    ]
    assert main(build) == 0
    assert "burgers: built, [8, 11, 4, 16] float16" in capsys.readouterr().out
    assert main(build) == 0
    assert "burgers: hit" in capsys.readouterr().out
    # another autoencoder (other seed) encodes differently: a miss, never the old latents
    retrained = tmp_path / "retrained"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--stage",
                "autoencoder",
                "--run-dir",
                str(retrained),
                "seed=1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "cache",
                "build",
                "--config",
                str(config),
                "--run-dir",
                str(retrained),
                f"training.latent_cache_dir={cache}",
                "seed=1",
            ]
        )
        == 0
    )
    assert "burgers: built" in capsys.readouterr().out
    assert main(["cache", "info", "--dir", str(cache)]) == 0
    info = capsys.readouterr().out
    assert "2 entries" in info and info.count("task burgers") == 2 and "1D_Burgers_Sols_Nu0.01.hdf5" in info
    assert main(["cache", "clear", "--config", str(config), f"training.latent_cache_dir={cache}"]) == 0
    assert "removed 4 file(s)" in capsys.readouterr().out  # two entries and their lock files
    assert not list(cache.glob("*.latents"))


def test_a_rewritten_data_file_is_a_miss(tmp_path, capsys):
    generate_dataset("burgers1d", tmp_path / "data", n=8, nx=32, nt=11, seed=0, progress=False)
    config = write_config(
        tmp_path / "tiny.yaml",
        tmp_path / "data",
        BURGERS,
        training={"latent_cache_dir": str(tmp_path / "cache")},
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    build = ["cache", "build", "--config", str(config), "--run-dir", str(run)]
    assert main(build) == 0
    generate_dataset(
        "burgers1d", tmp_path / "data", n=8, nx=32, nt=11, seed=5, progress=False, overwrite=True
    )
    capsys.readouterr()
    assert main(build) == 0
    assert "burgers: built" in capsys.readouterr().out


def test_cache_commands_refuse_a_config_without_a_cache(trained, capsys):
    config, ae_run = trained
    assert main(["cache", "build", "--config", str(config), "--run-dir", str(ae_run)]) == 2
    assert "training.latent_cache_dir is not set" in capsys.readouterr().err
    assert main(["cache", "info", "--config", str(config)]) == 2
    assert "does not set training.latent_cache_dir" in capsys.readouterr().err
