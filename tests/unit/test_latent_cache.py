"""The on-disk latent cache: round trips, keys, corruption, concurrent writers, workers."""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ups.config.schema import TaskConfig
from ups.data.latent_cache import MAGIC, SUFFIX, LatentCache, encoder_digest, entry_key
from ups.data.tasks import load_tasks
from ups.errors import DataError

LATENT = (4, 3)  # L, D
BURGERS = "1D_Burgers_Sols_Nu0.01.hdf5"
ADVECTION = "1D_Advection_Sols_beta0.4.hdf5"


def make_encoder(seed: int = 0) -> nn.Module:
    """A tiny point-wise MLP; latents are its mean over space, so any resolution works."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, LATENT[0] * LATENT[1]))


class GridEncode:
    """``encode(task_index, trajectory)`` -> float32 [T, L, D] from the normalised fields;
    module-level so spawned processes can unpickle it. Counts its calls per task."""

    def __init__(self, tasks, module: nn.Module, delay_s: float = 0.0):
        self.tasks, self.module, self.delay_s = tasks, module, delay_s
        self.calls = [0] * len(tasks)

    def __call__(self, k: int, i: int) -> np.ndarray:
        self.calls[k] += 1
        time.sleep(self.delay_s)
        task = self.tasks[k]
        fields = torch.from_numpy(task.normalizer.normalize(task.file.trajectory(i)))  # [T, X, 1]
        with torch.no_grad():
            latents = self.module(fields).mean(dim=1)  # [T, L * D]
        return latents.reshape(-1, *LATENT).numpy()


def load(data_dir: Path, **kwargs):
    specs = [TaskConfig("burgers1d", BURGERS), TaskConfig("advection1d", ADVECTION)]
    return load_tasks(specs, data_dir, split_fractions=(0.6, 0.2, 0.2), **kwargs)


@pytest.fixture
def tasks(tmp_path, pdebench_writers):
    """burgers1d: N=10, T=6, X=16; advection1d: N=8, T=5, X=16."""
    pdebench_writers.single(tmp_path / BURGERS, (10, 6, 16), t_len=7, seed=0)
    pdebench_writers.single(tmp_path / ADVECTION, (8, 5, 16), seed=3)
    return load(tmp_path)


@pytest.fixture
def module():
    return make_encoder()


def ensure(root, tasks, encode, dtype="float32", **kwargs):
    return LatentCache(root).ensure(
        tasks, encode, encoder=encoder_digest(encode.module), dtype=dtype, latent_shape=LATENT, **kwargs
    )


def expected(encode: GridEncode, k: int) -> np.ndarray:
    """[N, T, L, D] straight from the encoder, without counting the calls."""
    calls = list(encode.calls)
    out = np.stack([encode(k, i) for i in range(encode.tasks[k].info.n_samples)])
    encode.calls = calls
    return out


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_float32_round_trip_is_exact_with_the_documented_layout(tasks, module, tmp_path):
    encode = GridEncode(tasks, module)
    entries = ensure(tmp_path / "cache", tasks, encode)
    assert [(e.task, e.shape, e.dtype, e.status) for e in entries] == [
        ("burgers1d", (10, 6, 4, 3), "float32", "built"),
        ("advection1d", (8, 5, 4, 3), "float32", "built"),
    ]
    assert encode.calls == [10, 8] and [e.shape[0] for e in entries] == [10, 8]
    for k, entry in enumerate(entries):
        want = expected(encode, k)
        got = np.stack([entry.frames(i) for i in range(entry.shape[0])])
        np.testing.assert_array_equal(got, want)
        raw = np.memmap(entry.path, dtype="float32", mode="r", offset=0, shape=entry.shape)
        np.testing.assert_array_equal(raw, want)
        tail = entry.path.read_bytes()[-16:]
        header_len = int.from_bytes(tail[:8], "little")
        assert tail[8:] == MAGIC
        assert entry.path.stat().st_size == want.nbytes + header_len + 16
        assert entry.path.name.startswith(f"{entry.task}-") and entry.path.suffix == SUFFIX


def test_frames_are_strided_float32_copies(tasks, module, tmp_path):
    encode = GridEncode(tasks, module)
    entry = ensure(tmp_path / "cache", tasks, encode)[0]
    want = expected(encode, 0)[3]
    strided = entry.frames(3, slice(1, None, 2))
    np.testing.assert_array_equal(strided, want[1::2])
    assert strided.shape == (3, 4, 3) and strided.dtype == np.float32
    assert not isinstance(strided, np.memmap) and strided.flags.writeable
    strided[:] = 0.0
    np.testing.assert_array_equal(entry.frames(3)[1::2], want[1::2])
    with pytest.raises(IndexError, match="trajectory 10 is out of range.*holds 10"):
        entry.frames(10)


def test_float16_round_trip_is_the_float16_rounding(tasks, module, tmp_path):
    encode = GridEncode(tasks, module)
    entry = ensure(tmp_path / "cache", tasks, encode, dtype="float16")[0]
    want = expected(encode, 0)
    got = np.stack([entry.frames(i) for i in range(10)])
    assert got.dtype == np.float32 and entry.dtype == "float16"
    np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=2**-11, atol=1e-7)
    assert np.abs(got - want).max() > 0  # really stored as float16
    header_len = int.from_bytes(entry.path.read_bytes()[-16:-8], "little")
    assert entry.path.stat().st_size == 10 * 6 * 4 * 3 * 2 + header_len + 16


def test_second_ensure_hits_without_encoding(tasks, module, tmp_path, caplog):
    root = tmp_path / "cache"
    ensure(root, tasks, GridEncode(tasks, module))
    encode = GridEncode(tasks, module)
    with caplog.at_level(logging.INFO, logger="ups"):
        entries = ensure(root, tasks, encode)
    assert [e.status for e in entries] == ["hit", "hit"] and encode.calls == [0, 0]
    hits = [r.getMessage() for r in caplog.records if "hit for task" in r.getMessage()]
    assert len(hits) == 2 and str(entries[0].path) in hits[0]
    np.testing.assert_array_equal(entries[1].frames(7), expected(encode, 1)[7])


def test_entry_key_fields(tasks, module):
    key, fields = entry_key(tasks[0], encoder="abc", dtype="float16", latent_shape=LATENT)
    again, _ = entry_key(tasks[0], encoder="abc", dtype="float16", latent_shape=LATENT)
    assert len(key) == 64 and again == key
    path = Path(fields["data_file"]["path"])
    assert path.is_absolute() and path.name == BURGERS
    assert fields["data_file"]["bytes"] == path.stat().st_size
    assert fields["data_file"]["mtime_ns"] == path.stat().st_mtime_ns
    assert (fields["shape"], fields["latent_shape"], fields["dtype"]) == ([10, 6], [4, 3], "float16")
    assert fields["layout"] == "single"
    assert (fields["reduced_resolution"], fields["reduced_resolution_t"]) == (1, 1)
    assert fields["normalizer"] == tasks[0].normalizer.to_dict() and fields["encoder"] == "abc"


def _other_encoder(tasks, module, tmp_path, writers):
    other = copy.deepcopy(module)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-3
    return tasks, GridEncode(tasks, other), "float32", ["built", "built"]


def _rewritten_file(tasks, module, tmp_path, writers):
    path = tmp_path / BURGERS
    mtime_ns = path.stat().st_mtime_ns
    tasks[0].file.close()
    writers.single(path, (10, 6, 16), t_len=7, seed=7)
    os.utime(path, ns=(mtime_ns, mtime_ns + 10**9))
    return tasks, GridEncode(tasks, module), "float32", ["built", "hit"]


def _other_dtype(tasks, module, tmp_path, writers):
    return tasks, GridEncode(tasks, module), "float16", ["built", "built"]


def _other_normalizer(tasks, module, tmp_path, writers):
    tasks[0].normalizer = copy.deepcopy(tasks[0].normalizer)
    tasks[0].normalizer.mean = tasks[0].normalizer.mean + 0.5
    return tasks, GridEncode(tasks, module), "float32", ["built", "hit"]


def _other_resolution(tasks, module, tmp_path, writers):
    tasks = load(tmp_path, reduced_resolution=2)
    return tasks, GridEncode(tasks, module), "float32", ["built", "built"]


@pytest.mark.parametrize(
    "change",
    [_other_encoder, _rewritten_file, _other_dtype, _other_normalizer, _other_resolution],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_changed_inputs_miss_and_build_new_entries(tasks, module, tmp_path, pdebench_writers, change):
    root = tmp_path / "cache"
    before = ensure(root, tasks, GridEncode(tasks, module))
    tasks, encode, dtype, statuses = change(tasks, module, tmp_path, pdebench_writers)
    after = ensure(root, tasks, encode, dtype=dtype)
    assert [e.status for e in after] == statuses
    for old, new, status in zip(before, after, statuses):
        assert (new.path == old.path) == (status == "hit")
    assert len(files(root)) == 2 * (2 + statuses.count("built"))  # entries + their lock files
    want = expected(encode, 0)
    if dtype == "float16":
        want = want.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.stack([after[0].frames(i) for i in range(10)]), want)
    assert not np.array_equal(after[0].frames(0), before[0].frames(0))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_data(path: Path) -> None:
    _flip(path, 17)


def _flip_header_key(path: Path) -> None:
    data = path.read_bytes()
    header_start = len(data) - 16 - int.from_bytes(data[-16:-8], "little")
    _flip(path, header_start + data[header_start:].index(b'"key": "') + 8)


def _flip_header_brace(path: Path) -> None:
    data = path.read_bytes()
    _flip(path, len(data) - 16 - int.from_bytes(data[-16:-8], "little"))


def _flip_length(path: Path) -> None:
    _flip(path, path.stat().st_size - 10)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_truncate, "bad magic"),
        (_flip_data, "crc32 of the data"),
        (_flip_header_key, "header key"),
        (_flip_header_brace, "not valid JSON"),
        (_flip_length, "header length"),
    ],
    ids=lambda v: getattr(v, "__name__", "").lstrip("_") or None,
)
def test_corrupt_entry_is_rebuilt_with_one_warning(tasks, module, tmp_path, caplog, corrupt, reason):
    root = tmp_path / "cache"
    path = ensure(root, tasks, GridEncode(tasks, module))[0].path
    corrupt(path)
    encode = GridEncode(tasks, module)
    with caplog.at_level(logging.INFO, logger="ups"):
        entries = ensure(root, tasks, encode)
        ensure(root, tasks, encode)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and reason in warnings[0]
    assert [e.status for e in entries] == ["rebuilt", "hit"] and encode.calls == [10, 0]
    np.testing.assert_array_equal(np.stack([entries[0].frames(i) for i in range(10)]), expected(encode, 0))


def fill_cache(root, tasks, module, barrier, results) -> None:
    """One of the concurrent writers: start with the other, fill the cache, report statuses."""
    barrier.wait(timeout=120)
    entries = ensure(root, tasks, GridEncode(tasks, module, delay_s=0.02))
    results.put([e.status for e in entries])


def test_concurrent_processes_build_each_entry_once(tasks, module, tmp_path):
    root = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=fill_cache, args=(root, tasks, module, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    statuses = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    # the lock makes the second writer of each entry wait for the first, then hit
    assert [sorted(per_task) for per_task in zip(*statuses)] == [["built", "hit"], ["built", "hit"]]
    on_disk = [p.name for p in root.glob(f"*{SUFFIX}")]
    assert len(on_disk) == 2
    assert files(root) == sorted(on_disk + [f".{name}.lock" for name in on_disk])  # no temp files
    encode = GridEncode(tasks, module)
    entries = ensure(root, tasks, encode)  # verifies every crc
    assert [e.status for e in entries] == ["hit", "hit"] and encode.calls == [0, 0]
    for k, entry in enumerate(entries):
        np.testing.assert_array_equal(
            np.stack([entry.frames(i) for i in range(entry.shape[0])]), expected(encode, k)
        )


def test_ensure_waits_for_a_writer_holding_the_lock(tasks, module, tmp_path, caplog):
    fcntl = pytest.importorskip("fcntl")
    root = tmp_path / "cache"
    root.mkdir()
    encode = GridEncode(tasks[:1], module)
    key, _ = entry_key(tasks[0], encoder=encoder_digest(module), dtype="float32", latent_shape=LATENT)
    name = f"burgers1d-{key[:20]}{SUFFIX}"
    out = []
    with caplog.at_level(logging.INFO, logger="ups"), open(root / f".{name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: out.extend(ensure(root, tasks[:1], encode)))
        writer.start()
        deadline = time.monotonic() + 10
        while "waiting for another process" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert f"waiting for another process writing {name}" in caplog.text
        assert encode.calls == [0] and not (root / name).exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
        writer.join(timeout=10)
    assert [e.status for e in out] == ["built"] and out[0].path == root / name and encode.calls == [10]


class EntryFrames(Dataset):
    def __init__(self, entry):
        self.entry = entry

    def __len__(self):
        return self.entry.shape[0]

    def __getitem__(self, i):
        return torch.from_numpy(self.entry.frames(i, slice(None, None, 2)))


def test_entry_pickles_without_its_map_and_serves_dataloader_workers(tasks, module, tmp_path):
    encode = GridEncode(tasks, module)
    entry = ensure(tmp_path / "cache", tasks, encode)[0]
    entry.frames(0)  # opens the map in this process
    assert entry._map is not None
    blob = pickle.dumps(entry)
    assert len(blob) < 1000  # the entry is 10 * 6 * 4 * 3 * 4 = 2880 bytes of latents
    clone = pickle.loads(blob)
    assert clone._map is None and clone.shape == entry.shape
    np.testing.assert_array_equal(clone.frames(4), entry.frames(4))
    loader = DataLoader(EntryFrames(entry), batch_size=4, num_workers=2)
    batches = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(batches, expected(encode, 0)[:, ::2])


def test_entries_list_headers_and_report_unreadable_files(tasks, module, tmp_path):
    root = tmp_path / "cache"
    built = ensure(root, tasks, GridEncode(tasks, module))
    (root / f"zzz{SUFFIX}").write_bytes(b"not a latent cache entry")
    listed = LatentCache(root).entries()
    by_name = sorted(built, key=lambda e: e.path.name)
    assert [Path(e["path"]) for e in listed] == [e.path for e in by_name] + [root / f"zzz{SUFFIX}"]
    for info, entry in zip(listed, by_name):
        header = info["header"]
        assert info["bytes"] == entry.path.stat().st_size
        assert (header["task"], header["shape"], header["dtype"], header["format"]) == (
            entry.task,
            list(entry.shape),
            "float32",
            1,
        )
        assert entry.path.name.split("-")[1] == header["key"][:20] + SUFFIX
    assert "header" not in listed[2] and "bad magic" in listed[2]["error"] and listed[2]["bytes"] == 24


def test_clear_removes_entries_locks_and_temp_files(tasks, module, tmp_path):
    root = tmp_path / "cache"
    entries = ensure(root, tasks, GridEncode(tasks, module))
    (root / f".{entries[0].path.name}.abc123.tmp").write_bytes(b"x" * 10)
    (root / "notes.txt").write_text("kept")
    total = sum(p.stat().st_size for p in root.iterdir() if p.name != "notes.txt")
    assert LatentCache(root).clear() == (5, total)
    assert files(root) == ["notes.txt"]
    assert LatentCache(root).entries() == [] and LatentCache(root).clear() == (0, 0)
    assert LatentCache(tmp_path / "missing").clear() == (0, 0)


def test_non_finite_latents_raise_and_leave_nothing(tasks, module, tmp_path):
    root = tmp_path / "cache"
    encode = GridEncode(tasks, module)

    def poisoned(k, i):
        latents = encode(k, i)
        latents[2, 1, 0] = np.nan if i == 3 else latents[2, 1, 0]
        return latents

    with pytest.raises(DataError, match=r"task 'burgers1d' .*trajectory 3: .*non-finite"):
        LatentCache(root).ensure(tasks, poisoned, encoder="e", dtype="float32", latent_shape=LATENT)
    assert encode.calls == [4, 0]
    assert [n for n in files(root) if not n.endswith(".lock")] == []


def test_float16_overflow_names_the_fix(tasks, tmp_path):
    root = tmp_path / "cache"

    def huge(k, i):
        return np.full((6, *LATENT), 7.0e4, dtype=np.float32)

    with pytest.raises(DataError, match=r"trajectory 0: latents reach 7e\+04.*latent_cache_dtype=float32"):
        LatentCache(root).ensure(tasks, huge, encoder="e", dtype="float16", latent_shape=LATENT)
    assert [n for n in files(root) if not n.endswith(".lock")] == []
    entries = LatentCache(root).ensure(tasks[:1], huge, encoder="e", dtype="float32", latent_shape=LATENT)
    assert entries[0].frames(9).max() == 7.0e4


def test_bad_dtype_and_latent_shape_are_value_errors(tasks, tmp_path):
    cache = LatentCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="'bfloat16' is not supported"):
        cache.ensure(tasks, lambda k, i: None, encoder="e", dtype="bfloat16", latent_shape=LATENT)
    with pytest.raises(ValueError, match=r"latent_shape \(4, 0\)"):
        cache.ensure(tasks, lambda k, i: None, encoder="e", dtype="float32", latent_shape=(4, 0))
    with pytest.raises(ValueError, match=r"shape \(6, 12\); expected \[T, L, D\] = \[6, 4, 3\]"):
        cache.ensure(tasks, lambda k, i: np.zeros((6, 12)), encoder="e", dtype="float32", latent_shape=LATENT)


def test_encoder_digest_follows_the_weights():
    digest = encoder_digest(make_encoder(0))
    assert digest == encoder_digest(make_encoder(0)) and len(digest) == 64
    assert digest != encoder_digest(make_encoder(1))
    changed = make_encoder(0)
    with torch.no_grad():
        changed[2].bias[5] += 1e-6
    assert digest != encoder_digest(changed)
    assert encoder_digest(make_encoder(0).to(torch.bfloat16)) not in (digest, encoder_digest(make_encoder(1)))


def test_encoder_digest_follows_the_architecture():
    other = make_encoder(0)
    other[1] = nn.GELU()  # the same weights, another computation
    assert encoder_digest(other) != encoder_digest(make_encoder(0))


def test_progress_bar_per_task_only_when_asked(tasks, module, tmp_path, capsys):
    ensure(tmp_path / "quiet", tasks, GridEncode(tasks, module))
    assert "encoding" not in capsys.readouterr().err
    ensure(tmp_path / "loud", tasks, GridEncode(tasks, module), progress=True)
    err = capsys.readouterr().err
    assert "encoding burgers1d" in err and "10/10" in err and "encoding advection1d" in err and "8/8" in err


def test_corrupt_entry_is_removed_even_when_its_rebuild_fails(tasks, module, tmp_path):
    root = tmp_path / "cache"
    path = ensure(root, tasks, GridEncode(tasks, module))[0].path
    _flip_data(path)

    def failing(k, i):
        return np.full((6, *LATENT), np.inf, dtype=np.float32)

    with pytest.raises(DataError, match="non-finite"):
        LatentCache(root).ensure(
            tasks, failing, encoder=encoder_digest(module), dtype="float32", latent_shape=LATENT
        )
    assert not path.exists() and len(list(root.glob(f"*{SUFFIX}"))) == 1


def test_an_edit_of_the_encoders_source_text_is_no_miss(monkeypatch):
    """Issue 29: the key covers the encoder's architecture and weights, not its source text (an
    edited comment used to invalidate every cache); a change of what a layer computes raises
    the cache's FORMAT_VERSION instead."""
    import inspect

    from ups.models import GridEncoder

    encoder = GridEncoder(1, 1, tokens=4, dim=8, hidden=8)
    before = encoder_digest(encoder)
    monkeypatch.setattr(inspect, "getsource", lambda obj: pytest.fail("the source text is read"))
    assert encoder_digest(encoder) == before
    assert encoder_digest(GridEncoder(1, 1, tokens=4, dim=8, hidden=16)) != before  # another architecture


