"""pipeline/fileio.py: atomic writes leave the old file or the new one, never half of one; a full disk is one line."""

from __future__ import annotations

import errno
import os

import pytest

from whisper_tune.pipeline.core.errors import DiskFullError
from whisper_tune.pipeline.core.fileio import atomic_path, atomic_write_json, atomic_write_text, is_disk_full, replace_folder


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "out.json"
    atomic_write_json(target, {"k": "é"})
    atomic_write_json(target, {"k": 2})
    assert target.read_text(encoding="utf-8") == '{\n  "k": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("err", [OSError(errno.ENOSPC, "No space left on device"),
                                 RuntimeError("SafetensorError: No space left on device (os error 28)")])
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, err):
    target = tmp_path / "out.bin"
    atomic_write_text(target, "old")
    with pytest.raises(DiskFullError) as caught:
        with atomic_path(target, needed_bytes=1234):
            raise err
    message = str(caught.value)
    assert message.startswith(f"no space left on the disk of {tmp_path}, ") and "about 1,234 bytes are needed" in message
    assert "\n" not in message and target.read_text() == "old"


def test_other_errors_are_not_taken_for_a_full_disk():
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("bad value"))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped)


def test_replace_folder_swaps_in_the_new_folder_whole(tmp_path):
    dest, new = tmp_path / "model", tmp_path / ".model.tmp"
    dest.mkdir()
    (dest / "old.bin").write_text("old")
    new.mkdir()
    (new / "new.bin").write_text("new")
    replace_folder(new, dest)
    assert sorted(os.listdir(dest)) == ["new.bin"] and sorted(os.listdir(tmp_path)) == ["model"]
