"""decode: language/task prompts for multilingual models, on both backends (pure parts)."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from whisper_tune.pipeline.core.errors import ModelError
from whisper_tune.pipeline.core.tokens import language_code
from whisper_tune.train.inference.decode import DecodeOptions, ct2_prompt, generation_kwargs


class FakeTokenizer:
    """Just enough of a Whisper tokenizer: a vocabulary size and the special tokens."""

    def __init__(self, multilingual: bool) -> None:
        self.vocab = {"<|en|>": 50259, "<|fr|>": 50265, "<|ar|>": 50272, "<|transcribe|>": 50360,
                      "<|translate|>": 50359}
        self.size = 51865 if multilingual else 51864
        self.unk_token_id = 50256   # <|endoftext|> of a multilingual vocabulary

    def __len__(self) -> int:
        return self.size

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def convert_tokens_to_ids(self, token: str) -> int:
        if token == "<|startoftranscript|>":
            return 50258 if self.size >= 51865 else 50257
        return self.vocab[token]


class FakeModel:
    def __init__(self) -> None:
        self.generation_config = GenerationConfig()


@pytest.mark.parametrize("given, code", [("", "en"), ("French", "fr"), ("fr", "fr"), ("<|ar|>", "ar"),
                                         ("arabic", "ar")])
def test_language_code(given, code):
    assert language_code(given) == code


def test_unknown_language_names_the_setting():
    with pytest.raises(ModelError, match=r"\[model\] language"):
        language_code("klingon")


def test_prompts_for_english_only_and_multilingual_models():
    opts = DecodeOptions(language="french", task="translate")
    assert ct2_prompt(False, opts) == ["<|startoftranscript|>", "<|notimestamps|>"]
    assert ct2_prompt(True, opts) == ["<|startoftranscript|>", "<|fr|>", "<|translate|>", "<|notimestamps|>"]
    assert "language" not in generation_kwargs(FakeModel(), FakeTokenizer(False), opts)
    model = FakeModel()                          # a generation config without language tables (old checkpoints)
    kwargs = generation_kwargs(model, FakeTokenizer(True), opts)
    assert kwargs["language"] == "fr" and kwargs["task"] == "translate" and kwargs["num_beams"] == 1
    assert model.generation_config.lang_to_id["<|fr|>"] == 50265
    assert model.generation_config.task_to_id == {"transcribe": 50360, "translate": 50359}
