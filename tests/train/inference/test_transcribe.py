"""transcribe: inputs, formats, long-form decoding past 30 s, and clean failures for bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from whisper_tune.testing import espeak_available, speak, tone, write_audio
from whisper_tune.train.inference import transcribe as tr
from whisper_tune.cli import app
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.constants import N_SAMPLES
from whisper_tune.pipeline.core.errors import AudioError, ConfigError
from whisper_tune.pipeline.core.text import normalize_text


def run_cli(*args: str):
    return CliRunner().invoke(app, ["transcribe", *args])


# ------------------------------------------------------------------------------------------------ pure parts

def test_collect_inputs_recurses_filters_and_reports(tmp_path):
    write_audio(tmp_path / "a" / "one.wav", tone(0.5))
    write_audio(tmp_path / "a" / "deep" / "two.FLAC", tone(0.5))
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "empty").mkdir()
    files, failures = tr.collect_inputs([tmp_path / "a", tmp_path / "a" / "one.wav", tmp_path / "empty",
                                         tmp_path / "missing.wav"])
    assert [f.name for f in files] == ["two.FLAC", "one.wav"]          # sorted paths; the duplicate dropped
    assert [(Path(f.path).name, f.reason.split(" (")[0]) for f in failures] == [
        ("empty", "folder has no audio files"), ("missing.wav", "file not found")]


def test_output_format_and_batches():
    assert tr.output_format(None) == "print"
    assert tr.output_format(Path("x.CSV")) == "csv" and tr.output_format(Path("x.jsonl")) == "jsonl"
    with pytest.raises(ConfigError, match="use a .csv, .jsonl, .srt or .vtt"):
        tr.output_format(Path("out.txt"))
    lengths = [N_SAMPLES + 5, 100, N_SAMPLES, 50, 2 * N_SAMPLES, 70]
    groups = tr.batches_by_length(lengths, 2)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(len(g) <= 2 for g in groups)
    assert all(len({lengths[i] > N_SAMPLES for i in g}) == 1 for g in groups)   # short and long never mixed
    assert groups[0] == [3, 5]


def test_render_formats():
    rows = [tr.Transcript("a b.wav", 'He said "hi", then left.'), tr.Transcript("c.wav", "")]
    assert tr.render(rows, "print") == 'a b.wav\tHe said "hi", then left.\nc.wav\t\n'
    parsed = list(csv.DictReader(tr.render(rows, "csv").splitlines()))
    assert parsed == [{"path": "a b.wav", "text": 'He said "hi", then left.'}, {"path": "c.wav", "text": ""}]
    assert [json.loads(line) for line in tr.render(rows, "jsonl").splitlines()][0]["text"] == rows[0].text


# ------------------------------------------------------------------------------------------------ bad inputs (CLI)

def test_missing_file_is_a_clear_error(tmp_path):
    res = run_cli(str(tmp_path / "nope.wav"), "--model", "bundled:tiny.en")
    assert res.exit_code == 1
    assert "nope.wav: file not found" in res.output and "Traceback" not in res.output


def test_non_audio_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text, not audio\n" * 20)
    res = run_cli(str(bad), "--model", "bundled:tiny.en")
    assert res.exit_code == 1
    assert "notes.wav: cannot decode audio" in res.output and "Traceback" not in res.output


def test_empty_folder_and_several_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli(str(tmp_path / "empty"), "--model", "bundled:tiny.en")
    assert res.exit_code == 1 and "folder has no audio files" in res.output and "Traceback" not in res.output
    (tmp_path / "text.mp3").write_text("nope")
    res = run_cli(str(tmp_path / "empty"), str(tmp_path / "text.mp3"), str(tmp_path / "gone.flac"),
                  "--model", "bundled:tiny.en")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "3 of 3 inputs could not be transcribed" in res.output
    assert all(name in res.output for name in ("empty", "text.mp3", "gone.flac"))


def test_bad_output_suffix_fails_before_any_work(tmp_path):
    res = run_cli(str(tmp_path / "x.wav"), "--output", str(tmp_path / "out.txt"))
    assert res.exit_code == 1 and "unknown format '.txt'" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------ real decoding

def test_random_model_long_and_short_clips_and_a_bad_one(tiny_model, tmp_path, capsys):
    """The long-form path (over 30 s, batched with an attention mask) runs beside short clips and silence;
    a bad input among good ones is reported after the good ones are written, and the run fails."""
    files = [write_audio(tmp_path / "long.wav", tone(32.0, pad_silence=1.0)),
             write_audio(tmp_path / "short.wav", tone(2.0)),
             write_audio(tmp_path / "silent.wav", np.zeros(16_000, np.float32))]
    out = tmp_path / "out.jsonl"
    rows = tr.run_transcribe(model=str(tiny_model), inputs=files, cfg=load_config(), output=out, batch_size=4,
                             max_new_tokens=3)
    assert [Path(r.path).name for r in rows] == ["long.wav", "short.wav", "silent.wav"]
    assert rows[2].text == ""
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [str(f) for f in files]

    with pytest.raises(AudioError, match="missing.wav: file not found"):
        tr.run_transcribe(model=str(tiny_model), inputs=[files[1], tmp_path / "missing.wav"], cfg=load_config(),
                          output=None, max_new_tokens=3)
    assert capsys.readouterr().out.startswith(f"{files[1]}\t")


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_tiny_en_wav_mp3_flac_and_a_45_second_file(tmp_path):
    from whisper_tune.pipeline.featurize.audio import load

    first = load(speak(tmp_path / "src1.wav", "Please call Stella and ask her to bring these things from the store."))
    second = load(speak(tmp_path / "src2.wav", "The birch canoe slid on the smooth planks."))
    folder = tmp_path / "in"
    write_audio(folder / "a.mp3", first)
    write_audio(folder / "b.flac", second)
    gap = np.zeros(45 * 16_000 - first.size - second.size, np.float32)
    long = write_audio(tmp_path / "long.wav", np.concatenate([first, gap, second]))   # 45 s: speech, silence, speech
    out = tmp_path / "out.csv"
    res = run_cli(str(folder), str(long), "--model", "bundled:tiny.en", "--output", str(out))
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: normalize_text(r["text"]) for r in csv.DictReader(out.open())}
    assert set(rows) == {"a.mp3", "b.flac", "long.wav"}
    assert "stella" in rows["a.mp3"] and "smooth" in rows["b.flac"]
    assert "stella" in rows["long.wav"] and "smooth" in rows["long.wav"]     # both ends of the 45 s file
