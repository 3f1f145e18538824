"""The Lightning engine's loggers of a stage: metrics.csv, the run's one TensorBoard run and the
run's W&B run, every one on the run's continuous step axis (``RunDir.step_offset``)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from ups import tracking
from ups.engines.metrics_csv import MetricsCSV, metrics_row
from ups.runs import RunDir


class StageCSVLogger(Logger):
    """``logs/<stage>/metrics.csv`` (``ups.engines.metrics_csv``, as the native engine writes it), its
    steps shifted by ``step_offset``; a resumed fit (``append``) continues the file. Rank 0 writes."""

    def __init__(self, log_dir: Path, step_offset: int, *, append: bool):
        super().__init__()
        self.folder, self.step_offset, self.append = Path(log_dir), step_offset, append
        self._csv: MetricsCSV | None = None

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return self.folder.name

    @property
    def log_dir(self) -> str:
        return str(self.folder)

    @property
    def save_dir(self) -> str:
        return str(self.folder)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._csv is None:  # opened at the first row, by rank 0 only
            self._csv = MetricsCSV(self.folder / "metrics.csv", append=self.append)
        self._csv.log(metrics_row(metrics, (step or 0) + self.step_offset))

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the resolved config is the run folder's config.yaml


class RunTensorBoardLogger(TensorBoardLogger):
    """The run's one TensorBoard run, ``logs/tensorboard/``: every stage writes there (an event
    file each), its tags prefixed with the stage (``operator/val/nrmse``), its steps shifted by
    ``step_offset`` so that the stages follow each other on one step axis."""

    def __init__(self, run: RunDir, stage_name: str, step_offset: int):
        super().__init__(
            save_dir=run.tensorboard_dir.parent,
            name=run.tensorboard_dir.name,
            version="",
            default_hp_metric=False,
        )
        self.stage_name, self.step_offset = stage_name, step_offset

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        tagged = {f"{self.stage_name}/{key}": value for key, value in metrics.items()}
        super().log_metrics(tagged, None if step is None else step + self.step_offset)


class WandbStageLogger(Logger):
    """Forwards the stage's metrics to the run's open W&B run (``ups.tracking``) as
    ``training/<stage>/<metric>``, steps shifted by ``step_offset``."""

    def __init__(self, stage_name: str, step_offset: int):
        super().__init__()
        self.stage_name, self.step_offset = stage_name, step_offset

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str:
        return self.stage_name

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        tracker = tracking.active()
        if tracker is not None:
            tracker.log_training(self.stage_name, metrics, (step or 0) + self.step_offset)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the tracker records the whole resolved config when it opens the run
