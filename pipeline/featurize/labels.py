"""Training labels: the transcript normalized (whisper_tune.pipeline.core.text) and tokenized with the model's own tokenizer, whose
prefix (language, task, no-timestamps) load_processor has set. The ids start with exactly one
<|startoftranscript|> and end with <|endoftext|>; the model's decoder input is these ids shifted, so the
start token is never learned twice. The text is tokenized with Whisper's leading space (" hello", as its own
transcripts and every segment it predicts begin), so a fine-tuned model keeps the space between segments."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS
from whisper_tune.pipeline.core.errors import LabelError
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.core.tokens import SOT
from whisper_tune.pipeline.core.text import normalize_text

LABEL_CODE_VERSION = "labels-2"        # 2: leading space
LEADING_SPACE = " "                    # Whisper's text tokens start with a space: " Hello", not "Hello"

__all__ = ["LABEL_CODE_VERSION", "LabelError", "Labels", "make_labels", "tokenizer_fingerprint"]


@dataclass(frozen=True)
class Labels:
    ids: np.ndarray   # int32
    text: str         # normalized transcript


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
