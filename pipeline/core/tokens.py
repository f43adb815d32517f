"""Whisper's special tokens and languages: the one place their spellings and tables live."""

from __future__ import annotations

from whisper_tune.pipeline.core.errors import ModelError

SOT = "<|startoftranscript|>"
EOT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"
TRANSCRIBE = "<|transcribe|>"
TRANSLATE = "<|translate|>"
START_OF_PREV = "<|startofprev|>"
START_OF_LM = "<|startoflm|>"
NO_CAPTIONS = "<|nocaptions|>"
TASK_TOKENS = {"transcribe": TRANSCRIBE, "translate": TRANSLATE}   # the generation config's task_to_id keys
SPECIAL_TOKENS = (EOT, SOT, TRANSLATE, TRANSCRIBE, START_OF_LM, START_OF_PREV, NO_CAPTIONS, NO_TIMESTAMPS)

TIMESTAMP_STEP_S = 0.02          # one timestamp token per 20 ms: <|0.00|>, <|0.02|>, ... <|30.00|>
DEFAULT_LANGUAGE = "english"     # what a multilingual model transcribes when no language is configured
ENGLISH = ("en", "english")


def timestamp_token(seconds: float) -> str:
    """'<|1.24|>' for 1.24 s, rounded to Whisper's 20 ms grid."""
    steps = round(seconds / TIMESTAMP_STEP_S)
    return f"<|{steps * TIMESTAMP_STEP_S:.2f}|>"


def language_table() -> dict[str, str]:
    """Whisper's language codes to names ({'en': 'english', 'fr': 'french', ...})."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


def language_token(code: str) -> str:
    """'fr' -> '<|fr|>'."""
    return f"<|{code}|>"


def language_tokens(vocab: dict[str, int]) -> dict[str, int]:
    """'<|fr|>' -> id for every Whisper language the vocabulary has."""
    tokens = (language_token(code) for code in language_table())
    return {token: vocab[token] for token in tokens if token in vocab}


def language_code(language: str) -> str:
    """'french' / 'fr' / '<|fr|>' -> 'fr'; '' -> 'en'. ModelError for an unknown language."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = language.strip().lower().removeprefix("<|").removesuffix("|>")
    if not name:
        return "en"
    if name in language_table():
        return name
    if name in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[name]
    raise ModelError(f"model.language = {language!r} is not a Whisper language; use a name like \"french\" "
                     "or a code like \"fr\" (config [model] language)")


def is_english(language: str) -> bool:
    return language.strip().lower() in ("", *ENGLISH)
