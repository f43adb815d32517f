"""Training on windows of long recordings: timestamped labels per cue, previous-text prompts that the decoder sees
but is never trained on (-100 at every prompt position), training.prompt_prob, and two training steps end to end
on a manifest of windows (validate + features from generated recordings with SRT files)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from whisper_tune.pipeline.cache import CachedExample, open_cache, write_examples
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.tokens import START_OF_PREV, SOT
from whisper_tune.pipeline.models import load_processor, token_id
from whisper_tune.train.data import LABEL_PAD, Collator, TrainDataset, training_dataset
from whisper_tune.train.packing import LabelTokens
from whisper_tune.testing import cue_recording, cue_times, features_config, run, train_config, write_srt

CUES = cue_times(16)            # 0.6 .. 54.6 s: two windows per recording


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_processor(str(tiny_model)).tokenizer


@pytest.fixture(scope="module")
def work(tiny_model, tmp_path_factory) -> Path:
    """Two recordings with SRT files (one train, one test) through validate and features."""
    from whisper_tune.pipeline.validate.stage import run_validate

    folder = tmp_path_factory.mktemp("talks")
    for name, seed in (("a", 1), ("b", 2)):
        cue_recording(folder / f"{name}.flac", CUES, 57.0, seed=seed)
        write_srt(folder / f"{name}.srt", CUES)
    (folder / "talks.csv").write_text("audios,subtitles,split\na.flac,a.srt,train\nb.flac,b.srt,test\n")
    cfg = load_config(None, {"model.name": str(tiny_model)})
    run_validate(csv_path=folder / "talks.csv", work_dir=folder / "work", cfg=cfg, use_model=False, echo=None)
    run(folder / "work", features_config(tiny_model, **{"augment.variants": 2}))
    return folder / "work"


def dataset(work: Path, tokenizer, **over) -> TrainDataset:
    settings = dict(seed=3, pack=False, timestamp_prob=0.0, planned_epochs=1, prompt_prob=0.0) | over
    return training_dataset(open_cache(work), tokenizer, **settings)


def collate(tokenizer, items):
    return Collator(sot_id=token_id(tokenizer, SOT), prev_id=token_id(tokenizer, START_OF_PREV))(items)


def test_prompted_windows_mask_every_prompt_position(work: Path, tokenizer) -> None:
    ds = dataset(work, tokenizer, prompt_prob=1.0)
    items = [ds[i] for i in range(len(ds))]
    with_prompt = [it for it in items if it.prompt is not None]
    assert with_prompt and len(with_prompt) < len(items)           # every window but the recording's first
    batch = collate(tokenizer, items)
    prev, sot = token_id(tokenizer, START_OF_PREV), token_id(tokenizer, SOT)
    for row, it in enumerate(items):
        dec, lab = batch["decoder_input_ids"][row].tolist(), batch["labels"][row].tolist()
        stored = it.labels.tolist()                                # <|startoftranscript|> ... <|endoftext|>
        k = 0 if it.prompt is None else len(it.prompt)
        head = [prev, *it.prompt.tolist()] if k else []
        assert dec[: len(head) + len(stored) - 1] == head + stored[:-1]      # the decoder sees the prompt, then SOT
        assert lab[: len(head)] == [LABEL_PAD] * len(head)                   # ... but never learns it
        assert lab[len(head): len(head) + len(stored) - 1] == stored[1:]     # the transcript is learned as before
        assert all(x == LABEL_PAD for x in lab[len(head) + len(stored) - 1:])
        assert (dec[0] == prev) == (k > 0) and dec[len(head)] == sot
        assert len(head) + len(stored) - 1 <= MAX_LABEL_TOKENS
    # the prompt: the recording's text before the window (all of it here: far under 223 tokens)
    cache = open_cache(work)
    for it in with_prompt:
        first_word = cache.get(it.clip_id, 0).text.split()[0]                 # "word7a": the window starts at cue 7
        earlier = [w for _, _, t in CUES[: int(first_word[4:-1])] for w in t.lower().rstrip(".").split()]
        assert tokenizer.decode(it.prompt).split() == earlier


def test_prompt_prob_zero_gives_no_prompts_and_the_models_own_shift(work: Path, tokenizer) -> None:
    ds = dataset(work, tokenizer, prompt_prob=0.0)
    items = [ds[i] for i in range(len(ds))]
    assert all(it.prompt is None for it in items)
    batch = collate(tokenizer, items)
    assert "decoder_input_ids" not in batch                 # the model shifts the labels itself, as for clips
    half = dataset(work, tokenizer, prompt_prob=0.5)
    draws = [half.uses_prompt(e, i) for e in range(40) for i in range(4)]
    assert 0.3 < np.mean(draws) < 0.7 and draws == [half.uses_prompt(e, i) for e in range(40) for i in range(4)]


def test_the_decoder_sees_the_prompt_and_the_loss_ignores_it(work: Path, tokenizer, tiny_model: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    from whisper_tune.train.data import dense_features

    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_model)).eval()
    ds = dataset(work, tokenizer, prompt_prob=1.0)
    it = next(ds[i] for i in range(len(ds)) if ds[i].prompt is not None)
    with_prompt = dense_features(collate(tokenizer, [it]))
    other = dense_features(collate(tokenizer, [type(it)(**{**it.__dict__, "prompt": it.prompt[::-1].copy()})]))
    with torch.no_grad():
        out = model(**with_prompt)
        out_other = model(**other)
    labels = with_prompt["labels"][0]
    keep = labels != LABEL_PAD
    manual = torch.nn.functional.cross_entropy(out.logits[0][keep], labels[keep])
    assert torch.allclose(out.loss, manual, atol=1e-5)                       # only transcript positions count
    assert not torch.allclose(out.logits[0][keep], out_other.logits[0][keep])   # they depend on the prompt


def test_timestamped_window_labels_put_each_cue_between_its_times(work: Path, tokenizer) -> None:
    ds = dataset(work, tokenizer, timestamp_prob=1.0)
    tokens = LabelTokens.from_tokenizer(tokenizer)
    cache = open_cache(work)
    for i in range(len(ds)):
        it, ex = ds[i], cache.get(ds[i].clip_id, 0)
        ids = it.labels.tolist()
        stamps = [j for j, t in enumerate(ids) if t > tokens.no_timestamps]
        assert len(stamps) == 2 * len(ex.cue_tokens) and tokens.no_timestamps not in ids
        for c, (a, b) in enumerate(zip(stamps[::2], stamps[1::2])):
            assert ids[a] == tokens.timestamp(float(ex.cue_starts[c]))
            assert ids[b] == tokens.timestamp(float(ex.cue_ends[c]))
            assert b - a - 1 == int(ex.cue_tokens[c])
        assert tokenizer.decode(it.labels, skip_special_tokens=True).split() == ex.text.split()


def test_windows_of_recordings_are_never_packed_with_clips(work: Path, tokenizer, tmp_path: Path) -> None:
    from whisper_tune.testing import synthetic_examples

    cache = open_cache(work)
    windows = [cache.get(c, v) for c in cache.clip_ids() for v in cache.variants(c)]
    clips = synthetic_examples(tokenizer, n_train=12, n_test=0, variants=2, frames=(150, 400))
    mixed = write_examples(tmp_path / "cache", windows + clips)
    ds = training_dataset(mixed, tokenizer, seed=1, pack=True, timestamp_prob=1.0, planned_epochs=1,
                          prompt_prob=1.0)
    pieces = [p.clip_id for w in ds.windows(0) for p in w]
    assert sorted(pieces) == sorted(mixed.clip_ids("train"))                   # every clip and window once
    for w in ds.windows(0):
        assert len(w) == 1 or not any(mixed.get(p.clip_id, 0).is_window for p in w)   # a window stands alone
    assert any(len(w) > 1 for w in ds.windows(0))                              # the clips are packed
    items = [ds[i] for i in range(len(ds))]
    assert {it.clip_id for it in items if it.prompt is not None} <= {c for c in mixed.clip_ids("train")
                                                                     if mixed.get(c, 0).is_window}
    assert any(it.prompt is not None for it in items)


def test_a_prompt_is_cut_to_fit_the_decoder(tmp_path: Path, tokenizer) -> None:
    sot, eot = token_id(tokenizer, SOT), token_id(tokenizer, "<|endoftext|>")
    labels = np.array([sot, 50362, *([262] * 300), eot], np.int32)
    ex = CachedExample("w", 0, "train", np.zeros((80, 100), np.float16), -0.5, labels, "x " * 300,
                       prompt=np.arange(1000, 1223, dtype=np.int32), cue_tokens=np.array([300], np.int32),
                       cue_starts=np.array([0.0], np.float32), cue_ends=np.array([1.0], np.float32))
    cache = write_examples(tmp_path / "cache", [ex])
    it = TrainDataset(cache, seed=0, prompt_prob=1.0)[0]
    assert len(it.prompt) == MAX_LABEL_TOKENS - len(labels) and it.prompt[-1] == 1222   # the latest text kept
    assert collate(tokenizer, [it])["decoder_input_ids"].shape[1] == MAX_LABEL_TOKENS


def test_prompt_prob_is_checked(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match=r"training.prompt_prob.*--prompt-prob"):
        train_config(tiny_model, prompt_prob=1.5)


@pytest.mark.slow
def test_a_manifest_of_windows_trains_end_to_end(work: Path, tiny_model: Path, tmp_path: Path) -> None:
    from whisper_tune.train.trainer import run_train

    cfg = train_config(tiny_model, max_steps=2, epochs=1, prompt_prob=1.0, timestamp_prob=0.5,
                       generation_max_length=16)
    cfg = replace(cfg, augment=replace(cfg.augment, no_speech_share=0.0))   # the windows only: counts stay exact
    result = run_train(work_dir=work, output_dir=tmp_path / "model", cfg=cfg)
    assert result.global_step == 2 and result.train_clips == len(open_cache(work).clip_ids("train"))
    assert result.eval_clips == len(open_cache(work).clip_ids("test")) > 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
