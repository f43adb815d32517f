"""Ids and seeds that users' data depends on stay bit-identical.

The values below were computed with the code before these functions moved onto whisper_tune.pipeline.core.hashing (blake2b written
out by hand in each module): a changed clip id, split, augmentation seed or training schedule would silently
re-split a dataset, re-augment every clip or change which variant each epoch reads."""

import pytest

from whisper_tune.pipeline.featurize.augment import variant_seed
from whisper_tune.pipeline.core.hashing import stable_hex, stable_int, stable_unit
from whisper_tune.pipeline.validate.manifest import clip_id, split_position
from whisper_tune.train.data import _stable_seed, scheduled_variant


@pytest.mark.parametrize("relpath, expected", [("a.wav", "7173cc6a3aa7a146"), ("clips/é 1.mp3", "6a8f8f219b28d38a")])
def test_clip_id_pinned(relpath, expected):
    assert clip_id(relpath) == expected


@pytest.mark.parametrize("relpath, seed, expected", [("a.wav", 0, "0x1.19fb43c1fe7b9p-1"),
                                                     ("clips/é 1.mp3", 1234, "0x1.7d4d026571d99p-1")])
def test_split_position_pinned(relpath, seed, expected):
    assert split_position(relpath, seed) == float.fromhex(expected)


@pytest.mark.parametrize("base, clip, variant, expected", [(0, "abc", 1, 2926632603),
                                                           (17, "0123456789abcdef", 3, 3576347843)])
def test_variant_seed_pinned(base, clip, variant, expected):
    assert variant_seed(base, clip, variant) == expected


def test_schedule_seeds_pinned():
    assert _stable_seed(0, 1, "abc") == 10417541879064858338
    assert _stable_seed(42, "x", 7) == 2437691637418626527
    assert [scheduled_variant(42, e, "x", [0, 1, 2, 3]) for e in range(8)] == [1, 2, 3, 0, 3, 2, 0, 1]
    assert [scheduled_variant(0, e, "abc", [0, 1, 2]) for e in range(6)] == [2, 1, 0, 2, 0, 1]


def test_separator_and_size_matter():
    assert stable_hex("a", "b") != stable_hex("a", "b", sep=b"\x1f") != stable_hex("ab", sep=b"")
    assert stable_hex("ab", size=8) != stable_hex("ab", size=12)[:16]
    assert stable_int("a", "b", sep=b"") == stable_int("ab")
    assert 0.0 <= stable_unit("x") < 1.0
