"""export: a CTranslate2 folder faster-whisper loads, equal transcripts to the source model, clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import espeak_available, speak
from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.text import normalize_text
from train import export as ex

SENTENCES = (
    "Please call Stella and ask her to bring these things from the store.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
)


def test_random_model_export_has_what_faster_whisper_needs(tiny_model, tmp_path):
    out = tmp_path / "ct2"
    result = ex.run_export(model=str(tiny_model), out_dir=out, to="ct2", quantization="float32", verify=True)
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    config = json.loads((out / "config.json").read_text())
    assert config["suppress_ids"] and config["suppress_ids_begin"]
    assert result.verification is not None and result.verification.n_mels == 80
    assert result.size_bytes > (out / "model.bin").stat().st_size
    assert not list(tmp_path.glob(".ct2*"))                         # no temporary folder left behind

    # A re-export replaces the earlier one; a folder holding anything else is refused.
    again = ex.run_export(model=str(tiny_model), out_dir=out, to="ct2", quantization="int8", verify=False)
    assert again.size_bytes < result.size_bytes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds other files"):
        ex.run_export(model=str(tiny_model), out_dir=foreign, quantization="int8", verify=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_128_mel_export_keeps_its_mel_bins(tiny_model_128, tmp_path):
    result = ex.run_export(model=str(tiny_model_128), out_dir=tmp_path / "ct2", quantization="int8", verify=True)
    assert result.verification.n_mels == 128
    assert json.loads((tmp_path / "ct2" / "preprocessor_config.json").read_text())["feature_size"] == 128


@pytest.mark.parametrize("args, message", [
    (["--to", "onnx"], "--to onnx: unknown target"),
    (["--quantization", "int4"], "--quantization int4: expected one of"),
    (["--model", "/no/such/model"], "no such folder"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, message):
    res = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--model", "bundled:tiny.en", *args])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_tiny_en_round_trip_float32_and_int8(tmp_path):
    """On the same features, the float32 export decodes (greedy) exactly as transformers does on the source
    model; faster-whisper loads it and, from the audio (its own log-mel), agrees closely; int8 stays close."""
    from faster_whisper import WhisperModel
    from transformers import WhisperFeatureExtractor

    from pipeline.audio import load
    from train.decode import open_decoder
    from train.metrics import word_error_rate

    audio = [load(speak(tmp_path / f"s{i}.wav", text)) for i, text in enumerate(SENTENCES)]
    feats = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16_000, return_tensors="np").input_features
    reference = open_decoder("bundled:tiny.en").decode(feats)

    same_features: dict[str, list[str]] = {}
    from_audio: list[str] = []
    for quantization in ("float32", "int8"):
        out = tmp_path / quantization
        ex.run_export(model="bundled:tiny.en", out_dir=out, quantization=quantization, verify=False)
        same_features[quantization] = open_decoder(str(out)).decode(feats)
        if quantization == "float32":
            model = WhisperModel(str(out), device="cpu", compute_type="default")
            for clip in audio:
                segments, _ = model.transcribe(clip, beam_size=1, temperature=0.0, without_timestamps=True,
                                               vad_filter=False, condition_on_previous_text=False)
                from_audio.append(" ".join(s.text.strip() for s in segments))
    assert same_features["float32"] == reference
    assert word_error_rate(reference, from_audio) <= 10.0
    wer = {k: word_error_rate(list(SENTENCES), v) for k, v in same_features.items()}
    print(f"\ntiny.en export, {len(SENTENCES)} clips, WER vs the sentences: transformers "
          f"{word_error_rate(list(SENTENCES), reference):.2f}%, export float32 {wer['float32']:.2f}%, "
          f"int8 {wer['int8']:.2f}% (same features); faster-whisper from audio, float32: "
          f"{word_error_rate(list(SENTENCES), from_audio):.2f}%")
    assert abs(wer["int8"] - wer["float32"]) <= 15.0
