"""Small real feature caches for the train-stage tests, written with pipeline.cache.write_examples.

Features are synthetic log-mel-like arrays (a distinct pattern per clip, a little noise per variant, a per-clip
floor), labels come from the tiny model's real tokenizer, so the cache is exactly what `whisper-tune features`
hands to training, without decoding any audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cache import CachedExample, FeatureCache, write_examples
from pipeline.labels import make_labels, tokenizer_fingerprint
from pipeline.models import load_processor

TEXTS = [
    "the cat sat on the mat", "a quick brown fox", "hello world how are you", "my name is john",
    "the patient showed signs of fever", "one two three four", "good morning everyone", "please call me back",
    "it is raining today", "open the window", "the meeting starts at noon", "thank you very much",
]


def synthetic_examples(tokenizer, *, n_train: int, n_test: int, variants: int, n_mels: int = 80,
                       seed: int = 0, frames: tuple[int, int] = (150, 600),
                       n_validation: int = 0) -> list[CachedExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_train + n_validation + n_test):
        clip_id = f"clip{i:04d}.wav"
        split = "train" if i < n_train else "validation" if i < n_train + n_validation else "test"
        text = TEXTS[i % len(TEXTS)]
        labels = make_labels(text, tokenizer, "basic")
        t = int(rng.integers(*frames))
        base = (np.sin(np.arange(t)[None, :] * (0.01 + 0.003 * i) + np.arange(n_mels)[:, None] * 0.1) * 0.5
                + 0.2 * rng.standard_normal((n_mels, t)))
        floor = float(-0.6 - 0.01 * i)
        for v in range(variants):
            feats = base + (0.05 * v) * rng.standard_normal((n_mels, t))
            out.append(CachedExample(clip_id=clip_id, variant=v, split=split,
                                     features=np.maximum(feats, floor).astype(np.float16), floor=floor,
                                     labels=labels.ids, text=labels.text))
    return out


def build_cache(work: Path, model_dir: Path, *, n_train: int = 8, n_test: int = 2, variants: int = 3,
                n_mels: int = 80, seed: int = 0, **kwargs) -> FeatureCache:
    """WORK/cache for model_dir's tokenizer (fingerprint included, so training accepts it)."""
    tokenizer = load_processor(str(model_dir)).tokenizer
    examples = synthetic_examples(tokenizer, n_train=n_train, n_test=n_test, variants=variants, n_mels=n_mels,
                                  seed=seed, **kwargs)
    return write_examples(Path(work) / "cache", examples, model=str(model_dir),
                          tokenizer_fingerprint=tokenizer_fingerprint(tokenizer, "basic"))
