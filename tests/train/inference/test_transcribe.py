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


# ------------------------------------------------------------------------------------------------ streaming, resume

class CountingDecoder:
    """Stands in for a decode.Decoder: 'text N' per clip; raises KeyboardInterrupt on call number `stop`."""
    backend = "fake"
    label = "fake"

    def __init__(self, stop: int = 0) -> None:
        self.calls = 0
        self.stop = stop
        self.sizes: list[int] = []
        self.prompts: list[str | None] = []

    def transcribe(self, clips, timed=False, prompt=None):
        from whisper_tune.train.inference.decode import Decoded, Segment

        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        self.sizes += [c.size for c in clips]
        self.prompts.append(prompt)
        return [Decoded(f"text {c.size}", (Segment(0.0, c.size / 16_000, f" text {c.size}"),),
                        carry=f"after {self.calls}") for c in clips]


def _fake(monkeypatch, decoder):
    monkeypatch.setattr(tr, "open_decoder", lambda *a, **k: decoder)
    return decoder


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_interrupted_run_keeps_results_and_a_rerun_does_the_rest(tmp_path, monkeypatch, capsys, suffix):
    files = [write_audio(tmp_path / "in" / f"f{i}.wav", tone(0.5 + 0.1 * i)) for i in range(6)]
    out = tmp_path / f"out{suffix}"
    _fake(monkeypatch, CountingDecoder(stop=4))
    with pytest.raises(KeyboardInterrupt):
        tr.run_transcribe(model="m", inputs=[tmp_path / "in"], cfg=load_config(), output=out, batch_size=1)
    partial = tmp_path / f".out{suffix}.partial"
    assert not out.exists() and partial.is_file()
    assert "interrupted: 3 finished results are kept in" in capsys.readouterr().err
    second = _fake(monkeypatch, CountingDecoder())
    tr.run_transcribe(model="m", inputs=[tmp_path / "in"], cfg=load_config(), output=out, batch_size=1)
    assert second.calls == 3 and not partial.exists()
    assert "skipping 3 of 6 inputs already transcribed" in capsys.readouterr().err
    if suffix == ".csv":
        paths = [r["path"] for r in csv.DictReader(out.open())]
    else:
        paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert paths == [str(f) for f in files]                              # every input once, in input order
    third = _fake(monkeypatch, CountingDecoder())
    tr.run_transcribe(model="m", inputs=[tmp_path / "in"], cfg=load_config(), output=out, batch_size=1)
    assert third.calls == 0 and "skipping 6 of 6" in capsys.readouterr().err


