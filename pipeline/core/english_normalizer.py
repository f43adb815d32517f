"""Whisper's English text normalizer, so WER compares with published Whisper numbers.

transformers ships the normalizer (EnglishTextNormalizer: numbers and currencies spelled the Whisper way,
contractions and titles expanded, fillers removed, ...) but not its British-to-American spelling table,
which the hub's openai/whisper-* repositories ship as normalizer.json and OpenAI's whisper package as
whisper/normalizers/english.json. The same table (MIT license, Copyright (c) 2022 OpenAI; 1,739 entries) lies
beside this module as whisper_english.json, so the normalizer works offline for every model.

    normalize = english_normalizer()
    normalize("Mr. Smith's colour is 2 hundred")   # 'mister smith is color is 200'
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

SPELLING_TABLE = Path(__file__).resolve().parent / "whisper_english.json"


@lru_cache(maxsize=1)
def english_normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(json.loads(SPELLING_TABLE.read_text(encoding="utf-8")))
