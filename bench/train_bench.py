"""Benchmark: the train stage's data path and training step, measured in one run on this machine.

    .venv/bin/python bench/train_bench.py [--clips 64] [--seconds 5] [--variants 4] [--batch-size 16]
                                          [--steps 10] [--step-batch 4] [--memory-clips 200] [--skip ...]

(a) loader   samples/s of the train stage's loader (cache reader -> TrainDataset with the per-epoch variant
             schedule -> Collator, through a DataLoader; compact float16 batches, also timed with the dense
             3000-frame expansion done on the CPU) against the guide's on-the-fly preparation of the same clips (librosa.load, trim, peak normalization, audiomentations, WhisperFeatureExtractor, tokenizer,
             the guide's pad-based collator), one process each. The cache is built from generated speech-like
             clips by `whisper-tune features` itself (run_features).
(b) step     seconds per optimizer step of this stage's Trainer setup (CacheTrainer + TrainDataset + Collator
             + EpochSampler + callbacks) against a bare Seq2SeqTrainer on in-memory tensors (already padded,
             stacked by the default collator): same random Whisper, same batch, same arguments. Per-step times
             come from consecutive on_step_end callbacks (so they include fetching the batch); the median of
             several interleaved rounds is compared.
(c) memory   peak memory of iterating two epochs of a cache against a 10x larger cache, each in a fresh
             process: anonymous memory (what the process owns: RssAnon sampled every batch) and VmHWM (which
             also counts the cache's memory-mapped file pages the kernel keeps resident and may drop at will).

Needs no network. The numbers are printed as ratios against the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

SR = 16_000


# ----------------------------------------------------------------------------------------------------------
# Shared set-up


def make_model(folder: Path, size: str, n_mels: int = 80) -> Path:
    """A randomly initialised Whisper with tiny.en's real tokenizer. size: "tiny" (whisper-tiny's shape, 39 M
    parameters) or "test" (d_model 64, one layer each side: the test suite's model)."""
    from whisper_tune.testing import TEST_SHAPE, TINY_EN_SHAPE, make_tiny_whisper

    shape = {"tiny": TINY_EN_SHAPE, "test": TEST_SHAPE}[size]
    return make_tiny_whisper(folder, n_mels=n_mels, config=shape)


def build_real_cache(root: Path, model: Path, clips: int, seconds: float, variants: int):
    """Generated clips -> manifest -> `whisper-tune features` -> WORK/cache. Returns (paths, texts, work)."""
    from features_bench import make_data

    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.pipeline.featurize.stage import run_features

    paths, texts = make_data(root, clips, seconds)
    work = root / "work"
    cfg = load_config(None, {"model.name": str(model), "augment.variants": variants})
    run_features(work_dir=work, cfg=cfg, echo=None)
    return paths, texts, work


# ----------------------------------------------------------------------------------------------------------
# (a) loader throughput


def cache_loader_rate(work: Path, batch_size: int, min_samples: int, workers: int,
                      expand: bool = False) -> tuple[float, float]:
    """(samples/s, batches/s) of TrainDataset + EpochSampler + Collator through a DataLoader; expand: also make
    the dense (B, n_mels, 3000) float32 input here (what the Trainer does on its device)."""
    from torch.utils.data import DataLoader

    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.core.tokens import SOT
    from whisper_tune.pipeline.models import load_processor
    from whisper_tune.train.data import Collator, EpochSampler, TrainDataset, dense_features

    cache = open_cache(work)
    cache.verify()  # checksums once, outside the timing (a run does this on first use of each shard)
    model = cache.meta.model
    sot = load_processor(model).tokenizer.convert_tokens_to_ids(SOT)
    ds = TrainDataset(cache, seed=42)
    sampler = EpochSampler(len(ds), seed=42)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=Collator(sot_id=sot),
                        num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:   # warm-up epoch: page cache, worker start
        break
    samples = batches = 0
    epoch = 0
    start = time.perf_counter()
    while samples < min_samples:
        sampler.set_epoch(epoch)
        for batch in loader:
            if expand:
                batch = dense_features(batch)
            samples += batch["input_features"].shape[0]
            batches += 1
        epoch += 1
    elapsed = time.perf_counter() - start
    return samples / elapsed, batches / elapsed


def guide_loader_rate(paths: list[Path], texts: list[str], model: Path, batch_size: int) -> float:
    """samples/s of the guide's on-the-fly path: per-sample preparation plus its pad-based collator."""
    import librosa
    import torch
    from audiomentations import AddGaussianNoise, Compose, Gain

    from whisper_tune.pipeline.models import load_processor

    processor = load_processor(str(model))
    augment = Compose([AddGaussianNoise(min_amplitude=0.0005, max_amplitude=0.003, p=0.2),
                       Gain(min_gain_db=-2, max_gain_db=2, p=0.2)])

    def prepare(path: Path, text: str) -> dict:
        y, _ = librosa.load(path, sr=SR)
        y, _ = librosa.effects.trim(y, top_db=30)
        if np.max(np.abs(y)) > 0:
            y = y / np.max(np.abs(y))
        y = augment(samples=y.astype(np.float32), sample_rate=SR)
        return {"input_features": processor.feature_extractor(y, sampling_rate=SR).input_features[0],
                "labels": list(map(int, processor.tokenizer(text.lower()).input_ids))}

    def collate(features: list[dict]) -> dict:
        batch = processor.feature_extractor.pad([{"input_features": f["input_features"]} for f in features],
                                                return_tensors="pt")
        labels = processor.tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels.attention_mask.ne(1), -100)
        return batch

    prepare(paths[0], texts[0])  # warm-up: imports, first-call set-up
    start = time.perf_counter()
    n = 0
    for i in range(0, len(paths), batch_size):
        batch = collate([prepare(p, t) for p, t in zip(paths[i:i + batch_size], texts[i:i + batch_size])])
        n += batch["input_features"].shape[0]
        if not isinstance(batch["labels"], torch.Tensor):
            raise SystemExit("guide collator produced no labels")
    return n / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------
