"""How operator predictions are decoded: the autoencoder's error on the known frame carried forward
(``stages.operator.carry_error``), and the latent subspace kept only when validation frames decode
through it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tests.tiny_runs import tiny_burgers_config

from ups.cli import main as ups
from ups.eval.run import EvaluationRequest, build_evaluator, checkpoints_of
from ups.resolve import load_config
from ups.stages import operator as operator_stage
from ups.stages.batch import denormalize, flat_points


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("carry")
    config = tiny_burgers_config(root)
    run = root / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    return config, run


def operator_of(trained, *overrides):
    config, run = trained
    return build_evaluator(
        load_config(config, list(overrides)), checkpoints_of(EvaluationRequest(run_dir=run))
    ).dynamics


def train_errors(op, stride=1):
    """Per picked train trajectory, e_t = u_t - D(E(u_t)) [F, Q, C] (normalised) and u [F, Q, C]."""
    task = op.tasks[0]
    points = torch.from_numpy(task.file.coordinates())
    points = points.reshape(1, -1, points.shape[-1])
    out = []
    for trajectory in task.split.indices("train"):
        frames = slice(0, None, stride)
        u = flat_points(torch.from_numpy(task.normalizer.normalize(task.file.trajectory(trajectory, frames))))
        z = torch.from_numpy(op.encode_trajectory(0, trajectory, torch.device("cpu"), frames))
        with torch.no_grad():
            decoded = op.model.decoder(z, points.expand(len(z), -1, -1), channels=u.shape[-1])
        out.append((u - decoded, u))
    return out


def test_the_carry_is_the_least_squares_factor_of_the_next_frames_error(trained):
    op = operator_of(trained)
    carry = op.error_carry()
    task = op.tasks[0]
    stride = op.cfg.training.time_stride
    assert carry.shape == (1, (task.info.n_times - 1) // stride + 1, task.info.n_channels)
    assert torch.all((carry >= 0) & (carry <= 1)) and torch.allclose(carry[0, 0], torch.ones(1))
    # All 6 train trajectories are picked (fewer than 8), so the factor minimises the summed squared
    # error of e_{t+1} - rho e_t over them: no other factor does better.
    errors = train_errors(op, stride)
    rho = float(carry[0, 1, 0])
    assert 0 < rho < 1

    def residual(factor):
        return sum(float((e[1:] - factor * e[:-1]).double().pow(2).sum()) for e, _ in errors)

    assert residual(rho) <= min(
        residual(0.0), residual(1.0), residual(rho * 0.9), residual(min(1.0, rho * 1.1))
    )


def test_decoding_carries_the_known_frames_error_and_is_persistence_for_a_still_operator(trained):
    op = operator_of(trained)
    task = op.tasks[0]
    windows = op.windows("val", fields=True)
    batch = {key: value for key, value in torch.utils.data.default_collate([windows[0], windows[1]]).items()}
    batch["task_names"] = [task.name] * 2
    window, coords = batch["window"], flat_points(batch["coords"])
    u0 = flat_points(window[:, 0])
    with torch.no_grad():
        z0 = op.model.encoder(window[:, 0], batch["coords"])
        decode = op.decoder_for(batch, z0, u0, coords)
        plain = denormalize(op.normalizers, batch["task_names"], op.model.decoder(z0, coords, channels=1))
        physical_u0 = denormalize(op.normalizers, batch["task_names"], u0)
        op._carry = torch.ones_like(op.error_carry())  # an error that never changes: all of it is carried
        still = op.decoder_for(batch, z0, u0, coords)(z0, 3)
    torch.testing.assert_close(
        still, physical_u0, rtol=1e-5, atol=1e-6
    )  # the untrained identity: persistence
    rho = float(operator_of(trained).error_carry()[0, 2, 0])
    torch.testing.assert_close(decode(z0, 2), plain + rho * (physical_u0 - plain), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        off = operator_of(trained, "stages.operator.carry_error=false")
        torch.testing.assert_close(off.decoder_for(batch, z0, u0, coords)(z0, 2), plain)


def test_a_subspace_that_decodes_validation_frames_worse_is_dropped(tmp_path, monkeypatch, caplog):
    config = tiny_burgers_config(tmp_path)
    run = tmp_path / "run"
    assert ups(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    seen = []
    real = operator_stage.OperatorStage.subspace_cost

    def costly(self, device):
        seen.append(real(self, device))
        return 1.5

    monkeypatch.setattr(operator_stage.OperatorStage, "subspace_cost", costly)
    with caplog.at_level(logging.WARNING, logger="ups.stages.operator"):
        assert (
            ups(
                [
                    "train",
                    "--config",
                    str(config),
                    "--stage",
                    "operator",
                    "--run-dir",
                    str(run),
                    "stages.operator.subspace_dim=8",
                ]
            )
            == 0
        )
    assert (
        "error is 1.50x that of the full latents (more than 1.05x)" in caplog.text
        and "not used" in caplog.text
    )
    assert len(seen) == 1 and np.isfinite(seen[0]) and seen[0] > 0.5  # the real measurement ran
    op = operator_of((config, run), "stages.operator.subspace_dim=8")
    assert not op.model.operator._subspace_ready and not bool(op.model.operator.subspace_fitted)
    z = torch.randn(2, *op.latent_shape)
    assert torch.equal(op.model.operator.project(z), z)


def test_a_subspace_that_decodes_within_tolerance_is_kept(tmp_path, monkeypatch):
    config = tiny_burgers_config(tmp_path)
    run = tmp_path / "run"
    assert ups(["train", "--config", str(config), "--stage", "autoencoder", "--run-dir", str(run)]) == 0
    monkeypatch.setattr(operator_stage.OperatorStage, "subspace_cost", lambda self, device: 1.01)
    assert (
        ups(
            [
                "train",
                "--config",
                str(config),
                "--stage",
                "operator",
                "--run-dir",
                str(run),
                "stages.operator.subspace_dim=8",
            ]
        )
        == 0
    )
    op = operator_of((config, run), "stages.operator.subspace_dim=8")
    assert op.model.operator._subspace_ready
