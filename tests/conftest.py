"""Shared fixtures: small randomly initialised Whisper checkpoints with the real tokenizer, and generated audio."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SR = 16_000


def make_tiny_whisper(folder: Path, n_mels: int = 80, seed: int = 0) -> Path:
    """Save a tiny random WhisperForConditionalGeneration with tiny.en's real tokenizer to `folder`."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    from pipeline.models.ct2_import import add_timestamp_tokens
    from pipeline.models import bundled_model_dir, read_json, tokenizer_from_file

    ct2 = bundled_model_dir()
    tok = tokenizer_from_file(ct2 / "tokenizer.json")
    add_timestamp_tokens(tok, len(tok) + 1501, ct2)   # <|0.00|> .. <|30.00|>, as tiny.en has them
    ct2_cfg = read_json(ct2 / "config.json")
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=len(tok), num_mel_bins=n_mels, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
        suppress_tokens=[], begin_suppress_tokens=ct2_cfg["suppress_ids_begin"],
    )
    model = WhisperForConditionalGeneration(cfg)
    gen = GenerationConfig(
        decoder_start_token_id=cfg.decoder_start_token_id, eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id,
        no_timestamps_token_id=tok.convert_tokens_to_ids("<|notimestamps|>"),
        is_multilingual=False, suppress_tokens=ct2_cfg["suppress_ids"],
        begin_suppress_tokens=ct2_cfg["suppress_ids_begin"], max_length=448,
    )
    model.generation_config = gen
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tok)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Whisper (80 mel bins, English-only vocabulary) saved as a transformers folder."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny80"), n_mels=80)


@pytest.fixture(scope="session")
def tiny_model_128(tmp_path_factory) -> Path:
    """Same, with 128 mel bins (large-v3's feature settings)."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny128"), n_mels=128)


def tone(seconds: float, sr: int = SR, freq: float = 440.0, amp: float = 0.5,
         pad_silence: float = 0.0, seed: int = 0) -> np.ndarray:
    """A tone with a little noise, optionally surrounded by `pad_silence` seconds of silence each side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    pad = np.zeros(int(pad_silence * sr))
    return np.concatenate([pad, x, pad]).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    """Write with soundfile; the format follows the extension (wav, flac, mp3, ogg)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".mp3": "MP3", ".ogg": "OGG", ".flac": "FLAC", ".wav": "WAV"}[path.suffix.lower()]
    sf.write(str(path), samples, sr, format=fmt, subtype=subtype)
    return path


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(path: Path, text: str, voice: str = "en-us", speed: int = 160) -> Path:
    """espeak-ng speech to a wav file (tests that use it skip where espeak-ng is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path
