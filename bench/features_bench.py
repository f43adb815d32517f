"""Benchmark: the public guide's per-clip feature path against `whisper-tune features`, same clips, same machine.

    .venv/bin/python bench/features_bench.py [--clips 100] [--seconds 5] [--variants 4] [--jobs 0]

Generates speech-like clips (harmonic "syllables" with pitch glides and pauses, a little noise, silence around
them), writes a manifest, then measures in one run:
  guide    per clip-variant: librosa.load(sr=16000), librosa.effects.trim(top_db=30), peak normalization,
           audiomentations Compose([AddGaussianNoise, Gain]), WhisperFeatureExtractor(...), tokenizer(text):
           one process, as the guide's `.map` runs it.
  ours     run_features() from a fresh work folder with V variants and --jobs worker processes: everything
           included (model load, hashing, worker start-up, shards, index).
The two paths alternate --repeat times and the best time of each counts (other load on the machine hits both).
and prints clip-variants per second for both, their ratio, the cache's bytes per clip-variant against 30 s of
float32, and the time of a no-change re-run as a share of the full run. Needs no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

SR = 16_000
WORDS = ("the quick brown fox jumps over a lazy dog while seven patients wait for their morning results "
         "and the meeting starts at noon please call me back tomorrow").split()


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced syllables (harmonics of a gliding pitch, each with an envelope) separated by short pauses."""
    out = []
    total = 0
    while total < seconds * SR:
        syl = int(rng.uniform(0.12, 0.3) * SR)
        t = np.arange(syl) / SR
        f0 = rng.uniform(100, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        voiced = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 8))
        env = np.sin(np.pi * np.arange(syl) / syl) ** 2
        out.append(voiced * env * rng.uniform(0.3, 1.0))
        gap = int(rng.uniform(0.02, 0.12) * SR)
        out.append(np.zeros(gap))
        total += syl + gap
    x = np.concatenate(out)[: int(seconds * SR)]
    x = x + 0.003 * rng.standard_normal(x.size)
    pad = np.zeros(int(0.3 * SR))
    return (0.5 * np.concatenate([pad, x / np.abs(x).max(), pad])).astype(np.float32)


def make_data(root: Path, n_clips: int, seconds: float) -> tuple[list[Path], list[str]]:
    import polars as pl
    import soundfile as sf

    from whisper_tune.pipeline.validate.manifest import write_manifest

    rng = np.random.default_rng(0)
    paths, texts, rows = [], [], []
    for i in range(n_clips):
        p = root / "audio" / f"clip{i:04d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, speech_like(seconds * rng.uniform(0.8, 1.2), rng), SR, subtype="PCM_16")
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 14)))).capitalize() + "."
        paths.append(p)
        texts.append(text)
        # all train: held-out clips get only their clean variant, and the guide path featurizes every clip V times
        rows.append(dict(id=f"clip{i:04d}", path=str(p), source=p.name, text=text, duration=seconds,
                         sample_rate=SR, channels=1, split="train", status="ok", reason="", csv_row=i + 1))
    write_manifest(pl.DataFrame(rows), root / "work")
    return paths, texts


def make_model(folder: Path, n_mels: int) -> Path:
    """A processor-only model folder (config + feature extractor + tiny.en's tokenizer): no weights needed."""
    from whisper_tune.testing import make_tiny_whisper

    return make_tiny_whisper(folder, n_mels=n_mels, weights=False)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def guide_path(paths: list[Path], texts: list[str], model: Path, variants: int) -> tuple[float, float]:
    """The guide's per-clip work, once per clip-variant. Returns (wall seconds, CPU seconds)."""
    import librosa
    from audiomentations import AddGaussianNoise, Compose, Gain

    from whisper_tune.pipeline.models import load_processor

    processor = load_processor(str(model))
    augment = Compose([AddGaussianNoise(min_amplitude=0.0005, max_amplitude=0.003, p=0.2),
                       Gain(min_gain_db=-2, max_gain_db=2, p=0.2)])
    # warm-up outside the timing (imports, first-call compilation), as a long `.map` amortizes them
    y, _ = librosa.load(paths[0], sr=SR)
    librosa.effects.trim(y, top_db=30)
    start, cpu = time.perf_counter(), _cpu()
    for path, text in zip(paths, texts):
        for _ in range(variants):
            y, _ = librosa.load(path, sr=SR)
            y, _ = librosa.effects.trim(y, top_db=30)
            y = y / np.max(np.abs(y))
            y = augment(samples=y, sample_rate=SR)
            feats = processor.feature_extractor(y, sampling_rate=SR).input_features[0]
            labels = processor.tokenizer(text.lower()).input_ids
            if feats.shape[1] != 3000 or not labels:
                raise SystemExit("unexpected guide output")
    return time.perf_counter() - start, _cpu() - cpu


