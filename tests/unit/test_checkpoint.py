"""The checkpoint format: weights-only loading, the ups block, refusal of a misfit."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.checkpoint import (  # noqa: E402
    SCHEMA_VERSION,
    CheckpointError,
    architecture_fingerprint,
    check_fit,
    config_hash,
    load_checkpoint,
    load_into,
    misfit_report,
    model_state_dict,
    save_checkpoint,
)
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.errors import UPSError  # noqa: E402
from ups.runs import RunDir  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """last.ckpt of a 1-epoch toy run, per engine."""
    cfg = toy_config(ema_decay=0.9)
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 1})
    out = {}
    for engine in ("lightning", "native"):
        run = RunDir(tmp_path_factory.mktemp(engine)).init(cfg)
        out[engine] = (fit_stage(ToyStage(cfg), cfg, run, engine=engine).last_path, cfg)
    return out


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_checkpoints_load_weights_only_with_the_ups_block(trained, engine):
    path, cfg = trained[engine]
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    shared = {
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "epoch",
        "global_step",
        "ema_state_dict",
        "ups",
    }
    lightnings_own = {"pytorch-lightning_version", "loops", "callbacks"}
    assert shared <= set(ckpt)
    assert set(ckpt) & lightnings_own == (lightnings_own if engine == "lightning" else set())
    ups = ckpt["ups"]
    assert (
        ups["schema_version"] == SCHEMA_VERSION and ups["stage"] == "autoencoder" and ups["engine"] == engine
    )
    assert ups["config_hash"] == config_hash(cfg)
    assert ups["architecture"] == architecture_fingerprint(ToyStage(cfg).model.state_dict())
    assert ups["data"] == {"tasks": []} and ups["metadata"] == {"tasks": [], "toy": {"hidden": 16}}
    assert set(ups["extra_state"]) == {"generator"}
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 5)


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_misfit_is_refused_and_nothing_is_loaded(trained, engine):
    path, cfg = trained[engine]
    wider = ToyStage(cfg, hidden=24)
    before = {k: v.clone() for k, v in wider.model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_into(wider, load_checkpoint(path))
    message = str(info.value)
    assert "0.weight: checkpoint (16, 6) vs model (24, 6)" in message
    assert "shape differences (3)" in message and "2.weight: checkpoint (1, 16) vs model (1, 24)" in message
    for key, value in wider.model.state_dict().items():
        assert torch.equal(value, before[key])


def test_missing_and_unexpected_keys_are_named(trained):
    path, cfg = trained["native"]
    ckpt = load_checkpoint(path)
    ckpt["state_dict"]["model.extra.weight"] = ckpt["state_dict"].pop("model.2.bias")
    with pytest.raises(
        CheckpointError, match=r"missing keys \(1\): 2.bias[\s\S]*unexpected keys \(1\): extra.weight"
    ):
        load_into(ToyStage(cfg), ckpt)


def test_a_missing_or_extra_operator_subspace_names_the_setting():
    stored = {"operator.pos": torch.zeros(2)}
    model = {
        **stored,
        "operator.subspace_mean": torch.zeros(2),
        "operator.subspace_basis": torch.zeros(1, 2),
        "operator.subspace_fitted": torch.zeros(()),
    }
    missing = "\n".join(misfit_report(model, stored))
    assert "missing keys (3)" in missing and "latent subspace is missing from the checkpoint" in missing
    assert "stages.operator.subspace_dim" in missing and "0 for a checkpoint from before" in missing
    extra = "\n".join(misfit_report(stored, model))
    assert "unexpected keys (3)" in extra and "latent subspace is in the checkpoint" in extra
    assert misfit_report(model, model) == []


def test_a_missing_or_extra_operator_locality_bias_names_the_setting():
    stored = {"operator.pos": torch.zeros(2)}
    model = {**stored, "operator.token_bias": torch.zeros(1, 2, 2)}
    missing = "\n".join(misfit_report(model, stored))
    assert (
        "missing keys (1): operator.token_bias" in missing
        and "set stages.operator.locality=0 to load it" in missing
    )
    extra = "\n".join(misfit_report(stored, model))
    assert "unexpected keys (1)" in extra and "set stages.operator.locality to a value > 0" in extra


def test_a_steady_prior_from_before_the_residual_flow_is_told_to_retrain():
    stored = {"regression.proj_out.weight": torch.zeros(2, 2), "flow.proj_out.weight": torch.zeros(2, 2)}
    lines = "\n".join(misfit_report({**stored, "residual_scale": torch.ones(())}, stored))
    assert "missing keys (1): residual_scale" in lines and "train the steady_prior stage again" in lines


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_resume_refuses_a_misfitting_last_checkpoint(tmp_path, trained, engine):
    path, cfg = trained[engine]
    run = RunDir(tmp_path / "run").init(cfg)
    save_checkpoint(load_checkpoint(path), run.checkpoint_dir("autoencoder") / "last.ckpt")
    with pytest.raises(UPSError, match="0.weight: checkpoint"):
        fit_stage(ToyStage(cfg, hidden=24), cfg, run, engine=engine, resume=True)


def test_load_into_restores_weights_and_generator(trained):
    path, cfg = trained["lightning"]
    ckpt = load_checkpoint(path)
    stage = ToyStage(cfg)
    load_into(stage, ckpt)
    assert torch.equal(stage.generator.get_state(), ckpt["ups"]["extra_state"]["generator"])
    assert torch.equal(stage.model[0].weight, ckpt["state_dict"]["model.0.weight"])
    load_into(stage, ckpt, ema=True)
    assert torch.equal(stage.model[0].weight, ckpt["ema_state_dict"]["model.0.weight"])


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint({"state_dict": {"model.w": torch.ones(2)}}, tmp_path / "a.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
    (tmp_path / "plain").write_text("")  # an atomic file gets the permissions an ordinary one would
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert torch.equal(load_checkpoint(tmp_path / "a.ckpt")["state_dict"]["model.w"], torch.ones(2))


def test_unreadable_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "bad.ckpt")


def test_a_checkpoint_with_another_task_order_is_refused():
    cfg = toy_config()
    stage = ToyStage(cfg)
    stage.metadata = lambda: {"task_order": ["b", "a"]}
    ckpt = {
        "state_dict": model_state_dict(stage),
        "ups": {"stage": stage.name, "metadata": {"task_order": ["a", "b"]}},
    }
    with pytest.raises(CheckpointError, match=r"task order: checkpoint \['a', 'b'\] vs config \['b', 'a'\]"):
        check_fit(stage, ckpt)


@pytest.mark.parametrize(
    "wrap",
    ["model.{}", "model._orig_mod.{}", "module.model.{}", "model.module.{}", "module.model._orig_mod.{}"],
    ids=["plain", "compiled", "ddp", "ddp-inner", "both"],
)
def test_compiled_and_ddp_key_prefixes_load_the_same_weights(wrap):
    cfg = toy_config()
    source, target = ToyStage(cfg), ToyStage(dataclasses.replace(cfg, seed=9))
    stored = {wrap.format(k): v for k, v in source.model.state_dict().items()}
    stored["optimizer_bookkeeping"] = torch.zeros(1)  # keys outside the module are ignored
    load_into(target, {"state_dict": stored, "ups": {"stage": target.name}})
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.model.state_dict().values(), target.model.state_dict().values())
    )


class _Payload:
    """Pickles as a call that would write a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "executed"))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_never_runs(tmp_path):
    """Every UPS load goes through ``load_checkpoint`` (resumes through Lightning's
    ``weights_only=True``)."""
    from ups.checkpoint import load_checkpoint
    from ups.errors import UPSError

    marker, evil = tmp_path / "marker", tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {"model.w": torch.zeros(1)}, "ups": {"stage": "operator"}, "x": _Payload(marker)}, evil
    )
    with pytest.raises(UPSError, match="could not be read with weights_only=True"):
        load_checkpoint(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.read_text() == "executed"


def test_the_tuners_reload_refuses_a_pickled_callable_too(tmp_path, monkeypatch):
    """Lightning's Tuner reloads its scratch checkpoint through ``_checkpoint_connector.restore``
    with ``weights_only=None``, which leaves the choice to torch: ``weights_only=True`` since
    torch 2.6 (unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set)."""
    from lightning.fabric.utilities.cloud_io import _load

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    marker, evil = tmp_path / "marker", tmp_path / "scratch.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, evil)
    with pytest.raises(Exception, match="Weights only load failed"):
        _load(evil, weights_only=None)
    assert not marker.exists()


def test_an_autoencoder_of_the_other_latent_amplitude_setting_names_it():
    key = "autoencoder.decoder.by_rank.d1.latent_proj.weight"
    plain, amplitude = {key: torch.zeros(128, 64 + 33)}, {key: torch.zeros(128, 62 + 33)}
    lines = "\n".join(misfit_report(plain, amplitude))
    assert "shape differences (1)" in lines and "trained with latent.amplitude=true" in lines
    assert "trained with latent.amplitude=false" in "\n".join(misfit_report(amplitude, plain))
    assert misfit_report(plain, plain) == []
    wider = "autoencoder.encoder.by_rank.d1.to_latent.weight"  # another latent.dim, not the amplitude
    lines = "\n".join(
        misfit_report({**plain, wider: torch.zeros(64, 49)}, {**amplitude, wider: torch.zeros(62, 49)})
    )
    assert "shape differences (2)" in lines and "latent.amplitude" not in lines
