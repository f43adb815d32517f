"""The augmentation chain: config names -> audiomentations transforms, per-(clip, variant) seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from whisper_tune.pipeline.featurize.augment import Augmenter, variant_seed
from whisper_tune.pipeline.core.config import AugmentConfig
from whisper_tune.pipeline.core.errors import ConfigError


def _clip() -> np.ndarray:
    return (0.3 * np.sin(np.linspace(0, 400, 16_000))).astype(np.float32)


def test_same_clip_and_variant_give_identical_audio():
    aug = Augmenter([{"name": "AddGaussianNoise", "p": 1.0, "min_amplitude": 0.001, "max_amplitude": 0.01}], 7)
    x = _clip()
    a, b = aug(x, "clip-a", 1), Augmenter(aug.specs, 7)(x, "clip-a", 1)
    assert a.fired and np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, aug(x, "clip-a", 2).samples)
    assert not np.array_equal(a.samples, aug(x, "clip-b", 1).samples)
    assert not np.array_equal(a.samples, Augmenter(aug.specs, 8)(x, "clip-a", 1).samples)


def test_global_random_state_is_left_alone():
    aug = Augmenter(AugmentConfig().transforms, 1)
    random.seed(5)
    np.random.seed(5)
    expect = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    aug(_clip(), "x", 1)
    assert (random.random(), np.random.random()) == expect


def test_variant_where_nothing_fired_is_reported_and_unchanged():
    aug = Augmenter([{"name": "Gain", "p": 0.0}], 1)
    x = _clip()
    out = aug(x, "x", 3)
    assert not out.fired and out.samples is x
    fired = [Augmenter(AugmentConfig().transforms, 42)(x, f"c{i}", 1).fired for i in range(40)]
    assert any(fired) and not all(fired)   # p=0.2 each: some variants equal the clean clip


def test_unknown_transform_names_the_key():
    with pytest.raises(ConfigError, match=r"augment\.transforms\[1\]\.name = 'AddNoize'"):
        Augmenter([{"name": "Gain", "p": 0.5}, {"name": "AddNoize", "p": 0.5}], 1)
    with pytest.raises(ConfigError, match=r"augment\.transforms\[0\].*Gain"):
        Augmenter([{"name": "Gain", "p": 0.5, "loudness": 3}], 1)


def test_fingerprint_follows_chain_and_seed():
    base = Augmenter(AugmentConfig().transforms, 42).fingerprint
    assert base == Augmenter(AugmentConfig().transforms, 42).fingerprint
    assert base != Augmenter(AugmentConfig().transforms, 43).fingerprint
    assert base != Augmenter([{"name": "Gain", "p": 0.3}], 42).fingerprint


def test_variant_seed_is_stable():
    assert variant_seed(42, "abc", 1) == variant_seed(42, "abc", 1)
    assert len({variant_seed(42, "abc", v) for v in range(10)}) == 10
    assert 0 <= variant_seed(42, "abc", 1) < 2**32


def test_other_threads_drawing_from_random_do_not_change_the_variants():
    """A Dask worker's event loop draws from `random` while a task augments: the variants must not change."""
    import threading

    chain = ({"name": "AddGaussianNoise", "p": 0.5, "min_amplitude": 0.001, "max_amplitude": 0.01},
             {"name": "Gain", "p": 0.5})
    augment = Augmenter(chain, 0)
    x = np.sin(np.arange(16_000) / 10).astype(np.float32)
    alone = [augment(x, f"c{i}", 1) for i in range(40)]
    stop = threading.Event()
    busy = threading.Thread(target=lambda: [random.random() for _ in iter(stop.is_set, True)])
    busy.start()
    try:
        crowded = [augment(x, f"c{i}", 1) for i in range(40)]
    finally:
        stop.set()
        busy.join()
    assert [a.fired for a in alone] == [c.fired for c in crowded]
    assert all(np.array_equal(a.samples, c.samples) for a, c in zip(alone, crowded))
