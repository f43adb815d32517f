"""Incomplete checkpoints are set aside, never deleted unless they are an earlier partial checkpoint; whatever
already holds the partial name (a file, a link) is left alone."""

from __future__ import annotations

import os

import pytest

from whisper_tune.train.checkpoints import plan_start, set_aside


def incomplete(output_dir, step=3):
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "optimizer.pt").write_bytes(b"half")
    return folder


def test_an_older_partial_folder_is_replaced(tmp_path):
    old = tmp_path / "partial-checkpoint-3"
    old.mkdir()
    (old / "x").write_text("old")
    moved = set_aside(incomplete(tmp_path))
    assert moved == old and (moved / "optimizer.pt").read_bytes() == b"half" and not (moved / "x").exists()


@pytest.mark.parametrize("kind", ["file", "link to a folder", "dangling link"])
def test_a_file_or_link_named_like_the_partial_is_left_alone(tmp_path, kind):
    taken = tmp_path / "partial-checkpoint-3"
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    if kind == "file":
        taken.write_text("notes")
    elif kind == "link to a folder":
        os.symlink(elsewhere, taken)
    else:
        os.symlink(tmp_path / "gone", taken)
    incomplete(tmp_path)
    said = []
    assert plan_start(tmp_path, resume=False, echo=said.append) is None
    assert said == ["train: skipping checkpoint-3: incomplete (no trainer_state.json; its save was interrupted); "
                    "set aside as partial-checkpoint-3.1"]
    assert (tmp_path / "partial-checkpoint-3.1" / "optimizer.pt").read_bytes() == b"half"
    assert taken.is_symlink() or taken.read_text() == "notes"
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "checkpoint-3").exists()


def test_an_empty_rank_variable_is_the_main_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "")                   # exported but empty, as some job scripts leave it
    incomplete(tmp_path)
    plan_start(tmp_path, resume=False, echo=lambda message: None)
    assert (tmp_path / "partial-checkpoint-3").is_dir()
