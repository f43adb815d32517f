"""Benchmark: the cache index at scale, on a synthetic index of N clips (no audio work), against the targets of a
cluster's worth of data (1,000,000 clips, about 2,000 hours).

    .venv/bin/python bench/index_bench.py [--clips 1000000] [--variants 4]

Builds a real cache of a few generated clips with `run_features`, then an index of N clips cloned from them: every
clone is a real clip's record under a new id (same audio file, same shard rows, same transcript), and a manifest
of the same N rows, so the stage's own code runs on it unchanged. Then measures, each in one run:

  no-change run   run_features on the N-clip manifest: nothing to compute          target < 60 s
  open_cache      a fresh process opening the cache (what train and evaluate do)   target < 10 s
  index memory    that process's RSS growth from open_cache                        target < 300 MB
  one task's rows the writer saving its index after one task (32 clips)            target < 50 ms

and prints each with its target, then the JSON index used before segments on the same clips (one save, one load)
as the baseline. Needs no network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGETS = {"no-change run": 60.0, "open_cache": 10.0, "index memory": 300.0, "one task's rows": 0.050}
OPEN_CACHE = """
import gc, json, sys, time, psutil
from whisper_tune.pipeline.cache import open_cache
import pyarrow.compute                       # the library's own memory is not the index's
gc.collect(); proc = psutil.Process(); before = proc.memory_info().rss; uss = proc.memory_full_info().uss
start = time.perf_counter()
cache = open_cache(sys.argv[1]); ids = cache.clip_ids("train")
seconds = time.perf_counter() - start; gc.collect()
print(json.dumps({"seconds": seconds, "mb": (proc.memory_info().rss - before) / 2**20, "clips": len(cache),
                  "uss_mb": (proc.memory_full_info().uss - uss) / 2**20}))
"""


def seed_cache(root: Path, n_seed: int, variants: int):
    """A real cache of n_seed generated clips (all train); -> (work folder, config, manifest rows)."""
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.pipeline.featurize.stage import run_features
    from whisper_tune.pipeline.validate.manifest import read_manifest
    from whisper_tune.testing import REPO_ROOT, load_script

    fb = load_script(REPO_ROOT / "bench" / "features_bench.py")
    fb.make_data(root, n_seed, 1.0)
    model = fb.make_model(root / "model", 80)
    cfg = load_config(None, {"model.name": str(model), "augment.variants": variants, "features.jobs": 1})
    run_features(work_dir=root / "work", cfg=cfg, echo=None)
    return root / "work", cfg, read_manifest(root / "work")


def clone(work: Path, manifest, n_clips: int):
    """Grow the cache's index and the manifest to n_clips clones of the seed clips (one index segment, as a
    whole run leaves it). -> the N-clip index (Python objects, for the JSON baseline)."""
    import polars as pl

    from whisper_tune.pipeline.cache import CACHE_DIRNAME, CacheIndex, load_merged_index
    from whisper_tune.pipeline.cache.segments import IndexDelta, remove_files, segment_files, write_segment
    from whisper_tune.pipeline.validate.manifest import write_manifest

    cache = work / CACHE_DIRNAME
    index = load_merged_index(cache)
    seeds = sorted(index.clips)
    ids = [f"c{i:07d}" for i in range(n_clips)]
    clips = {cid: index.clips[seeds[i % len(seeds)]] for i, cid in enumerate(ids)}
    meta = replace(index.meta, usable={"train": n_clips})
    big = CacheIndex(meta=meta, shards=index.shards, clips=clips)
    old = segment_files(cache)
    write_segment(cache, "all", IndexDelta.whole(big))
    remove_files(old)
    rows = manifest.sort("id")
    order = [i % len(seeds) for i in range(n_clips)]          # clone i is seed clip i % len(seeds), as above
    big_rows = rows[order].with_columns(pl.Series("id", ids), pl.Series("csv_row", list(range(1, n_clips + 1))))
    columns = [*rows.columns, *(c for c in ("text_in_train", "audio_in_train") if c not in rows.columns)]
    big_rows = big_rows.with_columns(*(pl.lit(False).alias(c) for c in columns if c not in rows.columns))
    write_manifest(big_rows.select(columns), work)       # with validate's leakage flags, as validate writes it
    return big


def one_task_save(work: Path) -> float:
    """Seconds for the writer to record one task's rows (32 clips) in the N-clip index and save it."""
    from whisper_tune.pipeline.cache import CACHE_DIRNAME, CacheWriter

    writer = CacheWriter(work / CACHE_DIRNAME)
    with writer.locked():
        previous, _ = writer.read_previous()
        writer.start(previous.meta, previous.shards, previous.clips, previous.skipped)   # nothing to append
        for cid in sorted(previous.clips)[:32]:  # what a finished task changes: its clips' records
            writer.clips[cid] = replace(writer.clips[cid], text=writer.clips[cid].text + " again")
        start = time.perf_counter()
        writer.save(force=True)
        return time.perf_counter() - start


