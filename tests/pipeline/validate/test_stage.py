"""The validate stage on generated data: each bad input is rejected with its reason, each good one kept intact."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from whisper_tune.testing import espeak_available, speak, tone, write_audio
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import CsvError, ModelError
from whisper_tune.pipeline.validate.manifest import COLUMNS, read_manifest
from whisper_tune.pipeline.validate.checks import (DUPLICATE, EMPTY_FILE, MISSING, OUTSIDE, TOO_LONG, TOO_SHORT,
                                                  UNREADABLE, check_audio)
from whisper_tune.pipeline.validate.report import format_summary
from whisper_tune.pipeline.validate.stage import run_validate

ARABIC = "مرحبا، كيف حالك اليوم؟"
FRENCH = "Ça a été une très belle journée, n'est-ce pas ?"
QUOTED = "first line, with commas\nsecond line \"quoted\""


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None, bom: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header or ["audios", "transcription"])
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + buf.getvalue(), encoding="utf-8")
    return path


def truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def validate(csv_path: Path, work: Path, echo=None, use_model: bool = False, **data):
    overrides = {f"data.{k}": v for k, v in data.items()}
    model = overrides.pop("data.model", None)
    if model is not None:
        overrides["model.name"] = model
    return run_validate(csv_path=csv_path, work_dir=work, cfg=load_config(None, overrides),
                        use_model=use_model, echo=echo)


GOOD = "a perfectly fine transcript"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One folder with every case; validated once. Returns (manifest rows by source, result, printed summary)."""
    root = tmp_path_factory.mktemp("ds")
    data = root / "data"
    clip = tone(2.0)
    write_audio(data / "good/stereo.wav", np.stack([clip, 0.5 * clip], axis=1))
    write_audio(data / "good/u8_8k.wav", tone(2.0, sr=8000), sr=8000, subtype="PCM_U8")
    write_audio(data / "good/hires.flac", tone(2.0, sr=44100), sr=44100, subtype="PCM_24")
    write_audio(data / "good/float.wav", clip, subtype="FLOAT")
    write_audio(data / "good/clip.mp3", clip)
    write_audio(data / "good/clip.ogg", clip)
    write_audio(data / "good/arabic.wav", tone(1.5, freq=300))
    write_audio(data / "good/french.wav", tone(1.5, freq=350))
    write_audio(data / "good/quoted.wav", tone(1.5, freq=400))
    write_audio(data / "good/blank_text.wav", tone(1.5, freq=450))
    write_audio(data / "good/short_text.wav", tone(1.5, freq=500))
    (data / "bad").mkdir(parents=True)
    (data / "bad/zero.wav").write_bytes(b"")
    truncate(write_audio(data / "bad/truncated.mp3", tone(4.0)), 0.5)
    truncate(write_audio(data / "bad/truncated.flac", tone(4.0)), 0.6)
    (data / "bad/text.wav").write_text("this is a text file, not audio\n", encoding="utf-8")
    (data / "bad/song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    write_audio(data / "bad/short.wav", tone(0.5))
    write_audio(data / "bad/long.flac", tone(31.0, sr=8000), sr=8000)
    write_audio(root / "outside/x.wav", clip)
    rows = [
        ["good/stereo.wav", GOOD, "spk1"],
        ["good/u8_8k.wav", GOOD, "spk2"],
        ["good/hires.flac", GOOD, ""],
        ["good/float.wav", GOOD, "spk1"],
        ["good/clip.mp3", GOOD, "spk3"],
        ["good/clip.ogg", GOOD, "spk3"],
        ["good/arabic.wav", ARABIC, "ar"],
        ["good/french.wav", FRENCH, "fr"],
        ["good/quoted.wav", QUOTED, "x, y"],
        ["bad/missing.wav", GOOD, ""],
        ["bad/zero.wav", GOOD, ""],
        ["bad/truncated.mp3", GOOD, ""],
        ["bad/truncated.flac", GOOD, ""],
        ["bad/text.wav", GOOD, ""],
        ["bad/song.m4a", GOOD, ""],
        ["bad/short.wav", GOOD, ""],
        ["bad/long.flac", GOOD, ""],
        ["good/stereo.wav", "the same file again", ""],
        ["./good/../good/float.wav", "the same file, spelled differently", ""],
        ["../outside/x.wav", GOOD, ""],
        ["good/blank_text.wav", "   ", ""],
        ["good/short_text.wav", "hello", ""],
    ]
    csv_path = write_csv(data / "clips.csv", rows, header=["audios", "transcription", "speaker"], bom=True)
    printed: list[str] = []
    result = validate(csv_path, root / "work", echo=printed.append)
    manifest = read_manifest(root / "work")
    return manifest, result, "\n".join(printed), root


def row(manifest: pl.DataFrame, csv_row: int) -> dict:
    return manifest.filter(pl.col("csv_row") == csv_row).to_dicts()[0]


@pytest.mark.parametrize("csv_row, sample_rate, channels", [
    (1, 16000, 2),      # stereo
    (2, 8000, 1),       # 8 kHz 8-bit
    (3, 44100, 1),      # 44.1 kHz 24-bit flac
    (4, 16000, 1),      # float wav
    (5, 16000, 1),      # mp3
    (6, 16000, 1),      # ogg vorbis
])
def test_good_formats_are_kept(dataset, csv_row, sample_rate, channels):
    r = row(dataset[0], csv_row)
    assert (r["status"], r["reason"]) == ("ok", "")
    assert (r["sample_rate"], r["channels"]) == (sample_rate, channels)
    assert r["duration"] == pytest.approx(2.0, abs=0.01)
    assert Path(r["path"]).is_absolute() and Path(r["path"]).is_file()
    assert r["split"] in ("train", "test")


@pytest.mark.parametrize("csv_row, text", [(7, ARABIC), (8, FRENCH), (9, QUOTED)])
def test_transcripts_are_kept_intact(dataset, csv_row, text):
    r = row(dataset[0], csv_row)
    assert r["status"] == "ok"
    assert r["text"] == text


def test_extra_columns_and_bom(dataset):
    manifest = dataset[0]
    assert list(manifest.columns) == [*COLUMNS, "text_in_train", "audio_in_train", "audit_ok", "speaker"]  # no BOM
    assert not any(manifest["audit_ok"].to_list())                     # no audit column: nothing marked
    assert row(manifest, 9)["speaker"] == "x, y"
    assert row(manifest, 3)["speaker"] == ""
    assert manifest["csv_row"].to_list() == list(range(1, 23))
    assert manifest["source"][0] == "good/stereo.wav"


@pytest.mark.parametrize("csv_row, words", [
    (10, "file not found"),
    (11, "empty file (0 bytes)"),
    (12, "truncated or corrupt"),         # mp3 cut in half: its header still says 4 s
    (13, "truncated or corrupt"),         # flac missing its end
    (14, "not a readable audio file"),    # text named .wav
    (15, "unsupported file type '.m4a'"),
    (16, "audio too short: 0.50 s"),
    (17, "audio too long: 31.00 s"),
    (18, "duplicate path: same file as row 1"),
    (19, "duplicate path: same file as row 4"),
    (20, "outside the CSV folder"),
    (21, "empty transcript"),
    (22, "transcript too short: 5 characters"),
])
def test_bad_rows_are_rejected_with_a_reason(dataset, csv_row, words):
    r = row(dataset[0], csv_row)
    assert r["status"] == "rejected"
    assert words in r["reason"]
    assert r["split"] in ("train", "test")                # rejected rows get the split they would have


def test_counts_and_summary(dataset):
    manifest, result, printed, _ = dataset
    assert (result.rows, result.kept, result.rejected) == (22, 9, 13)
    assert manifest.filter(pl.col("status") == "ok").height == 9
    assert result.reasons[MISSING] == 1 and result.reasons[EMPTY_FILE] == 1 and result.reasons[UNREADABLE] == 3
    assert result.reasons[DUPLICATE] == 2 and result.reasons[OUTSIDE] == 1
    assert result.reasons[TOO_SHORT] == 1 and result.reasons[TOO_LONG] == 1
    assert sum(result.clips.values()) == 9
    assert sum(result.seconds.values()) == pytest.approx(6 * 2.0 + 3 * 1.5, abs=0.05)
    assert "rows: 22   kept: 9   rejected: 13" in printed
    assert "row 10: bad/missing.wav - file not found" in printed
    assert "row 18: good/stereo.wav - duplicate path" in printed
    assert "train:" in printed and "test :" in printed
    assert format_summary(result) == printed


def test_ids_are_unique_and_paths_absolute(dataset):
    manifest = dataset[0]
    assert manifest["id"].n_unique() == manifest.height
    assert row(manifest, 18)["id"].startswith(row(manifest, 1)["id"])      # same clip, marked as a later row


def test_duration_plot_is_a_png(dataset):
    plot = dataset[1].plot_path
    assert plot.name == "durations.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_allow_outside_accepts_the_outside_path(dataset, tmp_path):
    root = dataset[3]
    csv_path = write_csv(root / "data/outside.csv", [["../outside/x.wav", GOOD], ["good/float.wav", GOOD]])
    refused = validate(csv_path, tmp_path / "a")
    assert (refused.kept, refused.reasons) == (1, {OUTSIDE: 1})
    accepted = validate(csv_path, tmp_path / "b", allow_outside=True)
    assert accepted.kept == 2
    r = row(read_manifest(tmp_path / "b"), 1)
    assert r["path"] == str((root / "outside/x.wav").resolve())


def test_absolute_and_windows_paths_inside_the_folder(dataset, tmp_path):
    data = dataset[3] / "data"
    csv_path = write_csv(data / "abs.csv", [[str(data / "good/float.wav"), GOOD], ["good\\clip.ogg", GOOD]])
    result = validate(csv_path, tmp_path)
    manifest = read_manifest(tmp_path)
    assert result.kept == 2, manifest["reason"].to_list()
    # the id and split come from the path relative to the CSV folder, however it was written
    first = read_manifest(dataset[3] / "work")
    assert row(manifest, 1)["id"] == row(first, 4)["id"]
    assert row(manifest, 2)["id"] == row(first, 6)["id"]


def test_limits_come_from_the_config(dataset, tmp_path):
    csv_path = dataset[1].csv_path
    result = validate(csv_path, tmp_path, min_seconds=0.1, max_seconds=40.0, min_text_chars=2)
    manifest = read_manifest(tmp_path)
    assert row(manifest, 16)["status"] == "ok" and row(manifest, 17)["status"] == "ok"
    assert row(manifest, 22)["status"] == "ok"
    assert result.kept == 12


def test_truncated_mp3_is_detected_at_any_cut(tmp_path):
    source = write_audio(tmp_path / "full.mp3", tone(5.0))
    ok = check_audio(source, min_seconds=1.0, max_seconds=30.0)
    assert ok.problem is None and ok.info.duration == pytest.approx(5.0, abs=0.01)
    for keep in (0.95, 0.7, 0.3):
        cut = tmp_path / f"cut{keep}.mp3"
        cut.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
        check = check_audio(cut, min_seconds=1.0, max_seconds=30.0)
        assert check.problem is not None and check.problem.kind == UNREADABLE, keep


def test_split_is_stable_when_rows_are_added(tmp_path):
    data = tmp_path / "data"
    for i in range(40):
        write_audio(data / f"clips/{i:02d}.wav", tone(1.2, sr=8000, seed=i), sr=8000)
    first_rows = [[f"clips/{i:02d}.wav", f"sentence number {i}"] for i in range(20)]
    more_rows = [[f"clips/{i:02d}.wav", f"sentence number {i}"] for i in range(20, 40)]
    validate(write_csv(data / "a.csv", first_rows), tmp_path / "a", test_share=0.3)
    validate(write_csv(data / "b.csv", more_rows[:10] + first_rows[::-1] + more_rows[10:]), tmp_path / "b",
             test_share=0.3)
    a = read_manifest(tmp_path / "a").select("source", "id", "split")
    b = read_manifest(tmp_path / "b").select("source", "id", "split")
    joined = a.join(b, on="source", suffix="_b")
    assert joined.height == 20
    assert joined["split"].to_list() == joined["split_b"].to_list()
    assert joined["id"].to_list() == joined["id_b"].to_list()
    assert set(b["split"]) == {"train", "test"}


def test_examples_are_capped_per_problem(tmp_path):
    write_audio(tmp_path / "ok.wav", tone(1.5))
    rows = [[f"missing_{i}.wav", GOOD] for i in range(5)] + [["ok.wav", GOOD]]
    printed: list[str] = []
    result = validate(write_csv(tmp_path / "c.csv", rows), tmp_path / "w", echo=printed.append)
    text = "\n".join(printed)
    assert result.reasons == {MISSING: 5}
    assert text.count("- file not found") == 3
    assert "... and 2 more" in text
    assert ("no usable clip fell into the test split" in text) == (result.clips["test"] == 0)


def test_column_names_are_found_case_insensitively_and_extra_names_kept_apart(tmp_path):
    write_audio(tmp_path / "a.wav", tone(1.5))
    csv_path = write_csv(tmp_path / "c.csv", [["a.wav", GOOD, "7", "train"]],
                         header=[" File ", "SENTENCE", "id", "split"])
    validate(csv_path, tmp_path / "w")
    r = row(read_manifest(tmp_path / "w"), 1)
    assert (r["status"], r["source"], r["text"]) == ("ok", "a.wav", GOOD)
    assert (r["csv_id"], r["csv_split"]) == ("7", "train")


def test_named_columns_and_semicolons(tmp_path):
    write_audio(tmp_path / "a.wav", tone(1.5))
    (tmp_path / "c.csv").write_text("clip;words;note\na.wav;bonjour à tous, mes amis;x\n", encoding="utf-8")
    result = validate(tmp_path / "c.csv", tmp_path / "w", audio_column="clip", text_column="Words")
    assert result.kept == 1
    assert row(read_manifest(tmp_path / "w"), 1)["text"] == "bonjour à tous, mes amis"


def test_blank_lines_are_skipped(tmp_path):
    write_audio(tmp_path / "a.wav", tone(1.5))
    (tmp_path / "c.csv").write_text(f"audio,text\n\na.wav,{GOOD}\n\n", encoding="utf-8")
    result = validate(tmp_path / "c.csv", tmp_path / "w")
    assert (result.rows, result.kept) == (1, 1)


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (b"audios,transcription\n", "has a header"),
    (bytes(range(256)) * 8, "not a CSV text file"),
    (b"audios,transcription\nx.wav,caf\xe9\n", "not UTF-8"),
    (b"audios,notes\nx.wav,hello there\n", "no text column"),
    (b"name,transcription\nx.wav,hello there\n", "no audio column"),
    (b"audios,transcription\nx.wav,hello, there\n", "line 2 has 3 fields"),
])
def test_unusable_csv(tmp_path, content, words):
    csv_path = tmp_path / "clips.csv"
    if content is not None:
        csv_path.write_bytes(content)
    with pytest.raises(CsvError, match=words) as err:
        validate(csv_path, tmp_path / "w")
    message = str(err.value)
    assert str(csv_path) in message and "\n" not in message
    assert not (tmp_path / "w" / "manifest.parquet").exists()


