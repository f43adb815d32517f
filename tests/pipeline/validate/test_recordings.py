"""Long recordings through `validate`: SRT / WebVTT subtitles and segment tables into windows, one split per
recording, every bad cue a rejected row with its reason; `features` reads the windows (tests/pipeline/featurize/
test_windows.py cuts them)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.featurize.plan import read_usable_manifest
from whisper_tune.pipeline.validate.recordings import NO_SUBTITLES
from whisper_tune.pipeline.validate.segments import parse_time
from whisper_tune.pipeline.validate.stage import run_validate
from whisper_tune.pipeline.validate.subtitles import SubtitleError, read_cues
from whisper_tune.pipeline.validate.windows import BAD_TIME, OVERLAP, PAST_END
from whisper_tune.testing import tone, write_audio

CUES = [(0.5 + 3.1 * i, 2.8 + 3.1 * i, f"Sentence <i>number</i> {i} here.") for i in range(20)]   # 0.5 .. 61.7 s


def clock(seconds: float, sep: str = ",") -> str:
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def write_srt(path: Path, cues, vtt: bool = False) -> Path:
    sep = "." if vtt else ","
    blocks = [f"{i}\n{clock(a, sep)} --> {clock(b, sep)}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1)]
    path.write_text(("WEBVTT\n\n" if vtt else "") + "\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    write_audio(tmp_path / "talk.flac", tone(64.0, amp=0.2))
    return tmp_path


def manifest(work: Path) -> pl.DataFrame:
    return pl.read_parquet(work / "manifest.parquet")


def validate(csv: Path, work: Path, **over):
    return run_validate(csv_path=csv, work_dir=work, cfg=load_config(None, {f"data.{k}": v for k, v in over.items()}),
                        use_model=False, echo=None)


def test_srt_cues_become_windows_with_their_times(recording: Path) -> None:
    write_srt(recording / "talk.srt", CUES)
    (recording / "talks.csv").write_text("audios,subtitles,speaker\ntalk.flac,talk.srt,ann\n")
    result = validate(recording / "talks.csv", recording / "work")
    frame = manifest(recording / "work")
    assert (result.kept, result.rejected, result.recordings, result.unit) == (frame.height, 0, 1, "window")
    assert frame["window_index"].to_list() == list(range(frame.height))
    assert frame["recording"].unique().to_list() == ["talk.flac"]
    assert frame["speaker"].unique().to_list() == ["ann"]
    assert (frame["end"] - frame["start"]).max() <= 30.0
    assert frame["duration"].to_list() == [round(e - s, 3) for s, e in zip(frame["start"], frame["end"])]
    texts = [t for row in frame["cue_texts"].to_list() for t in row]
    assert texts == [f"Sentence number {i} here." for i in range(20)]       # tags gone, each cue once, in order
    for start, starts, ends in zip(frame["start"], frame["cue_starts"], frame["cue_ends"]):
        for rel_start, rel_end in zip(starts, ends):
            a, b, _ = next(c for c in CUES if abs(c[0] - (start + rel_start)) <= 0.02)
            assert abs(start + rel_end - b) <= 0.02
    assert frame["previous_text"][0] == "" and frame["previous_text"][1] == frame["text"][0]


def test_srt_and_vtt_give_the_same_windows(recording: Path) -> None:
    write_srt(recording / "talk.srt", CUES)
    write_srt(recording / "talk.vtt", CUES, vtt=True)
    (recording / "a.csv").write_text("audios,srt\ntalk.flac,talk.srt\n")
    (recording / "b.csv").write_text("audio,captions\ntalk.flac,talk.vtt\n")
    validate(recording / "a.csv", recording / "wa")
    validate(recording / "b.csv", recording / "wb")
    columns = ["id", "start", "end", "text", "cue_starts", "cue_ends", "split"]
    assert manifest(recording / "wa").select(columns).equals(manifest(recording / "wb").select(columns))


def test_bad_cues_are_rejected_rows_with_reasons(recording: Path) -> None:
    srt = recording / "talk.srt"
    write_srt(srt, CUES[:3] + [(CUES[3][0] - 2.0, CUES[3][1], "overlapping cue")] + CUES[4:6] + [(70.0, 71.0, "late")])
    text = srt.read_text().replace(f"{clock(CUES[4][0])} -->", "00:00:1x,000 -->")
    srt.write_text(text)
    (recording / "talks.csv").write_text("audios,subtitles\ntalk.flac,talk.srt\n")
    result = validate(recording / "talks.csv", recording / "work")
    assert result.reasons == {BAD_TIME: 1, PAST_END: 1, OVERLAP: 1}
    frame = manifest(recording / "work")
    rejected = frame.filter(pl.col("status") == "rejected")
    assert sorted(rejected["text"].to_list()) == ["Sentence number 4 here.", "late", "overlapping cue"]
    kept = [t for row in frame.filter(pl.col("status") == "ok")["cue_texts"].to_list() for t in row]
    assert kept == [f"Sentence number {i} here." for i in (0, 1, 2, 5)]     # the neighbours are all kept
    example = result.examples[BAD_TIME][0]
    assert (example.csv_row, example.source) == (1, "talk.srt cue 5 (after 00:00:07,800)")
    assert example.detail == ("malformed cue time: '00:00:1x,000 --> 00:00:15,200' is not a time range like "
                              "00:01:02,500 --> 00:01:04,000")


def test_a_missing_or_unreadable_subtitle_file_rejects_its_recording(recording: Path) -> None:
    write_audio(recording / "other.flac", tone(5.0, amp=0.2))
    (recording / "notes.srt").write_text("just some notes\n")
    (recording / "talks.csv").write_text("audios,subtitles\ntalk.flac,missing.srt\nother.flac,notes.srt\n")
    result = validate(recording / "talks.csv", recording / "work")
    assert result.reasons == {NO_SUBTITLES: 2}
    reasons = manifest(recording / "work")["reason"].to_list()
    assert reasons[0] == f"subtitles not usable: subtitles file not found: {recording / 'missing.srt'}"
    assert reasons[1] == (f"subtitles not usable: subtitles {recording / 'notes.srt'} have no cues; expected "
                          "blocks like '1 / 00:00:01,000 --> 00:00:04,000 / text'")


def test_windows_of_a_recording_never_straddle_splits(tmp_path: Path) -> None:
    lines = ["audios,subtitles,session"]
    for k in range(12):
        write_audio(tmp_path / f"r{k}.flac", tone(64.0, amp=0.2))
        write_srt(tmp_path / f"r{k}.srt", CUES)
        lines.append(f"r{k}.flac,r{k}.srt,s{k % 4}")
    (tmp_path / "talks.csv").write_text("\n".join(lines) + "\n")
    validate(tmp_path / "talks.csv", tmp_path / "w1", test_share=0.4)
    frame = manifest(tmp_path / "w1")
    per_recording = frame.group_by("recording").agg(pl.col("split").n_unique())
    assert per_recording["split"].max() == 1 and set(frame["split"]) == {"train", "test"}
    validate(tmp_path / "talks.csv", tmp_path / "w2", test_share=0.4, group_column="session")
    frame = manifest(tmp_path / "w2")
    assert frame.group_by("session").agg(pl.col("split").n_unique())["split"].max() == 1


def test_segment_tables_in_seconds_and_clock_times_give_the_same_windows(recording: Path) -> None:
    rows_s = [f"talk.flac,{a:.3f},{b:.3f},{t}" for a, b, t in reversed(CUES)]       # any row order
    rows_c = [f"talk.flac,{clock(a, '.')},{clock(b, '.')},{t}" for a, b, t in CUES]
    (recording / "s.csv").write_text("audios,start,end,transcription\n" + "\n".join(rows_s) + "\n")
    (recording / "c.csv").write_text("audios,start,end,transcription\n" + "\n".join(rows_c) + "\n")
    validate(recording / "s.csv", recording / "ws")
    validate(recording / "c.csv", recording / "wc")
    columns = ["id", "start", "end", "text", "cue_starts", "cue_ends", "cue_texts", "split"]
    a, b = manifest(recording / "ws").sort("start"), manifest(recording / "wc").sort("start")
    assert a.select(columns).equals(b.select(columns))
    assert "csv_start" not in a.columns and a["subtitles"].unique().to_list() == [""]
    assert [t for row in a["cue_texts"].to_list() for t in row] == [t for _, _, t in CUES]


def test_a_malformed_segment_time_is_its_rows_reason(recording: Path) -> None:
    (recording / "s.csv").write_text("audios,start,end,transcription\ntalk.flac,1.0,3.0,fine words\n"
                                     "talk.flac,4.0,five,broken end\n")
    result = validate(recording / "s.csv", recording / "w")
    assert result.reasons == {BAD_TIME: 1}
    assert result.examples[BAD_TIME][0].csv_row == 2
    assert result.examples[BAD_TIME][0].detail == ("malformed cue time: column 'end': 'five' is not seconds (62.5) "
                                                   "nor a clock time (00:01:02.500)")


@pytest.mark.parametrize("cell,seconds", [("62.5", 62.5), ("01:02.5", 62.5), ("00:01:02.500", 62.5),
                                          ("1:00:00,25", 3600.25), ("0", 0.0), ("3,5", 3.5)])
def test_parse_time(cell: str, seconds: float) -> None:
    assert parse_time(cell) == pytest.approx(seconds)


@pytest.mark.parametrize("cell", ["", "abc", "-1", "00:61:00", "nan"])
def test_parse_time_refuses(cell: str) -> None:
    with pytest.raises(ValueError):
        parse_time(cell)


def test_read_cues_of_a_file_that_is_not_subtitles(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(SubtitleError, match="are neither SRT nor WebVTT"):
        read_cues(tmp_path / "x.txt")


def test_features_reads_the_windows_of_a_manifest(recording: Path) -> None:
    write_srt(recording / "talk.srt", CUES)
    (recording / "talks.csv").write_text("audios,subtitles\ntalk.flac,talk.srt\n")
    validate(recording / "talks.csv", recording / "work")
    rows = read_usable_manifest(recording / "work", None)
    assert rows.height == manifest(recording / "work").height and rows["window_index"].is_not_null().all()
    assert {"start", "end", "cue_starts", "cue_ends", "cue_texts", "previous_text"} <= set(rows.columns)


def test_with_a_model_a_cue_over_448_tokens_is_rejected_and_windows_fit(recording: Path, tiny_model: Path) -> None:
    cues = [(1.0, 9.0, " ".join(["hello"] * 460)), (10.0, 12.0, "a short cue"),
            *[(13.0 + 2.0 * i, 14.5 + 2.0 * i, " ".join(["word"] * 60)) for i in range(8)]]
    write_srt(recording / "talk.srt", cues)
    (recording / "talks.csv").write_text("audios,subtitles\ntalk.flac,talk.srt\n")
    cfg = load_config(None, {"model.name": str(tiny_model)})
    result = run_validate(csv_path=recording / "talks.csv", work_dir=recording / "w", cfg=cfg, use_model=True,
                          echo=None)
    assert list(result.reasons) == ["cue label too long"]
    assert result.examples["cue label too long"][0].source == "talk.srt cue 1 (00:00:01,000)"
    frame = manifest(recording / "w").filter(pl.col("status") == "ok")
    assert frame.height >= 2                                   # 9 cues of ~60 tokens do not fit one label
    from whisper_tune.pipeline.models import load_processor

    tokenizer = load_processor(str(tiny_model), "", "transcribe").tokenizer
    for texts in frame["cue_texts"].to_list():
        ids = sum(len(tokenizer(" " + t.lower(), add_special_tokens=False)["input_ids"]) + 2 for t in texts)
        assert ids + 4 <= 448
