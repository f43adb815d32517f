"""Cache builders for the cache and features tests: a small work folder of generated clips, a config, and a
snapshot of everything a cache returns (to compare caches built different ways)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from conftest import tone, write_audio
from pipeline.cache import CachedExample, open_cache
from pipeline.config import load_config
from pipeline.featurize import run_features
from pipeline.manifest import write_manifest

TEXTS = ["Hello, World!", "the cat sat on the mat", "Good morning, everyone.", "one two three four",
         "It's raining today", "please call me back", "open the window", "thank you very much",
         "the meeting starts at noon", "a quick brown fox", "seven patients wait", "see you tomorrow"]


def manifest_row(cid: str, path: Path, text: str, split: str, i: int) -> dict:
    return dict(id=cid, path=str(path), source=path.name, text=text, duration=1.0, sample_rate=16_000,
                channels=1, split=split, status="ok", reason="", csv_row=i + 1)


def make_work(root: Path, n: int = 5, seconds: float = 0.8) -> tuple[Path, list[dict]]:
    """root/work with a manifest of n generated clips (clip00 in test, the rest in train)."""
    rows = []
    for i in range(n):
        path = write_audio(root / "audio" / f"clip{i:02d}.wav",
                           tone(seconds + 0.1 * i, freq=220 + 40 * i, pad_silence=0.2, seed=i))
        rows.append(manifest_row(f"clip{i:02d}", path, TEXTS[i % len(TEXTS)], "test" if i == 0 else "train", i))
    work = root / "work"
    write_manifest(pl.DataFrame(rows), work)
    return work, rows


def features_config(model: Path, **over):
    base = {"model.name": str(model), "features.jobs": 1, "features.batch_clips": 2, "augment.variants": 3,
            "augment.transforms": [{"name": "AddGaussianNoise", "p": 0.5, "min_amplitude": 0.001,
                                    "max_amplitude": 0.01}, {"name": "Gain", "p": 0.3}]}
    base.update(over)
    return load_config(None, base)


def run(work: Path, cfg, part=None):
    return run_features(work_dir=work, cfg=cfg, part=part, echo=False)


def snapshot(work: Path) -> dict:
    """Every (clip, variant) the cache returns, as bytes and values."""
    cache = open_cache(work)
    out = {}
    for cid in cache.clip_ids():
        for v in cache.variants(cid):
            ex = cache.get(cid, v)
            out[(cid, v)] = (ex.features.tobytes(), ex.features.shape, ex.floor, ex.labels.tobytes(), ex.text,
                             ex.split)
    return out


def shard_bytes(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "cache").glob("*.arrow"))}


def synthetic(n_clips: int = 3, variants: int = 2, n_mels: int = 80, seed: int = 0) -> list[CachedExample]:
    """In-memory examples for write_examples (clip0 in test, the rest in train)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_clips):
        t = int(rng.integers(50, 400))
        labels = np.array([50257, 50362, 100 + i, 200 + i, 50256], np.int32)
        for v in range(variants):
            feats = rng.uniform(-1, 1, (n_mels, t)).astype(np.float16)
            out.append(CachedExample(f"clip{i}", v, "test" if i == 0 else "train", feats, -0.5 - i / 10,
                                     labels, f"text {i}"))
    return out


def flip_bytes(path: Path, n: int = 16, where: float = 0.5, keep_mtime: bool = True) -> None:
    """Bit rot: invert n bytes in the middle of a file, and (like `touch -r`) restore its mtime."""
    import os

    st = path.stat()
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