def test_leftovers_of_a_killed_build_are_listed_and_removed_unless_their_writer_is_alive(
    tasks, module, tmp_path, capsys
):
    fcntl = pytest.importorskip("fcntl")
    from ups.cli import main

    root = tmp_path / "cache"
    entries = ensure(root, tasks, GridEncode(tasks, module))
    killed = root / f".{entries[0].path.name}.k1ll3d.tmp"
    killed.write_bytes(b"x" * 2_000_000)
    assert main(["cache", "info", "--dir", str(root)]) == 0
    assert f"  {killed.name}  2.0 MB  temporary file of a killed build" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(root)]) == 0
    assert files(root) == []
    killed.write_bytes(b"x")
    writing = root / f".advection1d-{'0' * 20}{SUFFIX}.4l1v3.tmp"  # another key, its writer alive
    writing.write_bytes(b"y")
    with open(root / f".advection1d-{'0' * 20}{SUFFIX}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure(root, tasks, GridEncode(tasks, module))
    assert not killed.exists() and writing.exists()


def test_too_little_free_space_is_one_message_before_encoding(tasks, module, tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from ups.errors import UPSError

    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000)
    )
    root, encode = tmp_path / "cache", GridEncode(tasks, module)
    needed = 10 * 6 * 4 * 3 * 4 + (1 << 16)  # burgers1d's [N, T, L, D] float32, and room for the header
    with pytest.raises(UPSError) as refused:
        ensure(root, tasks, encode)
    assert str(refused.value).startswith(
        f"the latent cache entry of task 'burgers1d' needs {needed:,} bytes at "
    )
    assert "but only 1,000 are free on that disk; free space there, or set training.latent_cache_dir" in str(
        refused.value
    )
    assert encode.calls == [0, 0] and [n for n in files(root) if not n.endswith(".lock")] == []


def test_a_disk_that_fills_while_writing_is_one_message_and_leaves_nothing(tasks, module, tmp_path):
    import errno

    from ups.errors import UPSError

    root, encode = tmp_path / "cache", GridEncode(tasks, module)

    def disk_full_at_the_third(k, i):
        if i == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return encode(k, i)

    with pytest.raises(UPSError) as refused:
        LatentCache(root).ensure(
            tasks, disk_full_at_the_third, encoder="e", dtype="float32", latent_shape=LATENT
        )
    assert re.fullmatch(
        r"the disk \(or quota\) filled up while writing the latent cache entry of task 'burgers1d' "
        r"\(68,416 bytes\) at \S+/burgers1d-\w{20}\.latents; nothing of it was kept\. Free space there, "
        r"or set training\.latent_cache_dir to a folder on a disk with room\.",
        str(refused.value),
    )
    assert encode.calls == [2, 0]
    assert [n for n in files(root) if not n.endswith(".lock")] == []
