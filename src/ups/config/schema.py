"""The typed configuration schema: every knob, its type, default, bounds and meaning.

The dataclasses here, with the ``training``/``checkpoint``/``optimizer`` sections of
``training_settings.py`` and the ``stages`` section of ``stage_settings.py``, are the single
source of the defaults. ``configs/defaults.yaml`` and
``docs/configuration.md`` are generated from them (``python -m ups.config.docs``) and a test
keeps both in step.

Field metadata:
    help      one line for the docs
    min/max   inclusive bounds for numbers; ``gt``/``lt`` are exclusive bounds
    read_by   which part of UPS consumes the key (shown in the docs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ups.config.knobs import knob, section
from ups.config.stage_settings import StagesConfig
from ups.config.training_settings import CheckpointConfig, OptimizerConfig, TrainingConfig

# data.sample_limit's default: a 10,000,000-sample split draws an 80 MB permutation, while a 1.4 KB
# file can declare 10**12 samples
SAMPLE_LIMIT = 10_000_000
STAGE_NAMES = ("autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior")
# Keys of earlier configs and where they live now (``ups config migrate`` rewrites them).
MOVED = {
    ("operator",): ("stages", "operator"),
    ("diffusion",): ("stages", "diff_residual"),
    ("consistency",): ("stages", "consistency_distill"),
    ("steady_prior",): ("stages", "steady_prior"),
    ("training", "rollout_horizon"): ("stages", "operator", "rollout_horizon"),
}


# ----------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TaskConfig:
    """One PDE task: a file in a PDEBench layout."""

    name: str = knob("", "task name, used in metric keys (`val/<name>/nrmse`) and splits", read_by="data")
    path: str = knob("", "HDF5 file; relative paths are under `paths.data_dir`", read_by="data")
    layout: Literal["auto", "single", "darcy", "multigroup", "cfd", "ns_incomp"] = knob(
        "auto",
        "PDEBench layout of the file ([data.md](data.md#layouts-read)); `auto` detects it from the keys",
        read_by="data",
    )
    params: dict[str, float] = knob(
        {}, "PDE parameters that override those parsed from the file name and attributes", read_by="data"
    )
    reduced_resolution: int | None = knob(
        None,
        "this task's spatial down-sampling (`data.reduced_resolution` when unset)",
        read_by="data",
        min=1,
    )
    periodic: bool | None = knob(
        None,
        "whether the spatial domain wraps around (periodic boundaries), which the operator's locality "
        "bias follows; unset: true for 1D Burgers, advection and reaction-diffusion files (built-in or "
        "PDEBench's, all periodic, recognised by file name) and files whose name says `periodic`, "
        "false otherwise",
        read_by="operator stage",
    )
    transpose_symmetric: bool | None = knob(
        None,
        "whether swapping the two spatial axes maps the task's (a, u) pairs to pairs of the same problem "
        "(a square grid; coefficients, forcing and boundary conditions alike in x and y): the autoencoder "
        "and steady prior then train on each field or pair transposed with probability 1/2; unset: true "
        "for 2D Darcy files on a square grid (built-in or PDEBench's, recognised by file name), false "
        "otherwise; steady tasks only",
        read_by="autoencoder and steady_prior stages",
    )
    weight: float = knob(
        1.0,
        "training draws of this task per epoch, as a multiple of its samples (of the largest task's with "
        "`data.task_sampling: uniform`); >1 oversamples a small task",
        read_by="sampler",
        gt=0,
    )


@dataclass(frozen=True)
class SplitConfig:
    mode: Literal["seeded", "pdebench"] = knob(
        "seeded",
        "`seeded`: every split drawn by a seeded permutation; `pdebench`: the test split taken as "
        "PDEBench's scripts take it (`test` is their `test_ratio`: the first int(N x test) samples in file "
        "order, the last ones for a multi-group file), validation and train drawn, seeded, from the rest",
        read_by="data",
    )
    train: float = knob(0.8, "fraction of trajectories for training", read_by="data", min=0.0, max=1.0)
    val: float = knob(
        0.1,
        "fraction for validation (0 with validation on: carved off train, with a warning)",
        read_by="data",
        min=0.0,
        max=1.0,
    )
    test: float = knob(0.1, "fraction held out for evaluation", read_by="data", min=0.0, max=1.0)


@dataclass(frozen=True)
class DataConfig:
    tasks: list[TaskConfig] = knob(
        [TaskConfig(name="burgers1d", path="1D_Burgers_Sols_Nu0.01.hdf5")],
        "the tasks to train on (at least one); by default the built-in Burgers data",
        read_by="data",
    )
    reduced_resolution: int = knob(
        1, "keep every r-th grid point in each spatial axis", read_by="data", min=1
    )
    max_samples: int | None = knob(
        None,
        "use only the first this many samples of each file, in file order (PDEBench's `num_samples_max`), "
        "before the split; unset: all",
        read_by="data",
        min=1,
    )
    reduced_resolution_t: int = knob(1, "keep every r-th stored time step", read_by="data", min=1)
    sample_limit: int = knob(
        SAMPLE_LIMIT,
        "refuse a file that declares more samples than this (after `max_samples`) before anything is "
        "allocated per sample: a small hostile file can declare 10^12; raise it for a larger file",
        read_by="data",
        min=1,
    )
    allow_external_storage: bool = knob(
        False,
        "read HDF5 external links, virtual datasets and external raw storage, which read other files' "
        "bytes (refused by default); their source files must be there, and join the latent cache key",
        read_by="data",
    )
    split: SplitConfig = section(SplitConfig, "trajectory-level train/val/test split, seeded by `seed`")
    normalization: Literal["standard", "none"] = knob(
        "standard", "per-channel mean/std from the train split, or none", read_by="data"
    )
    task_sampling: Literal["proportional", "uniform"] = knob(
        "proportional",
        "how often each task's batches are drawn: in proportion to its samples (each sample "
        "once per epoch), or equally often (smaller tasks drawn again)",
        read_by="sampler",
    )


# ---------------------------------------------------------------------------- the models
@dataclass(frozen=True)
class LatentConfig:
    tokens: int = knob(32, "number of latent tokens L", read_by="models", min=1)
    dim: int = knob(64, "width D of each latent token", read_by="models", min=1)
    amplitude: bool = knob(
        True,
        "time-dependent tasks' frames are encoded as their shape (u - mean) / scale, per sample and channel, "
        "and the mean and log scale travel in the last 2 x (channels) latent channels, so the autoencoder's "
        "error shrinks with a decaying field; steady tasks' fields are encoded as they are",
        read_by="models",
    )


@dataclass(frozen=True)
class EncoderConfig:
    hidden: int = knob(64, "channels of the grid encoder's convolutional trunk", read_by="models", min=1)
    depth: int = knob(2, "residual convolutions at full grid resolution", read_by="models", min=0)
    kernel_size: int = knob(5, "odd kernel width of those convolutions", read_by="models", min=1)


@dataclass(frozen=True)
class DecoderConfig:
    hidden: int = knob(128, "width of the any-point decoder", read_by="models", min=1)
    depth: int = knob(3, "number of decoder layers", read_by="models", min=1)
    fourier_features: int = knob(16, "Fourier features of the query coordinates", read_by="models", min=0)
    query_points: int = knob(
        256, "points queried per sample during autoencoder training", read_by="autoencoder stage", min=1
    )


# ----------------------------------------------------------------- evaluation and beyond
@dataclass(frozen=True)
class EvaluationConfig:
    split: Literal["val", "test"] = knob("test", "split evaluated", read_by="evaluation")
    horizon: int | None = knob(
        None, "rollout steps evaluated (the whole trajectory when unset)", read_by="evaluation", min=1
    )
    per_sample: bool = knob(
        False,
        "also write each evaluated trajectory's metrics, by its index in the file (`per_sample` in the JSON)",
        read_by="evaluation",
    )
    context_frames: int = knob(
        1,
        "frames given before the rollout, on the time_stride axis (PDEBench's initial_step): "
        "the rollout starts from the last of them and metrics count only the frames after "
        "it; 1 = from the initial condition (written blank in the leaderboard)",
        read_by="evaluation",
        min=1,
    )
    batch_size: int = knob(16, "evaluation batch size", read_by="evaluation", min=1)
    report: bool = knob(True, "write the HTML report with plots", read_by="evaluation")
    precision: Literal["32-true", "bf16-mixed"] = knob(
        "32-true", "numeric precision of evaluation", read_by="evaluation"
    )
    deterministic: bool = knob(
        True, "ask PyTorch for deterministic kernels (warn where there are none)", read_by="evaluation"
    )
    after_pipeline: bool = knob(
        False,
        "`ups pipeline` evaluates the run when its stages are done (files in <run>/evaluation/)",
        read_by="pipeline",
    )


@dataclass(frozen=True)
class GatesConfig:
    improvement_metric: str = knob(
        "nrmse",
        "leaderboard column a candidate must lower (e.g. nrmse, corrected_nrmse, "
        "burgers1d/nrmse); --improvement-metric overrides",
        read_by="fast-to-sota",
    )
    min_small_delta: float = knob(
        0.0,
        "minimum improvement (baseline - candidate) at the small evaluation",
        read_by="fast-to-sota",
        min=0.0,
    )
    min_full_delta: float = knob(
        0.0,
        "minimum improvement (baseline - candidate) at the full evaluation",
        read_by="fast-to-sota",
        min=0.0,
    )
    ratio_limits: dict[str, float] = knob(
        {"crmse": 1.5, "brmse": 1.5},
        "metric -> largest allowed candidate/baseline ratio (conservation crmse, boundary brmse; add "
        "ms_per_rollout_step to bound the cost, a timing that varies with machine and load); a metric "
        "missing on either side is reported as skipped",
        read_by="fast-to-sota",
    )


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = knob(
        False,
        "log to Weights & Biases: one run per run folder (its id in WANDB_CONTEXT_FILE, "
        "default <run>/wandb_context.json), files under <run>/logs/wandb/",
        read_by="tracking",
    )
    mode: Literal["offline", "online"] = knob(
        "offline",
        "offline writes the run locally only (sync it later with `wandb sync`); online needs W&B credentials",
        read_by="tracking",
    )
    project: str = knob("ups", "W&B project", read_by="tracking")
    entity: str | None = knob(None, "W&B entity (team or user)", read_by="tracking")
    group: str | None = knob(None, "W&B group of the run", read_by="tracking")
    tags: list[str] = knob([], "W&B tags of the run", read_by="tracking")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = knob(
        False, "also log to TensorBoard (CSV logs are always written)", read_by="tracking"
    )
    wandb: WandbConfig = section(WandbConfig, "Weights & Biases, offline by default")


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str = knob(
        "data/builtin", "folder of the data files; relative to the working directory", read_by="data"
    )
    runs_dir: str = knob(
        "runs", "folder of run folders; relative to the working directory", read_by="engines"
    )


@dataclass(frozen=True)
class ModelConfig:
    use_activation_checkpoint: bool = knob(
        False,
        "recompute the activations of the transformer and convolution blocks in the backward pass "
        "(less memory, about a third more compute)",
        read_by="engines",
    )


@dataclass(frozen=True)
class Config:
    seed: int = knob(0, "seed of splits, initialisation and sampling", read_by="everything", min=0)
    data: DataConfig = section(DataConfig, "what to train on")
    latent: LatentConfig = section(LatentConfig, "the latent space")
    encoder: EncoderConfig = section(EncoderConfig, "grid encoder")
    decoder: DecoderConfig = section(DecoderConfig, "any-point decoder")
    model: ModelConfig = section(ModelConfig, "settings of every model")
    training: TrainingConfig = section(TrainingConfig, "batching, loaders, precision, distribution")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpointing")
    optimizer: OptimizerConfig = section(OptimizerConfig, "optimizer and schedule of every stage")
    stages: StagesConfig = section(StagesConfig, "each stage's budget, optimizer, loss and model")
    evaluation: EvaluationConfig = section(EvaluationConfig, "evaluation settings")
    gates: GatesConfig = section(GatesConfig, "promotion gates")
    logging: LoggingConfig = section(LoggingConfig, "loggers")
    paths: PathsConfig = section(PathsConfig, "where data and runs live")