# (b) one training step


def _step_args(out: Path, batch: int, steps: int, precision):
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=1, learning_rate=1e-5,
        max_steps=steps, eval_strategy="no", save_strategy="no", report_to=[], logging_steps=10_000,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, seed=42,
        disable_tqdm=True, **precision.training_args())


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        def step_times(self, skip: int = 2) -> list[float]:
            d = np.diff(self.stamps).tolist()
            return d[skip:]

    return StepTimer()


def step_times(work: Path, model: Path, batch: int, steps: int, rounds: int, out: Path):
    """Interleaved rounds of (this stage, bare Trainer): per-step seconds for each, and per round the seconds per
    step spent fetching and preparing the batch (DataLoader + collator + dense expansion + device move)."""
    import torch
    from transformers import Seq2SeqTrainer, default_data_collator

    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.core.tokens import SOT
    from whisper_tune.pipeline.models import load_processor
    from whisper_tune.train.data import Collator, TrainDataset, dense_features
    from whisper_tune.train.model import choose_precision, load_model
    from whisper_tune.train.loop import training_classes

    cache = open_cache(work)
    processor = load_processor(str(model))
    tok = processor.tokenizer
    sot = tok.convert_tokens_to_ids(SOT)
    precision = choose_precision("auto")
    collate = Collator(sot_id=sot)
    ds = TrainDataset(cache, seed=42)
    # the bare arm: the same clips (epoch-0 variants), collated once up front, kept in memory as tensors
    n = batch * (steps + 1)
    items = [ds[i % len(ds)] for i in range(n)]
    width = max(len(collate.strip_start(it.labels)) for it in items)
    bare_data = []
    for it in items:
        one = dense_features(collate([it]))
        labels = torch.full((width,), -100, dtype=torch.int64)
        labels[: one["labels"].shape[1]] = one["labels"][0]
        bare_data.append({"input_features": one["input_features"][0], "labels": labels})

    CacheTrainer, EpochCallback = training_classes()
    ours_t: list[float] = []
    bare_t: list[float] = []
    ours_d: list[float] = []
    bare_d: list[float] = []
    for r in range(rounds):
        for arm in ("ours", "bare"):
            net = load_model(str(model), tokenizer=tok, gradient_checkpointing=True)
            timer = _step_timer()
            args = _step_args(out / f"{arm}{r}", batch, steps, precision)
            if arm == "ours":
                cb = EpochCallback()
                trainer = CacheTrainer(model=net, args=args, data_collator=collate, train_dataset=ds,
                                       callbacks=[cb, timer])
                cb.trainer = trainer
            else:
                trainer = Seq2SeqTrainer(model=net, args=args, data_collator=default_data_collator,
                                         train_dataset=bare_data, callbacks=[timer])
            data_time = _time_data_path(trainer)
            trainer.train()
            (ours_t if arm == "ours" else bare_t).extend(timer.step_times())
            (ours_d if arm == "ours" else bare_d).append(data_time[0] / max(1, data_time[1]))
    return ours_t, bare_t, ours_d, bare_d