def ours(work: Path, model: Path, variants: int, jobs: int) -> tuple[float, float, float, int, int, int]:
    """A full run from an empty cache, then a no-change re-run.
    Returns (wall, CPU incl. workers, re-run wall, cache bytes, clip-variants readable, variants stored as aliases)."""
    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.pipeline.featurize.stage import run_features

    cfg = load_config(None, {"model.name": str(model), "augment.variants": variants, "features.jobs": jobs})
    shutil.rmtree(work / "cache", ignore_errors=True)
    start, cpu = time.perf_counter(), _cpu()
    result = run_features(work_dir=work, cfg=cfg, echo=None)
    full, full_cpu = time.perf_counter() - start, _cpu() - cpu
    start = time.perf_counter()
    again = run_features(work_dir=work, cfg=cfg, echo=None)
    rerun = time.perf_counter() - start
    if again.clips_decoded != 0:
        raise SystemExit(f"no-change re-run decoded {again.clips_decoded} clips")
    cache = open_cache(work)
    n_items = sum(len(cache.variants(c)) for c in cache.clip_ids())
    size = sum(p.stat().st_size for p in (work / "cache").iterdir() if p.is_file())
    return full, full_cpu, rerun, size, n_items, result.variants_aliased


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=0, help="worker processes for whisper-tune (0 = all cores)")
    ap.add_argument("--n-mels", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=2, help="alternate the two paths this many times; best of each")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="features-bench-") as tmp:
        root = Path(tmp)
        paths, texts = make_data(root, args.clips, args.seconds)
        model = make_model(root / "model", args.n_mels)
        items = args.clips * args.variants
        print(f"{args.clips} clips of ~{args.seconds:g} s, {args.variants} variants, {args.n_mels} mel bins, "
              f"{cores} cores, whisper-tune --jobs {args.jobs or cores}, best of {args.repeat}")
        runs, guides = [], []
        for _ in range(args.repeat):
            runs.append(ours(root / "work", model, args.variants, args.jobs))
            guides.append(guide_path(paths, texts, model, args.variants))
        t_ours, cpu_ours, _, size, n_items, aliased = min(runs)
        t_rerun = min(r[2] for r in runs)
        t_guide, cpu_guide = min(guides)
        guide_rate, ours_rate = items / t_guide, items / t_ours
        dense = args.n_mels * 3000 * 4
        per_item = size / items
        stored = items - aliased
        print(f"guide path      : {guide_rate:8.1f} clip-variants/s  ({t_guide:.2f} s wall, "
              f"{1000 * cpu_guide / items:.1f} ms CPU per clip-variant)")
        print(f"whisper-tune    : {ours_rate:8.1f} clip-variants/s  ({t_ours:.2f} s wall, all included; "
              f"{1000 * cpu_ours / items:.1f} ms CPU per clip-variant; {aliased} of {items} variants unchanged by "
              f"augmentation, stored once)")
        print(f"speed-up        : {ours_rate / guide_rate:8.1f}x wall on the same {cores} cores, "
              f"{(cpu_guide / items) / (cpu_ours / items):.1f}x in CPU time")
        print(f"cache bytes     : {per_item / 1000:8.1f} kB per clip-variant vs {dense / 1000:.0f} kB of 30 s float32 "
              f"(1/{dense / per_item:.1f}; {size / stored / 1000:.1f} kB per stored variant, 1/{dense * stored / size:.1f}; "
              f"{n_items} clip-variants readable)")
        print(f"no-change re-run: {t_rerun:8.2f} s = {100 * t_rerun / t_ours:.1f} % of the full run")


if __name__ == "__main__":
    main()
