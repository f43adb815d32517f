"""evaluate on long recordings (train/inference/recordings.py): the boundary-share metric on hand-made segments,
and each cached test recording scored long-form from the cache alone, with no audio library, for model and
baseline (a stand-in decoder checks it is fed the cached log-mel)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from whisper_tune.pipeline.cache import CachedRecording, ReferenceCue, write_examples
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.train.inference import evaluate as ev
from whisper_tune.train.inference.decode import Decoded, Segment  # noqa: F811 (FAKE defines them again)
from whisper_tune.train.inference.longform import boundary_counts, silence_floor
from whisper_tune.train.inference.recordings import score_recordings
from whisper_tune.pipeline.models import load_processor
from whisper_tune.testing import blocked_python, import_blocker, synthetic_examples, tone

CUES = [(1.0, 3.0), (4.0, 6.5), (8.0, 9.0)]


def seg(start: float, end: float, text: str = " x") -> Segment:
    return Segment(start, end, text)


def test_boundary_shares_on_hand_made_segments() -> None:
    on_cues = [seg(1.2, 2.6), seg(4.0, 6.9), seg(8.5, 9.0)]         # every start and end within 0.5 s
    assert boundary_counts(on_cues, CUES) == type(boundary_counts([], CUES))(3, 3, 3)
    contiguous = [seg(0.0, 3.0), seg(3.0, 6.5), seg(6.5, 9.0)]      # each start at the previous end
    counts = boundary_counts(contiguous, CUES)
    assert (counts.segments, counts.starts_near, counts.ends_near) == (3, 0, 3)
    assert counts.start_share == 0.0 and counts.end_share == 100.0
    edge = boundary_counts([seg(1.5, 3.5), seg(4.51, 7.01)], CUES)  # 0.5 s away counts, 0.51 s does not
    assert (edge.starts_near, edge.ends_near) == (1, 1) and edge.start_share == 50.0
    none = boundary_counts([], CUES)
    assert none.segments == 0 and none.start_share is None and none.end_share is None
    assert boundary_counts([seg(1.0, 3.0)], []).starts_near == 0    # no reference cue: nothing is near
    total = counts + edge
    assert (total.segments, total.starts_near, total.ends_near) == (5, 1, 4) and total.start_share == 20.0


def test_recording_scores_use_the_joined_cues_and_the_clip_normalizer() -> None:
    cues = (ReferenceCue(1.0, 3.0, "Hello, World!"), ReferenceCue(4.0, 6.5, "the cat sat"))
    rec = CachedRecording("a.flac", "test", 7.0, np.zeros((80, 700), np.float16), -0.5, cues)
    other = CachedRecording("b.flac", "test", 5.0, np.zeros((80, 500), np.float16), -0.5, cues[:1])
    decoded = [Decoded("hello world the cat", (seg(1.1, 3.0), seg(3.0, 6.4))), Decoded("")]
    scores = score_recordings("m", [rec, other], decoded)
    a, b = scores.per_recording
    assert (a.recording, a.reference_words, a.errors, a.wer) == ("a.flac", 5, 1, 20.0)   # "sat" deleted
    assert (a.segments, a.start_share, a.end_share) == (2, 50.0, 100.0)
    assert (b.wer, b.segments, b.start_share) == (100.0, 0, None)
    assert scores.wer == pytest.approx(100.0 * 3 / 7, abs=0.01) and scores.boundaries.segments == 2
    assert scores.boundaries.start_share == 50.0 and scores.audio_seconds == 12.0


def test_silence_floor_is_what_a_silent_frame_gets() -> None:
    from transformers import WhisperFeatureExtractor

    audio = np.concatenate([tone(2.0, amp=0.3), np.zeros(16_000 * 3, np.float32)])
    feats = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16_000, return_tensors="np",
                                                     truncation=False, padding="longest").input_features[0]
    assert silence_floor(feats) == pytest.approx(float(feats[:, -20:].min()), abs=1e-5)


CUE_TEXTS = [f"sentence number {n}" for n in ("zero", "one", "two", "three", "four", "five", "six", "seven")]


def _work_with_a_recording(root: Path, model: Path) -> Path:
    """WORK/cache with two test clips and one 42 s test recording (log-mel-like features and eight cues)."""
    tokenizer = load_processor(str(model)).tokenizer
    examples = synthetic_examples(tokenizer, n_train=1, n_test=2, variants=1)
    rng = np.random.default_rng(3)
    feats = np.clip(rng.normal(-0.2, 0.3, (80, 4200)), -0.8, 1.2).astype(np.float16)
    cues = tuple(ReferenceCue(1.0 + 5 * i, 4.0 + 5 * i, text) for i, text in enumerate(CUE_TEXTS))
    write_examples(root / "work" / "cache", examples, recordings=[
        CachedRecording("talks/talk.flac", "test", 42.0, feats, -0.8, cues)])
    return root / "work"


FAKE = textwrap.dedent('''
    from pathlib import Path

    import numpy as np

    from whisper_tune.train.inference.decode import Decoded, Segment  # noqa: F811 (FAKE defines them again)


    class FakeLongDecoder:
        """Stands in for the transformers decoder: per-clip texts for `decode`, and for `generate` (the long-form
        loop) fixed segments, after checking that it is fed the cached log-mel with a mask of its frames."""

        backend, n_mels = "fake", 80
        SEGMENTS = (Segment(1.1, 5.0, " sentence number zero"), Segment(5.0, 9.5, " sentence number one"),
                    Segment(9.5, 14.2, " sentence number"), Segment(31.0, 33.9, " extra words"))

        def __init__(self, label: str) -> None:
            self.label = label

        def decode(self, features: np.ndarray) -> list[str]:
            return ["the cat sat on the mat"] * len(features)

        def generate(self, features: np.ndarray, attention_mask=None, timed: bool = False) -> list[Decoded]:
            from whisper_tune.pipeline.cache import open_cache

            rec = open_cache(Path(self.label)).recording("talks/talk.flac")
            assert timed and features.shape == (1, 80, 4200) and attention_mask.sum() == 4200
            assert np.array_equal(features[0], rec.features.astype(np.float32))
            return [Decoded("".join(s.text for s in self.SEGMENTS).strip(), self.SEGMENTS)]
''')
exec(FAKE)       # the same stand-in here and in the child process with the audio libraries blocked

EVALUATE = FAKE + textwrap.dedent("""
    import sys
    from whisper_tune.train.inference import decode, evaluate
    from whisper_tune.pipeline.core.config import load_config

    work = Path(sys.argv[1])
    decode.TransformersDecoder = lambda spec, options: FakeLongDecoder(str(work))
    evaluate.open_decoder = lambda spec, options, **kw: FakeLongDecoder(spec)
    evaluate.run_evaluate(evaluate.EvalSettings(model="tuned", baseline="base", work_dir=work, cfg=load_config(),
                                                json_path=work / "e.json"))
