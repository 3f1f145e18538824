"""Checkpoints verified and kept: the sha256 seal finds any flipped byte, the last
``checkpoint.keep_last`` are kept and a damaged newest one falls back to the previous, and a
moved run folder reads and writes only its own files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.errors import UPSError  # noqa: E402
from ups.pipeline.runner import fit_in_run  # noqa: E402
from ups.runs import RunDir  # noqa: E402
from ups.seal import verify  # noqa: E402

ENGINES = ("lightning", "native")
STAGE = "autoencoder"  # the toy stage's name


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def record_offset(path: Path, suffix: str) -> int:
    """Where the bytes of the zip record whose name ends with ``suffix`` begin."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length


def test_every_single_flipped_byte_is_found_and_an_intact_file_loads(tmp_path):
    path = save_checkpoint(
        {"state_dict": {"model.w": torch.arange(4.0)}, "ups": {"stage": STAGE}}, tmp_path / "a.ckpt"
    )
    assert torch.equal(load_checkpoint(path)["state_dict"]["model.w"], torch.arange(4.0))
    intact = path.read_bytes()
    missed = []
    with open(path, "rb+") as handle:  # flipped in place: one open, not one per byte
        for offset, byte in enumerate(intact):  # every byte: headers, padding, data.pkl, tensors, the seal
            handle.seek(offset)
            handle.write(bytes([byte ^ 0x01]))
            handle.flush()
            try:  # the seal's own check, which picks the checkpoint a resume falls back from
                verify(path)
                missed.append(offset)
            except CheckpointError as exc:
                assert f"checkpoint {path}" in str(exc) and "damaged" in str(exc), (offset, str(exc))
            handle.seek(offset)
            handle.write(bytes([byte]))
    assert path.read_bytes() == intact
    assert missed == [], f"flips at {missed} of {len(intact)} bytes went unnoticed"


@pytest.mark.parametrize("where", ["a tensor's bytes", "data.pkl", "the zip's end", "the seal"])
def test_a_flipped_byte_in_a_trained_checkpoint_is_found(tmp_path, where):
    cfg = with_keys(toy_config(), {"stages.autoencoder.epochs": 1})
    path = fit_stage(ToyStage(cfg), cfg, RunDir(tmp_path).init(cfg), engine="native").last_path
    size = path.stat().st_size
    offset = {
        "a tensor's bytes": record_offset(path, "data/0") + 5,
        "data.pkl": record_offset(path, "data.pkl") + 40,
        "the zip's end": size - 100,
        "the seal": size - 1,
    }[where]
    flip(path, offset)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is damaged"):
        load_checkpoint(path)


def test_a_checkpoint_written_before_seals_still_loads(tmp_path):
    torch.save({"state_dict": {"model.w": torch.ones(2)}}, tmp_path / "old.ckpt")
    assert torch.equal(load_checkpoint(tmp_path / "old.ckpt")["state_dict"]["model.w"], torch.ones(2))


def test_the_kept_last_checkpoints_rotate_newest_first(tmp_path):
    run = RunDir(tmp_path)

    def save(step: int, keep: int) -> None:
        checkpoint = {"state_dict": {}, "global_step": step}
        save_checkpoint(
            checkpoint, run.last_checkpoint(STAGE), before_replace=lambda: run.rotate_last(STAGE, keep)
        )

    for step in range(4):
        save(step, keep=3)
    kept = run.last_checkpoints(STAGE)
    assert [p.name for p in kept] == ["last.ckpt", "last-1.ckpt", "last-2.ckpt"]
    assert [load_checkpoint(p)["global_step"] for p in kept] == [3, 2, 1]
    save(4, keep=1)  # a lower keep_last drops the older ones at the next save
    assert [p.name for p in run.checkpoint_dir(STAGE).iterdir()] == ["last.ckpt"]


def trained_twice(tmp_path: Path, engine: str, **keys) -> RunDir:
    """A 2-epoch toy run: last.ckpt (epoch 1, step 10) and last-1.ckpt (epoch 0, step 5)."""
    cfg = with_keys(toy_config(), keys)
    run = RunDir(tmp_path / engine).init(cfg)
    fit_stage(ToyStage(cfg), cfg, run, engine=engine)
    return run


