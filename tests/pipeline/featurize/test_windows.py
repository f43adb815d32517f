"""Windows of long recordings through `features` (pipeline/featurize/windows.py): a generated recording with known
cue times, validated from its SRT, featurized with the recording decoded once; features equal to the log-mel of
the cut audio; labels holding every cue once with its times; prompts; editing one cue recomputes only its window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS, MAX_PROMPT_TOKENS
from whisper_tune.pipeline.featurize import audio
from whisper_tune.pipeline.featurize import windows as fwindows
from whisper_tune.pipeline.validate.stage import run_validate
from whisper_tune.testing import cue_recording, cue_times, features_config, run, write_srt

CUES = cue_times(20)                   # 0.6 .. 69.1 s, a cue of 2 s every 3.5 s


@pytest.fixture
def talk(tmp_path: Path) -> Path:
    cue_recording(tmp_path / "talk.flac", CUES, 72.0)
    write_srt(tmp_path / "talk.srt", CUES)
    (tmp_path / "talks.csv").write_text("audios,subtitles\ntalk.flac,talk.srt\n")
    return tmp_path


def validate(folder: Path, model: Path) -> pl.DataFrame:
    cfg = load_config(None, {"model.name": str(model), "data.test_share": 0.0})
    run_validate(csv_path=folder / "talks.csv", work_dir=folder / "work", cfg=cfg, use_model=False, echo=None)
    return pl.read_parquet(folder / "work" / "manifest.parquet").filter(pl.col("status") == "ok")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every decode of an audio file in this process (features --jobs 1 works here): its path."""
    calls: list[str] = []
    stream, load = audio.stream, audio.load

    def counted_stream(path, *args, **kwargs):
        calls.append(str(path))
        return stream(path, *args, **kwargs)

    def counted_load(path):
        calls.append(str(path))
        return load(path)

    monkeypatch.setattr(audio, "stream", counted_stream)
    monkeypatch.setattr(audio, "load", counted_load)
    return calls


def tokenizer_of(model: Path):
    from whisper_tune.pipeline.models import load_processor

    return load_processor(str(model), "", "transcribe").tokenizer


@pytest.mark.parametrize("block_s", [3.0, 10.0])
def test_cut_spans_give_the_samples_of_the_whole_decode(tmp_path: Path, block_s: float) -> None:
    path = cue_recording(tmp_path / "long.flac", cue_times(40), 150.0)
    whole = audio.load(path)
    for spans in ([(0.1, 30.0), (40.0, 70.0), (100.0, 129.0), (129.0, 135.5), (149.0, 150.3)],   # gaps, the end
                  [(100.0, 129.0)], [(60.0, 61.0), (20.0, 45.0)]):                               # a seek; any order
        got = dict(fwindows.cut_spans(str(path), spans, block_s=block_s))
        assert sorted(got) == list(range(len(spans)))
        for i, (a, b) in enumerate(spans):
            ref = whole[round(a * 16_000): round(b * 16_000)]
            assert got[i].size == ref.size and np.abs(got[i] - ref).max() <= 1e-5


def test_windows_are_cut_from_one_decode_with_their_cues_and_features(talk: Path, tiny_model: Path,
                                                                      decodes: list[str]) -> None:
    from transformers import WhisperFeatureExtractor

    rows = validate(talk, tiny_model)
    assert rows.height >= 3
    res = run(talk / "work", features_config(tiny_model))
    assert (res.clips_total, res.windows_total, res.clips_decoded, res.skipped) == (rows.height, rows.height,
                                                                                     rows.height, ())
    assert res.recordings_decoded == 1 and decodes == [str(talk / "talk.flac")]       # decoded once, streamed
    cache, tok = open_cache(talk / "work"), tokenizer_of(tiny_model)
    whole = audio.load(talk / "talk.flac")                                             # the reference cut
    fe = WhisperFeatureExtractor(feature_size=80)
    seen: list[str] = []
    for r in rows.iter_rows(named=True):
        ex = cache.get(r["id"], 0)
        assert ex.is_window and ex.features.shape[1] <= 3000
        ref = fe(audio.peak_normalize(whole[round(r["start"] * 16_000): round(r["end"] * 16_000)]),
                 sampling_rate=16_000).input_features[0]
        assert np.abs(ex.padded() - ref).max() <= 2e-3                                 # not trimmed, not shifted
        # every cue's text between its times: stored ids per cue, times within one 0.02 s step of the SRT's
        _, text_ids = ex.labels[:2], ex.labels[2:-1]
        assert int(ex.labels[1]) == tok.convert_tokens_to_ids("<|notimestamps|>")
        assert int(ex.cue_tokens.sum()) == text_ids.size
        assert len(ex.labels) - 1 + 2 * len(ex.cue_tokens) <= MAX_LABEL_TOKENS
        pieces = np.split(text_ids, np.cumsum(ex.cue_tokens)[:-1])
        for ids, start, end in zip(pieces, ex.cue_starts, ex.cue_ends):
            words = tok.decode(ids).split()
            a, b, _ = next(c for c in CUES if c[2].lower().rstrip(".").split() == words)
            assert abs(r["start"] + float(start) - a) <= 0.02 and abs(r["start"] + float(end) - b) <= 0.02
            assert 0.0 <= start < end <= r["end"] - r["start"] + 1e-6
            seen += words
        # the prompt: the last tokens of the earlier text, none for the first window
        prompt = tok.decode(ex.prompt).split()
        assert len(ex.prompt) <= MAX_PROMPT_TOKENS
        assert prompt == seen[len(seen) - len(prompt) - len(tok.decode(text_ids).split()):][:len(prompt)]
        assert (len(ex.prompt) == 0) == (r["window_index"] == 0)
    assert seen == [w for _, _, t in CUES for w in t.lower().rstrip(".").split()]     # every cue once, in order


