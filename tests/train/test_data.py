import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from whisper_tune.pipeline.models import load_processor
from whisper_tune.pipeline.core.tokens import SOT
from whisper_tune.train.data import (FLOOR_KEY, FRAMES_KEY, LABEL_PAD, Collator, EpochSampler, EvalDataset, TrainDataset,
                        _expand_torch, dense_features, scheduled_variant)
from whisper_tune.testing import build_cache


@pytest.fixture(scope="module")
def cache(tiny_model, tmp_path_factory):
    return build_cache(tmp_path_factory.mktemp("work"), tiny_model, n_train=6, n_test=3, variants=4)


@pytest.fixture(scope="module")
def sot_id(tiny_model):
    return load_processor(str(tiny_model)).tokenizer.convert_tokens_to_ids(SOT)


def test_schedule_is_deterministic_and_covers_every_variant():
    variants = [0, 1, 2, 3]
    for clip in ("a.wav", "b.wav", "c.wav"):
        first = [scheduled_variant(42, e, clip, variants) for e in range(8)]
        assert first == [scheduled_variant(42, e, clip, variants) for e in range(8)]
        # every block of V epochs shows each variant exactly once
        assert sorted(first[:4]) == variants and sorted(first[4:]) == variants
    # the order depends on the clip and on the seed
    orders = {tuple(scheduled_variant(42, e, f"clip{i}", variants) for e in range(4)) for i in range(20)}
    assert len(orders) > 1
    seeds = {tuple(scheduled_variant(s, e, "x", variants) for e in range(4)) for s in range(20)}
    assert len(seeds) > 1
    assert scheduled_variant(1, 5, "only-clean", [0]) == 0


def test_epochs_see_different_variants(cache):
    ds = TrainDataset(cache, seed=7)
    n = len(ds)
    assert n == 6 and all(cid in cache.clip_ids("train") for cid in ds.clip_ids)
    per_epoch = [[ds.locate(e * n + i)[2] for i in range(n)] for e in range(4)]
    assert per_epoch[0] != per_epoch[1]
    for i in range(n):  # over 4 epochs (= variants) each clip shows each of its variants once
        assert sorted(per_epoch[e][i] for e in range(4)) == [0, 1, 2, 3]
    item = ds[1 * n + 2]
    epoch, clip_id, variant = ds.locate(1 * n + 2)
    assert (item.clip_id, item.variant) == (clip_id, variant)
    np.testing.assert_array_equal(item.features, cache.get(clip_id, variant).features)


def test_eval_uses_only_the_clean_test_clips(cache):
    ds = EvalDataset(cache)
    assert ds.clip_ids == cache.clip_ids("test") and len(ds) == 3
    assert {ds[i].variant for i in range(len(ds))} == {0}
    np.testing.assert_array_equal(ds[0].features, cache.get(ds.clip_ids[0], 0).features)
    assert len(EvalDataset(cache, max_clips=2)) == 2


def test_items_are_views_of_the_memory_mapped_cache(cache):
    item = TrainDataset(cache, seed=0)[0]
    assert item.features.dtype == np.float16
    assert not item.features.flags.owndata  # no copy into RAM


def test_sampler_shuffles_per_epoch_and_carries_the_epoch():
    s = EpochSampler(10, seed=3)
    e0 = list(s)
    assert list(EpochSampler(10, seed=3)) == e0 and sorted(e0) == list(range(10))
    s.set_epoch(2)
    e2 = list(s)
    assert sorted(e2) == list(range(20, 30)) and [i - 20 for i in e2] != e0
    assert len(s) == 10


def test_collator_pads_with_each_clips_floor(cache, sot_id):
    ds = EvalDataset(cache)
    items = [ds[i] for i in range(3)]
    assert len({it.features.shape[1] for it in items}) > 1   # different lengths
    compact = Collator(sot_id=sot_id)(items)
    longest = max(it.features.shape[1] for it in items)
    assert compact["input_features"].dtype == torch.float16
    assert tuple(compact["input_features"].shape) == (3, 80, longest)   # the loader ships only stored frames
    feats = dense_features(compact)["input_features"]
    assert feats.dtype == torch.float32 and tuple(feats.shape) == (3, 80, 3000)
    for i, it in enumerate(items):
        t = it.features.shape[1]
        assert torch.all(feats[i, :, t:] == np.float32(it.floor))
        np.testing.assert_array_equal(feats[i].numpy(), cache.get(it.clip_id, 0).padded())
    assert len({it.floor for it in items}) == 3  # floors differ, so a shared pad value would fail
    dense = dense_features(compact)
    assert dense_features(dense) is dense and set(dense) == {"input_features", "labels"}
    # the accelerator path (torch ops) gives the same tensor as the CPU path (numpy copies)
    on_device = _expand_torch(compact["input_features"], compact[FLOOR_KEY], compact[FRAMES_KEY], 3000)
    assert torch.equal(on_device, feats)


