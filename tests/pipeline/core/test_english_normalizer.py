"""Whisper's English normalizer: loads offline with its spelling table, and its WER forgives what Whisper's does."""

from __future__ import annotations

from whisper_tune.pipeline.core.english_normalizer import SPELLING_TABLE, english_normalizer
from whisper_tune.train.metrics import english_word_error_rate, word_error_rate


def test_normalizer_loads_offline_with_the_spelling_table(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    english_normalizer.cache_clear()
    normalize = english_normalizer()
    assert SPELLING_TABLE.is_file()
    assert normalize("The colour of Mr. Smith's car is 2 hundred") == "the color of mister smith is car is 200"


def test_english_wer_forgives_spelling_and_numbers():
    refs = ["The colour is grey.", "It costs twenty dollars."]
    hyps = ["the color is gray", "It costs $20."]
    assert english_word_error_rate(refs, hyps) == 0.0
    assert word_error_rate(refs, hyps) > 0.0
    assert english_word_error_rate(["hello world"], ["hello word"]) == 50.0
