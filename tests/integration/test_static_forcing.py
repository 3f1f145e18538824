"""The static forcing of an incompressible Navier-Stokes file conditions the operator: the windows
carry it normalised, the operator's forcing encoder turns it into tokens every step reads, and
training moves the forcing gate away from zero so that the prediction depends on the forcing."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tests.conftest import write_ns_incomp
from tests.tiny_runs import write_config

from ups.cli import main as ups
from ups.data.latent_pairs import WindowDataset, collate_task_batch
from ups.data.summary import load_config_tasks
from ups.errors import DataError
from ups.eval.run import EvaluationRequest, build_evaluator, checkpoints_of
from ups.models import FieldEncoder, LatentOperator
from ups.pipeline.runner import build_stage
from ups.resolve import load_config
from ups.runs import RunDir

NS_FILE = "ns_incom_inhom_2d_512-0.h5"


def ns_config(root, **writer):
    data = root / "data"
    data.mkdir()
    write_ns_incomp(data / NS_FILE, **{"n": 8, "t": 11, "nx": 8, "ny": 8, **writer})
    return write_config(root / "ns.yaml", data, [{"name": "ns", "path": NS_FILE}])


def test_windows_carry_the_static_forcing_normalised_by_the_train_split(tmp_path):
    config = load_config(ns_config(tmp_path))
    task = load_config_tasks(config)[0]
    windows = WindowDataset([task], "train", horizon=2, stride=1)
    item = windows[0]
    _, trajectory, _ = windows.window(0)
    force = task.file.static_field(trajectory)
    assert item["static"].shape == (8, 8, 2) and item["window"].shape == (3, 8, 8, 3)
    np.testing.assert_allclose(item["static"].numpy(), task.input_normalizer.normalize(force), rtol=1e-6)
    train = np.stack([task.input_normalizer.normalize(task.file.static_field(i)) for i in task.split.train])
    np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_a_file_without_forcing_has_no_static_item(tmp_path):
    task = load_config_tasks(load_config(ns_config(tmp_path, force=False)))[0]
    assert (
        task.input_normalizer is None and "static" not in WindowDataset([task], "val", horizon=2, stride=1)[0]
    )


def test_a_non_finite_forcing_is_refused_before_training(tmp_path):
    config = ns_config(tmp_path)
    with h5py.File(tmp_path / "data" / NS_FILE, "r+") as f:
        f["force"][5, 2, 3, 1] = np.nan
    with pytest.raises(DataError, match=r"static field 'force' \(sample 5, .*first at index \(2, 3, 1\)"):
        load_config_tasks(load_config(config))


def forcing_operator(gate: float = 0.0) -> LatentOperator:
    torch.manual_seed(0)
    operator = LatentOperator(
        4, 8, depth=1, heads=2, forcing=FieldEncoder({2: [2]}, tokens=4, dim=8, hidden=8, depth=0)
    )
    with torch.no_grad():
        operator.proj_out.weight.normal_(0, 0.1)  # a non-trivial step
        operator.forcing_gate.weight.normal_(
            0, gate
        )  # not constant: LayerNorm would remove a per-token shift
    return operator


def step_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    coords = torch.stack(torch.meshgrid(torch.linspace(0, 1, 6), torch.linspace(0, 1, 5), indexing="ij"), -1)
    return (
        torch.randn(batch, 4, 8, generator=g),
        torch.full((batch,), 0.1),
        torch.zeros(batch, 0),
        torch.zeros(batch, dtype=torch.long),
        torch.randn(batch, 6, 5, 2, generator=g),
        coords.expand(batch, -1, -1, -1),
    )


def test_the_untrained_gate_ignores_the_forcing_and_a_trained_one_reads_it():
    z, dt, params, task_id, static, coords = step_inputs()
    closed = forcing_operator()
    forcing = closed.encode_forcing(static, coords)
    assert forcing.shape == (2, 4, 8)
    torch.testing.assert_close(closed(z, dt, params, task_id, forcing), closed(z, dt, params, task_id))
    opened = forcing_operator(gate=0.05)
    one = opened(z, dt, params, task_id, opened.encode_forcing(static, coords))
    other = opened(z, dt, params, task_id, opened.encode_forcing(-static, coords))
    assert not torch.allclose(one, other)
    one.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in opened.forcing.parameters())


def test_an_operator_without_a_forcing_encoder_refuses_a_static_field():
    z, dt, params, task_id, static, coords = step_inputs()
    operator = LatentOperator(4, 8, depth=1, heads=2)
    assert operator.encode_forcing(None, coords) is None
    with pytest.raises(ValueError, match="built without a forcing encoder"):
        operator.encode_forcing(static, coords)


def test_the_trained_operator_is_conditioned_on_the_forcing(tmp_path):
    config = ns_config(tmp_path)
    run = tmp_path / "run"
    for stage in ("autoencoder", "operator"):
        assert ups(["train", "--config", str(config), "--stage", stage, "--run-dir", str(run)]) == 0
    op = build_evaluator(load_config(config), checkpoints_of(EvaluationRequest(run_dir=run))).dynamics
    operator = op.model.operator
    assert (
        operator.forcing is not None and operator.forcing_gate.weight.abs().sum() > 0
    )  # training moved the gate
    batch = collate_task_batch([WindowDataset(op.tasks, "test", horizon=1, stride=1)[i] for i in range(2)])
    z0 = op.encode_window(batch)[:, 0]
    with torch.no_grad():
        forced = op.rollout(batch, z0, 1)
        unforced = op.rollout({**batch, "static": torch.zeros_like(batch["static"])}, z0, 1)
    assert not torch.allclose(forced, unforced)
    # DDP/FSDP: the forcing encoder trains on every batch of this one-task config, and is frozen downstream
    cfg = load_config(config)
    assert build_stage(cfg, "operator", RunDir(run)).all_parameters_used_every_step()


def test_a_forcing_encoder_that_sits_out_some_batches_is_reported_to_ddp():
    """A task without a static field leaves the trained forcing encoder unused on its batches."""
    from types import SimpleNamespace

    from ups.stages.operator import OperatorStage

    operator = LatentOperator(
        4, 8, depth=1, heads=2, forcing=FieldEncoder({2: [2]}, tokens=4, dim=8, hidden=8, depth=0)
    )
    forced, plain = (
        SimpleNamespace(info=SimpleNamespace(static_channels=c)) for c in (("force_x", "force_y"), ())
    )
    stage = SimpleNamespace(
        model=SimpleNamespace(operator=operator), dynamics=SimpleNamespace(tasks=[forced, plain])
    )
    assert not OperatorStage.all_parameters_used_every_step(stage)
    stage.dynamics.tasks = [forced]
    assert OperatorStage.all_parameters_used_every_step(stage)
    stage.dynamics.tasks = [forced, plain]
    operator.requires_grad_(False)  # frozen, as under the correctors
    assert OperatorStage.all_parameters_used_every_step(stage)