def _time_data_path(trainer) -> list[float]:
    """Wraps the trainer's batch fetching and input preparation with a timer: [seconds, optimizer steps]."""
    acc = [0.0, 0]

    def timed(fn, counts_steps: bool):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[0] += time.perf_counter() - start
                acc[1] += int(counts_steps)
        return wrapper

    trainer.get_batch_samples = timed(trainer.get_batch_samples, counts_steps=True)
    trainer._prepare_inputs = timed(trainer._prepare_inputs, counts_steps=False)
    return acc


# ----------------------------------------------------------------------------------------------------------
# (c) memory


MEMORY_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[4])
from pathlib import Path

def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], status_kb("RssAnon"))
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()

work, mode, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if mode == "loader":
    from torch.utils.data import DataLoader
    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.train.data import Collator, EpochSampler, TrainDataset
    ds = TrainDataset(open_cache(work), seed=1)
    sampler = EpochSampler(len(ds), 1)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=Collator(sot_id=50257))
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for b in loader:
            pass
else:
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.train.trainer import run_train
    cfg = load_config(None, {"model.name": sys.argv[5], "training.max_steps": int(sys.argv[6]),
                             "training.batch_size": batch, "training.grad_accum": 1, "training.eval_max_clips": 8,
                             "training.eval_batch_size": 8, "training.generation_max_length": 8,
                             "training.dataloader_workers": 0, "training.early_stopping_patience": 0})
    run_train(work_dir=work, output_dir=work / "out", cfg=cfg)
time.sleep(0.05)
print(json.dumps({"anon_peak_kb": peak[0], "hwm_kb": status_kb("VmHWM")}))
"""


def _synthetic_examples(clips: int, variants: int, labels: np.ndarray):
    """Clips of 3-6 s of random features, every tenth one in the test split (a generator: little memory)."""
    from whisper_tune.pipeline.cache import CachedExample

    rng = np.random.default_rng(0)
    for i in range(clips):
        t = int(rng.integers(300, 600))
        base = (rng.standard_normal((80, t)) * 0.3).astype(np.float16)
        for v in range(variants):
            yield CachedExample(clip_id=f"c{i:06d}", variant=v, split="test" if i % 10 == 0 else "train",
                                features=base, floor=-0.5, labels=labels, text="the quick brown fox")


def synthetic_cache(work: Path, model: Path, clips: int, variants: int = 2) -> int:
    """WORK/cache with `clips` synthetic clips whose labels fit model's tokenizer; returns its bytes on disk."""
    from whisper_tune.pipeline.cache import write_examples
    from whisper_tune.pipeline.featurize.labels import make_labels, tokenizer_fingerprint
    from whisper_tune.pipeline.models import load_processor

    tok = load_processor(str(model)).tokenizer
    labels = make_labels("the quick brown fox", tok, "basic").ids
    write_examples(work / "cache", _synthetic_examples(clips, variants, labels), model=str(model),
                   tokenizer_fingerprint=tokenizer_fingerprint(tok, "basic"))
    return sum(p.stat().st_size for p in (work / "cache").iterdir())


