"""The `features` stage (pipeline/featurize/stage.py) end to end on generated clips: parity through the
cache, determinism, incremental re-runs counted item by item, bad audio, corruption repair, kill-and-resume,
parts, and the lock."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from whisper_tune.testing import REPO_ROOT, features_config as config, shard_killer
from whisper_tune.testing import flip_bytes, make_work, manifest_row as _row, run, shard_bytes, snapshot
from whisper_tune.testing import tone, write_audio
from whisper_tune.pipeline.cache import CacheError, CacheLock, open_cache
from whisper_tune.pipeline.cache.segments import segment_files, segment_prefix
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.featurize.plan import part_of
from whisper_tune.pipeline.validate.manifest import write_manifest

REPO = REPO_ROOT


def test_cache_matches_feature_extractor_and_is_deterministic(tmp_path, tiny_model):
    from transformers import WhisperFeatureExtractor

    from whisper_tune.pipeline.featurize import audio

    work, rows = make_work(tmp_path / "a")
    cfg = config(tiny_model)
    res = run(work, cfg)
    assert (res.clips_total, res.clips_decoded, res.labels_computed, res.skipped) == (5, 5, 5, ())
    assert res.variants_computed + res.variants_aliased == 4 * 3 + 1     # the test clip: clean variant only
    assert res.variants_computed >= 5 and res.variants_aliased >= 1      # some variants equal the clean clip
    cache = open_cache(work)
    assert len(cache) == 5 and cache.clip_ids("test") == ["clip00"] and cache.meta.variants == 3
    assert cache.variants("clip00") == [0] and all(cache.variants(c) == [0, 1, 2] for c in cache.clip_ids("train"))
    fe = WhisperFeatureExtractor(feature_size=80)
    for row in rows:
        clean = audio.prepare(audio.load(row["path"]), top_db=30.0, normalize=True)
        ref = fe(clean, sampling_rate=16_000).input_features[0]
        ex = cache.get(row["id"], 0)
        assert np.abs(ex.padded() - ref).max() <= 2e-3
        assert ex.features.shape[1] < 200          # ~1 s stored, not 30 s
        if row["split"] == "train":
            assert ex.text == cache.get(row["id"], 2).text
    # a second, independent run gives byte-identical shards
    work_b = tmp_path / "b" / "work"
    work_b.parent.mkdir()
    shutil.copy(work / "manifest.parquet", tmp_path / "b" / "manifest.parquet")
    write_manifest(pl.read_parquet(tmp_path / "b" / "manifest.parquet"), work_b)
    run(work_b, cfg)
    assert shard_bytes(work) == shard_bytes(work_b)


def test_incremental_reruns_do_only_what_changed(tmp_path, tiny_model):
    work, rows = make_work(tmp_path, n=4)
    cfg = config(tiny_model)
    first = run(work, cfg)
    assert first.clips_decoded == 4
    before = snapshot(work)

    same = run(work, cfg)
    assert (same.clips_decoded, same.variants_computed, same.labels_computed, same.shards_written) == (0, 0, 0, 0)
    assert same.no_audio_work and "no audio work" in same.message and snapshot(work) == before

    rows[1]["text"] = "An edited transcript"          # edited transcript: that clip's labels only
    rows[2]["split"] = "test"                          # moved out of train: index only (keeps its clean variant)
    write_manifest(pl.DataFrame(rows), work)
    edit = run(work, cfg)
    assert (edit.clips_decoded, edit.variants_computed, edit.labels_computed) == (0, 0, 1)
    cache = open_cache(work)
    assert cache.get("clip01").text == "an edited transcript" and cache.split_of("clip02") == "test"
    assert cache.transcript("clip01") == "An edited transcript"
    assert cache.get("clip01").features.tobytes() == before[("clip01", 0)][0]

    path = write_audio(tmp_path / "audio" / "new.wav", tone(0.7, freq=600, seed=9))
    rows.append(_row("new", path, "a new clip", "train", 9))   # new clip: only it
    write_manifest(pl.DataFrame(rows), work)
    new = run(work, cfg)
    assert (new.clips_decoded, new.labels_computed, new.variants_computed + new.variants_aliased) == (1, 1, 3)

    aug = config(tiny_model, **{"augment.transforms": [{"name": "Gain", "p": 0.9}]})   # augmentation only
    changed = run(work, aug)
    assert changed.clips_decoded == 3 and changed.labels_computed == 0     # the 3 train clips (2 are test)
    assert changed.variants_computed + changed.variants_aliased == 3 * 2      # variants 1..2, never variant 0
    assert changed.variants_reused == 5
    assert open_cache(work).get("clip00", 0).features.tobytes() == before[("clip00", 0)][0]

    more = run(work, config(tiny_model, **{"augment.transforms": [{"name": "Gain", "p": 0.9}],
                                           "augment.variants": 4}))           # one more variant
    assert more.variants_computed + more.variants_aliased == 3 and more.variants_reused == 3 * 3 + 2

    rows[2]["split"] = "train"                         # moved into train: only its augmented variants
    write_manifest(pl.DataFrame(rows), work)
    back = run(work, config(tiny_model, **{"augment.transforms": [{"name": "Gain", "p": 0.9}],
                                           "augment.variants": 4}))
    assert (back.clips_decoded, back.labels_computed, back.variants_computed + back.variants_aliased) == (1, 0, 3)
    assert open_cache(work).variants("clip02") == [0, 1, 2, 3]

    other = tmp_path / "other-model"                   # another model, same feature settings, other tokenizer
    shutil.copytree(tiny_model, other)
    tok_cfg = json.loads((other / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = 448
    (other / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    retok = run(work, config(other, **{"augment.transforms": [{"name": "Gain", "p": 0.9}], "augment.variants": 4}))
    assert (retok.clips_decoded, retok.variants_computed, retok.labels_computed) == (0, 0, 5)
    assert open_cache(work).meta.model == str(other)

    write_manifest(pl.DataFrame(rows[1:]), work)       # removed clip: dropped from the index
    gone = run(work, config(other, **{"augment.transforms": [{"name": "Gain", "p": 0.9}], "augment.variants": 4}))
    assert gone.clips_removed == 1 and gone.clips_decoded == 0
    assert "clip00" not in open_cache(work).clip_ids() and len(open_cache(work)) == 4


def test_bad_audio_is_skipped_with_reasons(tmp_path, tiny_model):
    work, rows = make_work(tmp_path, n=3)
    nan = tone(0.8, seed=5)
    nan[100:200] = np.nan
    bad = {
        "nan": write_audio(tmp_path / "audio" / "nan.wav", nan, subtype="FLOAT"),
        "silent": write_audio(tmp_path / "audio" / "silent.wav", np.zeros(16_000, np.float32)),
        "garbage": tmp_path / "audio" / "garbage.wav",
    }
    bad["garbage"].write_bytes(b"RIFF not really a wav file" * 20)
    rows += [_row(cid, p, "some words here", "train", 10 + i) for i, (cid, p) in enumerate(bad.items())]
    rows.append(_row("no-words", Path(rows[0]["path"]), " ?! ", "train", 20))     # nothing left after normalization
    write_manifest(pl.DataFrame(rows), work)
    res = run(work, config(tiny_model, **{"features.jobs": 2, "features.batch_clips": 1}))
    reasons = dict(res.skipped)
    assert set(reasons) == {"nan", "silent", "garbage", "no-words"}
    assert "NaN" in reasons["nan"] and "silent" in reasons["silent"] and "decode" in reasons["garbage"]
    assert "empty after normalization" in reasons["no-words"]
    assert sorted(open_cache(work).clip_ids()) == ["clip00", "clip01", "clip02"]
    again = run(work, config(tiny_model))            # known-bad clips are not decoded again
    assert again.clips_decoded == 0 and set(dict(again.skipped)) == set(reasons)


def test_corrupted_shard_is_refused_then_repaired(tmp_path, tiny_model):
    work, _ = make_work(tmp_path, n=4)
    cfg = config(tiny_model)
    run(work, cfg)
    good = snapshot(work)
    shard = sorted((work / "cache").glob("*-feat-*.arrow"))[0]
    flip_bytes(shard)                                  # 16 bytes, mtime restored
    cache = open_cache(work)
    with pytest.raises(CacheError, match=r"corrupted.*whisper-tune features --work"):
        for cid in cache.clip_ids():
            for v in cache.variants(cid):
                cache.get(cid, v)
    fixed = run(work, cfg)
    assert fixed.shards_dropped == 1 and 1 <= fixed.clips_decoded <= 2     # that shard's clips only
    assert snapshot(work) == good


def prefixes(work) -> set[str]:
    """Who wrote the cache's index segments ("all": a whole run, "p1of2": part 1/2, ...)."""
    return {segment_prefix(p.name) for p in segment_files(work / "cache")}


