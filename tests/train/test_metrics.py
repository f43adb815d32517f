import jiwer
import pytest

from whisper_tune.train.metrics import (char_error_rate, error_counts, orthographic_word_error_rate, word_error_rate)


def test_perfect_and_percent():
    assert word_error_rate(["hello world"], ["hello world"]) == 0.0
    assert word_error_rate(["hello world"], ["hello word"]) == pytest.approx(50.0)
    assert char_error_rate(["abcd"], ["abed"]) == pytest.approx(25.0)


def test_normalization_applies_to_both_sides():
    assert word_error_rate(["Hello, World!"], ["hello world"]) == 0.0
    assert char_error_rate(["Café crème."], ["café  crème"]) == 0.0
    # the orthographic rate counts case and punctuation
    assert orthographic_word_error_rate(["Hello, World!"], ["hello world"]) == pytest.approx(100.0)
    assert error_counts(["abc"], ["abc"], "char", "none").percent == 0.0
    assert error_counts(["Abc"], ["abc"], "char", "none").percent > 0.0


def test_non_ascii_scripts_are_scored():
    assert word_error_rate(["مرحبا كيف حالك"], ["مرحبا كيف"]) == pytest.approx(100 / 3)


def test_matches_jiwer_on_corpus():
    refs = ["the cat sat on the mat", "a quick brown fox", "one two three"]
    hyps = ["the cat sat on mat", "a quick brown box jumps", "one two three"]
    assert word_error_rate(refs, hyps) == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert char_error_rate(refs, hyps) == pytest.approx(100 * jiwer.cer(refs, hyps))


def test_empty_references():
    # an empty reference adds insertions but no reference words
    counts = error_counts(["", "a b"], ["x y", "a b"], "word")
    assert (counts.insertions, counts.reference_units) == (2, 2)
    assert word_error_rate(["", "a b"], ["x y", "a b"]) == pytest.approx(100.0)
    # punctuation-only reference normalizes to empty
    assert word_error_rate(["?!", "a b"], ["", "a b"]) == 0.0
    # every reference empty: 0 when nothing was said back, 100 otherwise
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate([""], ["something"]) == 100.0
    assert error_counts([""], ["ab"], "char").insertions == 2
    assert char_error_rate([], []) == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="pair up"):
        word_error_rate(["a"], ["a", "b"])