@pytest.mark.parametrize("engine", ENGINES)
def test_a_resume_falls_back_to_the_previous_last_checkpoint_when_the_newest_is_damaged(
    tmp_path, engine, caplog
):
    run = trained_twice(tmp_path, engine)
    newest, previous = run.last_checkpoints(STAGE)
    assert previous.name == "last-1.ckpt" and load_checkpoint(previous)["global_step"] == 5
    flip(newest, newest.stat().st_size // 2)
    cfg = with_keys(toy_config(), {"stages.autoencoder.epochs": 3})
    with caplog.at_level(logging.WARNING, logger="ups"):
        result = fit_stage(ToyStage(cfg), cfg, run, engine=engine, resume=True)
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert warnings and all(str(newest) in w and str(previous) in w for w in warnings)
    assert result.global_step == 15  # epochs 1 and 2 trained again from epoch 0's checkpoint
    assert load_checkpoint(run.last_checkpoint(STAGE))["global_step"] == 15


def test_a_damaged_only_last_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    run = trained_twice(tmp_path, "native", **{"checkpoint.keep_last": 1})
    [newest] = run.last_checkpoints(STAGE)
    flip(newest, 100)
    before = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    cfg = with_keys(toy_config(), {"stages.autoencoder.epochs": 3, "checkpoint.keep_last": 1})
    with pytest.raises(
        CheckpointError, match=rf"every kept checkpoint is damaged:\n  - checkpoint {newest} is damaged"
    ):
        fit_stage(ToyStage(cfg), cfg, run, engine="native", resume=True)
    with pytest.raises(CheckpointError, match="every kept checkpoint is damaged"):
        run.best_checkpoint(STAGE)  # no best recorded: the last, checked
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == before


def test_recorded_paths_are_read_in_the_folder_that_holds_them(tmp_path):
    """Relative records resolve in the folder; an absolute one of another folder (recorded before
    records were relative) names this folder's file of that name; a recorded best that is missing
    here is an error, never the other folder's file nor silently the last."""
    origin, copy = RunDir(tmp_path / "origin"), RunDir(tmp_path / "copy")
    for run in (origin, copy):
        run.checkpoint_dir(STAGE).mkdir(parents=True)
        save_checkpoint({"state_dict": {}}, run.last_checkpoint(STAGE))
    best = origin.best_checkpoint_path(STAGE, 1, 10)
    save_checkpoint({"state_dict": {}}, best)
    assert origin.relative(best) == "checkpoints/autoencoder/best-epoch001-step000010.ckpt"
    copy.status_path.write_text(json.dumps({STAGE: {"state": "done", "best_path": str(best)}}))
    with pytest.raises(UPSError, match=r"recorded its best checkpoint .* is missing from .*copy"):
        copy.best_checkpoint(STAGE)
    shutil.copy(best, copy.checkpoint_dir(STAGE))
    assert copy.best_checkpoint(STAGE) == copy.checkpoint_dir(STAGE) / best.name
    copy.status_path.write_text(json.dumps({STAGE: {"state": "done", "best_path": origin.relative(best)}}))
    assert copy.best_checkpoint(STAGE) == copy.checkpoint_dir(STAGE) / best.name


@pytest.mark.parametrize("engine", ENGINES)
def test_a_copied_run_resumes_on_its_own_best_k_files(tmp_path, engine):
    """The copy keeps and ranks its own best-k files (Lightning's ModelCheckpoint state holds
    absolute paths: re-rooted on load) and the original folder is neither read nor written."""
    origin = trained_twice(tmp_path, engine, **{"checkpoint.save_top_k": 2})
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(origin.root, copy.root)
    before = {p: p.read_bytes() for p in origin.root.rglob("*") if p.is_file()}
    cfg = with_keys(toy_config(), {"stages.autoencoder.epochs": 3, "checkpoint.save_top_k": 2})
    result = fit_stage(ToyStage(cfg), cfg, copy, engine=engine, resume=True)
    assert {p: p.read_bytes() for p in origin.root.rglob("*") if p.is_file()} == before
    last = load_checkpoint(copy.last_checkpoint(STAGE))
    if engine == "native":
        best_k = [copy.reroot(p, STAGE) for p in last["ups"]["selection"]["best_k_models"]]
    else:
        state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
        assert state["dirpath"] == os.path.realpath(copy.checkpoint_dir(STAGE))
        best_k = [Path(p) for p in state["best_k_models"]]
    assert len(best_k) == 2 and all(
        p.parent.resolve() == copy.checkpoint_dir(STAGE).resolve() for p in best_k
    )
    assert all(p.is_file() for p in best_k)
    assert result.best_path.resolve().parent == copy.checkpoint_dir(STAGE).resolve()


def test_a_fresh_fit_keeps_no_earlier_attempts_last_checkpoint_as_its_fall_back(tmp_path):
    # without --resume, an earlier (failed or killed) attempt's last checkpoints are moved aside
    cfg = with_keys(toy_config(), {"stages.autoencoder.epochs": 1})
    run = RunDir(tmp_path / "run").init(cfg)
    fit_stage(ToyStage(cfg), cfg, run, engine="native")
    earlier = run.last_checkpoint(STAGE).read_bytes()
    fit_in_run(ToyStage(cfg), cfg, run, engine="native", resume=False)
    assert run.last_checkpoints(STAGE) == [run.last_checkpoint(STAGE)]  # one epoch: one last, its own
    (moved,) = run.root.glob(f"superseded/*/checkpoints/{STAGE}/last.ckpt")
    assert moved.read_bytes() == earlier