def test_missing_column_message_lists_columns_and_flag(tmp_path):
    csv_path = write_csv(tmp_path / "c.csv", [["x.wav", "hi"]], header=["audios", "notes"])
    with pytest.raises(CsvError, match=r"found 'audios', 'notes'; name yours with --text-column"):
        validate(csv_path, tmp_path / "w")
    with pytest.raises(CsvError, match=r"no column 'words' \(given with --text-column\)"):
        validate(csv_path, tmp_path / "w", text_column="words")


def test_label_too_long_with_a_model(tmp_path, tiny_model):
    write_audio(tmp_path / "a.wav", tone(1.5))
    write_audio(tmp_path / "b.wav", tone(1.5, freq=300))
    long_text = " ".join(["hello"] * 460)
    csv_path = write_csv(tmp_path / "c.csv", [["a.wav", long_text], ["b.wav", GOOD]])
    without = validate(csv_path, tmp_path / "w0")
    assert without.kept == 2
    result = validate(csv_path, tmp_path / "w1", use_model=True, model=str(tiny_model))
    manifest = read_manifest(tmp_path / "w1")
    assert result.kept == 1
    assert "label too long" in row(manifest, 1)["reason"] and "448" in row(manifest, 1)["reason"]
    assert row(manifest, 2)["status"] == "ok"