def test_a_long_recording_in_several_tasks_gives_the_same_windows(talk: Path, tiny_model: Path,
                                                                  decodes: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rows = validate(talk, tiny_model)
    cfg = features_config(tiny_model, **{"augment.variants": 1})
    run(talk / "work", cfg)
    one = {cid: open_cache(talk / "work").get(cid, 0).features.copy() for cid in rows["id"].to_list()}
    monkeypatch.setattr(fwindows, "WINDOWS_PER_TASK", 1)
    (talk / "work2").mkdir()
    (talk / "work" / "manifest.parquet").rename(talk / "work2" / "manifest.parquet")
    decodes.clear()
    res = run(talk / "work2", cfg)
    assert res.recordings_decoded == rows.height == len(decodes)         # one task per window: each seeks
    cache = open_cache(talk / "work2")
    for cid, feats in one.items():
        assert np.abs(cache.get(cid, 0).features.astype(np.float32) - feats.astype(np.float32)).max() <= 2e-3


def test_editing_one_cue_recomputes_only_its_window(talk: Path, tiny_model: Path, decodes: list[str]) -> None:
    before = validate(talk, tiny_model)
    cfg = features_config(tiny_model)
    run(talk / "work", cfg)
    assert len(decodes) == 1
    second = before["window_index"].to_list().index(1)
    k = len(before["cue_texts"][0])              # the first cue of window 1
    # a cue's text: that window's labels and the later windows' prompts change; no audio work
    cues = list(CUES)
    cues[k] = (cues[k][0], cues[k][1], "Changed words here.")
    write_srt(talk / "talk.srt", cues)
    rows = validate(talk, tiny_model)
    decodes.clear()
    res = run(talk / "work", cfg)
    assert (res.clips_decoded, res.recordings_decoded, decodes) == (0, 0, [])
    assert res.labels_computed == rows.height - 1               # windows 1.. (their labels or prompts); not 0
    cache = open_cache(talk / "work")
    assert "changed words here" in cache.get(rows["id"][second], 0).text
    # a cue's end time: its window's range moves, so that window alone is decoded and featurized again
    last = k + len(before["cue_texts"][second]) - 1
    cues[last] = (cues[last][0], cues[last][1] - 0.3, cues[last][2])
    write_srt(talk / "talk.srt", cues)
    rows = validate(talk, tiny_model)
    assert rows["end"][second] != before["end"][second] and rows["start"].to_list()[2:] == before["start"].to_list()[2:]
    decodes.clear()
    res = run(talk / "work", cfg)
    assert (res.clips_decoded, res.recordings_decoded, len(decodes)) == (1, 1, 1)
    assert res.variants_reused == sum(len(open_cache(talk / "work").variants(c)) for c in rows["id"].to_list()) - \
        len(open_cache(talk / "work").variants(rows["id"][second]))


def test_a_segment_table_gives_the_windows_and_features_of_the_subtitles(talk: Path, tiny_model: Path) -> None:
    from whisper_tune.testing import snapshot

    validate(talk, tiny_model)
    rows = [f"talk.flac,{a:.3f},{b:.3f},{t}" for a, b, t in CUES]
    (talk / "segments.csv").write_text("audios,start,end,transcription\n" + "\n".join(rows) + "\n")
    cfg = load_config(None, {"model.name": str(tiny_model), "data.test_share": 0.0})
    run_validate(csv_path=talk / "segments.csv", work_dir=talk / "seg", cfg=cfg, use_model=False, echo=None)
    features = features_config(tiny_model)
    run(talk / "work", features)
    res = run(talk / "seg", features)
    assert res.recordings_decoded == 1 and res.windows_total == res.clips_total > 1
    assert snapshot(talk / "seg") == snapshot(talk / "work")


def test_parts_take_whole_recordings(tmp_path: Path, tiny_model: Path, decodes: list[str]) -> None:
    from whisper_tune.testing import snapshot

    cues = cue_times(10)
    names = [f"r{i}" for i in range(4)]
    for i, name in enumerate(names):
        cue_recording(tmp_path / f"{name}.flac", cues, 36.0, seed=i)
        write_srt(tmp_path / f"{name}.srt", cues)
    (tmp_path / "talks.csv").write_text("audios,subtitles\n" + "".join(f"{n}.flac,{n}.srt\n" for n in names))
    cfg = load_config(None, {"model.name": str(tiny_model), "data.test_share": 0.0})
    for work in ("whole", "parts"):
        run_validate(csv_path=tmp_path / "talks.csv", work_dir=tmp_path / work, cfg=cfg, use_model=False, echo=None)
    features = features_config(tiny_model, **{"augment.variants": 1})
    run(tmp_path / "whole", features)
    decodes.clear()
    results = [run(tmp_path / "parts", features, part=(i, 2)) for i in (1, 2)]
    assert sorted(decodes) == sorted(str(tmp_path / f"{n}.flac") for n in names)     # each recording once
    assert sum(r.clips_total for r in results) == results[0].windows_total + results[1].windows_total
    assert snapshot(tmp_path / "parts") == snapshot(tmp_path / "whole")
