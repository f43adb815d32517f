"""Benchmark: the same feature cache built locally with --jobs 1, with --jobs 2, and on a Dask LocalCluster of
2 single-threaded worker processes on 127.0.0.1, in one run on the same clips and cores.

    .venv/bin/python bench/cluster_bench.py [--clips 64] [--seconds 4] [--variants 4] [--batch-clips 4] [--repeat 2]

Each arm runs `run_features` from an empty cache (everything included: model settings, hashing, tasks, shards,
index); the arms alternate --repeat times and the best time of each counts (other load on the machine hits all
of them). The cluster is started once, before the first arm, and its start-up is reported apart; its workers
import torch and the audio libraries on their first task, as a real cluster's do. Prints per clip-variant wall
time of each arm, the ratios against --jobs 1, the client's own CPU time per clip (what stays on the machine that
runs `features` when the work goes to a cluster: all of it, and the part spent while the tasks ran, which grows
with the clips) and whether the three caches are equal. Needs `dask[distributed]`
(the cluster extra) and no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_arm(data: Path, root: Path, model: Path, variants: int, batch_clips: int, jobs: int,
            scheduler: str = "") -> tuple[float, float, object]:
    """A fresh cache from data's manifest. -> (wall seconds, client CPU seconds, FeaturesResult)"""
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.pipeline.featurize.stage import run_features

    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(data / "work" / "manifest.parquet", work / "manifest.parquet")
    cfg = load_config(None, {"model.name": str(model), "augment.variants": variants, "features.jobs": jobs,
                             "features.batch_clips": batch_clips, "features.scheduler": scheduler})
    start = time.perf_counter()
    result = run_features(work_dir=work, cfg=cfg, echo=None)
    return time.perf_counter() - start, result.client_cpu_s, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--batch-clips", type=int, default=4, help="clips per task (features.batch_clips)")
    ap.add_argument("--repeat", type=int, default=2, help="alternate the arms this many times; best of each")
    args = ap.parse_args()

    from distributed import LocalCluster

    from whisper_tune.testing import REPO_ROOT, load_script, snapshot

    fb = load_script(REPO_ROOT / "bench" / "features_bench.py")   # the same generated speech-like clips
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        root = Path(tmp)
        fb.make_data(root / "data", args.clips, args.seconds)
        model = fb.make_model(root / "model", 80)
        items = args.clips * args.variants
        started = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=40) as cluster:
            startup = time.perf_counter() - started
            arms = {"--jobs 1": (1, ""), "--jobs 2": (2, ""), "LocalCluster 2x1": (1, cluster.scheduler_address)}
            best: dict[str, tuple[float, float, object]] = {}
            for _ in range(args.repeat):
                for name, (jobs, scheduler) in arms.items():
                    run = run_arm(root / "data", root / name.replace(" ", "_"), model, args.variants,
                                  args.batch_clips, jobs, scheduler)
                    if name not in best or run[0] < best[name][0]:
                        best[name] = run
            caches = [snapshot(root / name.replace(" ", "_") / "work") for name in arms]
        base = best["--jobs 1"][0]
        print(f"{args.clips} clips of ~{args.seconds:g} s, {args.variants} variants ({items} clip-variants), "
              f"{args.batch_clips} clips per task, {os.cpu_count()} cores, best of {args.repeat}; "
              f"LocalCluster start-up {startup:.1f} s (not counted)")
        for name, (wall, client_cpu, result) in best.items():
            print(f"{name:17s}: {1000 * wall / items:7.1f} ms per clip-variant ({wall:.2f} s wall, "
                  f"{base / wall:.2f}x of --jobs 1); client CPU per clip {1000 * client_cpu / args.clips:.1f} ms, "
                  f"{1000 * result.work_cpu_s / args.clips:.1f} ms of it while the tasks ran")
        print(f"same cache (every clip, variant, feature byte and label): {all(c == caches[0] for c in caches)}")


if __name__ == "__main__":
    main()
