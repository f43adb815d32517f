"""Non-speech training windows (train/nonspeech.py): their labels, token by token, for English-only and
multilingual tokenizers, their share of each epoch (packed and unpacked), and a cache without a pool."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.cache.nonspeech import HELDOUT, TRAIN, read_pool
from whisper_tune.pipeline.models import load_processor, token_id
from whisper_tune.pipeline.core.tokens import SOT
from whisper_tune.testing import build_cache, bundled_tokenizer, write_pool
from whisper_tune.train.data import Collator, training_dataset
from whisper_tune.train.nonspeech import NON_SPEECH_ID, NonSpeechEval, empty_labels, extra_windows, with_non_speech


@pytest.fixture(scope="module")
def pooled(tiny_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("pooled")
    build_cache(work, tiny_model, n_train=10, n_test=2, variants=2)
    write_pool(work / "cache", n_train=3, n_heldout=2)
    return work


def test_empty_transcript_labels_english_only(tiny_model):
    tok = load_processor(str(tiny_model)).tokenizer
    ids = empty_labels(tok)
    assert ids.tolist() == [50257, 50362, 50256]         # <|startoftranscript|> <|notimestamps|> <|endoftext|>
    assert tok.convert_ids_to_tokens(ids.tolist()) == ["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"]


def test_empty_transcript_labels_multilingual():
    """With a language and task (a multilingual model's prefix), the empty transcript keeps them."""
    tok = bundled_tokenizer()
    tok.set_prefix_tokens(language="french", task="transcribe")
    ids = empty_labels(tok).tolist()
    assert tok.convert_ids_to_tokens(ids) == ["<|startoftranscript|>", "<|fr|>", "<|transcribe|>",
                                              "<|notimestamps|>", "<|endoftext|>"]
    assert ids == [50257, 50264, 50358, 50362, 50256]
    assert "<|nocaptions|>" not in tok.convert_ids_to_tokens(ids)      # not Whisper's no-speech marker (README)


@pytest.mark.parametrize("pack", [False, True])
def test_share_of_non_speech_windows_and_their_labels(pooled, tiny_model, pack):
    tok = load_processor(str(tiny_model)).tokenizer
    cache = open_cache(pooled)
    speech = training_dataset(cache, tok, seed=1, pack=pack, timestamp_prob=0.0, planned_epochs=2)
    pool = read_pool(pooled / "cache")
    mixed, note = with_non_speech(speech, pool, share=0.2, labels=empty_labels(tok), seed=1)
    w = len(speech)
    assert len(mixed) == w + extra_windows(w, 0.2) and "non-speech windows" in note
    assert extra_windows(w, 0.2) == max(1, round(w * 0.25))
    pool_names = {NON_SPEECH_ID + c.name for c in pool.part(TRAIN)}
    collate = Collator(sot_id=token_id(tok, SOT))
    for epoch in (0, 1):
        items = [mixed[epoch * len(mixed) + i] for i in range(len(mixed))]
        silent = [it for it in items if it.clip_id.startswith(NON_SPEECH_ID)]
        assert len(silent) == len(mixed) - w
        assert len(silent) / len(items) == pytest.approx(0.2, abs=0.5 / len(items) + 0.05)
        assert {it.clip_id for it in silent} <= pool_names          # train part only, never the held-out part
        for it in silent:
            assert it.labels.tolist() == [50257, 50362, 50256]
            assert it.features.shape[0] == 80
        speech_items = [it for it in items if not it.clip_id.startswith(NON_SPEECH_ID)]
        assert [it.clip_id for it in speech_items] == [speech[epoch * w + i].clip_id for i in range(w)]
        batch = collate(silent[:2] + speech_items[:1])
        assert batch["labels"][0].tolist()[:2] == [50362, 50256]    # <|startoftranscript|> is the decoder start
        assert (batch["labels"][0][2:] == -100).all()
    assert mixed.clip_ids == speech.clip_ids                       # the speech dataset's other attributes show


def test_share_zero_or_no_pool_leaves_the_dataset(pooled, tiny_model, tmp_path):
    tok = load_processor(str(tiny_model)).tokenizer
    speech = training_dataset(open_cache(pooled), tok, seed=1, pack=False, timestamp_prob=0.0, planned_epochs=1)
    same, note = with_non_speech(speech, read_pool(pooled / "cache"), share=0.0, labels=empty_labels(tok), seed=1)
    assert same is speech and "none" in note
    same, note = with_non_speech(speech, None, share=0.05, labels=None, seed=1)
    assert same is speech and "no non-speech pool" in note and "whisper-tune features" in note


def test_held_out_set_is_the_held_out_part(pooled, tiny_model):
    tok = load_processor(str(tiny_model)).tokenizer
    pool = read_pool(pooled / "cache")
    held = NonSpeechEval(pool, empty_labels(tok))
    assert [held[i].clip_id for i in range(len(held))] == [NON_SPEECH_ID + c.name for c in pool.part(HELDOUT)]
    assert all(np.array_equal(held[i].labels, empty_labels(tok)) for i in range(len(held)))


def test_packed_run_counting_clips_gets_its_share_of_clips(pooled, tiny_model):
    """Packed with the batch counted in clips (training.batch_unit = "clips", the default), the share counts clips,
    as the batch does: 10 train clips and a share of 1/3 give 5 non-speech windows per epoch (a third of the 15
    clips shown), not a third of the few packed windows, and spreading the epoch over the unpacked steps keeps
    them. The steps count the non-speech clips too, as an unpacked run of the same clips and share would."""
    from dataclasses import replace

    from whisper_tune.pipeline.core.config import TrainingConfig
    from whisper_tune.train.nonspeech import share_unit
    from whisper_tune.train.trainer import _batch_in_windows

    tok = load_processor(str(tiny_model)).tokenizer
    cache, pool = open_cache(pooled), read_pool(pooled / "cache")
    t = replace(TrainingConfig(), pack=True, batch_unit="clips", batch_size=4, grad_accum=1)
    assert share_unit(t.pack, t.batch_unit) == "clips" and share_unit(False, "clips") == "windows"
    assert share_unit(True, "windows") == "windows"
    speech = training_dataset(cache, tok, seed=1, pack=True, timestamp_prob=0.0, planned_epochs=2)
    packed_windows = len(speech)
    assert len(speech.clip_ids) == 10 and packed_windows < 10       # several clips per window
    mixed, note = with_non_speech(speech, pool, share=1 / 3, labels=empty_labels(tok), seed=1,
                                  unit=share_unit(t.pack, t.batch_unit))
    assert mixed.n_non_speech == 5 and "of the clips" in note       # counted in windows: round(W / 2), 1 or 2
    assert len(mixed) == packed_windows + 5 and mixed.clips_per_epoch == 15
    _, count = _batch_in_windows(t, mixed)
    assert count is not None and count.clips == 15 and count.steps_per_epoch == 4     # ceil(15 / 4), as unpacked
    mixed.spread_to(count.windows_per_epoch)
    assert len(mixed) == max(count.windows_per_epoch, packed_windows + 5) and mixed.n_non_speech == 5
    for epoch in (0, 1):
        items = [mixed[epoch * len(mixed) + i] for i in range(len(mixed))]
        silent = [it for it in items if it.clip_id.startswith(NON_SPEECH_ID)]
        assert len(silent) == 5
        assert all(it.labels.tolist() == [50257, 50362, 50256] for it in silent)
    windows = mixed.windows(0)                                       # the speech windows, spread: every clip once
    assert sorted(p.clip_id for w in windows for p in w) == sorted(mixed.clip_ids)
    assert len(silent) / (len(silent) + len(mixed.clip_ids)) == pytest.approx(1 / 3)


def test_share_counted_in_windows_when_the_batch_counts_windows(pooled, tiny_model):
    """Packed with batch_unit = "windows" the share stays a share of the windows, spread or not."""
    tok = load_processor(str(tiny_model)).tokenizer
    speech = training_dataset(open_cache(pooled), tok, seed=1, pack=True, timestamp_prob=0.0, planned_epochs=2)
    mixed, _ = with_non_speech(speech, read_pool(pooled / "cache"), share=1 / 3, labels=empty_labels(tok), seed=1,
                               unit="windows")
    assert mixed.n_non_speech == extra_windows(len(speech), 1 / 3)
    mixed.spread_to(8)
    assert mixed.n_speech == 8 and mixed.n_non_speech == 4