def memory_run(work: Path, mode: str, batch: int, model: Path, steps: int) -> dict:
    import json

    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(work), mode, str(batch), str(ROOT),
                           str(model), str(steps)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64, help="generated clips for (a) and (b)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="loader batch size for (a) and (c)")
    ap.add_argument("--min-samples", type=int, default=3000, help="samples drawn from the cache loader in (a)")
    ap.add_argument("--model-size", choices=("tiny", "test"), default="tiny",
                    help="random Whisper for (b): whisper-tiny's shape, or the test suite's one-layer model")
    ap.add_argument("--step-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per round in (b)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds in (b)")
    ap.add_argument("--memory-clips", type=int, default=200, help="clips of the small cache in (c); x10 for the large")
    ap.add_argument("--memory-steps", type=int, default=10, help="optimizer steps of the training runs in (c)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("loader", "step", "memory"))
    args = ap.parse_args()

    import torch

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = Path(tmp)
        if "loader" not in args.skip or "step" not in args.skip:
            model = make_model(root / "model", args.model_size)
            paths, texts, work = build_real_cache(root, model, args.clips, args.seconds, args.variants)
            print(f"cache: {args.clips} generated clips of ~{args.seconds:g} s x {args.variants} variants "
                  f"(built by run_features)")

        if "loader" not in args.skip:
            ours0, batches0 = cache_loader_rate(work, args.batch_size, args.min_samples, workers=0)
            ours1, batches1 = cache_loader_rate(work, args.batch_size, args.min_samples, workers=1)
            dense0, _ = cache_loader_rate(work, args.batch_size, args.min_samples, workers=0, expand=True)
            guide = guide_loader_rate(paths, texts, model, args.batch_size)
            print(f"(a) loader, batch {args.batch_size}:")
            print(f"    cache loader, 1 worker process           : {ours1:8.0f} samples/s ({batches1:.1f} batches/s)")
            print(f"    cache loader, in-process                 : {ours0:8.0f} samples/s ({batches0:.1f} batches/s)")
            print(f"    in-process + dense 3000-frame input (CPU): {dense0:8.0f} samples/s "
                  "(the Trainer does this expansion on its device)")
            print(f"    guide on-the-fly preparation (dense)     : {guide:8.1f} samples/s")
            print(f"    ratio to the guide                       : {ours1 / guide:8.0f}x (1 worker), "
                  f"{ours0 / guide:.0f}x (in-process), {dense0 / guide:.0f}x (in-process, dense on the CPU)")

        if "step" not in args.skip:
            ours_t, bare_t, ours_d, bare_d = step_times(work, model, args.step_batch, args.steps, args.rounds,
                                                        root / "steps")
            mo, mb = statistics.median(ours_t), statistics.median(bare_t)
            do, db = statistics.median(ours_d), statistics.median(bare_d)
            print(f"(b) training step, whisper-{args.model_size}-shaped random model, batch {args.step_batch}, "
                  f"{len(ours_t)} + {len(bare_t)} timed steps:")
            print(f"    this stage (cache -> Collator -> CacheTrainer): {mo * 1000:8.1f} ms/step (median)")
            print(f"    bare Seq2SeqTrainer on in-memory tensors      : {mb * 1000:8.1f} ms/step (median)")
            print(f"    ratio                                         : {mo / mb:8.3f}x")
            print(f"    batch fetch + preparation per step            : {do * 1000:8.2f} ms (this stage), "
                  f"{db * 1000:.2f} ms (bare); the difference is {100 * (do - db) / mb:+.2f} % of a bare step")

        if "memory" not in args.skip:
            mem_model = make_model(root / "mem-model", "test")
            sizes = {}
            for name, clips in (("1x", args.memory_clips), ("10x", 10 * args.memory_clips)):
                sizes[name] = (clips, synthetic_cache(root / f"mem-{name}", mem_model, clips))
            print(f"(c) memory, fresh process per run; anonymous = RssAnon peak (sampled every 10 ms), "
                  f"VmHWM also counts resident pages of the memory-mapped shards:")
            for mode, what in (("loader", f"loader, 2 epochs, batch {args.batch_size}"),
                               ("train", f"run_train, {args.memory_steps} steps of batch {args.batch_size}, "
                                         "test-sized model")):
                r = {name: memory_run(root / f"mem-{name}", mode, args.batch_size, mem_model, args.memory_steps)
                     for name in sizes}
                for name, (clips, size) in sizes.items():
                    print(f"    {what:48s} {name:>3s} cache ({clips:5d} clips, {size / 1e6:6.1f} MB): anonymous "
                          f"{r[name]['anon_peak_kb'] / 1024:7.1f} MB, VmHWM {r[name]['hwm_kb'] / 1024:7.1f} MB")
                growth = 100 * (r["10x"]["anon_peak_kb"] / r["1x"]["anon_peak_kb"] - 1)
                print(f"    {what:48s} growth 1x -> 10x: anonymous {growth:+.1f} %, VmHWM "
                      f"{100 * (r['10x']['hwm_kb'] / r['1x']['hwm_kb'] - 1):+.1f} %")

if __name__ == "__main__":
    main()
