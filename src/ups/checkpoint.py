"""One checkpoint format for both engines: Lightning's dict layout plus a ``ups`` block.

    {
      "state_dict":        {"model.<param>": Tensor, ...}   # the LightningModule's key names
      "optimizer_states":  [optimizer.state_dict()]
      "lr_schedulers":     [scheduler.state_dict()]          # empty without a scheduler
      "epoch":             index of the last finished epoch (0-based)
      "global_step":       optimizer steps taken
      "ema_state_dict":    {"model.<param>": Tensor}           # only with training.ema_decay
      "ups": {schema_version, engine, stage, config_hash, architecture, data, metadata, extra_state,
              progress}                                      # + the native engine's "selection"
      # written by Lightning alone, for its own resume: "pytorch-lightning_version", "loops", "callbacks"
    }

Either engine loads the weights of any checkpoint; only the engine that wrote one resumes it.

Everything stored is a tensor, number, string, list or dict, so ``torch.load(weights_only=True)``
reads every checkpoint. ``load_into`` checks keys and shapes before touching the model.

Every checkpoint is sealed with the sha256 of its bytes, checked on every load (``ups.seal``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from itertools import dropwhile
from pathlib import Path

import torch

from ups.atomic import atomic_path
from ups.config import Config, to_yaml
from ups.errors import CheckpointError
from ups.seal import seal, verify

SCHEMA_VERSION = 1
STATE_PREFIX = "model."  # the generic LightningModule holds the stage's module as ``self.model``


# ------------------------------------------------------------------------- fingerprints
def config_hash(cfg: Config) -> str:
    """sha256 of the resolved config YAML."""
    return hashlib.sha256(to_yaml(cfg).encode()).hexdigest()


def architecture_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the sorted ``key:shape`` lines: equal iff names and shapes are equal."""
    lines = sorted(f"{k}:{tuple(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def data_fingerprint(tasks) -> dict:
    """Task names, file names and sizes, split sizes: what the weights were trained on."""
    return {"tasks": [_task_fingerprint(t, Path(t.file.path)) for t in tasks]}


def _task_fingerprint(task, path: Path) -> dict:
    return {
        "task": task.name,
        "file": path.name,
        "bytes": path.stat().st_size if path.exists() else -1,
        "split": {name: len(task.split.indices(name)) for name in ("train", "val", "test")},
    }


def model_state_dict(stage) -> dict[str, torch.Tensor]:
    """The stage's weights under the LightningModule's key names (``model.<name>``)."""
    return {STATE_PREFIX + k: v for k, v in stage.model.state_dict().items()}


def ups_block(stage, cfg: Config, engine: str) -> dict:
    """The versioned metadata block every checkpoint carries; ``engine`` wrote it."""
    return {
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "stage": stage.name,
        "config_hash": config_hash(cfg),
        "architecture": architecture_fingerprint(stage.model.state_dict()),
        "data": data_fingerprint(stage.tasks),
        "metadata": stage.metadata(),
        "extra_state": stage.extra_state(),
    }


# ------------------------------------------------------------------------- reading, writing
def save_checkpoint(
    checkpoint: dict, path: str | Path, *, before_replace: Callable[[], None] | None = None
) -> Path:
    """Atomic write (``ups.atomic.atomic_path``) of the sealed checkpoint: a reader never sees half
    of one. ``before_replace`` runs once the new file is whole, just before it takes ``path``'s
    name (``RunDir.rotate_last`` moves the earlier ``last`` checkpoints along)."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
        seal(tmp)
        if before_replace is not None:
            before_replace()
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of either engine, on the CPU, read with ``weights_only=True`` once its seal
    is checked (``ups.seal.verify``)."""
    path = Path(path)
    verify(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file or a pickle that is not weights-only
        raise CheckpointError(
            f"checkpoint {path} could not be read with weights_only=True ({_load_reason(exc)}): "
            f"it is damaged or not a whole checkpoint, or it carries pickled objects, which UPS "
            f"never loads (only tensors and plain containers)."
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no 'state_dict'; it is not a UPS/Lightning checkpoint.")
    return checkpoint


def _load_reason(exc: Exception) -> str:
    """One line of torch's load error: the unpickler's own reason (the objects it refused)
    without torch's advice on loading unsafely, else the error's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refused = [line.split(". Please use")[0] for line in lines if line.startswith("WeightsUnpickler error:")]
    return (refused or lines or [type(exc).__name__])[0]


def misfit_report(model_state: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]) -> list[str]:
    """Lines naming missing keys, unexpected keys and shape differences (empty: it fits)."""
    missing = sorted(set(model_state) - set(stored))
    unexpected = sorted(set(stored) - set(model_state))
    reshaped = [k for k in model_state if k in stored and stored[k].shape != model_state[k].shape]
    shapes = [
        f"{k}: checkpoint {tuple(stored[k].shape)} vs model {tuple(model_state[k].shape)}" for k in reshaped
    ]
    lines = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape differences", shapes),
    ):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
            lines.append(f"{title} ({len(items)}): {shown}")
    subspace = [k for k in missing + unexpected if k.rsplit(".", 1)[-1].startswith("subspace_")]
    if subspace:
        lines.append(
            f"the operator's latent subspace is {'missing from' if subspace[0] in missing else 'in'} the "
            f"checkpoint: set stages.operator.subspace_dim to the value it was trained with (0 for a "
            f"checkpoint from before the subspace existed)"
        )
    bias = [k for k in missing + unexpected if k.rsplit(".", 1)[-1] == "token_bias"]
    if bias:
        lines.append(
            "the operator's locality bias is in the checkpoint and off in the config: set "
            "stages.operator.locality to a value > 0 (the checkpoint keeps its own bias)"
            if bias[0] in unexpected
            else "the operator's locality bias is missing from the checkpoint (trained with "
            "stages.operator.locality=0, or before the bias existed): set stages.operator.locality=0 to load "
            "it, or train the operator again"
        )
    # the decoder reads another number of latent channels while the encoder writes the same D: the amplitude
    proj = [
        k
        for k in reshaped
        if k.endswith("latent_proj.weight") and stored[k].shape[0] == model_state[k].shape[0]
    ]
    if proj and not any(k.endswith("to_latent.weight") for k in reshaped):
        # the checkpoint's decoder reads fewer latent channels: its latent carried the amplitude
        on = stored[proj[0]].shape[1] < model_state[proj[0]].shape[1]
        lines.append(
            f"the decoder reads {'fewer' if on else 'more'} latent channels than this config's: the "
            f"autoencoder was probably trained with latent.amplitude={'true' if on else 'false'}; set that "
            f"to load it, or train the autoencoder again"
        )
    if "residual_scale" in missing and any(k.startswith("regression.") for k in stored):
        lines.append(
            "this steady_prior checkpoint is from before its flow modelled the regression's residual; "
            "train the steady_prior stage again"
        )
    return lines


def module_key(key: str) -> str | None:
    """A stored key as the stage module names it, or None for keys outside the module: the
    ``model.`` prefix is removed, and so are the wrappers' segments, in this one place —
    ``module.`` of DDP/DataParallel (leading, or right after ``model.``) and ``_orig_mod.`` of
    ``torch.compile`` (anywhere)."""
    parts = list(dropwhile("module".__eq__, key.split(".")))
    if not parts or parts[0] != STATE_PREFIX.rstrip("."):
        return None
    return ".".join(p for p in dropwhile("module".__eq__, parts[1:]) if p != "_orig_mod")


def _module_state(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: v for k, v in stored.items() if (name := module_key(k)) is not None}


def stage_weights(checkpoint: dict, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The stage module's state dict stored in ``checkpoint`` (keys normalised by ``module_key``).

    With ``ema`` the EMA weights replace the trained parameters they shadow.
    """
    state = _module_state(checkpoint["state_dict"])
    if ema:
        if "ema_state_dict" not in checkpoint:
            raise CheckpointError("the checkpoint has no EMA weights (training.ema_decay was unset).")
        state.update(_module_state(checkpoint["ema_state_dict"]))
    return state


def check_fit(stage, checkpoint: dict) -> None:
    """Raise ``CheckpointError`` unless the checkpoint's weights fit ``stage.model`` exactly."""
    stored_stage = checkpoint.get("ups", {}).get("stage")
    lines = misfit_report(stage.model.state_dict(), stage_weights(checkpoint))
    if stored_stage is not None and stored_stage != stage.name:
        lines.insert(0, f"it was written by stage '{stored_stage}', not '{stage.name}'")
    stored_order = checkpoint.get("ups", {}).get("metadata", {}).get("task_order")
    order = stage.metadata().get("task_order")
    if stored_order is not None and order is not None and stored_order != order:
        lines.append(
            f"task order: checkpoint {stored_order} vs config {order} (the task embedding's rows); "
            f"list data.tasks in the checkpoint's order"
        )
    if lines:
        raise CheckpointError(
            f"checkpoint does not fit stage '{stage.name}' and was not loaded:\n  - "
            + "\n  - ".join(lines)
            + "\nCheck that the config (hidden sizes, depths, tasks) matches the one the checkpoint was "
            "trained with."
        )


def load_upstream(module: torch.nn.Module, checkpoint: dict, stage: str) -> None:
    """Load a finished upstream stage's weights (its EMA weights when it kept them) into
    ``module``, refusing a misfit with the differing keys and shapes named."""
    weights = stage_weights(checkpoint, ema="ema_state_dict" in checkpoint)
    lines = misfit_report(module.state_dict(), weights)
    if lines:
        raise CheckpointError(
            f"the {stage} checkpoint does not fit the {stage} this config builds:\n  - "
            + "\n  - ".join(lines)
            + f"\nTrain the {stage} stage with this config, or use the config it was trained with."
        )
    module.load_state_dict(weights, strict=True)


def load_into(stage, checkpoint: dict, *, ema: bool = False) -> None:
    """Load the weights (EMA weights with ``ema``) into ``stage.model`` and the stage's extra state.

    Keys and shapes are checked first; a misfit raises ``CheckpointError`` and leaves the
    model untouched.
    """
    check_fit(stage, checkpoint)
    stage.model.load_state_dict(stage_weights(checkpoint, ema=ema), strict=True)
    extra = checkpoint.get("ups", {}).get("extra_state")
    if extra:
        stage.load_extra_state(extra)
