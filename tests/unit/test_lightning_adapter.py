"""The Lightning internals UPS relies on (``ups.engines.lightning_adapter``), checked against the
installed Lightning: a release that changes one fails here, by name."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from ups.engines import lightning_adapter as adapter
from ups.engines.loggers import StageCSVLogger
from ups.errors import UPSError


def test_the_logger_connector_says_which_steps_are_written():
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, log_every_n_steps=3)
    assert isinstance(trainer._logger_connector.should_update_logs, bool)
    assert adapter.should_update_logs(trainer) is trainer._logger_connector.should_update_logs


def test_the_script_launcher_is_told_from_in_process_ones():
    script = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    adapter.refuse_in_process_launchers(script)  # each rank its own process: fine
    spawned = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
    with pytest.raises(UPSError, match="starts the ranks from inside this process"):
        adapter.refuse_in_process_launchers(spawned)


def test_a_resumed_stage_logger_keeps_the_earlier_rows_and_columns(tmp_path):
    """Was a check of the private CSV writer (``keep_previous_metrics``); UPS now writes metrics.csv
    itself (``ups.engines.metrics_csv``), so the promise is checked on its logger."""
    metrics = tmp_path / "metrics.csv"
    metrics.write_bytes(b"epoch,step,train/loss\r\n0,1,0.5\r\n")
    logger = StageCSVLogger(tmp_path, step_offset=10, append=True)
    logger.log_metrics({"train/loss": 0.25, "epoch": 0}, step=1)
    assert metrics.read_bytes() == b"epoch,step,train/loss\r\n0,1,0.5\r\n0,11,0.25\r\n"


@pytest.mark.parametrize(
    ("env", "rank"),
    [({}, 0), ({"RANK": "3"}, 3), ({"LOCAL_RANK": "1"}, 1), ({"SLURM_PROCID": "2"}, 2)],
)
def test_the_rank_is_read_from_the_environment(monkeypatch, env, rank):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert adapter.environment_rank() == rank


def test_model_checkpoint_state_is_re_rooted_and_then_restored_whole(tmp_path):
    """ModelCheckpoint's state holds the absolute paths re-rooted here; once its ``dirpath`` is the
    loader's, Lightning restores the best-k record instead of dropping it."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    old, new = tmp_path / "old", tmp_path / "new"
    written = ModelCheckpoint(dirpath=old, monitor="val/nrmse", save_top_k=2)
    written.best_k_models = {str(old / "best-a.ckpt"): 0.5, str(old / "best-b.ckpt"): 0.7}
    written.best_model_path, written.kth_best_model_path = str(old / "best-a.ckpt"), str(old / "best-b.ckpt")
    written.last_model_path = str(old / "last.ckpt")
    state = written.state_dict()
    assert set(adapter.MODEL_CHECKPOINT_PATHS) | {"dirpath", "best_k_models"} <= set(state)
    checkpoint = {"callbacks": {written.state_key: state}}
    adapter.reroot_model_checkpoints(checkpoint, str(new))
    loading = ModelCheckpoint(dirpath=new, monitor="val/nrmse", save_top_k=2)
    loading.load_state_dict(checkpoint["callbacks"][written.state_key])
    assert loading.best_k_models == {str(new / "best-a.ckpt"): 0.5, str(new / "best-b.ckpt"): 0.7}
    assert (loading.best_model_path, loading.kth_best_model_path, loading.last_model_path) == (
        str(new / "best-a.ckpt"),
        str(new / "best-b.ckpt"),
        str(new / "last.ckpt"),
    )
