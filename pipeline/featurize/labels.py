"""Training labels: the transcript normalized (whisper_tune.pipeline.core.text) and tokenized with the model's own tokenizer, whose
prefix (language, task, no-timestamps) load_processor has set. The ids start with exactly one
<|startoftranscript|> and end with <|endoftext|>; the model's decoder input is these ids shifted, so the
start token is never learned twice. The text is tokenized with Whisper's leading space (" hello", as its own
transcripts and every segment it predicts begin), so a fine-tuned model keeps the space between segments.

A window of a long recording (`make_window_labels`) is stored the same way, its cues' texts one after another
(each with its leading space, as packed clips are joined), plus what the trainer needs to lay them out with
timestamps (each cue's token count and times) and its prompt: the last MAX_PROMPT_TOKENS text ids of the
recording's earlier text, normalized like the labels, without special tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS, MAX_PROMPT_TOKENS
from whisper_tune.pipeline.core.errors import LabelError
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.core.tokens import SOT
from whisper_tune.pipeline.core.text import normalize_text

LABEL_CODE_VERSION = "labels-3"        # 2: leading space; 3: prompt and cue columns (windows of recordings)
LEADING_SPACE = " "                    # Whisper's text tokens start with a space: " Hello", not "Hello"

__all__ = ["LABEL_CODE_VERSION", "LabelError", "Labels", "WindowCues", "make_labels", "make_window_labels",
           "tokenizer_fingerprint"]
TIMESTAMP_PAIR = 2                     # a start and an end timestamp token per cue in the timestamped form

_NO_IDS = np.zeros(0, np.int32)


@dataclass(frozen=True)
class Labels:
    ids: np.ndarray   # int32
    text: str         # normalized transcript
    prompt: np.ndarray = field(default_factory=lambda: _NO_IDS)        # windows: previous-text ids
    cue_tokens: np.ndarray = field(default_factory=lambda: _NO_IDS)    # windows: text ids per cue


@dataclass(frozen=True)
class WindowCues:
    """What the manifest holds of a window's text: each cue's text and times (seconds from the window's start),
    and the recording's text before the window."""

    texts: tuple[str, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]
    previous_text: str = ""

    def key(self) -> str:
        """Everything the window's labels depend on, as one string for its fingerprint."""
        return json.dumps([list(self.texts), list(self.starts), list(self.ends), self.previous_text])


def tokenizer_fingerprint(tokenizer, text_normalization: str) -> str:
    """Everything that decides the label ids: vocabulary and merges, special tokens, prefix, normalization."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return stable_hex(f"{LABEL_CODE_VERSION}|{text_normalization}|{MAX_LABEL_TOKENS}|", vocabulary,
                      json.dumps([int(i) for i in tokenizer.prefix_tokens]),
                      json.dumps(sorted(map(str, tokenizer.all_special_tokens))), sep=b"")


def make_labels(text: str, tokenizer, text_normalization: str) -> Labels:
    """Normalize then tokenize one transcript. Raises LabelError for an empty or over-long transcript."""
    norm = normalize_text(text, text_normalization)
    if not norm:
        raise LabelError(f"transcript {text!r} is empty after normalization ({text_normalization})")
    ids = np.asarray(tokenizer(LEADING_SPACE + norm).input_ids, dtype=np.int32)
    sot = tokenizer.convert_tokens_to_ids(SOT)
    if int(ids[0]) != sot or int((ids == sot).sum()) != 1:
        raise LabelError("transcript contains Whisper special tokens such as <|startoftranscript|>")
    if ids.size > MAX_LABEL_TOKENS:
        raise LabelError(f"transcript is {ids.size} tokens long; Whisper's decoder takes at most {MAX_LABEL_TOKENS}")
    return Labels(ids=ids, text=norm)


def make_window_labels(cues: WindowCues, tokenizer, text_normalization: str) -> Labels:
    """A window's labels: prefix, <|notimestamps|>, each cue's normalized text (leading space) in order,
    <|endoftext|>; with each cue's token count and the prompt ids. LabelError for a cue with no text left, or
    when the timestamped form (two timestamps per cue instead of <|notimestamps|>) would exceed the decoder."""
    norms = [normalize_text(t, text_normalization) for t in cues.texts]
    if not norms or not all(norms):
        raise LabelError(f"a cue of the window is empty after normalization ({text_normalization}): "
                         f"{[t for t, n in zip(cues.texts, norms) if not n] or 'no cues'}")
    per_cue = tokenizer([LEADING_SPACE + n for n in norms], add_special_tokens=False)["input_ids"]
    full = tokenizer(LEADING_SPACE + norms[0]).input_ids       # prefix + first cue + <|endoftext|>
    prefix, eot = full[: len(full) - len(per_cue[0]) - 1], full[-1]
    text_ids = [i for ids in per_cue for i in ids]
    ids = np.asarray([*prefix, *text_ids, eot], dtype=np.int32)
    sot = tokenizer.convert_tokens_to_ids(SOT)
    if int(ids[0]) != sot or int((ids == sot).sum()) != 1:
        raise LabelError("a cue contains Whisper special tokens such as <|startoftranscript|>")
    timed = ids.size - 1 + TIMESTAMP_PAIR * len(norms)      # <|notimestamps|> out, a timestamp pair per cue in
    if timed > MAX_LABEL_TOKENS:
        raise LabelError(f"window label is {timed} tokens long with its timestamps; Whisper's decoder takes at most "
                         f"{MAX_LABEL_TOKENS} (re-run `whisper-tune validate` with the model, which cuts windows "
                         "to fit)")
    previous = normalize_text(cues.previous_text, text_normalization)
    prompt = tokenizer(LEADING_SPACE + previous, add_special_tokens=False)["input_ids"] if previous else []
    return Labels(ids=ids, text=" ".join(norms), prompt=np.asarray(prompt[-MAX_PROMPT_TOKENS:], dtype=np.int32),
                  cue_tokens=np.asarray([len(c) for c in per_cue], dtype=np.int32))
