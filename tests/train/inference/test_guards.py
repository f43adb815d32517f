"""Whisper's guards, beams and back ends on tiny models: the compression-ratio rule cuts a repetition loop, the
no-speech rule gives no text, beam search runs in both back ends, [decode] settings reach the decoder, and
`--backend auto` converts a model to CTranslate2 once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.train.inference.decode import DecodeOptions, compression_ratio, open_decoder

BACKENDS = ("transformers", "ctranslate2")
WHISPER_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Conversions go to a folder of this test session, not the user's cache."""
    monkeypatch.setenv("WHISPER_TUNE_CACHE", str(tmp_path_factory.getbasetemp() / "user-cache"))


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32)


FALLBACK = (0.0, 0.5, 1.0)          # a short fallback list keeps the test quick; the rule is the same


@pytest.mark.parametrize("backend", BACKENDS)
def test_compression_ratio_rule_cuts_a_repetition_loop(tiny_model, features, backend):
    """The random model repeats one token at temperature 0 (a loop that compresses far beyond 2.4); with the rule
    and the temperature fallback the text is decoded again and the loop is gone."""
    tokens = 30
    plain = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=tokens), backend=backend).decode(features[:1])
    assert all(compression_ratio(t) > 2.4 for t in plain), plain
    guarded = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=tokens, temperatures=FALLBACK,
                                                          compression_ratio_threshold=2.4), backend=backend)
    texts = guarded.decode(features[:1])
    assert all(t and compression_ratio(t) <= 2.4 for t in texts), texts


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_speech_rule_gives_no_text(tiny_model, features, backend):
    """A window whose no-speech probability is above the threshold and whose log-probability is below its
    threshold gives no text (thresholds set so that every window of the random model qualifies)."""
    opts = DecodeOptions(max_new_tokens=20, logprob_threshold=0.0, no_speech_threshold=0.0)
    assert open_decoder(str(tiny_model), opts, backend=backend).decode(features) == ["", ""]
    assert all(open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=20), backend=backend).decode(features))


def test_beam_search_in_both_back_ends(tiny_model, features):
    """--beam-size reaches both back ends, and on the same weights they find the same beam."""
    opts = DecodeOptions(max_new_tokens=8, beam_size=4)
    texts = {b: open_decoder(str(tiny_model), opts, backend=b).decode(features) for b in BACKENDS}
    assert all(texts["transformers"]) and all(texts["ctranslate2"]), texts
    assert texts["transformers"] == texts["ctranslate2"]
    tr = open_decoder(str(tiny_model), opts, backend="transformers")
    assert tr.generate_kwargs["num_beams"] == 4


@pytest.mark.parametrize("tokens", [12, 40])
def test_both_back_ends_stop_after_the_same_number_of_new_tokens(tiny_model, features, tokens):
    """The random model never ends a window by itself, so max_new_tokens decides where its text stops: the same
    place in both back ends (CTranslate2's generate decodes max_length // 2 new tokens; decode.py asks it for
    twice as many), for cached features and on the transcribe path (faster-whisper's loop)."""
    texts = {b: open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=tokens), backend=b).decode(features)
             for b in BACKENDS}
    assert all(texts["transformers"]) and texts["transformers"] == texts["ctranslate2"], texts
    clip = np.random.default_rng(1).standard_normal(16_000 * 5).astype(np.float32) * 0.1
    heard = {b: open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=20), backend=b).transcribe([clip])[0].text
             for b in BACKENDS}
    assert heard["transformers"] and heard["transformers"] == heard["ctranslate2"], heard


def test_ct2_max_length_is_twice_the_new_tokens_within_the_context():
    from whisper_tune.train.inference.decode import WINDOW_TOKENS, ct2_max_length

    assert ct2_max_length(2, 64) == 128 and ct2_max_length(2, WINDOW_TOKENS) == 448
    assert ct2_max_length(400, WINDOW_TOKENS) == 2 * 48          # a long prompt leaves 48 positions


def test_transcribe_path_gives_timed_segments_in_both_back_ends(tiny_model):
    clip = np.random.default_rng(1).standard_normal(16_000 * 40).astype(np.float32) * 0.1
    for backend in BACKENDS:
        decoder = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=20), backend=backend)
        long, empty = decoder.transcribe([clip, np.zeros(0, np.float32)], timed=True)
        assert long.segments and long.text and empty.text == "" and not empty.segments
        assert long.text == "".join(s.text for s in long.segments).strip()
        short, = decoder.transcribe([clip[:16_000]])                     # text only, no timestamps asked
        assert short.text and not short.segments or backend == "ctranslate2"


def test_decode_settings_from_config():
    opts = DecodeOptions.from_config(load_config(None, {"decode.beam_size": 5, "decode.prompt": "Amiodarone."}))
    assert opts.temperatures == WHISPER_TEMPERATURES and opts.compression_ratio_threshold == 2.4
    assert opts.logprob_threshold == -1.0 and opts.no_speech_threshold == 0.6
    assert opts.beam_size == 5 and opts.prompt == "Amiodarone." and opts.guarded
    off = DecodeOptions.from_config(load_config(None, {"decode.guards": False}))
    assert not off.guarded and off.temperatures == (0.0,)
    assert DecodeOptions.from_config(load_config(None, {"decode.compression_ratio_threshold": 0})) \
        .compression_ratio_threshold is None
    assert not DecodeOptions().guarded           # the library default stays plain greedy (training's evaluation)