def test_orphan_shards_are_adopted_and_tmp_files_ignored(tmp_path, tiny_model):
    """A run killed after writing shards but before its index caught up: the next run adopts them."""
    work, _ = make_work(tmp_path, n=4)
    cfg = config(tiny_model)
    run(work, cfg)
    good = snapshot(work)
    for seg in segment_files(work / "cache"):
        seg.unlink()
    (work / "cache" / "all-feat-0123.arrow.4242.tmp").write_bytes(b"half a shard")
    again = run(work, cfg)
    assert again.clips_decoded == 0 and again.labels_computed == 0 and again.shards_adopted >= 2
    assert not list((work / "cache").glob("*.tmp"))
    assert snapshot(work) == good


def test_kill_and_resume(tmp_path, tiny_model):
    """The run is killed (SIGKILL, by a test hook injected with sitecustomize) right after its first shard is in place; the next
    run adopts what was finished and the result equals an uninterrupted run's."""
    work, rows = make_work(tmp_path / "killed", n=6, seconds=1.0)
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text('[features]\nbatch_clips = 1\njobs = 1\n[augment]\nvariants = 3\n')
    cmd = [sys.executable, "-m", "whisper_tune.cli", "features", "--work", str(work), "--model", str(tiny_model),
           "--config", str(cfg_file)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(shard_killer(tmp_path / "killer", after=1)))
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(list((work / "cache").glob("*-feat-*.arrow"))) == 1
    cfg = load_config(cfg_file, {"model.name": str(tiny_model)})
    resumed = run(work, cfg)
    assert resumed.shards_adopted == 1 and resumed.clips_decoded == 5     # the finished clip was not redone
    assert not list((work / "cache").glob("*.tmp")) and not list((work / "cache").glob(".*.tmp"))
    reference, _ = make_work(tmp_path / "whole", n=6, seconds=1.0)
    run(reference, cfg)
    assert snapshot(work) == snapshot(reference)
    assert shard_bytes(work) == shard_bytes(reference)                    # same tasks -> byte-identical shards