def json_baseline(index, folder: Path) -> dict[str, float]:
    """The JSON index this cache used before segments, on the same clips: one save (the whole file, as every
    save rewrote it) and one load, in seconds."""
    from whisper_tune.pipeline.cache import load_index, save_index

    path = folder / "index.json"
    start = time.perf_counter()
    save_index(path, index)
    saved = time.perf_counter() - start
    start = time.perf_counter()
    load_index(path)
    return {"save": saved, "load": time.perf_counter() - start, "mb": path.stat().st_size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--seed-clips", type=int, default=8)
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also save and load the JSON index of before segments on the same clips")
    args = ap.parse_args()

    from whisper_tune.pipeline.featurize.stage import run_features

    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp:
        work, cfg, manifest = seed_cache(Path(tmp), args.seed_clips, args.variants)
        start = time.perf_counter()
        big = clone(work, manifest, args.clips)
        built = time.perf_counter() - start
        index_mb = sum(p.stat().st_size for p in (work / "cache").glob("index*")) / 2**20
        start = time.perf_counter()
        res = run_features(work_dir=work, cfg=cfg, echo=None)
        rerun = time.perf_counter() - start
        if res.clips_decoded or res.clips_total != args.clips:
            raise SystemExit(f"the no-change run decoded {res.clips_decoded} of {res.clips_total} clips")
        out = subprocess.run([sys.executable, "-c", OPEN_CACHE, str(work)], capture_output=True, text=True,
                             check=True)
        import json

        opened = json.loads(out.stdout.strip().splitlines()[-1])
        save = one_task_save(work)
        baseline = json_baseline(big, Path(tmp)) if args.baseline else None
    measured = {"no-change run": rerun, "open_cache": opened["seconds"], "index memory": opened["mb"],
                "one task's rows": save}
    units = {"index memory": "MB"}
    print(f"(index memory: the process's resident growth from open_cache and clip_ids; {opened['uss_mb']:.0f} MB of "
          f"it private, the rest pages of the memory-mapped segment that DataLoader workers share)")
    print(f"{args.clips:,} clips x {args.variants} variants (index {index_mb:.0f} MB on disk, built in {built:.1f} s)")
    for name, value in measured.items():
        unit = units.get(name, "s")
        ok = "meets" if value < TARGETS[name] else "MISSES"
        print(f"{name:16s}: {value:10.3f} {unit:2s}  target < {TARGETS[name]:g} {unit}: {ok}")
    if baseline:
        print(f"the JSON index before segments, same clips ({baseline['mb']:.0f} MB): every save rewrote it in "
              f"{baseline['save']:.1f} s ({baseline['save'] / save:.0f}x one segment append); loading it took "
              f"{baseline['load']:.1f} s ({baseline['load'] / opened['seconds']:.1f}x open_cache)")


if __name__ == "__main__":
    main()