def test_a_line_cut_off_by_a_kill_is_transcribed_again(tmp_path, monkeypatch):
    files = [write_audio(tmp_path / f"f{i}.wav", tone(0.5)) for i in range(2)]
    out = tmp_path / "out.jsonl"
    (tmp_path / ".out.jsonl.partial").write_text(json.dumps({"path": str(files[0]), "text": "kept"}) + "\n"
                                                 + '{"path": "' + str(files[1]))
    decoder = _fake(monkeypatch, CountingDecoder())
    tr.run_transcribe(model="m", inputs=files, cfg=load_config(), output=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert decoder.calls == 1 and [r["text"] for r in rows] == ["kept", "text 8000"]


def test_subtitles_resume_per_file(tmp_path, monkeypatch):
    files = [write_audio(tmp_path / f"f{i}.wav", tone(0.5)) for i in range(3)]
    out = tmp_path / "subs" / "s.srt"
    _fake(monkeypatch, CountingDecoder(stop=2))
    with pytest.raises(KeyboardInterrupt):
        tr.run_transcribe(model="m", inputs=files, cfg=load_config(), output=out, batch_size=1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.f0.srt"]
    again = _fake(monkeypatch, CountingDecoder())
    tr.run_transcribe(model="m", inputs=files, cfg=load_config(), output=out, batch_size=1)
    assert again.calls == 2 and len(list(out.parent.iterdir())) == 3


def test_word_timestamps_in_jsonl_rows(tmp_path, monkeypatch):
    from whisper_tune.train.inference.decode import Decoded, Segment, Word

    class Words(CountingDecoder):
        def transcribe(self, clips, timed=False, prompt=None):
            return [Decoded("hi there", (Segment(0.0, 1.0, " hi there", (Word(0.0, 0.4, " hi", 0.9),
                                                                          Word(0.4, 1.0, " there", 0.8))),))]

    f = write_audio(tmp_path / "a.wav", tone(1.0))
    _fake(monkeypatch, Words())
    out = tmp_path / "o.jsonl"
    tr.run_transcribe(model="m", inputs=[f], cfg=load_config(None, {"decode.word_timestamps": True}), output=out)
    row = json.loads(out.read_text())
    assert row["words"] == [{"start": 0.0, "end": 0.4, "word": " hi", "probability": 0.9},
                            {"start": 0.4, "end": 1.0, "word": " there", "probability": 0.8}]
    srt = tmp_path / "o.srt"
    tr.run_transcribe(model="m", inputs=[f], cfg=load_config(None, {"decode.word_timestamps": True}), output=srt)
    assert srt.read_text().count(" --> ") == 2                              # one cue per word


# ------------------------------------------------------------------------------------------------ bad outputs, empty files

def _never(*a, **k):
    raise AssertionError("decoding started before the output path was checked")


@pytest.mark.parametrize("make,target,message", [
    (lambda t: (t / "folder.csv").mkdir(), "folder.csv", "is a folder; give a file name"),
    (lambda t: (t / "folder.srt").mkdir(), "folder.srt", "is a folder; give a file name"),
    (lambda t: (t / "file").write_text("x"), "file/sub/out.csv", "file is a file, not a folder"),
])
def test_bad_output_path_is_one_line_before_any_decoding(tmp_path, monkeypatch, make, target, message):
    make(tmp_path)
    monkeypatch.setattr(tr, "open_decoder", _never)
    f = write_audio(tmp_path / "a.wav", tone(0.5))
    res = run_cli(str(f), "--output", str(tmp_path / target))
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output


def test_output_where_it_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setattr(tr, "open_decoder", _never)
    res = run_cli(str(write_audio(tmp_path / "a.wav", tone(0.5))), "--output", str(locked / "x" / "o.csv"))
    locked.chmod(0o700)
    assert res.exit_code == 1 and "cannot write in" in res.output and "Traceback" not in res.output


def test_a_zero_byte_file_says_empty(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    res = run_cli(str(empty), "--model", "bundled:tiny.en")
    assert res.exit_code == 1 and "empty.wav: empty file (0 bytes)" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------ long files

def test_a_long_file_is_decoded_in_pieces_with_bounded_memory(tmp_path, monkeypatch):
    """A 3-minute 44.1 kHz stereo file is read block by block and decoded in ~20 s pieces (the limits scaled
    down from 120 s): the audio path's peak allocation stays far below the decoded file's size, every sample
    reaches the decoder once, and the segment times count from the file's start."""
    import tracemalloc

    import soundfile as sf

    path = tmp_path / "long.wav"
    sr, minutes = 44_100, 3
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for _ in range(minutes * 6):
            x = (0.1 * rng.standard_normal(sr * 10)).astype(np.float32)
            f.write(np.stack([x, x], axis=1))
    whole_float32 = minutes * 60 * sr * 2 * 4                      # what reading it at once would take
    monkeypatch.setattr(tr, "WHOLE_FILE_S", 20.0)
    monkeypatch.setattr(tr, "PIECE_S", 20.0)
    decoder = _fake(monkeypatch, CountingDecoder())
    tracemalloc.start()
    rows = tr.run_transcribe(model="m", inputs=[path], cfg=load_config(), output=tmp_path / "o.jsonl")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < whole_float32 / 4, (peak, whole_float32)
    assert sum(decoder.sizes) == pytest.approx(minutes * 60 * 16_000, abs=16)
    assert max(decoder.sizes) <= (20.0 + tr.CUT_SEARCH_S) * 16_000 and len(decoder.sizes) >= 6
    starts = [s.start for s in rows[0].segments]
    assert starts == sorted(starts) and starts[-1] > 150.0


@pytest.mark.parametrize("condition", [True, False])
def test_long_file_pieces_carry_the_previous_text_as_their_prompt(tmp_path, monkeypatch, condition):
    """Under condition_on_previous_text each piece after the first is prompted with what the piece before carried
    out (the decoder's carry: reset after a high-temperature window); without it, the initial prompt (None: the
    options' own) goes before the first piece only."""
    import soundfile as sf

    path = tmp_path / "long.wav"
    x = (0.1 * np.random.default_rng(0).standard_normal(16_000 * 70)).astype(np.float32)
    sf.write(str(path), x, 16_000)
    monkeypatch.setattr(tr, "WHOLE_FILE_S", 20.0)
    monkeypatch.setattr(tr, "PIECE_S", 20.0)
    decoder = _fake(monkeypatch, CountingDecoder())
    cfg = load_config(None, {"decode.condition_on_previous_text": condition, "decode.prompt": "Amiodarone."})
    tr.run_transcribe(model="m", inputs=[path], cfg=cfg, output=tmp_path / "o.jsonl")
    n = len(decoder.prompts)
    assert n >= 3
    later = [f"after {i}" for i in range(1, n)] if condition else [""] * (n - 1)
    assert decoder.prompts == [None, *later]