""")


def test_evaluate_scores_cached_recordings_long_form_from_the_cache_alone(tiny_model, tmp_path, monkeypatch,
                                                                          capsys) -> None:
    from whisper_tune.train.inference import decode

    work = _work_with_a_recording(tmp_path / "cpu", tiny_model)
    gpu = tmp_path / "gpu-box" / "work"
    shutil.copytree(work / "cache", gpu / "cache")                   # README: copy cache/ alone to the GPU box
    monkeypatch.setattr(decode, "TransformersDecoder", lambda spec, options: FakeLongDecoder(str(work)))
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeLongDecoder(spec))
    ev.run_evaluate(ev.EvalSettings(model="tuned", baseline="base", work_dir=work, cfg=load_config(),
                                    json_path=work / "e.json"))
    printed = capsys.readouterr().out
    assert "long-form: 1 test recordings decoded whole from the cache (42 s)" in printed
    blockers = import_blocker(tmp_path / "blockers")
    log = tmp_path / "blocked.log"
    proc = blocked_python(["-c", EVALUATE, str(gpu)], blockers, log=log)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not log.exists() or log.read_text() == "", f"evaluate tried to import: {log.read_text()}"
    here, there = (json.loads((w / "e.json").read_text()) for w in (work, gpu))
    for data in (here, there):
        for key in ("seconds", "clips_per_second", "real_time_factor", "baseline_seconds",
                    "baseline_clips_per_second", "baseline_real_time_factor"):
            data.pop(key)
        for side in ("longform", "baseline_longform"):
            data[side].pop("seconds")
    assert here == there
    lf, base = there["longform"], there["baseline_longform"]
    assert (lf["model"], base["model"], lf["recordings"], lf["audio_seconds"]) == ("tuned", "base", 1, 42.0)
    (rec,) = lf["per_recording"]
    # 24 reference words: the first 8 said, then "extra words" for 2 of the other 16 (2 substituted, 14 deleted)
    assert (rec["recording"], rec["reference_words"], rec["errors"]) == ("talks/talk.flac", 24, 16)
    assert rec["wer"] == lf["wer"] == 66.67
    # starts 1.1, 5.0, 9.5, 31.0 against cue starts 1, 6, 11, ..., 36: 1.1 and 31.0 within 0.5 s;
    # ends 5.0, 9.5, 14.2, 33.9 against cue ends 4, 9, 14, ..., 39: 9.5, 14.2 and 33.9
    assert (lf["segments"], lf["start_share"], lf["end_share"]) == (4, 50.0, 75.0)
    assert base["per_recording"][0]["hypothesis"] == rec["hypothesis"]
