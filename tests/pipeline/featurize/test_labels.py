"""Labels: normalized, tokenized with the model's prefix, one start-of-transcript token."""

from __future__ import annotations

import pytest

from whisper_tune.pipeline.featurize.labels import LabelError, make_labels, tokenizer_fingerprint
from whisper_tune.pipeline.models import load_processor
from whisper_tune.pipeline.core.tokens import EOT, NO_TIMESTAMPS, SOT


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_processor(str(tiny_model)).tokenizer


def test_prefix_once_and_end_token(tokenizer):
    lab = make_labels("Hello, World!  It's   fine.", tokenizer, "basic")
    tokens = tokenizer.convert_ids_to_tokens(lab.ids.tolist())
    assert lab.text == "hello world its fine"
    assert tokens[0] == SOT and tokens.count(SOT) == 1
    assert tokens[1] == NO_TIMESTAMPS and tokens[-1] == EOT
    assert tokenizer.decode(lab.ids, skip_special_tokens=True).strip() == lab.text
    assert lab.ids.dtype.name == "int32"


def test_normalization_off_keeps_text(tokenizer):
    lab = make_labels("  Hello, World! ", tokenizer, "none")
    assert lab.text == "Hello, World!"


def test_unusable_transcripts(tokenizer):
    with pytest.raises(LabelError, match="empty"):
        make_labels(" ?! ", tokenizer, "basic")
    with pytest.raises(LabelError, match="special tokens"):
        make_labels("<|startoftranscript|> hi", tokenizer, "none")
    with pytest.raises(LabelError, match="448"):
        make_labels(" ".join(["word"] * 600), tokenizer, "basic")


def test_fingerprint_follows_normalization(tokenizer):
    assert tokenizer_fingerprint(tokenizer, "basic") == tokenizer_fingerprint(tokenizer, "basic")
    assert tokenizer_fingerprint(tokenizer, "basic") != tokenizer_fingerprint(tokenizer, "none")


def test_labels_start_with_whispers_leading_space(tokenizer):
    for mode, text in (("basic", "Hello there"), ("none", "Diabetes, my father said.")):
        lab = make_labels(text, tokenizer, mode)
        tokens = tokenizer.convert_ids_to_tokens(lab.ids.tolist())
        assert tokens[2].startswith("Ġ"), tokens      # the first text token carries the space, as Whisper's do
        assert tokenizer.decode(lab.ids, skip_special_tokens=True) == " " + lab.text


def test_fingerprint_changes_with_the_label_code(tokenizer, monkeypatch):
    import whisper_tune.pipeline.featurize.labels as labels

    before = tokenizer_fingerprint(tokenizer, "basic")
    monkeypatch.setattr(labels, "LABEL_CODE_VERSION", "labels-1")
    assert tokenizer_fingerprint(tokenizer, "basic") != before


def test_label_errors_are_not_audio_errors():
    """A bad transcript is reported as a label problem; code that catches audio errors does not swallow it."""
    from whisper_tune.pipeline.core.errors import AudioError, WhisperTuneError

    assert issubclass(LabelError, WhisperTuneError) and not issubclass(LabelError, AudioError)


def test_window_labels_are_the_cues_one_after_another(tokenizer):
    from whisper_tune.pipeline.core.constants import MAX_PROMPT_TOKENS
    from whisper_tune.pipeline.featurize.labels import WindowCues, make_window_labels

    one = make_window_labels(WindowCues(("Hello, World!",), (0.5,), (1.8,)), tokenizer, "basic")
    assert one.ids.tolist() == make_labels("Hello, World!", tokenizer, "basic").ids.tolist()
    assert one.cue_tokens.tolist() == [len(one.ids) - 3] and one.prompt.size == 0      # a first window: no prompt
    cues = WindowCues(("Good morning.", "How are you?", "Fine!"), (0.5, 2.0, 4.0), (1.8, 3.5, 4.6),
                      previous_text="Earlier words. " * 200)
    lab = make_window_labels(cues, tokenizer, "basic")
    per_cue = [tokenizer(" " + t, add_special_tokens=False)["input_ids"] for t in ("good morning", "how are you",
                                                                                   "fine")]
    assert lab.ids.tolist() == one.ids[:2].tolist() + sum(per_cue, []) + [one.ids[-1]]
    assert lab.cue_tokens.tolist() == [len(p) for p in per_cue] and lab.text == "good morning how are you fine"
    everything = tokenizer(" " + "earlier words " * 199 + "earlier words", add_special_tokens=False)["input_ids"]
    assert lab.prompt.tolist() == everything[-MAX_PROMPT_TOKENS:]                      # the latest 223 tokens
    with pytest.raises(LabelError, match="448"):
        make_window_labels(WindowCues(tuple(["word " * 100] * 5), (0.0,) * 5, (1.0,) * 5), tokenizer, "basic")
