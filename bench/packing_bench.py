"""Benchmark: packed 30 s training windows against one clip per window, measured in one run on this machine.

    .venv/bin/python bench/packing_bench.py [--clips 32] [--size tiny] [--batch-clips 8] [--epochs 1]

A cache of generated clips whose lengths follow the demo's (3.5-10 s, about 6.7 s on average; real tokenizer
labels), then for each arm (--no-pack with a batch of --batch-clips clips; --pack with a batch of as many
windows as hold about as many clips):
- encoder windows per epoch and the share of the encoder's frames (3000 per window) that are padding,
- the train stage (`run_train`, a randomly initialised whisper-tiny-shaped model, timestamps in 20 % of labels,
  one evaluation of 2 clips) for --epochs epochs: wall and CPU seconds (this process; DataLoader in-process).
The arms run back to back; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

WORDS = ("the patient takes apixaban tonight and restarts tacrolimus tomorrow morning with food after "
         "the pharmacy checks renal function before the next dose").split()


def demo_like_cache(work: Path, model: Path, clips: int, variants: int = 2) -> None:
    """Generated clips of 350-1000 frames (3.5-10 s), about 2.3 words per second, 4 of them in the test split."""
    from whisper_tune.pipeline.cache import CachedExample, write_examples
    from whisper_tune.pipeline.featurize.labels import make_labels, tokenizer_fingerprint
    from whisper_tune.pipeline.models import load_processor

    tok = load_processor(str(model)).tokenizer
    rng = np.random.default_rng(0)
    examples = []
    for i in range(clips + 4):
        frames = int(rng.integers(350, 1000))
        text = " ".join(rng.choice(WORDS, size=max(3, round(frames / 100 * 2.3))))
        labels = make_labels(text, tok, "basic")
        feats = (rng.standard_normal((80, frames)) * 0.3).astype(np.float16)
        for v in range(variants):
            examples.append(CachedExample(clip_id=f"c{i:04d}", variant=v, split="train" if i < clips else "test",
                                          features=feats, floor=-0.6, labels=labels.ids, text=labels.text))
    write_examples(work / "cache", examples, model=str(model), tokenizer_fingerprint=tokenizer_fingerprint(tok, "basic"))


def windows(work: Path, model: Path, pack: bool) -> tuple[int, float]:
    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.models import load_processor
    from whisper_tune.train.data import TrainDataset
    from whisper_tune.train.packing import LabelTokens, padding_share

    tok = load_processor(str(model)).tokenizer
    ds = TrainDataset(open_cache(work), seed=42, pack=pack, timestamp_prob=0.2, tokens=LabelTokens.from_tokenizer(tok))
    return len(ds), padding_share(ds.windows(0))


def train_seconds(work: Path, model: Path, out: Path, pack: bool, batch: int, epochs: float) -> tuple[float, float]:
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.train.trainer import run_train

    cfg = load_config(None, {f"training.{k}": v for k, v in {
        "pack": pack, "timestamp_prob": 0.2, "batch_size": batch, "eval_batch_size": 2, "grad_accum": 1,
        "epochs": epochs, "learning_rate": 1e-4, "warmup": 0.0, "precision": "fp32", "logging_steps": 1000,
        "gradient_checkpointing": False, "dataloader_workers": 0, "early_stopping_patience": 0,
        "generation_max_length": 4, "eval_max_clips": 2, "save_total_limit": 1}.items()} | {"model.name": str(model)})
    wall, cpu = time.perf_counter(), time.process_time()
    run_train(work_dir=work, output_dir=out, cfg=cfg)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--size", choices=("tiny", "test"), default="tiny")
    p.add_argument("--batch-clips", type=int, default=8)
    p.add_argument("--epochs", type=float, default=1.0)
    a = p.parse_args()
    from train_bench import make_model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="packing-bench-"))
    model = make_model(root / "model", a.size)
    demo_like_cache(root / "work", model, a.clips)
    n_unpacked, pad_unpacked = windows(root / "work", model, pack=False)
    n_packed, pad_packed = windows(root / "work", model, pack=True)
    per_window = n_unpacked / n_packed
    batch_packed = max(1, round(a.batch_clips / per_window))
    print(f"{a.clips} clips of 3.5-10 s: unpacked {n_unpacked} windows per epoch, {pad_unpacked:.1%} of encoder "
          f"frames padding; packed {n_packed} windows ({per_window:.2f} clips each), {pad_packed:.1%} padding "
          f"({n_unpacked / n_packed:.2f}x fewer encoder passes)", flush=True)
    times = {}
    for name, pack, batch in (("unpacked", False, a.batch_clips), ("packed", True, batch_packed)):
        times[name] = train_seconds(root / "work", model, root / f"out-{name}", pack, batch, a.epochs)
        print(f"train stage, {name} (batch {batch}), {a.epochs:g} epoch(s): {times[name][0]:.1f} s wall, "
              f"{times[name][1]:.1f} s CPU", flush=True)
    (wu, cu), (wp, cp) = times["unpacked"], times["packed"]
    print(f"packed / unpacked train-stage time per epoch: {wp / wu:.2f}x wall, {cp / cu:.2f}x CPU "
          f"({a.size}-shaped model, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
