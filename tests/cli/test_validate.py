"""`whisper-tune validate` as a user runs it: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import tone, write_audio
from whisper_tune.cli import app
from whisper_tune.pipeline.validate.manifest import read_manifest

GOOD = "a perfectly fine transcript"


def invoke(*args: str):
    return CliRunner().invoke(app, ["validate", *args])


def assert_one_line_error(result, *words: str) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0]
    return errors[0]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_audio(tmp_path / "audios/1.wav", tone(1.5))
    write_audio(tmp_path / "audios/2.flac", tone(2.0, freq=300))
    write_audio(tmp_path / "outside.wav", tone(1.5))
    return tmp_path


def test_good_csv_exits_zero_and_prints_the_summary(folder):
    csv_path = folder / "clips.csv"
    csv_path.write_text(f"audios,transcription\naudios/1.wav,{GOOD}\naudios/2.flac,{GOOD}\naudios/3.mp3,{GOOD}\n",
                        encoding="utf-8")
    result = invoke("--csv", str(csv_path), "--work", str(folder / "work"))
    assert result.exit_code == 0, result.output
    assert "rows: 3   kept: 2   rejected: 1" in result.output
    assert "row 3: audios/3.mp3 - file not found" in result.output
    assert read_manifest(folder / "work").height == 3


def test_flags_reach_the_checks(folder):
    csv_path = folder / "sub" / "clips.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(f"clip,words\n../outside.wav,{GOOD}\n../audios/1.wav,hi there\n", encoding="utf-8")
    args = ["--csv", str(csv_path), "--work", str(folder / "w"), "--audio-column", "clip", "--text-column", "words"]
    refused = invoke(*args)
    assert_one_line_error(refused, "no usable clip")
    assert "outside the CSV folder: 2" in refused.output
    accepted = invoke(*args, "--allow-outside", "--min-text-chars", "3")
    assert accepted.exit_code == 0, accepted.output
    assert "kept: 2" in accepted.output


def test_every_row_rejected_exits_non_zero(folder):
    csv_path = folder / "clips.csv"
    csv_path.write_text("audios,transcription\naudios/1.wav,hi\n", encoding="utf-8")
    result = invoke("--csv", str(csv_path), "--work", str(folder / "w"))
    assert_one_line_error(result, "no usable clip", str(csv_path))
    assert "transcript too short: 1" in result.output


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"", "is empty"),
    (bytes(range(256)) * 8, "not a CSV text file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a CSV text file"),
    (b"audios,notes\naudios/1.wav,hello there\n", "no text column"),
    (b"name,transcription\naudios/1.wav,hello there\n", "--audio-column"),
    (b"audios,transcription\n", "no rows"),
])
def test_unusable_csv_is_one_line(folder, content, words):
    csv_path = folder / "clips.csv"
    if content is not None:
        csv_path.write_bytes(content)
    result = invoke("--csv", str(csv_path), "--work", str(folder / "w"))
    assert_one_line_error(result, words, str(csv_path))


def test_csv_that_is_a_folder(folder):
    assert_one_line_error(invoke("--csv", str(folder), "--work", str(folder / "w")), "is a folder")


def test_bad_model_is_one_line(folder):
    csv_path = folder / "clips.csv"
    csv_path.write_text(f"audios,transcription\naudios/1.wav,{GOOD}\n", encoding="utf-8")
    result = invoke("--csv", str(csv_path), "--work", str(folder / "w"), "--model", str(folder / "audios"))
    assert_one_line_error(result, "--model")


def test_bad_config_value_is_one_line(folder):
    csv_path = folder / "clips.csv"
    csv_path.write_text(f"audios,transcription\naudios/1.wav,{GOOD}\n", encoding="utf-8")
    result = invoke("--csv", str(csv_path), "--work", str(folder / "w"), "--test-share", "1.5")
    assert_one_line_error(result, "test_share")


def test_validation_share_flag_makes_a_validation_split(folder):
    csv_path = folder / "clips.csv"
    csv_path.write_text(f"audios,transcription\naudios/1.wav,{GOOD}\naudios/2.flac,{GOOD}\n", encoding="utf-8")
    result = invoke("--csv", str(csv_path), "--work", str(folder / "w"), "--test-share", "0",
                    "--validation-share", "0.999")
    assert result.exit_code == 0, result.output
    assert "validation: 2 clips" in result.output
    assert read_manifest(folder / "w")["split"].to_list() == ["validation", "validation"]


def test_the_demo_recordings_validate_into_windows(tmp_path: Path):
    import polars as pl

    from whisper_tune.testing import REPO_ROOT

    result = invoke("--csv", str(REPO_ROOT / "data/demo/recordings.csv"), "--work", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "recordings: 4, cut into" in result.output and "rejected: 0" in result.output
    frame = read_manifest(tmp_path)
    assert (frame["end"] - frame["start"]).max() <= 30.0
    assert frame.group_by("recording").agg(pl.col("split").n_unique())["split"].max() == 1
    srt = (REPO_ROOT / "data/demo/recordings/hand_00.srt").read_text().split("\n\n")
    texts = [t for row in frame.filter(pl.col("recording") == "recordings/hand_00.mp3")["cue_texts"].to_list()
             for t in row]
    assert texts == [block.strip().split("\n", 2)[2] for block in srt]


def test_dataset_and_csv_together_is_one_error_line(tmp_path: Path):
    write_audio(tmp_path / "a.wav", tone(1.5))
    (tmp_path / "c.csv").write_text(f"audios,transcription\na.wav,{GOOD}\n")
    result = invoke("--csv", str(tmp_path / "c.csv"), "--dataset", str(tmp_path), "--work", str(tmp_path / "w"))
    assert assert_one_line_error(result) == "error: validate needs exactly one input: --csv FILE or --dataset PATH"
