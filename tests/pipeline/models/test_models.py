"""Model sources: resolve_model's forms and errors, and parity of the imported tiny.en with faster-whisper."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from whisper_tune.testing import REPO_ROOT, espeak_available, speak  # noqa: E402
from whisper_tune.pipeline.core.constants import BUNDLED_MODEL, N_SAMPLES, SAMPLE_RATE_HZ  # noqa: E402
from whisper_tune.pipeline.core.errors import ModelError  # noqa: E402
from whisper_tune.pipeline.models import (bundled_model_dir, is_multilingual, load_processor, resolve_model,  # noqa: E402
                             tokenizer_from_file)

DATA = REPO_ROOT / "tests" / "data"


def test_local_transformers_folder_resolves_to_itself(tiny_model):
    assert resolve_model(str(tiny_model)) == str(tiny_model)


def test_hub_id_passes_through_when_the_hub_is_reachable(monkeypatch):
    import whisper_tune.pipeline.models.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(whisper_tune.pipeline.models.hub, "reach", lambda endpoint: None)      # as if the network were up
    assert resolve_model("openai/whisper-small.en") == "openai/whisper-small.en"


def test_file_missing_folder_and_empty_folder_are_model_errors(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelError, match="without config.json"):
        resolve_model(str(tmp_path))


def test_is_multilingual_reads_the_special_token_layout():
    tok = tokenizer_from_file(bundled_model_dir() / "tokenizer.json")
    assert len(tok) < 51864  # a bare tokenizer.json without timestamp tokens ...
    assert not is_multilingual(tok)  # ... is still recognised by where <|startoftranscript|> sits


def test_bundled_import_is_a_complete_english_only_checkpoint():
    from transformers import GenerationConfig, WhisperConfig

    folder = resolve_model(BUNDLED_MODEL)
    assert resolve_model(BUNDLED_MODEL) == folder  # cached
    cfg = WhisperConfig.from_pretrained(folder)
    gen = GenerationConfig.from_pretrained(folder)
    assert (cfg.num_mel_bins, cfg.vocab_size, cfg.d_model) == (80, 51864, 384)
    assert gen.no_timestamps_token_id == 50362 and gen.decoder_start_token_id == 50257
    assert gen.begin_suppress_tokens == [220, 50256] and 50361 in gen.suppress_tokens
    assert gen.is_multilingual is False and len(gen.alignment_heads) == 8
    processor = load_processor(folder)
    assert len(processor.tokenizer) == 51864
    ids = processor.tokenizer("hello world").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256


def parity_clips(tmp_path: Path) -> list[Path]:
    clips = sorted(DATA.glob("speech_*.mp3"))
    if espeak_available():
        clips.append(speak(tmp_path / "generated.wav", "Seven ships sailed north before the storm arrived.",
                           voice="en-us+m3", speed=150))
    return clips


def load_30s(path: Path) -> np.ndarray:
    """Mono 16 kHz audio padded with silence to Whisper's 30 s window.

    faster-whisper pads a short clip's log-mel with zeros while transformers pads the audio (so the features hold
    Whisper's log floor); over a full window both front ends agree, which isolates the weights and decoding."""
    import librosa
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE_HZ:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE_HZ)
    return np.pad(audio, (0, N_SAMPLES - audio.size)).astype(np.float32)


@pytest.mark.slow
def test_imported_tiny_en_transcribes_like_faster_whisper(tmp_path):
    faster_whisper = pytest.importorskip("faster_whisper")
    import torch
    from transformers import WhisperForConditionalGeneration

    folder = resolve_model(BUNDLED_MODEL)
    processor = load_processor(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    reference = faster_whisper.WhisperModel(str(bundled_model_dir()), device="cpu", compute_type="float32", cpu_threads=2)

    clips = parity_clips(tmp_path)
    assert len(clips) >= 2
    for clip in clips:
        audio = load_30s(clip)
        segments, _ = reference.transcribe(audio, beam_size=1, without_timestamps=True, vad_filter=False,
                                           temperature=0.0, condition_on_previous_text=False)
        expected = "".join(s.text for s in segments).strip()
        feats = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(feats, num_beams=1, do_sample=False)
        got = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
        assert len(expected.split()) >= 5, (clip.name, expected)  # real speech, not an empty decode
        assert got == expected, clip.name


def test_an_unknown_tokenizer_class_is_one_line(tiny_model, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from whisper_tune.cli import app

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "NoSuchTokenizer"}))
    with pytest.raises(ModelError) as caught:
        load_processor(str(folder))
    assert str(caught.value).startswith(f"{folder} holds no Whisper tokenizer: its tokenizer_config.json names "
                                        "tokenizer_class 'NoSuchTokenizer' (loaded as ")
    res = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--model", str(folder), "--no-verify"])
    assert res.exit_code == 1 and "holds no Whisper tokenizer" in res.output and "Traceback" not in res.output
