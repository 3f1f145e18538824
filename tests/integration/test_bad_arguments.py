"""Every ``ups`` command refuses malformed input alike: exit code 2, one message of at most a
screen on stderr that names what was wrong, no traceback, and nothing written (no run folder,
cache entry, leaderboard row or data file; not even a temporary file).

One table of mistakes people make, command by command, against a tiny world: built-in Burgers
data, its config, a run with a trained autoencoder and operator, and a latent cache.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ups.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_runs import tiny_burgers_config  # noqa: E402

SCREEN = 25  # lines


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """The placeholders of the table: paths in a folder holding data/, tiny.yaml (runs under
    runs/), the run runs/trained (autoencoder and operator), the latent cache cache/ of that
    run, and a regular file standing where folders are expected."""
    root = tmp_path_factory.mktemp("bad_arguments")
    config = tiny_burgers_config(root)
    run, cache = root / "runs" / "trained", root / "cache"
    for stage in ("autoencoder", "operator"):
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(config),
                    "--stage",
                    stage,
                    "--run-dir",
                    str(run),
                    "--engine",
                    "native",
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "cache",
                "build",
                "--config",
                str(config),
                "--run-dir",
                str(run),
                f"training.latent_cache_dir={cache}",
            ]
        )
        == 0
    )
    assert list(cache.glob("*.latents"))
    (root / "notes.txt").write_text("not a folder\n")
    (root / "twice.csv").write_text("label,nrmse,nrmse\n")  # a leaderboard whose header repeats a column
    (root / "latin1.csv").write_bytes(b"label,nrmse\ncaf\xe9,0.1\n")  # a leaderboard not in UTF-8
    return {
        "root": str(root),
        "cfg": str(config),
        "run": str(run),
        "cache": str(cache),
        "file": str(root / "notes.txt"),
        "ckpt": str(run / "checkpoints" / "operator" / "last.ckpt"),
    }


CASES = [
    # (id, argv with {placeholders}, a fragment the message must hold)
    ("no-command-of-a-group", ["data"], "data commands"),
    ("unknown-command", ["trian"], "invalid choice: 'trian'"),
    (
        "validate-config/missing-file",
        ["validate-config", "{root}/missing.yaml"],
        "missing.yaml' does not exist",
    ),
    ("validate-config/folder", ["validate-config", "{root}/data"], "data' is a folder"),
    (
        "validate-config/unknown-flag",
        ["validate-config", "{cfg}", "--bogus"],
        "unrecognized arguments: --bogus",
    ),
    (
        "validate-config/override-without-=",
        ["validate-config", "{cfg}", "training.batch_size"],
        "override 'training.batch_size' is not of the form key.sub=value",
    ),
    (
        "validate-config/unknown-key",
        ["validate-config", "{cfg}", "training.batch_sise=8"],
        "Did you mean 'training.batch_size'?",
    ),
    (
        "validate-config/wrong-type",
        ["validate-config", "{cfg}", "training.batch_size=eight"],
        "training.batch_size (set in command-line override 'training.batch_size=eight'): expected an integer",
    ),
    (
        "validate-config/runs-dir-under-a-file",
        ["validate-config", "{cfg}", "paths.runs_dir={file}/runs"],
        "paths.runs_dir (set in command-line override",
    ),
    ("data-summary/no-config", ["data", "summary"], "required: --config"),
    ("data-summary/missing-file", ["data", "summary", "--config", "{root}/missing.yaml"], "does not exist"),
    (
        "data-summary/missing-data",
        ["data", "summary", "--config", "{cfg}", "paths.data_dir={root}/nodata"],
        "nodata/1D_Burgers_Sols_Nu0.01.hdf5 does not exist",
    ),
    (
        "data-generate/unknown-dataset",
        ["data", "generate", "navier3d", "--out", "{root}/gen"],
        "invalid choice: 'navier3d'",
    ),
    (
        "data-generate/out-under-a-file",
        ["data", "generate", "burgers1d", "--out", "{file}/gen", "--quiet"],
        "notes.txt/gen cannot be made",
    ),
    (
        "data-generate/out-is-a-file",
        ["data", "generate", "burgers1d", "--out", "{file}", "--quiet"],
        "is a file; pass a folder to --out",
    ),
    (
        "data-generate/n-not-an-int",
        ["data", "generate", "burgers1d", "--out", "{root}/gen", "--n", "two"],
        "argument --n: invalid int value: 'two'",
    ),
    (
        "data-generate/n-zero",
        ["data", "generate", "burgers1d", "--out", "{root}/gen", "--n", "0"],
        "n must be positive, got 0",
    ),
    (
        "data-generate/nt-one",
        ["data", "generate", "burgers1d", "--out", "{root}/gen", "--nt", "1"],
        "nt must be >= 2",
    ),
    (
        "data-generate/param-without-=",
        ["data", "generate", "burgers1d", "--out", "{root}/gen", "--param", "nu"],
        "--param 'nu' is not of the form NAME=NUMBER",
    ),
    (
        "data-generate/unknown-param",
        ["data", "generate", "burgers1d", "--out", "{root}/gen", "--param", "mu=1"],
        "unknown parameter 'mu'",
    ),
    (
        "data-generate/steady-as-multigroup",
        ["data", "generate", "darcy2d", "--out", "{root}/gen", "--layout", "multigroup"],
        "darcy2d is steady",
    ),
    (
        "data-generate/other-settings-without-overwrite",
        [
            "data",
            "generate",
            "burgers1d",
            "--out",
            "{root}/data",
            "--n",
            "4",
            "--nx",
            "32",
            "--nt",
            "11",
            "--quiet",
        ],
        "already exists with other settings",
    ),
    ("train/no-stage", ["train", "--config", "{cfg}"], "required: --stage"),
    (
        "train/unknown-stage",
        ["train", "--config", "{cfg}", "--stage", "decoder"],
        "invalid choice: 'decoder'",
    ),
    (
        "train/unknown-engine",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--engine", "jax"],
        "invalid choice: 'jax'",
    ),
    (
        "train/devices-not-an-int",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--devices", "two"],
        "argument --devices: invalid int value: 'two'",
    ),
    (
        "train/devices-zero",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--devices", "0"],
        "'training.devices=0'): must be >= 1",
    ),
    (
        "train/devices-negative",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--devices", "-1"],
        "'training.devices=-1'): must be >= 1",
    ),
    (
        "train/resume-without-run-dir",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--resume"],
        "--resume needs --run-dir",
    ),
    (
        "train/resume-of-a-missing-run",
        ["train", "--config", "{cfg}", "--stage", "operator", "--resume", "--run-dir", "{root}/runs/nope"],
        "runs/nope is not a run folder",
    ),
    (
        "train/run-dir-under-a-file",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--run-dir", "{file}/run"],
        "--run-dir {file}/run: {file} is a file",
    ),
    (
        "train/from-run-without-upstream",
        ["train", "--config", "{cfg}", "--stage", "operator", "--from-run", "{root}/nope"],
        "no checkpoint of stage 'autoencoder'",
    ),
    (
        "train/tune-lr-steps",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "--tune-lr", "--tune-lr-steps", "1"],
        "--tune-lr-steps >= 2",
    ),
    (
        "train/override-without-key",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "=8"],
        "override '=8' is not of the form",
    ),
    (
        "train/override-out-of-range",
        ["train", "--config", "{cfg}", "--stage", "autoencoder", "training.batch_size=0"],
        "training.batch_size (set in command-line override",
    ),
    (
        "pipeline/missing-config",
        ["pipeline", "--config", "{root}/missing.yaml"],
        "missing.yaml' does not exist",
    ),
    (
        "pipeline/unknown-stage",
        ["pipeline", "--config", "{cfg}", "--stages", "autoencoder,decoder"],
        "unknown stage(s) decoder",
    ),
    (
        "pipeline/no-stage-named",
        ["pipeline", "--config", "{cfg}", "--stages", ","],
        "--stages names no stage",
    ),
    (
        "pipeline/unknown-engine",
        ["pipeline", "--config", "{cfg}", "--engine", "jax"],
        "invalid choice: 'jax'",
    ),
    ("pipeline/devices-zero", ["pipeline", "--config", "{cfg}", "--devices", "0"], "'training.devices=0'"),
    (
        "pipeline/resume-of-a-missing-run",
        ["pipeline", "--config", "{cfg}", "--resume", "--run-dir", "{root}/nope"],
        "nope is not a run folder",
    ),
    (
        "pipeline/run-dir-under-a-file",
        ["pipeline", "--config", "{cfg}", "--run-dir", "{file}/run"],
        "--run-dir {file}/run: {file} is a file",
    ),
    (
        "pipeline/used-run-without-resume",
        ["pipeline", "--config", "{cfg}", "--run-dir", "{run}"],
        "continue it with --resume, or train into a new --run-dir",
    ),
    ("cache-build/no-run-dir", ["cache", "build", "--config", "{cfg}"], "required: --run-dir"),
    (
        "cache-build/no-cache-dir",
        ["cache", "build", "--config", "{cfg}", "--run-dir", "{run}"],
        "training.latent_cache_dir is not set",
    ),
    (
        "cache-build/run-without-autoencoder",
        [
            "cache",
            "build",
            "--config",
            "{cfg}",
            "--run-dir",
            "{root}/nope",
            "training.latent_cache_dir={cache}",
        ],
        "no checkpoint of stage 'autoencoder'",
    ),
    (
        "cache-build/cache-dir-under-a-file",
        [
            "cache",
            "build",
            "--config",
            "{cfg}",
            "--run-dir",
            "{run}",
            "training.latent_cache_dir={file}/cache",
        ],
        "training.latent_cache_dir (set in command-line override",
    ),
    (
        "cache-info/config-and-dir",
        ["cache", "info", "--config", "{cfg}", "--dir", "{cache}"],
        "argument --dir: not allowed with argument --config",
    ),
    (
        "cache-info/dir-with-overrides",
        ["cache", "info", "--dir", "{cache}", "training.batch_size=2"],
        "overrides apply to --config only",
    ),
    ("cache-info/missing-dir", ["cache", "info", "--dir", "{root}/nope"], "--dir {root}/nope does not exist"),
    (
        "cache-info/config-without-cache",
        ["cache", "info", "--config", "{cfg}"],
        "does not set training.latent_cache_dir",
    ),
    (
        "cache-clear/neither-config-nor-dir",
        ["cache", "clear"],
        "one of the arguments --config --dir is required",
    ),
    ("cache-clear/data-folder", ["cache", "clear", "--dir", "{root}/data"], "data is not a latent cache"),
    ("cache-clear/a-file", ["cache", "clear", "--dir", "{file}"], "is a file, not a latent cache folder"),
    (
        "cache-clear/config-pointing-at-the-runs",
        ["cache", "clear", "--config", "{cfg}", "training.latent_cache_dir={root}/runs"],
        "is not a latent cache",
    ),
    (
        "cache-clear/dir-with-overrides",
        ["cache", "clear", "--dir", "{cache}", "seed=1"],
        "overrides apply to --config only",
    ),
    (
        "evaluate/missing-checkpoint",
        ["evaluate", "--config", "{cfg}", "--checkpoint", "{root}/nope.ckpt"],
        "nope.ckpt does not exist",
    ),
    (
        "evaluate/checkpoint-is-a-folder",
        ["evaluate", "--config", "{cfg}", "--checkpoint", "{run}"],
        "is a folder",
    ),
    (
        "evaluate/checkpoint-is-not-one",
        ["evaluate", "--config", "{cfg}", "--checkpoint", "{cfg}"],
        "tiny.yaml could not be read",
    ),
    (
        "evaluate/missing-run-dir",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{root}/nope"],
        "is not a folder",
    ),
    (
        "evaluate/folder-without-stages",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{root}/data"],
        "has no finished operator",
    ),
    (
        "evaluate/checkpoint-and-run-dir",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--checkpoint", "{ckpt}"],
        "not allowed with argument --run-dir",
    ),
    (
        "evaluate/unknown-split",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--split", "train"],
        "argument --split: invalid choice: 'train'",
    ),
    (
        "evaluate/negative-horizon",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--horizon", "-3"],
        "--horizon -3 must be at least 1",
    ),
    (
        "evaluate/horizon-not-an-int",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--horizon", "three"],
        "invalid int value: 'three'",
    ),
    (
        "evaluate/tag-without-=",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--tag", "gpu"],
        "--tag 'gpu' is not of the form KEY=VALUE",
    ),
    (
        "evaluate/leaderboard-is-a-folder",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--leaderboard", "{root}/runs"],
        "--leaderboard {root}/runs is a folder",
    ),
    (
        "evaluate/leaderboard-under-a-file",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--leaderboard", "{file}/board.csv"],
        "notes.txt is a file",
    ),
    (
        "evaluate/leaderboard-not-csv",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--leaderboard", "{root}/board.html"],
        "--leaderboard {root}/board.html: give a file name ending in .csv",
    ),
    (
        "evaluate/leaderboard-header-repeats-a-column",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--leaderboard", "{root}/twice.csv"],
        "twice.csv, line 1 (the header): it names 'nrmse' more than once",
    ),
    (
        "evaluate/output-prefix-under-a-file",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "--output-prefix", "{file}/val"],
        "--output-prefix {file}/val: {file} is a file",
    ),
    (
        "evaluate/unknown-split-override",
        ["evaluate", "--config", "{cfg}", "--run-dir", "{run}", "evaluation.split=train"],
        "evaluation.split",
    ),
    (
        "fast-to-sota/run-id-with-..",
        ["fast-to-sota", "--config", "{cfg}", "--run-id", "../escape"],
        "--run-id '../escape' must be a plain folder name",
    ),
    (
        "fast-to-sota/run-id-with-/",
        ["fast-to-sota", "--config", "{cfg}", "--run-id", "a/b"],
        "--run-id 'a/b' must be a plain folder name",
    ),
    (
        "fast-to-sota/run-id-with-a-space",
        ["fast-to-sota", "--config", "{cfg}", "--run-id", "my run"],
        "run id 'my run': use letters, digits",
    ),
    (
        "fast-to-sota/delta-not-a-number",
        ["fast-to-sota", "--config", "{cfg}", "--min-small-delta", "abc"],
        "invalid float value: 'abc'",
    ),
    (
        "fast-to-sota/negative-delta",
        ["fast-to-sota", "--config", "{cfg}", "--min-small-delta", "-1"],
        "--min-small-delta -1.0: a minimum improvement must be >= 0",
    ),
    (
        "fast-to-sota/unknown-eval-engine",
        ["fast-to-sota", "--config", "{cfg}", "--eval-engine", "jax"],
        "invalid choice: 'jax'",
    ),
    (
        "fast-to-sota/devices-zero",
        ["fast-to-sota", "--config", "{cfg}", "--devices", "0"],
        "'training.devices=0'",
    ),
    (
        "fast-to-sota/missing-eval-config",
        ["fast-to-sota", "--config", "{cfg}", "--small-eval-config", "{root}/small.yaml"],
        "small.yaml' does not exist",
    ),
    (
        "fast-to-sota/leaderboard-is-a-folder",
        ["fast-to-sota", "--config", "{cfg}", "--leaderboard", "{root}/data"],
        "is a folder; give the path of a CSV file",
    ),
    (
        "fast-to-sota/leaderboard-under-a-file",
        ["fast-to-sota", "--config", "{cfg}", "--leaderboard", "{file}/board.csv"],
        "notes.txt is a file",
    ),
    (
        "fast-to-sota/leaderboard-not-csv",
        ["fast-to-sota", "--config", "{cfg}", "--leaderboard", "{root}/board.html"],
        "--leaderboard {root}/board.html: give a file name ending in .csv",
    ),
    (
        "fast-to-sota/leaderboard-not-utf8",
        ["fast-to-sota", "--config", "{cfg}", "--leaderboard", "{root}/latin1.csv"],
        "latin1.csv is not UTF-8: the byte 0xe9 at offset 15 (line 2)",
    ),
    (
        "fast-to-sota/runs-dir-under-a-file",
        ["fast-to-sota", "--config", "{cfg}", "paths.runs_dir={file}/runs"],
        "paths.runs_dir (set in command-line override",
    ),
    (
        "fast-to-sota/unknown-metric",
        ["fast-to-sota", "--config", "{cfg}", "--improvement-metric", "bogus"],
        "'bogus' is not a metric",
    ),
    (
        "fast-to-sota/run-trained-otherwise",
        ["fast-to-sota", "--config", "{cfg}", "--run-id", "trained", "seed=1"],
        "holds stages trained with another training config",
    ),
]


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file under root: (size, modification time in ns); every folder (None: a writing
    command's lock file, made and removed in its folder, changes the folder's time only)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


def ups(argv: list[str]) -> int:
    """The exit code of the command line run in this process (argparse exits, UPS returns)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_malformed_input_is_refused_with_one_message_and_nothing_written(
    world, argv, fragment, capsys, monkeypatch
):
    root = Path(world["root"])
    monkeypatch.chdir(root)  # anything written relative to the working directory lands in the snapshot
    before = snapshot(root)
    capsys.readouterr()
    code = ups([arg.format_map(world) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert fragment.format_map(world) in err
    assert len(err.splitlines()) <= SCREEN, err
    assert "Traceback" not in err + out and out == ""
    assert snapshot(root) == before


def test_the_exit_code_reaches_the_shell(world, tmp_path):
    argv = ["train", "--config", world["cfg"], "--stage", "autoencoder", "--devices", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "ups", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2 and "'training.devices=0'): must be >= 1" in done.stderr
    assert "Traceback" not in done.stderr and not any(tmp_path.iterdir())
