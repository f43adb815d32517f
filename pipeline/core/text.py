"""Transcript normalization: the guide's rule (lowercase, drop punctuation, collapse spaces), made Unicode-aware.

The guide's `[^a-z0-9\\s]` deletes every non-ASCII letter (Arabic, accented French, ...); here letters, marks
and digits of every script are kept. Used for labels (pipeline) and for WER/CER (train), so both agree.
"""

from __future__ import annotations

import unicodedata

_KEEP_CATEGORIES = ("L", "N", "M")  # letters, numbers, combining marks (Arabic harakat, Devanagari vowel signs)


def normalize_text(text: str, mode: str = "basic") -> str:
    """Return `text` normalized for training labels and scoring.

    mode "basic": NFC, lowercase (casefold for scripts with case), every character that is not a letter,
    digit or combining mark becomes a space (apostrophes inside words are dropped, like the guide),
    whitespace collapsed. mode "none": only surrounding whitespace stripped.
    """
    if mode == "none":
        return text.strip()
    if mode != "basic":
        raise ValueError(f"unknown text normalization {mode!r}; expected 'basic' or 'none'")
    text = unicodedata.normalize("NFC", text).lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in _KEEP_CATEGORIES:
            out.append(ch)
        elif ch in "'\u2019\u02bc":       # word-internal apostrophes: "don't" -> "dont" as in the guide
            continue
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def flatten_and_cut(text: str, limit: int) -> str:
    """`text` on one line (whitespace runs become one space), cut to `limit` characters with "..."."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: bytes of the text over bytes of its zlib compression; 0 for no text."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


LOOP_MAX_NGRAM = 4               # words: the longest phrase whose back-to-back repeats count as a loop
LOOP_REPEATS = {1: 4}            # a word said 4 times in a row; longer phrases: LOOP_REPEATS_DEFAULT times
LOOP_REPEATS_DEFAULT = 3
LOOP_COMPRESSION_RATIO = 2.4     # Whisper's own threshold: text this repetitive is a decoding failure


def has_loop(text: str) -> bool:
    """Whether a transcript is stuck in a repetition loop: an n-gram of 1..LOOP_MAX_NGRAM words repeated back to
    back (a word 4 times, a phrase 3 times: "thank you thank you thank you"), or a compression ratio over 2.4."""
    words = normalize_text(text).split()
    for n in range(1, LOOP_MAX_NGRAM + 1):
        need = LOOP_REPEATS.get(n, LOOP_REPEATS_DEFAULT)
        for start in range(0, len(words) - n * need + 1):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, need)):
                return True
    return compression_ratio(text) > LOOP_COMPRESSION_RATIO


def word_count(text: str) -> int:
    """Words of a transcript after normalization (what "words emitted" counts)."""
    return len(normalize_text(text).split())