def test_parts_combine_into_the_whole(tmp_path, tiny_model):
    work, rows = make_work(tmp_path / "parts", n=6)
    cfg = config(tiny_model)
    owners = {part_of(r["id"], 2) for r in rows}
    assert owners == {1, 2}
    one = run(work, cfg, part=(1, 2))
    two = run(work, cfg, part=(2, 2))
    assert one.clips_total + two.clips_total == 6 and one.clips_total > 0 and two.clips_total > 0
    assert prefixes(work) == {"p1of2", "p2of2"}
    whole, _ = make_work(tmp_path / "whole", n=6)
    run(whole, cfg)
    assert snapshot(work) == snapshot(whole)
    again = run(work, cfg, part=(1, 2))
    assert again.clips_decoded == 0
    merged = run(work, cfg)                       # a whole run over the parts reuses all and merges the index
    assert merged.clips_decoded == 0 and prefixes(work) == {"all"} and len(segment_files(work / "cache")) == 1
    assert snapshot(work) == snapshot(whole)


def test_lock_held_and_bad_config_give_clear_errors(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from whisper_tune.cli import app

    work, _ = make_work(tmp_path, n=1)
    with CacheLock(work / "cache"):
        result = CliRunner().invoke(app, ["features", "--work", str(work), "--model", str(tiny_model)])
    assert result.exit_code == 1 and f"pid {os.getpid()}" in result.output and "Traceback" not in result.output
    with pytest.raises(ConfigError, match=r"augment\.transforms\[0\]\.name = 'Nope'"):
        run(work, config(tiny_model, **{"augment.transforms": [{"name": "Nope"}]}))


def test_parts_built_with_different_settings_are_refused(tmp_path, tiny_model):
    work, _ = make_work(tmp_path, n=6)
    run(work, config(tiny_model, **{"augment.variants": 2}), part=(1, 2))
    with pytest.raises(ConfigError) as err:
        run(work, config(tiny_model, **{"augment.variants": 4}), part=(2, 2))
    assert re.fullmatch(
        r"features --part 2/2: augment\.variants \(--variants\) must agree across parts, but part 1/2 in "
        r"index\.[0-9]{20}\.p1of2\.arrow was built with another value \(4 here, 2 there\); run every part with the "
        r"same settings, or run `whisper-tune features` without --part once to rebuild the cache with these",
        str(err.value))
    other_chain = config(tiny_model, **{"augment.variants": 2, "augment.transforms": [{"name": "Gain", "p": 0.9}]})
    with pytest.raises(ConfigError, match=r"the augmentation chain \(\[augment\] transforms, seed\) must agree"):
        run(work, other_chain, part=(2, 2))
    with pytest.raises(ConfigError, match=r"the audio settings \(\[audio\] trim_top_db, peak_normalize\) must agree"):
        run(work, config(tiny_model, **{"augment.variants": 2, "audio.trim_top_db": 20.0}), part=(2, 2))
    assert prefixes(work) == {"p1of2"}
    run(work, config(tiny_model, **{"augment.variants": 2}), part=(2, 2))     # the same settings: fine
    whole = run(work, config(tiny_model, **{"augment.variants": 4}))        # a whole run may change them
    assert whole.clips_total == 6 and open_cache(work).meta.variants == 4


def test_skipped_clips_are_named_by_file_and_csv_row(tmp_path, tiny_model, capsys):
    from whisper_tune.pipeline.featurize.stage import format_report

    work, rows = make_work(tmp_path, n=2)
    silent = write_audio(tmp_path / "audio" / "silent.wav", np.zeros(16_000, np.float32))
    rows.append(_row("46774ad9d265ea49", silent, "some words", "train", 6))
    rows[-1]["source"] = "audio/silent.wav"
    write_manifest(pl.DataFrame(rows), work)
    res = run(work, config(tiny_model))
    assert res.skipped_where == ("audio/silent.wav (CSV row 7)",)
    out = format_report(res)
    assert "  audio/silent.wav (CSV row 7): silent" in out and "46774ad9d265ea49" not in out


def test_a_slurm_array_task_runs_its_part_and_says_so(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from whisper_tune.cli import app

    work, _ = make_work(tmp_path, n=3)
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    result = CliRunner().invoke(app, ["features", "--work", str(work), "--model", str(tiny_model), "--jobs", "1"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "features: Slurm array task 1 of 2 (SLURM_ARRAY_TASK_MIN 0): running part 2/2" in result.output
    assert prefixes(work) == {"p2of2"}


def test_the_audit_mark_reaches_the_cache_and_a_later_mark_needs_no_audio_work(tmp_path, tiny_model):
    work, rows = make_work(tmp_path, n=3)
    cfg = config(tiny_model, **{"augment.variants": 1})
    run(work, cfg)
    assert not any(open_cache(work).audit_ok(r["id"]) for r in rows)        # a manifest without the column
    write_manifest(pl.DataFrame([{**r, "audit_ok": r["id"] == "clip02"} for r in rows]), work)
    before = shard_bytes(work)
    run(work, cfg)
    cache = open_cache(work)
    assert [cache.audit_ok(r["id"]) for r in rows] == [False, False, True]
    assert shard_bytes(work) == before