def test_unloadable_model_is_a_model_error(tmp_path):
    write_audio(tmp_path / "a.wav", tone(1.5))
    csv_path = write_csv(tmp_path / "c.csv", [["a.wav", GOOD]])
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ModelError, match="empty_model"):
        validate(csv_path, tmp_path / "w", use_model=True, model=str(tmp_path / "empty_model"))


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_speech_is_kept(tmp_path):
    speak(tmp_path / "s.wav", "the patient showed signs of hypertension")
    csv_path = write_csv(tmp_path / "c.csv", [["s.wav", "the patient showed signs of hypertension"]])
    assert validate(csv_path, tmp_path / "w").kept == 1


def test_threaded_checks_match_serial_ones(dataset, tmp_path, monkeypatch):
    import whisper_tune.pipeline.validate.checks as checks

    monkeypatch.setattr(checks, "PARALLEL_MIN_ROWS", 1)
    validate(dataset[1].csv_path, tmp_path)
    assert read_manifest(tmp_path).equals(dataset[0])


def test_paths_relative_to_the_current_folder_get_a_hint(tmp_path, monkeypatch):
    write_audio(tmp_path / "data/audios/1.wav", tone(1.5))
    write_audio(tmp_path / "data/audios/2.wav", tone(1.5))
    csv_path = write_csv(tmp_path / "data/c.csv", [["data/audios/1.wav", GOOD], ["audios/2.wav", GOOD]])
    monkeypatch.chdir(tmp_path)
    result = validate(Path("data/c.csv"), Path("work"))
    reason = row(read_manifest(tmp_path / "work"), 1)["reason"]
    assert result.kept == 1 and result.reasons == {MISSING: 1}
    assert "relative to the CSV's folder" in reason and str(csv_path.parent) in reason


