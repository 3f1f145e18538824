"""Both engines drive the same toy Stage and agree number for number."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import PlateauStage, ToyStage, toy_config  # noqa: E402
from ups.checkpoint import load_checkpoint, stage_weights  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.data.sampling import TaskBatchSampler  # noqa: E402
from ups.engines import fit_checked, fit_stage, preflight  # noqa: E402
from ups.engines.lightning_adapter import refuse_in_process_launchers  # noqa: E402
from ups.engines.loaders import build_loaders  # noqa: E402
from ups.engines.settings import batch_size, ema_decay  # noqa: E402
from ups.errors import UPSError  # noqa: E402
from ups.runs import RunDir  # noqa: E402

ENGINES = ("lightning", "native")


def fit(tmp_path, name, cfg, engine, *, stage_cls=ToyStage, resume=False):
    run = RunDir(tmp_path / name).init(cfg)
    return fit_stage(stage_cls(cfg), cfg, run, engine=engine, resume=resume), run


def assert_close(a, b, rel=1e-6):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=rel, atol=1e-12), (a - b).abs().max()


def ckpt_files(run) -> list[str]:
    return sorted(p.name for p in run.checkpoint_dir("autoencoder").iterdir())


@pytest.mark.parametrize(
    "training",
    [
        {},
        {"accumulate_grad_batches": 2, "gradient_clip_val": 0.5},
        {"ema_decay": 0.9},
    ],
    ids=["plain", "accumulate+clip", "ema"],
)
def test_engines_agree_step_for_step(tmp_path, training):
    cfg = toy_config(**training)
    lit, lit_run = fit(tmp_path, "lightning", cfg, "lightning")
    nat, nat_run = fit(tmp_path, "native", cfg, "native")

    assert len(lit.train_losses) == len(nat.train_losses) == 2 * 5
    assert_close(lit.train_losses, nat.train_losses)
    assert [h["step"] for h in lit.val_history] == [h["step"] for h in nat.val_history]
    assert_close(lit.val_history[-1]["val/nrmse"], nat.val_history[-1]["val/nrmse"])
    assert lit.global_step == nat.global_step == 2 * (3 if training.get("accumulate_grad_batches") else 5)
    assert ckpt_files(lit_run) == ckpt_files(nat_run)
    lit_ckpt, nat_ckpt = load_checkpoint(lit.last_path), load_checkpoint(nat.last_path)
    assert lit_ckpt["state_dict"].keys() == nat_ckpt["state_dict"].keys()
    for key, value in lit_ckpt["state_dict"].items():
        assert_close(value, nat_ckpt["state_dict"][key])
    for key in ("epoch", "global_step"):
        assert lit_ckpt[key] == nat_ckpt[key]
    if "ema_decay" in training:
        for key, value in lit_ckpt["ema_state_dict"].items():
            assert_close(value, nat_ckpt["ema_state_dict"][key])
            assert not torch.equal(value, lit_ckpt["state_dict"][key])


def test_engines_agree_when_validating_every_second_epoch(tmp_path):
    cfg = toy_config(val_every_n_epochs=2)
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 5, "stages.autoencoder.patience": 5})
    lit, lit_run = fit(tmp_path, "lightning", cfg, "lightning")
    nat, nat_run = fit(tmp_path, "native", cfg, "native")
    # epochs 1 and 3 validate; the checkpoints are written there only, so last.ckpt is epoch 3's
    for result in (lit, nat):
        assert [(h["epoch"], h["step"]) for h in result.val_history] == [(1, 10), (3, 20)]
    assert_close(lit.train_losses, nat.train_losses)
    assert_close([h["val/nrmse"] for h in lit.val_history], [h["val/nrmse"] for h in nat.val_history])
    assert (
        ckpt_files(lit_run)
        == ckpt_files(nat_run)
        == ["best-epoch001-step000010.ckpt", "best-epoch003-step000020.ckpt", "last-1.ckpt", "last.ckpt"]
    )
    lit_ckpt, nat_ckpt = load_checkpoint(lit.last_path), load_checkpoint(nat.last_path)
    assert (
        (lit_ckpt["epoch"], lit_ckpt["global_step"])
        == (nat_ckpt["epoch"], nat_ckpt["global_step"])
        == (3, 20)
    )
    for key, value in lit_ckpt["state_dict"].items():
        assert_close(value, nat_ckpt["state_dict"][key])


@pytest.mark.parametrize("engine", ENGINES)
def test_patience_counts_validations_not_epochs(tmp_path, engine):
    cfg = toy_config(val_every_n_epochs=2)
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 12, "stages.autoencoder.patience": 2})
    result, _ = fit(tmp_path, engine, cfg, engine, stage_cls=PlateauStage)
    # validations after epochs 1, 3 and 5: the first sets the best, two more without improvement stop
    assert result.epochs_run == 6 and result.stopped_early
    assert [h["epoch"] for h in result.val_history] == [1, 3, 5]


@pytest.mark.parametrize("engine", ENGINES)
def test_resume_when_validating_every_second_epoch(tmp_path, engine):
    def config(epochs):
        cfg = toy_config(val_every_n_epochs=2)
        changes = {"optimizer.scheduler": "none", "optimizer.warmup_steps": 7}
        return with_keys(
            cfg, {**changes, "stages.autoencoder.epochs": epochs, "stages.autoencoder.patience": 5}
        )

    straight, _ = fit(tmp_path, "straight", config(4), engine)
    run = RunDir(tmp_path / "resumed").init(config(2))
    first = fit_stage(ToyStage(config(2)), config(2), run, engine=engine)
    second = fit_stage(ToyStage(config(4)), config(4), run, engine=engine, resume=True)
    assert (first.global_step, second.global_step, second.epochs_run) == (10, 20, 4)
    assert [h["epoch"] for h in second.val_history] == [3]
    assert_close(first.train_losses + second.train_losses, straight.train_losses)
    assert_close(second.val_history[-1]["val/nrmse"], straight.val_history[-1]["val/nrmse"])


@pytest.mark.parametrize("engine", ENGINES)
def test_early_stopping_on_a_plateau(tmp_path, engine):
    cfg = toy_config()
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 8, "stages.autoencoder.patience": 2})
    result, _ = fit(tmp_path, engine, cfg, engine, stage_cls=PlateauStage)
    # epoch 0 sets the best, epochs 1 and 2 do not improve: patience 2 is used up.
    assert result.epochs_run == 3 and result.stopped_early
    assert [h["val/nrmse"] for h in result.val_history] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_best_k_checkpoints_are_the_k_lowest(tmp_path, engine):
    cfg = toy_config()
    changes = {"stages.autoencoder.epochs": 5, "stages.autoencoder.patience": 5, "checkpoint.save_top_k": 2}
    cfg = with_keys(cfg, {**changes, "optimizer.lr": 5e-2})
    result, run = fit(tmp_path, engine, cfg, engine)
    scores = {(h["epoch"], h["step"]): h["val/nrmse"] for h in result.val_history}
    lowest = sorted(scores, key=scores.get)[:2]
    expected = sorted(f"best-epoch{e:03d}-step{s:06d}.ckpt" for e, s in lowest)
    assert ckpt_files(run) == sorted(expected + ["last-1.ckpt", "last.ckpt"])  # checkpoint.keep_last=2
    kept = load_checkpoint(run.checkpoint_dir("autoencoder") / "last.ckpt")
    if engine == "native":  # its own record; Lightning's is its ModelCheckpoint's state
        best_k = {
            run.reroot(p, "autoencoder"): s for p, s in kept["ups"]["selection"]["best_k_models"].items()
        }
    else:
        best_k = next(v for k, v in kept["callbacks"].items() if k.startswith("ModelCheckpoint"))[
            "best_k_models"
        ]
    assert sorted(Path(p).name for p in best_k) == expected
    for path, score in best_k.items():
        assert_close(
            float(score),
            scores[(load_checkpoint(path)["epoch"], load_checkpoint(path)["global_step"])],
            rel=1e-6,
        )
    assert result.best_path.name == f"best-epoch{lowest[0][0]:03d}-step{lowest[0][1]:06d}.ckpt"
    assert_close(result.best_score, min(scores.values()))


@pytest.mark.parametrize("engine", ENGINES)
def test_validation_off_writes_only_last(tmp_path, engine, caplog):
    # a last checkpoint at each of the two epochs' ends, in both engines: the two kept
    cfg = toy_config(skip_lightning_val=True)
    with caplog.at_level(logging.INFO, logger="ups"):
        result, run = fit(tmp_path, engine, cfg, engine)
    assert ckpt_files(run) == ["last-1.ckpt", "last.ckpt"]
    assert load_checkpoint(run.kept_last_checkpoint("autoencoder", 1))["global_step"] == 5
    assert result.val_history == [] and result.best_path is None and result.best_score is None
    assert result.global_step == 10 and result.epochs_run == 2
    assert sum("validation is off" in r.getMessage() for r in caplog.records if r.name == "ups") == 1
    header = (run.log_dir("autoencoder") / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/" not in header


@pytest.mark.parametrize("validate", [True, False], ids=["validation", "validation-off"])
@pytest.mark.parametrize("engine", ENGINES)
def test_resume_continues_as_if_uninterrupted(tmp_path, engine, validate):
    # with validation off, from the last.ckpt of the first epoch's end, in either engine
    two = with_keys(
        toy_config(skip_lightning_val=not validate),
        {"optimizer.scheduler": "none", "optimizer.warmup_steps": 7},
    )  # schedule independent of the epoch count
    one = with_keys(two, {"stages.autoencoder.epochs": 1})
    straight, _ = fit(tmp_path, "straight", two, engine)
    run = RunDir(tmp_path / "resumed").init(one)
    first = fit_stage(ToyStage(one), one, run, engine=engine)
    second = fit_stage(ToyStage(two), two, run, engine=engine, resume=True)
    assert (first.global_step, second.global_step, second.epochs_run) == (5, 10, 2)
    assert_close(first.train_losses + second.train_losses, straight.train_losses)
    if validate:
        assert_close(second.val_history[-1]["val/nrmse"], straight.val_history[-1]["val/nrmse"])


@pytest.mark.parametrize("writer", ENGINES)
def test_a_resume_in_the_other_engine_is_refused_and_changes_nothing(tmp_path, writer):
    reader = next(e for e in ENGINES if e != writer)
    cfg = toy_config()
    result, run = fit(tmp_path, "run", cfg, writer)
    before = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    with pytest.raises(UPSError) as refused:
        fit_stage(ToyStage(cfg), cfg, run, engine=reader, resume=True)
    assert str(refused.value) == (
        f"resume: {result.last_path} was written by the {writer} engine, and only the engine that wrote "
        f"a checkpoint resumes it. Resume with --engine {writer}; or, to train stage autoencoder with "
        f"the {reader} engine, start it afresh in a new run folder on this run's upstream checkpoints "
        f"(ups train --stage autoencoder --engine {reader} --from-run {run.root})."
    )
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == before


def test_resume_without_last_checkpoint_is_refused(tmp_path):
    cfg = toy_config()
    with pytest.raises(UPSError, match="last.ckpt"):
        fit(tmp_path, "empty", cfg, "native", resume=True)


def test_native_engine_refuses_several_devices(tmp_path):
    cfg = toy_config(devices=2)
    with pytest.raises(UPSError, match="one device"):
        fit(tmp_path, "multi", cfg, "native")


def test_weights_equal_after_loading_a_lightning_checkpoint(tmp_path):
    from ups.checkpoint import load_into

    cfg = toy_config()
    lit, _ = fit(tmp_path, "lightning", cfg, "lightning")
    ckpt = load_checkpoint(lit.last_path)
    fresh = ToyStage(cfg)
    load_into(fresh, ckpt)
    for key, value in stage_weights(ckpt).items():
        assert torch.equal(fresh.model.state_dict()[key], value)


@pytest.mark.parametrize("engine", ENGINES)
def test_resume_appends_to_metrics_csv(tmp_path, engine):
    one = with_keys(toy_config(), {"stages.autoencoder.epochs": 1})
    run = RunDir(tmp_path / "run").init(one)
    fit_stage(ToyStage(one), one, run, engine=engine)
    fit_stage(ToyStage(toy_config()), toy_config(), run, engine=engine, resume=True)
    import csv

    rows = list(csv.DictReader((run.log_dir("autoencoder") / "metrics.csv").open()))
    assert sorted({r["epoch"] for r in rows if r["epoch"]}) == [
        "0",
        "1",
    ]  # (learning-rate rows carry no epoch)
    assert sum(1 for r in rows if r["val/nrmse"]) == 2


def test_loaders_take_the_loader_knobs_and_the_task_aware_sampler():
    cfg = toy_config(num_workers=2, prefetch_factor=3, persistent_workers=True, pin_memory=True)
    train, val = build_loaders(ToyStage(cfg), cfg, validate=True, rank=1, world_size=2)
    assert (train.num_workers, train.prefetch_factor, train.persistent_workers) == (2, 3, True)
    assert train.pin_memory is False  # nothing to pin for on a CPU run
    assert isinstance(train.batch_sampler, TaskBatchSampler) and train.batch_sampler.rank == 1
    assert len(train) == 3 and len(val) == 1  # 40 samples in batches of 8, dealt to 2 ranks
    assert not val.batch_sampler.shuffle


def test_a_split_too_small_for_the_ranks_is_refused_before_training(tmp_path):
    cfg = toy_config(devices=16)  # 12 val samples cannot give 16 ranks a batch each
    with pytest.raises(UPSError, match=r"val split on 16 rank\(s\): .*fewer devices"):
        preflight(ToyStage(cfg), cfg, RunDir(tmp_path / "run"), engine="lightning", resume=False)
    assert not (tmp_path / "run").exists()


def test_launchers_that_start_ranks_in_process_are_refused():
    import lightning.pytorch as pl

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
    with pytest.raises(UPSError, match=r"from the command line .*training.strategy=ddp"):
        refuse_in_process_launchers(trainer)
    refuse_in_process_launchers(pl.Trainer(accelerator="cpu", devices=1, logger=False))  # one device: fine


def test_a_stage_can_have_its_own_batch_size_and_ema(tmp_path):
    cfg = toy_config(ema_decay=0.9)
    cfg = with_keys(cfg, {"stages.autoencoder.batch_size": 5, "stages.autoencoder.ema_decay": 0.5})
    train, _ = build_loaders(ToyStage(cfg), cfg, validate=True)
    assert len(train) == 8 and max(len(b) for b in train.batch_sampler) == 5  # 40 samples in batches of 5
    assert (batch_size(cfg, "operator"), ema_decay(cfg, "operator")) == (8, 0.9)  # others keep training.*
    from ups.engines.lightning import StageModule
    from ups.engines.native import NativeTrainer

    assert NativeTrainer(ToyStage(cfg), cfg, RunDir(tmp_path / "run").init(cfg)).ema.decay == 0.5
    assert StageModule(ToyStage(cfg), cfg, total_steps=16).ema.decay == 0.5


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_whole(tmp_path, engine, monkeypatch):
    """Both engines write checkpoints atomically (temporary file, fsync, rename): when the disk
    fills during the second epoch's writes, the first epoch's last.ckpt is still whole and the
    error says what happened."""
    import errno

    cfg = toy_config()
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 2})
    run = RunDir(tmp_path / "run").init(cfg)
    save, writes = torch.save, []

    def filling(obj, target, *args, **kwargs):
        writes.append(target)
        if len(writes) > 2:  # epoch 0: best and last; then the disk is full
            save(obj, target, *args, **kwargs)  # half a file is written ...
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the write fails
        return save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling)
    with pytest.raises(OSError, match="No space left on device"):
        fit_stage(ToyStage(cfg), cfg, run, engine=engine)
    monkeypatch.setattr(torch, "save", save)
    last = run.checkpoint_dir("autoencoder") / "last.ckpt"
    assert load_checkpoint(last)["epoch"] == 0
    assert not [p for p in run.checkpoint_dir("autoencoder").iterdir() if p.name.endswith(".tmp")]
    assert all(
        Path(str(target)).name.endswith(".tmp") for target in writes
    )  # through ups.checkpoint.save_checkpoint


@pytest.mark.parametrize("engine", ["lightning", "native"])
def test_nan_policy_stop_names_the_step_and_term_and_keeps_the_last_checkpoint(tmp_path, engine):
    from toy_stage import FaultyStage

    cfg = toy_config()
    cfg = with_keys(cfg, {"stages.autoencoder.epochs": 2})
    run = RunDir(tmp_path / "run").init(cfg)
    with pytest.raises(UPSError, match=r"non-finite training loss \(subset_mse = nan\) at optimizer step 7"):
        fit_stage(FaultyStage(cfg, nan_loss=[7]), cfg, run, engine=engine)
    assert load_checkpoint(run.checkpoint_dir("autoencoder") / "last.ckpt")["epoch"] == 0  # epoch 0's, whole
    with pytest.raises(
        UPSError,
        match=r"non-finite gradients \(0.weight, 0.bias, 2.weight and 1 "
        r"more\) at optimizer step 2",
    ):
        fit_stage(FaultyStage(cfg, nan_gradient=[2]), cfg, RunDir(tmp_path / "run2").init(cfg), engine=engine)


def test_nan_policy_skip_batch_skips_alike_in_both_engines_and_stops_past_the_limit(tmp_path, caplog):
    from toy_stage import FaultyStage

    cfg = toy_config(nan_policy="skip_batch", max_skipped_batches=2)
    faults = {"nan_loss": [1], "nan_gradient": [6]}
    results = {
        engine: fit_stage(FaultyStage(cfg, **faults), cfg, RunDir(tmp_path / engine).init(cfg), engine=engine)
        for engine in ("lightning", "native")
    }
    lit, nat = (load_checkpoint(results[e].last_path)["state_dict"] for e in ("lightning", "native"))
    for key, value in lit.items():
        assert torch.isfinite(value).all()
        assert_close(value, nat[key])  # the same two batches skipped, the same weights
    assert caplog.text.count("batch skipped (2 of training.max_skipped_batches=2)") == 2
    with pytest.raises(UPSError, match="more than training.max_skipped_batches=2 batches skipped"):
        fit_stage(
            FaultyStage(cfg, nan_loss=[0, 3], nan_gradient=[5]),
            cfg,
            RunDir(tmp_path / "x").init(cfg),
            engine="native",
        )


def test_an_unknown_engine_is_refused_even_after_preflight(tmp_path):
    cfg = toy_config()
    run = RunDir(tmp_path / "run").init(cfg)
    with pytest.raises(UPSError, match="unknown engine 'torch'"):
        fit_checked(ToyStage(cfg), cfg, run, engine="torch", resume=False)
    assert not run.checkpoint_dir("autoencoder").exists()
