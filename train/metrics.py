"""Word and character error rates, in percent, as jiwer counts them.

    word_error_rate(["hello world"], ["hello word"])   # 50.0

Both sides go through whisper_tune.pipeline.core.text.normalize_text first ("basic": lowercase, no punctuation, every script's
letters kept), so "Hello, world!" and "hello world" score 0. The orthographic variants score the text as written
(only surrounding whitespace stripped).

A reference that is empty after normalization has no words to get wrong: its hypothesis words all count as
insertions, and it adds nothing to the denominator. If every reference is empty the rate is 0 when every
hypothesis is empty too and 100 otherwise (jiwer alone would refuse or divide by zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jiwer

from whisper_tune.pipeline.core.text import normalize_text


@dataclass(frozen=True)
class ErrorCount:
    """Edit operations of a hypothesis against its reference, in words or characters."""

    substitutions: int
    deletions: int
    insertions: int
    reference_units: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def percent(self) -> float:
        if self.reference_units == 0:
            return 0.0 if self.errors == 0 else 100.0
        return 100.0 * self.errors / self.reference_units

    def __add__(self, other: "ErrorCount") -> "ErrorCount":
        return ErrorCount(self.substitutions + other.substitutions, self.deletions + other.deletions,
                          self.insertions + other.insertions, self.reference_units + other.reference_units)


ZERO = ErrorCount(0, 0, 0, 0)


def _pairs(refs: Sequence[str], hyps: Sequence[str], mode: str) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; they must pair up one to one")
    return [normalize_text(r, mode) for r in refs], [normalize_text(h, mode) for h in hyps]


def error_counts(refs: Sequence[str], hyps: Sequence[str], unit: str = "word", mode: str = "basic") -> ErrorCount:
    """Summed edit counts over all pairs, after normalize_text(mode); unit "word", or "char" (spaces between words
    count as characters)."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: expected one of {', '.join(UNITS)}")
    split, process = UNITS[unit]
    refs_n, hyps_n = _pairs(refs, hyps, mode)
    total = ZERO
    keep = [i for i, r in enumerate(refs_n) if split(r)]
    for i, r in enumerate(refs_n):
        if not split(r):
            total += ErrorCount(0, 0, len(split(hyps_n[i])), 0)
    if keep:
        out = process([refs_n[i] for i in keep], [hyps_n[i] for i in keep])
        total += ErrorCount(out.substitutions, out.deletions, out.insertions, sum(len(split(refs_n[i])) for i in keep))
    return total


UNITS = {"word": (str.split, jiwer.process_words), "char": (lambda text: text, jiwer.process_characters)}


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """WER in percent on normalized text."""
    return error_counts(refs, hyps, "word").percent


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """CER in percent on normalized text."""
    return error_counts(refs, hyps, "char").percent


def orthographic_word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """WER in percent on the text as written (case and punctuation count)."""
    return error_counts(refs, hyps, "word", "none").percent


def english_word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """WER in percent after Whisper's English text normalizer (whisper_tune.pipeline.core.english_normalizer), as published
    Whisper numbers are computed; for English only."""
    from whisper_tune.pipeline.core.english_normalizer import english_normalizer

    normalize = english_normalizer()
    return error_counts([normalize(r) for r in refs], [normalize(h) for h in hyps], "word", "none").percent
