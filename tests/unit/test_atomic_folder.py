"""``atomic_folder``: the folder appears whole or not at all, and replaces an old one only once complete."""

from __future__ import annotations

import pytest

from ups.atomic import atomic_folder


def _fill(folder, text: str) -> None:
    (folder / "a.txt").write_text(text)


def test_a_new_folder_appears_whole_and_a_failed_one_leaves_nothing(tmp_path):
    with atomic_folder(tmp_path / "out") as tmp:
        _fill(tmp, "new")
        assert not (tmp_path / "out").exists()  # nothing at the target while it is written
    assert (tmp_path / "out" / "a.txt").read_text() == "new"

    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "other") as tmp:
        _fill(tmp, "half")
        raise RuntimeError("failed while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_folder_is_filled_and_a_full_one_only_replaced_when_asked(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:
        _fill(tmp, "new")
    assert (tmp_path / "empty" / "a.txt").read_text() == "new"

    with pytest.raises(OSError), atomic_folder(tmp_path / "empty") as tmp:
        _fill(tmp, "newer")
    assert (tmp_path / "empty" / "a.txt").read_text() == "new"

    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "empty", replace=True) as tmp:
        raise RuntimeError("failed while writing")
    assert (tmp_path / "empty" / "a.txt").read_text() == "new"

    with atomic_folder(tmp_path / "empty", replace=True) as tmp:
        (tmp / "b.txt").write_text("newest")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temporary or old folder left
