"""Shared fixtures: small randomly initialised Whisper checkpoints with the real tokenizer.

The builders themselves live in whisper_tune/testing.py (shared with bench/); tests import them from there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from whisper_tune.testing import make_tiny_whisper


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Whisper (80 mel bins, English-only vocabulary) saved as a transformers folder."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny80"), n_mels=80)


@pytest.fixture(scope="session")
def tiny_model_128(tmp_path_factory) -> Path:
    """Same, with 128 mel bins (large-v3's feature settings)."""
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny128"), n_mels=128)
