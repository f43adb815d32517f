"""What a model folder holds: its kind (transformers or CTranslate2), its JSON files, and its Whisper tokenizer.

The lowest layer of whisper_tune.pipeline.models: the importer (ct2_import), the exporter (ct2_export) and the resolver
(source) all read folders through it, and it imports none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whisper_tune.pipeline.core.errors import ModelError, first_line
from whisper_tune.pipeline.core.tokens import EOT, SOT

CT2_FILES = ("model.bin", "config.json", "tokenizer.json")


def is_ct2_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def is_transformers_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and not (path / "model.bin").is_file()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from None


def tokenizer_from_file(tokenizer_json: Path):
    """A WhisperTokenizerFast from a bare tokenizer.json (as CTranslate2 folders ship it)."""
    from transformers import WhisperTokenizerFast

    if not tokenizer_json.is_file():
        raise ModelError(f"{tokenizer_json.parent} has no tokenizer.json; a Whisper tokenizer is needed next to model.bin")
    try:
        return WhisperTokenizerFast(
            tokenizer_file=str(tokenizer_json),
            bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT,
            model_max_length=1024,
        )
    except Exception as err:  # the tokenizers library raises a bare Exception for a file it cannot parse
        first = first_line(err)
        raise ModelError(f"{tokenizer_json} is not a usable Whisper tokenizer ({first}); copy the tokenizer.json "
                         "that came with the model next to model.bin") from None


def is_multilingual(tokenizer) -> bool:
    """English-only Whisper vocabularies put <|startoftranscript|> at 50257, multilingual ones at 50258 (their
    vocabularies have 51864 entries vs 51865 or more, but a bare tokenizer.json may lack the timestamp tokens)."""
    sot = tokenizer.convert_tokens_to_ids(SOT)
    if isinstance(sot, int) and sot != tokenizer.unk_token_id:
        return sot >= 50258
    return len(tokenizer) >= 51865


def optional_token_id(tokenizer, token: str) -> int | None:
    """The id of `token`, or None when the vocabulary lacks it (<|endoftext|> is the unknown token itself)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != EOT):
        return None
    return int(tid)


def token_id(tokenizer, token: str) -> int:
    tid = optional_token_id(tokenizer, token)
    if tid is None:
        raise ModelError(f"the tokenizer has no {token} token; is this a Whisper tokenizer?")
    return tid
