"""Planning a features run: parts, fingerprints, and what each clip needs given what is stored."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from whisper_tune.pipeline.cache import CacheIndex, ClipEntry, RowRef, ShardInfo
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.featurize.plan import Fingerprints, parse_part, part_of
from whisper_tune.pipeline.featurize.plan import make_plan

FEAT = "all-feat-0123456789abcdef0123.arrow"
LAB = "all-lab-0123456789abcdef0123.arrow"
SHARDS = {FEAT: ShardInfo(FEAT, "feat", "x", 1, 1, 9), LAB: ShardInfo(LAB, "lab", "y", 1, 1, 9)}
FPS = Fingerprints(audio="a", features="f", augment="g", labels="t", n_variants=3)


def test_parse_part():
    assert parse_part(None) is None and parse_part("2/8") == (2, 8)
    for bad in ("0/2", "3/2", "x", "1/0", "1-2"):
        with pytest.raises(ConfigError, match="--part"):
            parse_part(bad)


def test_parts_are_the_ones_earlier_versions_assigned():
    for cid in ("a", "clip0001", "spk/03.wav", "é"):
        old = int.from_bytes(hashlib.blake2b(cid.encode(), digest_size=8).digest(), "little") % 7 + 1
        assert part_of(cid, 7) == old


def _rows(tmp_path, texts=("one", "two"), splits=("train", "test")):
    paths = []
    for i, _ in enumerate(texts):
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(b"audio bytes %d" % i)
        paths.append(str(p))
    return pl.DataFrame({"id": [f"c{i}" for i in range(len(texts))], "path": paths, "text": list(texts),
                         "split": list(splits)})


def test_an_empty_cache_plans_everything_and_held_out_clips_get_the_clean_variant_only(tmp_path):
    plan = make_plan(_rows(tmp_path), CacheIndex(), FPS, {}, {})
    assert [(j.clip_id, [v for v, _ in j.variants]) for j in plan.jobs] == [("c0", [0, 1, 2]), ("c1", [0])]
    assert plan.labels_todo == [("c0", "one"), ("c1", "two")] and plan.reused == 0


def _stored(plan) -> CacheIndex:
    """The index a run of `plan` would leave (every item in FEAT/LAB)."""
    clips = {}
    for job in plan.jobs:
        entry = plan.clips[job.clip_id]
        variants = {v: RowRef(FEAT, v, fp) for v, fp in job.variants}
        clips[job.clip_id] = ClipEntry(entry.split, entry.text, entry.source, RowRef(LAB, 0, FPS.label(entry.text)),
                                       variants)
    return CacheIndex(shards=SHARDS, clips=clips)


def test_stored_items_are_reused_and_only_changes_are_planned(tmp_path):
    previous = _stored(make_plan(_rows(tmp_path), CacheIndex(), FPS, {}, {}))
    same = make_plan(_rows(tmp_path), previous, FPS, SHARDS, {})
    assert same.jobs == [] and same.labels_todo == [] and same.reused == 4
    edited = make_plan(_rows(tmp_path, texts=("one", "TWO")), previous, FPS, SHARDS, {})
    assert edited.jobs == [] and edited.labels_todo == [("c1", "TWO")]
    more = make_plan(_rows(tmp_path), previous, Fingerprints("a", "f", "other", "t", 3), SHARDS, {})
    assert [[v for v, _ in j.variants] for j in more.jobs] == [[1, 2]]          # a new chain: variants 1.. only
    untrusted = make_plan(_rows(tmp_path), previous, FPS, {LAB: SHARDS[LAB]}, {})   # FEAT failed its checksum
    assert len(untrusted.jobs) == 2 and untrusted.labels_todo == []


def test_orphan_rows_with_the_wanted_fingerprint_are_adopted(tmp_path):
    first = make_plan(_rows(tmp_path), CacheIndex(), FPS, {}, {})
    job = first.jobs[1]
    orphans = {("c1", 0): (RowRef(FEAT, 4, job.variants[0][1]), SHARDS[FEAT]),
               ("c0", 1): (RowRef(FEAT, 5, "some other fingerprint"), SHARDS[FEAT])}
    plan = make_plan(_rows(tmp_path), CacheIndex(), FPS, {}, orphans)
    assert plan.adopted == {FEAT: SHARDS[FEAT]} and plan.clips["c1"].variants == {0: RowRef(FEAT, 4, job.variants[0][1])}
    assert [(j.clip_id, [v for v, _ in j.variants]) for j in plan.jobs] == [("c0", [0, 1, 2])]


def test_slurm_array_variables_choose_the_part():
    from whisper_tune.pipeline.featurize.plan import run_part

    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0"}
    assert run_part(None, env) == ((4, 8), "features: Slurm array task 3 of 8 (SLURM_ARRAY_TASK_MIN 0): "
                                           "running part 4/8")
    assert run_part(None, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"})[0] == (2, 4)   # MIN 0
    assert run_part(None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                           "SLURM_ARRAY_TASK_MIN": "1"})[0] == (4, 4)
    assert run_part("1/2", env) == ((1, 2), "")               # --part wins, silently
    assert run_part(None, {}) == (None, "") and run_part(None, {"SLURM_ARRAY_TASK_ID": "3"}) == (None, "")
    with pytest.raises(ConfigError, match=r"^Slurm array task 14 \(SLURM_ARRAY_TASK_MIN 0, SLURM_ARRAY_TASK_COUNT "
                                          r"8\) is not one of 8 consecutive tasks: submit with `sbatch --array=0-7`"):
        run_part(None, {"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0"})
    with pytest.raises(ConfigError, match="expected whole numbers; or give --part i/N"):
        run_part(None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "8"})


def test_the_audit_mark_is_planned_into_the_index_and_a_change_needs_no_audio_work(tmp_path):
    marked = _rows(tmp_path).with_columns(pl.Series("audit_ok", [True, False]))
    plan = make_plan(marked, CacheIndex(), FPS, {}, {})
    assert [plan.clips[c].audit_ok for c in ("c0", "c1")] == [True, False]
    previous = _stored(make_plan(_rows(tmp_path), CacheIndex(), FPS, {}, {}))
    again = make_plan(marked, previous, FPS, SHARDS, {})
    assert again.jobs == [] and again.labels_todo == [] and again.clips["c0"].audit_ok
