"""Shared fixtures: small randomly initialised Whisper checkpoints with the real tokenizer.

The helpers themselves live in tests/helpers.py; the audio helpers are re-exported here, so
`from conftest import tone, write_audio` keeps working.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SR, espeak_available, make_tiny_whisper, speak, tone, write_audio  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Whisper (80 mel bins, English-only vocabulary) saved as a transformers folder."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny80"), n_mels=80)


@pytest.fixture(scope="session")
def tiny_model_128(tmp_path_factory) -> Path:
    """Same, with 128 mel bins (large-v3's feature settings)."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny128"), n_mels=128)