def test_split_column_is_honoured(tmp_path):
    for i in range(8):
        write_audio(tmp_path / f"c{i}.wav", tone(2.0, seed=i))
    rows = [[f"c{i}.wav", GOOD, s] for i, s in enumerate(["test", "TRAIN", "", "", "eval", " Test ", "Dev",
                                                          "validation"])]
    csv_path = write_csv(tmp_path / "d.csv", rows, header=["audios", "transcription", "split"])
    result = validate(csv_path, tmp_path / "w")
    m = read_manifest(tmp_path / "w")
    assert "validation: 2 clips" in format_summary(result) and result.clips["validation"] == 2
    assert m["split"].to_list()[:2] == ["train", "test"][::-1]          # given values win over the hash
    assert m["split"][5] == "test" and m["split"].to_list()[6:] == ["validation", "validation"]
    assert m["status"][4] == "rejected" and "unknown split 'eval'" in m["reason"][4]
    assert set(m["split"].to_list()[2:4]) <= {"train", "test"}       # blank: the hash decides
    again = write_csv(tmp_path / "e.csv", [r[:2] for r in rows[2:4]])
    validate(again, tmp_path / "w2")
    assert read_manifest(tmp_path / "w2")["split"].to_list() == m["split"].to_list()[2:4]


def test_audit_column_ok_marks_rows_and_other_values_are_named(tmp_path):
    for i in range(5):
        write_audio(tmp_path / f"c{i}.wav", tone(2.0, seed=i))
    rows = [[f"c{i}.wav", GOOD, mark] for i, mark in enumerate(["ok", " OK ", "", "yes", "Ok"])]
    csv_path = write_csv(tmp_path / "d.csv", rows, header=["audios", "transcription", "Audit"])
    result = validate(csv_path, tmp_path / "w")
    m = read_manifest(tmp_path / "w")
    assert m["audit_ok"].to_list() == [True, True, False, False, True]
    assert m["status"].to_list() == ["ok", "ok", "ok", "rejected", "ok"]
    assert m["reason"][3] == ("unknown audit mark 'yes' in column 'Audit': write ok to keep a row the audit "
                              "flagged, or leave it blank")
    assert "unknown audit mark" in format_summary(result)
