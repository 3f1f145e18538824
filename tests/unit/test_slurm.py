"""The Lightning engine under a simulated SLURM job: auto-requeue off unless
``training.slurm_requeue`` asks for it; a requeue checkpoint lives in its stage's folder, is
restored by that stage only (a stale one never), and is removed when the stage ends."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.plugins.environments import SLURMEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402
from toy_stage import ToyStage, toy_config  # noqa: E402
from ups.cli import main  # noqa: E402
from ups.cli.train import requeued  # noqa: E402
from ups.config import with_keys  # noqa: E402
from ups.engines import fit_stage  # noqa: E402
from ups.engines.lightning import build_trainer  # noqa: E402
from ups.runs import RunDir  # noqa: E402

# what `srun` sets for a one-task job (Lightning's SLURMEnvironment.detect reads SLURM_NTASKS and
# SLURM_JOB_NAME; a job named bash or interactive is not detected)
SLURM = {
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "ups-train",
    "SLURM_NODELIST": "node1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


@pytest.fixture
def slurm(monkeypatch, tmp_path):
    """A SLURM job's environment, with an ``scontrol`` on PATH that records what it is asked."""
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert SLURMEnvironment.detect()
    return tmp_path / "scontrol.log"


def cluster(trainer: pl.Trainer):
    return trainer._accelerator_connector.cluster_environment


def test_auto_requeue_is_off_unless_the_config_asks(tmp_path, slurm):
    cfg, run = toy_config(), RunDir(tmp_path / "run")
    default = build_trainer(cfg, run, "autoencoder")
    assert isinstance(cluster(default), SLURMEnvironment) and cluster(default).auto_requeue is False
    assert Path(default.default_root_dir) == run.checkpoint_dir("autoencoder")  # where a requeue writes
    asked = build_trainer(with_keys(cfg, {"training.slurm_requeue": True}), run, "autoencoder")
    assert cluster(asked).auto_requeue is True


def test_a_stale_requeue_checkpoint_is_never_restored(tmp_path, slurm):
    cfg = toy_config()
    other = RunDir(tmp_path / "other").init(cfg)
    fit_stage(ToyStage(cfg), cfg, other, engine="lightning")  # a finished fit of 2 epochs: 10 steps
    run = RunDir(tmp_path / "run").init(cfg)
    for folder in (run.root, run.checkpoint_dir("autoencoder")):  # Lightning's old place, and the stage's
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(other.last_checkpoint("autoencoder"), folder / "hpc_ckpt_1.ckpt")
    result = fit_stage(ToyStage(cfg), cfg, run, engine="lightning")
    assert len(result.train_losses) == 10 and result.global_step == 10  # all of it: nothing restored
    assert not list(run.checkpoint_dir("autoencoder").glob("hpc_ckpt_*"))
    assert not slurm.exists()  # and nothing requeued


class Preempted(RuntimeError):
    pass


class RequeueSignal(pl.Callback):
    """SLURM's requeue signal after optimizer step ``at``; the job then ends (``Preempted``)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)  # Lightning's handler writes hpc_ckpt_1.ckpt, requeues
            raise Preempted


def test_a_requeue_continues_its_stage_from_its_own_checkpoint_and_removes_it(tmp_path, slurm):
    cfg = with_keys(toy_config(), {"training.slurm_requeue": True})
    run = RunDir(tmp_path / "run").init(cfg)
    with pytest.raises(Preempted):
        fit_stage(ToyStage(cfg), cfg, run, engine="lightning", callbacks=[RequeueSignal(at=6)])
    requeue = run.checkpoint_dir("autoencoder") / "hpc_ckpt_1.ckpt"
    assert requeue.is_file() and not list(run.root.glob("hpc_ckpt_*"))
    assert slurm.read_text().split() == ["requeue", "4242"]
    # the requeued job runs the same command: it continues from the requeue checkpoint
    result = fit_stage(ToyStage(cfg), cfg, run, engine="lightning")
    assert len(result.train_losses) == 10 - 6 and result.global_step == 10
    assert not requeue.exists()


def test_requeue_without_a_named_run_folder_is_refused_up_front(tmp_path, capsys):
    config = tiny_burgers_config(tmp_path)
    command = ["train", "--config", str(config), "--stage", "autoencoder", "training.slurm_requeue=true"]
    assert main(command) == 2
    assert "training.slurm_requeue=true needs --run-dir" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_requeued_pipeline_job_continues_its_run_folder(tmp_path, monkeypatch):
    on, off = with_keys(toy_config(), {"training.slurm_requeue": True}), toy_config()
    run = RunDir(tmp_path / "run").init(on)
    run.set_stage_state("autoencoder", "running")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued(on, run.root) and not requeued(off, run.root)
    assert not requeued(on, tmp_path / "a-new-folder")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the job's first run
    assert not requeued(on, run.root)
