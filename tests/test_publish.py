"""The atomic publish helpers every stage writes through: a failed write never destroys what was there."""

from __future__ import annotations

import pytest

from stegobench.core.provenance import OutputDirError, publish_dir, replace_dir, save_atomically


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_replace_dir_swaps_in_the_new_folder_and_leaves_no_trash(tmp_path):
    final = _folder(tmp_path / "out", "old")
    replace_dir(_folder(tmp_path / "staging", "new"), final)
    assert (final / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_dir_refuses_a_folder_it_did_not_write(tmp_path):
    final = _folder(tmp_path / "out", "user's own")
    with pytest.raises(OutputDirError, match="did not write"):
        publish_dir(_folder(tmp_path / "staging", "new"), final, overwrite=True, marker="manifest.json")
    assert (final / "f.txt").read_text() == "user's own"


def test_save_atomically_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "plot.png"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomically(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    save_atomically(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new"
