"""Subtitles: the SRT / WebVTT writer, and `transcribe -o out.srt` with real timestamps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from whisper_tune.testing import REPO_ROOT, tone, write_audio
from whisper_tune.train.inference import transcribe as tr
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import AudioError
from whisper_tune.train.inference.subtitles import Segment, clock, cues, render_subtitles, subtitle_paths

SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"


def test_clock_formats():
    assert clock(0.0, "srt") == "00:00:00,000"
    assert clock(3723.4567, "srt") == "01:02:03,457"
    assert clock(61.02, "vtt") == "00:01:01.020"


def test_srt_and_vtt_files():
    segs = [Segment(0.0, 2.5, " Hello there."), Segment(2.5, 4.12, "Next   line."), Segment(5.0, 5.0, "")]
    assert render_subtitles(segs, "srt") == ("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
                                            "2\n00:00:02,500 --> 00:00:04,120\nNext line.\n")
    assert render_subtitles(segs, "vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
                                            "00:00:02.500 --> 00:00:04.120\nNext line.\n")
    assert render_subtitles([], "srt") == ""
    with pytest.raises(ValueError):
        render_subtitles(segs, "txt")


def test_cues_never_run_backwards_or_end_before_they_start():
    out = cues([Segment(3.0, 2.0, "a"), Segment(1.0, 4.0, "b"), Segment(4.0, 4.0, "c")])
    assert [(c.start, c.end, c.text) for c in out] == [(3.0, 3.5, "a"), (3.0, 4.0, "b"), (4.0, 4.5, "c")]
    assert all(c.end > c.start for c in out)


def test_formats_and_one_file_per_input(tmp_path):
    assert tr.output_format(Path("x.srt")) == "srt" and tr.output_format(Path("x.vtt")) == "vtt"
    out = tmp_path / "subs.srt"
    assert subtitle_paths(out, [Path("a/x.wav")]) == [out]
    names = [p.name for p in subtitle_paths(out, [Path("a/x.wav"), Path("b/x.mp3"), Path("y.wav")])]
    assert names[2] == "subs.y.srt" and len(set(names)) == 3
    assert all(re.fullmatch(r"subs\.x-[0-9a-f]{8}\.srt", n) for n in names[:2]), names


def test_subtitle_names_are_unique_and_stable(tmp_path):
    """a/x.wav, b/x.wav and x-2.wav get three names (a counter gave x-2 twice), and the names do not depend on
    which other inputs are given or fail."""
    out = tmp_path / "subs.srt"
    inputs = [Path("a/x.wav"), Path("b/x.wav"), Path("x-2.wav")]
    names = [p.name for p in subtitle_paths(out, inputs)]
    assert len(set(names)) == 3 and names[2] == "subs.x-2.srt", names
    again = [p.name for p in subtitle_paths(out, [Path("z.wav"), *inputs])]
    assert again[1:] == names


def test_a_run_with_a_failed_input_names_files_as_a_run_without(tiny_model, tmp_path):
    clip = tone(1.0)
    files = [write_audio(tmp_path / "a" / "x.wav", clip), write_audio(tmp_path / "b" / "x.wav", clip),
             write_audio(tmp_path / "x-2.wav", clip)]
    out = tmp_path / "out" / "subs.srt"
    tr.run_transcribe(model=str(tiny_model), inputs=files, cfg=load_config(), output=out, max_new_tokens=3)
    first = sorted(p.name for p in out.parent.iterdir())
    assert len(first) == 3
    (tmp_path / "a" / "x.wav").write_text("not audio any more")
    for p in out.parent.iterdir():
        p.unlink()
    with pytest.raises(AudioError):
        tr.run_transcribe(model=str(tiny_model), inputs=files, cfg=load_config(), output=out, max_new_tokens=3)
    second = sorted(p.name for p in out.parent.iterdir())
    assert len(second) == 2 and set(second) <= set(first)


def test_random_model_writes_a_subtitle_file_per_input(tiny_model, tmp_path):
    files = [write_audio(tmp_path / "long.wav", tone(31.0)), write_audio(tmp_path / "short.wav", tone(2.0))]
    rows = tr.run_transcribe(model=str(tiny_model), inputs=files, cfg=load_config(), output=tmp_path / "o.vtt",
                             batch_size=2, max_new_tokens=3)
    assert len(rows) == 2
    for name in ("o.long.vtt", "o.short.vtt"):
        assert (tmp_path / name).read_text().startswith("WEBVTT\n")


DEMO_AUDIO = REPO_ROOT / "data" / "demo" / "audios"


@pytest.mark.slow
def test_tiny_en_srt_of_a_long_recording_has_timed_cues(tmp_path):
    """Five demo test clips joined by 1 s of silence (over 30 s: long-form decoding): tiny.en's SRT has several
    cues, in time order, the last starting well into the recording."""
    from whisper_tune.pipeline.featurize.audio import load

    gap = np.zeros(16_000, np.float32)
    parts = [p for i in range(5) for p in (load(DEMO_AUDIO / f"test_{i:03d}.mp3"), gap)]
    audio = write_audio(tmp_path / "long.wav", np.concatenate(parts))
    out = tmp_path / "long.srt"
    tr.run_transcribe(model="bundled:tiny.en", inputs=[audio], cfg=load_config(), output=out)
    text = out.read_text()
    starts = [t.split(" --> ")[0] for t in re.findall(SRT_TIME, text)]
    assert len(starts) >= 3 and starts == sorted(starts), text
    assert starts[-1] >= "00:00:25,000", text          # the later clips are timed past the start
