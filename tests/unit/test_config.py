"""The config system: includes, overrides, the typed schema and `ups validate-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ups.cli import main
from ups.config import to_dict
from ups.config.docs import render_defaults, render_markdown
from ups.errors import ConfigError
from ups.resolve import load_config

REPO = Path(__file__).resolve().parents[2]
BUILTIN_FILES = [
    "1D_Burgers_Sols_Nu0.01.hdf5",
    "1D_Advection_Sols_beta0.4.hdf5",
    "ReacDiff_Nu0.5_Rho1.0.hdf5",
    "2D_DarcyFlow_beta1.0_Train.hdf5",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with (empty) data files, so file checks pass."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / "builtin"
    data.mkdir(parents=True)
    for name in BUILTIN_FILES:
        (data / name).touch()
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree_listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------ loading
def test_defaults_validate_and_match_the_schema(workdir):
    cfg = load_config(REPO / "configs" / "defaults.yaml")
    assert cfg == load_config(None)
    assert cfg.data.tasks[0].name == "burgers1d"


def test_include_is_relative_to_the_including_file_and_merges_deeply(workdir):
    write(
        workdir / "cfg" / "base" / "model.yaml", "latent: {tokens: 8, dim: 32}\ntraining: {batch_size: 4}\n"
    )
    main_cfg = write(
        workdir / "cfg" / "run.yaml",
        "include: base/model.yaml\ntraining: {num_workers: 2}\nlatent: {dim: 48}\n",
    )
    cfg = load_config(main_cfg)
    assert (cfg.latent.tokens, cfg.latent.dim) == (8, 48)
    assert (cfg.training.batch_size, cfg.training.num_workers) == (4, 2)


def test_later_includes_win_and_lists_are_replaced(workdir):
    write(
        workdir / "a.yaml",
        "data: {tasks: [{name: a, path: 1D_Burgers_Sols_Nu0.01.hdf5}], reduced_resolution: 2}\n",
    )
    write(workdir / "b.yaml", "data: {tasks: [{name: b, path: ReacDiff_Nu0.5_Rho1.0.hdf5}]}\n")
    cfg = load_config(write(workdir / "c.yaml", "include: [a.yaml, b.yaml]\n"))
    assert [t.name for t in cfg.data.tasks] == ["b"]
    assert cfg.data.reduced_resolution == 2


def test_overrides_are_typed_by_yaml_but_strings_stay_text(workdir):
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            "training.batch_size=8",
            "optimizer.lr=3e-4",
            "training.gradient_clip_val=1",
            "data.tasks.0.name=007",
            "training.compile=true",
            "gates.ratio_limits={crmse: 1.5}",
        ],
    )
    assert cfg.training.batch_size == 8 and isinstance(cfg.training.batch_size, int)
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.training.gradient_clip_val == 1.0 and isinstance(cfg.training.gradient_clip_val, float)
    assert cfg.data.tasks[0].name == "007"
    assert cfg.training.compile is True
    assert cfg.gates.ratio_limits == {"crmse": 1.5}


def test_override_to_null_unsets_an_optional_key(workdir):
    cfg = load_config(None, ["training.gradient_clip_val=0.5"])
    assert cfg.training.gradient_clip_val == 0.5
    assert (
        load_config(
            None, ["training.gradient_clip_val=0.5", "training.gradient_clip_val=null"]
        ).training.gradient_clip_val
        is None
    )
    # string-typed keys too: `null` is no folder called "null"
    assert (
        load_config(
            REPO / "configs" / "demo.yaml", ["training.latent_cache_dir=null"]
        ).training.latent_cache_dir
        is None
    )
    assert load_config(None, ["logging.wandb.entity=~"]).logging.wandb.entity is None


@pytest.mark.parametrize(
    "name", ["defaults", "demo", "multitask", "burgers1d", "advection1d", "reaction_diffusion1d", "darcy2d"]
)
def test_every_shipped_config_validates(workdir, name, capsys):
    assert main(["validate-config", str(REPO / "configs" / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out
    assert yaml.safe_load(out.rsplit("config OK", 1)[0])["seed"] == 0


def test_validate_config_prints_the_resolved_config(workdir, capsys):
    assert main(["validate-config", str(REPO / "configs" / "demo.yaml"), "training.batch_size=5"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out.rsplit("config OK", 1)[0])
    assert resolved["training"]["batch_size"] == 5
    assert [t["name"] for t in resolved["data"]["tasks"]] == ["burgers1d", "darcy2d"]
    assert resolved == to_dict(load_config(REPO / "configs" / "demo.yaml", ["training.batch_size=5"]))


# ------------------------------------------------------------------- malformed input
TASK = "data: {tasks: [{name: burgers1d, path: 1D_Burgers_Sols_Nu0.01.hdf5}]}\n"

MALFORMED = {
    "typo key": (
        TASK + "training: {batch_sze: 8}\n",
        [],
        ["training.batch_sze", "unknown key", "Did you mean 'training.batch_size'"],
    ),
    "key in the wrong section": (TASK + "batch_size: 8\n", [], ["batch_size", "training.batch_size"]),
    "wrong type": (
        TASK + "training: {batch_size: eight}\n",
        [],
        ["training.batch_size", "expected an integer"],
    ),
    "bool as string": (TASK + "training: {compile: 'yes'}\n", [], ["training.compile", "true or false"]),
    "negative epochs": (TASK + "stages: {operator: {epochs: -1}}\n", [], ["stages.operator.epochs", ">= 0"]),
    "a moved section": (
        TASK + "diffusion: {hidden: 32}\n",
        [],
        ["diffusion.hidden", "has moved to stages.diff_residual.hidden", "ups config migrate"],
    ),
    "a moved key on the command line": (
        TASK,
        ["training.rollout_horizon=3"],
        ["training.rollout_horizon", "command-line override", "stages.operator.rollout_horizon"],
    ),
    "unknown stage name": (
        TASK + "stages: {operatr: {epochs: 2}}\n",
        [],
        ["stages.operatr", "Did you mean 'stages.operator'"],
    ),
    "missing data path": (
        "data: {tasks: [{name: burgers1d}]}\n",
        [],
        ["data.tasks[0].path", "missing data path"],
    ),
    "data file absent": (
        "data: {tasks: [{name: b, path: nope.hdf5}]}\n",
        [],
        ["data.tasks[0].path", "nope.hdf5", "does not exist", "paths.data_dir"],
    ),
    "built-in file absent": (
        "data: {tasks: [{name: b, path: 1D_Burgers_Sols_Nu0.1.hdf5}]}\n",
        [],
        [
            "data.tasks[0].path",
            "does not exist",
            "ups data generate burgers1d --out data/builtin --param nu=0.1",
        ],
    ),
    "no tasks": ("data: {tasks: []}\n", [], ["data.tasks", "no tasks"]),
    "duplicate task names": (
        "data: {tasks: [{name: a, path: 1D_Burgers_Sols_Nu0.01.hdf5}, "
        "{name: a, path: ReacDiff_Nu0.5_Rho1.0.hdf5}]}\n",
        [],
        ["data.tasks[1].name", "twice"],
    ),
    "bad choice": (
        TASK + "training: {precision: bf16}\n",
        [],
        ["training.precision", "expected one of", "Did you mean 'bf16-mixed'"],
    ),
    "split fractions over 1": (
        TASK + "data: {split: {train: 0.8, val: 0.3}}\n",
        [],
        ["data.split", "exceeds 1"],
    ),
    "heads do not divide dim": (
        TASK + "latent: {dim: 30}\nstages: {operator: {heads: 4}}\n",
        [],
        ["stages.operator.heads", "latent.dim"],
    ),
    "even kernel": (TASK + "encoder: {kernel_size: 4}\n", [], ["encoder.kernel_size", "odd"]),
    "fsdp offload on cpu": (
        TASK + "training: {strategy: fsdp, accelerator: cpu, cpu_offload_optimizer: true}\n",
        [],
        ["training.cpu_offload_optimizer", "FSDP"],
    ),
    "section is a scalar": (TASK + "training: 3\n", [], ["training", "expected a section"]),
    "top level is a list": ("- a\n- b\n", [], ["top level must be a mapping"]),
    "yaml syntax": (TASK + "training: {batch_size: [1, 2\n", [], ["not valid YAML", ".yaml:"]),
    "bad override value": (
        TASK,
        ["training.num_workers=two"],
        ["training.num_workers", "command-line override 'training.num_workers=two'"],
    ),
    "override without =": (TASK, ["training.batch_size"], ["training.batch_size", "key.sub=value"]),
    "override of unknown key": (TASK, ["trainig.batch_size=3"], ["trainig", "Did you mean 'training'"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_config_exits_2_names_the_key_and_writes_nothing(workdir, capsys, case):
    text, overrides, needles = MALFORMED[case]
    config = write(workdir / "bad.yaml", text)
    before = tree_listing(workdir)
    assert main(["validate-config", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, f"{case}: {needle!r} not in {err!r}"
    assert "Traceback" not in err
    assert tree_listing(workdir) == before


def test_problems_are_reported_together_with_their_file(workdir):
    config = write(workdir / "bad.yaml", TASK + "training: {batch_sze: 8, num_workers: -1}\nlatnt: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "3 problems" in message
    assert message.count(f"(set in {config})") == 3


def test_cyclic_include_is_refused_with_the_chain(workdir, capsys):
    write(workdir / "a.yaml", "include: sub/b.yaml\n")
    write(workdir / "sub" / "b.yaml", "include: ../a.yaml\n")
    assert main(["validate-config", str(workdir / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert "cyclic include" in err and "a.yaml -> b.yaml -> a.yaml" in err


def test_missing_include_names_the_including_file(workdir, capsys):
    config = write(workdir / "a.yaml", "include: gone.yaml\n")
    assert main(["validate-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "gone.yaml" in err and "does not exist" in err


def test_missing_config_file(workdir, capsys):
    assert main(["validate-config", "nowhere.yaml"]) == 2
    assert "nowhere.yaml" in capsys.readouterr().err


def test_task_paths_resolve_under_data_dir_and_absolute_paths_stay(workdir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "mine.hdf5"
    elsewhere.touch()
    cfg = load_config(None, [f"data.tasks.0.path={elsewhere}"])
    assert cfg.data.tasks[0].path == str(elsewhere)
    with pytest.raises(ConfigError, match="paths.data_dir|does not exist"):
        load_config(None, ["paths.data_dir=somewhere/else"])


# -------------------------------------------------------------------- generated docs
def test_configuration_docs_and_defaults_are_generated_from_the_schema():
    assert (REPO / "docs" / "configuration.md").read_text() == render_markdown(), "run `make docs`"
    assert (REPO / "configs" / "defaults.yaml").read_text() == render_defaults(), "run `make docs`"


def test_python_dash_m_ups_runs(workdir):
    done = subprocess.run(
        [sys.executable, "-m", "ups", "validate-config", str(REPO / "configs" / "demo.yaml")],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path, check_files=False)
    assert cfg.data.tasks and all(task.name and task.path for task in cfg.data.tasks)


def test_config_migrate_moves_old_keys_file_by_file_and_keeps_precedence(workdir, capsys):
    """Issue 29: stage settings live under stages.<name>; `ups config migrate` rewrites an old config,
    its includes followed, each file's keys moved before the includes merge (so the including file
    still wins)."""
    write(workdir / "base.yaml", TASK + "diffusion: {hidden: 96, depth: 2}\ntraining: {rollout_horizon: 3}\n")
    old = write(
        workdir / "old.yaml",
        "include: base.yaml\noperator: {heads: 2}\ndiffusion: {hidden: 48}\n"
        "stages: {operator: {epochs: 3}}\n",
    )
    assert main(["validate-config", str(old)]) == 2  # refused as it is, naming where the keys went
    assert "has moved to stages.operator.heads" in capsys.readouterr().err
    new = workdir / "new.yaml"
    assert main(["config", "migrate", str(old), "--out", str(new)]) == 0
    err = capsys.readouterr().err
    assert "moved operator -> stages.operator" in err and "moved diffusion -> stages.diff_residual" in err
    cfg = load_config(new)
    operator, corrector = cfg.stages.operator, cfg.stages.diff_residual
    assert (operator.heads, operator.epochs, operator.rollout_horizon) == (2, 3, 3)
    assert (corrector.hidden, corrector.depth) == (48, 2)  # old.yaml's value wins over base.yaml's


def test_config_migrate_refuses_a_result_that_is_still_wrong_and_writes_nothing(workdir, capsys):
    old = write(workdir / "old.yaml", TASK + "operator: {heds: 2}\n")
    new = workdir / "new.yaml"
    assert main(["config", "migrate", str(old), "--out", str(new)]) == 2
    assert "stages.operator.heds" in capsys.readouterr().err and not new.exists()


def test_the_tuners_limits_are_reported_with_the_configs_problems():
    from ups.engines.tuning import TuningRequest

    tuning = TuningRequest(batch_size=True, max_batch_size=0)
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["training.batch_size=eight"], check_files=False, engine="native", tuning=tuning)
    message = str(caught.value)
    assert "3 problems in the configuration" in message
    assert "training.batch_size (set in command-line override 'training.batch_size=eight')" in message
    assert (
        "  - --tune-batch-size and --tune-lr use Lightning's Tuner; train with --engine lightning" in message
    )
    assert "  - --max-batch-size must be >= 1 and --tune-lr-steps >= 2." in message


def test_a_frozen_config_changes_only_through_with_keys():
    import dataclasses

    from ups.config import Config, with_keys

    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stages.operator.epochs = 3
    changed = with_keys(cfg, {"stages.operator.epochs": 3, "seed": 7})
    assert (changed.stages.operator.epochs, changed.seed, cfg.stages.operator.epochs) == (
        3,
        7,
        Config().stages.operator.epochs,
    )
    assert changed.stages.autoencoder is cfg.stages.autoencoder