def test_collator_labels_drop_start_token_and_pad_with_minus_100(cache, sot_id):
    ds = EvalDataset(cache)
    items = [ds[i] for i in range(3)]
    labels = Collator(sot_id=sot_id)(items)["labels"]
    assert labels.dtype == torch.int64
    lengths = [len(it.labels) - 1 for it in items]
    assert labels.shape[1] == max(lengths)
    for row, it, n in zip(labels, items, lengths):
        assert int(it.labels[0]) == sot_id
        assert row[:n].tolist() == it.labels[1:].tolist()
        assert torch.all(row[n:] == LABEL_PAD)
        assert sot_id not in row.tolist()
    # labels stored without a start token stay as they are
    assert Collator(sot_id=sot_id).strip_start(np.array([5, 6], np.int32)).tolist() == [5, 6]


def test_datasets_pickle_as_the_cache_folder(cache):
    ds = TrainDataset(cache, seed=5)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the mapped shards are not copied
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back[3].features, ds[3].features)
    assert back.locate(9) == ds.locate(9)


def test_one_epoch_through_a_dataloader_sees_each_clip_once(cache, sot_id):
    ds = TrainDataset(cache, seed=1)
    sampler = EpochSampler(len(ds), seed=1)
    sampler.set_epoch(3)
    seen = Counter()
    for idx in sampler:
        seen[ds.locate(idx)[1]] += 1
    assert set(seen) == set(ds.clip_ids) and set(seen.values()) == {1}


def test_worker_batches_equal_in_process_batches(cache, sot_id):
    from torch.utils.data import DataLoader

    ds = TrainDataset(cache, seed=2)
    collate = Collator(sot_id=sot_id)

    def batches(workers):
        sampler = EpochSampler(len(ds), seed=2)
        sampler.set_epoch(1)
        return list(DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=collate, num_workers=workers))

    for a, b in zip(batches(0), batches(1)):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _seeded_epoch(ds, sot_id: int, seed: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    """The collated batches of one epoch, as the train stage's loader makes them."""
    from torch.utils.data import DataLoader

    sampler = EpochSampler(len(ds), seed=seed)
    sampler.set_epoch(epoch)
    return list(DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=Collator(sot_id=sot_id)))


def _digest(ds, batches) -> str:
    import hashlib

    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            h.update(key.encode() + batch[key].numpy().tobytes())
    for index in range(4 * len(ds)):                       # four epochs of items, ids and variants included
        item = ds[index]
        h.update(f"{item.clip_id}/{item.variant}/{item.floor!r}".encode())
        h.update(item.features.tobytes() + item.labels.tobytes())
    return h.hexdigest()


# Recorded from the per-clip TrainDataset before packing became a mode of it (same seed, same built cache):
# unpacked mode must keep yielding exactly these items and batches. Re-record only when
# whisper_tune.testing.synthetic_examples itself changes.
UNPACKED_DIGEST = "e05ff90adea002bc1271d361a5bb3f74c2cb2d78a77abfa73de10d9b941837b1"


def test_unpacked_mode_yields_what_the_per_clip_dataset_yielded(cache, sot_id):
    ds = TrainDataset(cache, seed=11)
    n = len(ds)
    for index in range(4 * n):                             # the same items as the schedule says, as views
        epoch, i = divmod(index, n)
        clip_id = cache.clip_ids("train")[i]
        variant = scheduled_variant(11, epoch, clip_id, cache.variants(clip_id))
        item, stored = ds[index], cache.get(clip_id, variant)
        assert (item.clip_id, item.variant, item.floor) == (clip_id, variant, float(stored.floor))
        np.testing.assert_array_equal(item.features, stored.features)
        np.testing.assert_array_equal(item.labels, stored.labels)
    assert _digest(ds, _seeded_epoch(ds, sot_id, seed=11, epoch=2)) == UNPACKED_DIGEST