@pytest.mark.parametrize("key,value,message", [
    ("decode.temperature", "0.0,hot", 'decode.temperature = \'0.0,hot\' is not allowed; expected comma-separated'),
    ("decode.backend", "onnx", "expected auto, transformers or ctranslate2 (--backend)"),
    ("decode.beam_size", 0, "expected 1 (greedy) to 32 beams (--beam-size)"),
    ("decode.no_speech_threshold", 1.5, "expected a probability in [0, 1]"),
    ("decode.logprob_threshold", 0.5, "expected a log-probability of 0 or below"),
])
def test_bad_decode_settings_are_one_line(key, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, {key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_auto_converts_once_into_a_content_addressed_cache(tiny_model, tmp_path, capsys):
    from whisper_tune.pipeline.models.ct2_export import converted_folder, conversion_key
    from whisper_tune.pipeline.models import load_processor

    def convert():
        return converted_folder(str(tiny_model), lambda: load_processor(str(tiny_model)), cache_dir=tmp_path)

    first = convert()
    assert first.parent == tmp_path and first.name == conversion_key(str(tiny_model))
    assert (first / "model.bin").is_file() and "converting" in capsys.readouterr().err
    assert convert() == first and "converting" not in capsys.readouterr().err    # the second time: the cache
    decoder = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=3), backend="auto")
    assert decoder.backend == "ctranslate2"
    assert "with the ctranslate2 back end" in capsys.readouterr().err


def test_auto_falls_back_to_transformers_when_the_model_does_not_convert(tiny_model, monkeypatch, capsys):
    import whisper_tune.pipeline.models.ct2_export as ct2_export
    from whisper_tune.pipeline.core.errors import ModelError

    def refuse(source, processor, cache_dir=None):
        raise ModelError(f"cannot convert {source} to CTranslate2: unsupported")

    monkeypatch.setattr(ct2_export, "converted_folder", refuse)
    decoder = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=3), backend="auto")
    assert decoder.backend == "transformers"
    assert "unsupported; decoding with transformers instead" in capsys.readouterr().err
    with pytest.raises(ModelError, match="unsupported"):
        open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=3), backend="ctranslate2")


def test_vad_keeps_only_speech_and_times_stay_the_clips():
    """--vad with the transformers back end: Silero (faster-whisper's bundled copy) finds no speech in silence,
    and times decoded from the joined speech map back onto the original clip."""
    from faster_whisper.vad import SpeechTimestampsMap

    from whisper_tune.train.inference.decode import Decoded, Segment, Word, _remapped, speech_only

    speech, times = speech_only(np.zeros(32_000, np.float32))
    assert speech.size == 0 and times is None
    chunks = [{"start": 16_000, "end": 32_000}, {"start": 64_000, "end": 80_000}]   # 1-2 s and 4-5 s
    moved = _remapped(Decoded("a b", (Segment(0.5, 1.5, " a b", (Word(0.5, 0.9, " a"), Word(1.2, 1.5, " b"))),)),
                      SpeechTimestampsMap(chunks, 16_000))
    seg = moved.segments[0]
    assert (seg.start, seg.end) == (1.5, 4.5) and [(w.start, w.end) for w in seg.words] == [(1.5, 1.9), (4.2, 4.5)]


def test_ct2_carry_restarts_after_a_high_temperature_window():
    from types import SimpleNamespace as S

    from whisper_tune.train.inference.decode import ct2_carry

    assert ct2_carry("Amiodarone.", [S(text=" a b", temperature=0.0), S(text=" c", temperature=0.4)]) \
        == "Amiodarone. a b c"
    assert ct2_carry("Amiodarone.", [S(text=" a", temperature=0.0), S(text=" b", temperature=0.8),
                                     S(text=" c", temperature=0.2)]) == "c"
    assert ct2_carry("", [S(text=" a", temperature=0.0), S(text=" b", temperature=1.0)]) == ""


def test_prompt_ids_keep_whispers_last_tokens_and_leave_room_to_decode(tiny_model):
    from whisper_tune.pipeline.models import load_processor
    from whisper_tune.train.inference.decode import prompt_kwargs

    tokenizer = load_processor(str(tiny_model)).tokenizer
    model = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=3), backend="transformers").model
    assert prompt_kwargs(model, tokenizer, "  ", 224) == {}
    long = prompt_kwargs(model, tokenizer, " ".join(f"word{i}" for i in range(400)), 224)
    ids = long["prompt_ids"].tolist()
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|startofprev|>") and len(ids) == 224
    assert tokenizer.decode(ids[1:]).strip().endswith("word399")
    assert long["max_new_tokens"] == 448 - 224 - 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_condition_on_previous_text_carries_the_text_and_resets_after_a_hot_fallback(tiny_model, backend):
    """The carry a long file's next piece is prompted with: the prompt and the clip's text when its windows decode
    at temperature 0; nothing when the last window fell back above 0.5 (the random model's repetition loop at 0
    fails the compression-ratio rule, so a 5 s clip's one window is decoded again at 1.0)."""
    clip = np.random.default_rng(1).standard_normal(16_000 * 40).astype(np.float32) * 0.1
    plain = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=20, condition_on_previous_text=True,
                                                        prompt="Hello there."), backend=backend)
    result, = plain.transcribe([clip], timed=True)
    assert result.text and result.carry == f"Hello there. {result.text}"
    again, = plain.transcribe([clip], timed=True, prompt="")
    assert again.carry == again.text
    hot = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=30, condition_on_previous_text=True,
                                                      temperatures=(0.0, 1.0), compression_ratio_threshold=2.4),
                       backend=backend)
    fell_back, = hot.transcribe([clip[:16_000 * 5]], prompt="Hello there.")          # one window
    assert fell_back.carry == ""
    off, = open_decoder(str(tiny_model), DecodeOptions(max_new_tokens=20), backend=backend).transcribe([clip])
    assert off.carry == ""
