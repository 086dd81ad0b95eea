"""staged_directory: an output set lands whole or not at all, and errors name the file."""

from __future__ import annotations

import errno

import pytest

from cimconvert import OutputError
from cimconvert.io_utils import staged_directory


def _write_set(target, files: dict[str, str]) -> None:  # noqa: ANN001
    with staged_directory(target) as staging:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)


def test_a_new_directory_gets_the_whole_set(tmp_path):
    _write_set(tmp_path / "out", {"a.txt": "a", "points/p1.json": "1"})
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "points"]


def test_a_set_refused_by_one_file_leaves_the_old_set_whole(tmp_path):
    out = tmp_path / "out"
    _write_set(out, {"a.txt": "old", "z.txt": "old"})
    (out / "results.json").mkdir()  # a directory where the new set has a file
    with pytest.raises(OutputError, match=r"results\.json: a directory of that name is in the way"):
        _write_set(out, {"a.txt": "new", "results.json": "{}", "z.txt": "new"})
    assert (out / "a.txt").read_text() == "old" and (out / "z.txt").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "results.json", "z.txt"]  # no staging left


def test_a_new_subdirectory_replaces_the_old_one(tmp_path):
    out = tmp_path / "out"
    _write_set(out, {"points/old.json": "1", "keep.txt": "k"})
    _write_set(out, {"points/new.json": "2"})
    assert [p.name for p in (out / "points").iterdir()] == ["new.json"]
    assert (out / "keep.txt").read_text() == "k"  # other files are left alone


def test_a_failed_write_names_the_output_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError) as caught:
        with staged_directory(out) as staging:
            raise OSError(errno.EFBIG, "File too large", str(staging / "report.json"))
    assert str(caught.value) == f"Cannot write {out / 'report.json'}: File too large."
    assert not out.exists() and list(tmp_path.iterdir()) == []
