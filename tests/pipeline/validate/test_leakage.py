"""Leakage report: exact counts of held-out clips that repeat a train transcript or a train file's bytes."""

from __future__ import annotations

import shutil

import polars as pl

from whisper_tune.testing import tone, write_audio
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.validate.checks import NO_TEXT, Problem
from whisper_tune.pipeline.validate.leakage import find_leaks, text_in_train
from whisper_tune.pipeline.validate.rows import Record
from whisper_tune.pipeline.validate.manifest import COLUMNS, read_manifest, write_manifest
from whisper_tune.pipeline.validate.report import format_summary
from whisper_tune.pipeline.validate.stage import run_validate


def test_counts_are_exact_on_a_constructed_csv(tmp_path):
    for i in range(8):
        write_audio(tmp_path / f"c{i}.wav", tone(1.5, seed=i, freq=300 + 40 * i))
    shutil.copy(tmp_path / "c0.wav", tmp_path / "copy_of_c0.wav")       # same bytes as a train clip
    shutil.copy(tmp_path / "c5.wav", tmp_path / "copy_of_c5.wav")       # same bytes as a test clip: no leak
    shutil.copy(tmp_path / "c1.wav", tmp_path / "copy_of_c1.wav")       # same bytes as a REJECTED train row
    rows = [
        ("c0.wav", "Give the apixaban tonight.", "train"),
        ("c1.wav", "x", "train"),                                        # rejected: transcript too short
        ("c2.wav", "Stop the warfarin today.", "train"),
        ("c3.wav", "give the APIXABAN, tonight!", "test"),               # same normalized text as row 1
        ("c4.wav", "Stop the warfarin today", "test"),                   # same as row 3
        ("c5.wav", "A sentence nobody trained on.", "test"),
        ("copy_of_c0.wav", "Something new entirely here.", "test"),      # same audio as row 1
        ("copy_of_c5.wav", "Another new sentence here.", "test"),
        ("copy_of_c1.wav", "Yet another sentence here.", "test"),
        ("c6.wav", "Stop the warfarin today.", "validation"),            # same text as row 3
        ("c7.wav", "Validation says something new.", "validation"),
    ]
    lines = ["audios,transcription,split"] + [f'{a},"{t}",{s}' for a, t, s in rows]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    result = run_validate(csv_path=tmp_path / "d.csv", work_dir=tmp_path / "w", cfg=load_config(None),
                          use_model=False, echo=None)
    r = result.leakage
    assert r.held_out == {"test": 6, "validation": 2}
    assert r.same_text == {"test": 2, "validation": 1}
    assert r.same_audio == {"test": 1, "validation": 0}
    assert [(e.csv_row, e.train_row) for e in r.text_examples["test"]] == [(4, 1), (5, 3)]
    assert [(e.csv_row, e.train_row) for e in r.audio_examples["test"]] == [(7, 1)]
    m = read_manifest(tmp_path / "w")
    assert m["text_in_train"].to_list() == [False, False, False, True, True, False, False, False, False, True, False]
    assert m["audio_in_train"].to_list() == [False] * 6 + [True] + [False] * 4
    summary = format_summary(result)
    assert "test: 2 of 6 clips say a sentence that a train clip says" in summary
    assert "1 have the same audio bytes" in summary and "row 4 (train row 1)" in summary
    assert "measures memory" in summary and "identical audio" in summary


def records(texts: list[str], splits: list[str], kept: list[bool]) -> list[Record]:
    """Records without files, their splits already set, rows numbered from 1."""
    return [Record(csv_row=i, source="", text=t, relpath=f"{i}.wav", split=s,
                   problems=[] if k else [Problem(NO_TEXT, "rejected")])
            for i, (t, s, k) in enumerate(zip(texts, splits, kept), start=1)]


def test_no_leak_says_so_and_flags_match_the_pure_helper():
    texts = ["one two", "One, two!", "three four", "five six"]
    splits = ["train", "test", "test", "train"]
    kept = [True, True, True, False]
    report = find_leaks(records(texts, splits, kept))
    assert list(report.text_in_train) == text_in_train(texts, splits, kept) == [False, True, False, False]
    clean = find_leaks(records(texts[2:], ["test", "train"], [True, True]))
    assert not clean.any and clean.same_text == {"test": 0, "validation": 0}


def test_old_manifests_without_the_columns_stay_readable(tmp_path):
    n = 2
    old = pl.DataFrame({
        "id": ["a", "b"], "path": ["/x/a.wav", "/x/b.wav"], "source": ["a.wav", "b.wav"], "text": ["hi there"] * n,
        "duration": [1.0] * n, "sample_rate": [16_000] * n, "channels": [1] * n, "split": ["train", "test"],
        "status": ["ok"] * n, "reason": [""] * n, "csv_row": [1, 2],
    })
    write_manifest(old, tmp_path)
    assert list(read_manifest(tmp_path).columns) == list(COLUMNS)
