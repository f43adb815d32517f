"""Benchmark: training throughput on this machine's accelerator, the guide's batch settings against `auto`.

    .venv/bin/python bench/gpu_bench.py                      # on a GPU box: whisper-small and whisper-medium shapes
    .venv/bin/python bench/gpu_bench.py --tiny               # on a CPU: tiny shapes (what the test suite runs)
    .venv/bin/python bench/gpu_bench.py --work work          # on an existing cache (its clip lengths and labels)

For each model shape (random weights from a WhisperConfig: nothing is downloaded) and each arm, this stage's
trainer (CacheTrainer + TrainDataset + Collator, the train stage's training arguments and fast paths) runs
--warmup optimizer steps, then --steps timed ones, and prints:

    clips/s and audio seconds/s (clips/s x the cache's mean clip length), ms per optimizer step,
    estimated model FLOP/s (matmul FLOPs of one 30 s window and the cache's mean label, x3 for the backward
    pass; the recomputation of checkpointing is not counted) and its share of the device's bf16 peak (a table of
    known GPUs; "unknown" otherwise), sampled GPU utilisation (pynvml or nvidia-smi; CPU: none) and peak memory
    (CUDA: max allocated; CPU: sampled resident anonymous memory).

Arms: `guide` (micro-batch 4 x accumulation 16, checkpointing on: the guide's settings), `auto` (the train
stage's choice from train/batching.py: probed on CUDA, fixed on the CPU), and `packed` (auto on packed windows:
the same TrainDataset with pack=True). Ratios against the guide arm come from the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from whisper_tune.pipeline.core.constants import HOP_LENGTH, N_FRAMES, SAMPLE_RATE_HZ  # noqa: E402

SHAPES = {   # d_model, layers per stack, attention heads, feed-forward width
    "small": (768, 12, 12, 3072),
    "medium": (1024, 24, 16, 4096),
    "tiny": (384, 4, 6, 1536),
    "micro": (64, 1, 2, 128),
}
# dense bf16 tensor-core peaks, TFLOP/s (first match on the device name wins); (fp16) where the GPU has no bf16
PEAK_TFLOPS = [("GH200", 989, "bf16"), ("H200", 989, "bf16"), ("H100 PCIe", 756, "bf16"), ("H100 NVL", 835, "bf16"),
               ("H100", 989, "bf16"), ("B200", 2250, "bf16"), ("A100", 312, "bf16"), ("A10G", 70, "bf16"),
               ("A10", 125, "bf16"), ("L40S", 362, "bf16"), ("L40", 181, "bf16"), ("L4", 121, "bf16"),
               ("RTX 4090", 165, "bf16"), ("A6000", 155, "bf16"), ("V100", 125, "fp16"), ("T4", 65, "fp16")]
ENC_POSITIONS = N_FRAMES // 2


def device_peak(name: str) -> tuple[float | None, str]:
    for key, tflops, dtype in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12, dtype
    return None, "unknown"


def train_flops_per_clip(d: int, layers: int, ffn: int, n_mels: int, vocab: int, label_tokens: float) -> float:
    """Matmul FLOPs of one training example: forward of a 30 s window and `label_tokens` labels, x3."""
    s, lab = ENC_POSITIONS, label_tokens
    conv = 2 * 3 * (n_mels * d * N_FRAMES + d * d * s)
    enc = layers * (8 * s * d * d + 4 * s * s * d + 4 * s * d * ffn)
    dec = layers * (8 * lab * d * d + 4 * lab * lab * d          # self-attention
                    + 4 * lab * d * d + 4 * s * d * d + 4 * lab * s * d   # cross-attention
                    + 4 * lab * d * ffn)
    head = 2 * lab * d * vocab
    return 3.0 * (conv + enc + dec + head)


# ----------------------------------------------------------------------------------------------------------
# The cache and the model


def synthetic_cache(work: Path, model_dir: Path, clips: int, seconds: tuple[float, float]) -> None:
    """WORK/cache of `clips` random-feature clips of uniform length in `seconds`, ~2.5 words per second."""
    from features_bench import WORDS

    from whisper_tune.pipeline.cache import CachedExample, write_examples
    from whisper_tune.pipeline.featurize.labels import make_labels
    from whisper_tune.pipeline.models import load_processor

    tok = load_processor(str(model_dir)).tokenizer
    rng = np.random.default_rng(0)

    def examples():
        for i in range(clips):
            secs = rng.uniform(*seconds)
            frames = min(N_FRAMES, int(secs * SAMPLE_RATE_HZ / HOP_LENGTH))
            text = " ".join(rng.choice(WORDS, size=max(1, int(secs * 2.5))))
            labels = make_labels(text, tok, "basic")
            feats = (rng.standard_normal((80, frames)) * 0.3).astype(np.float16)
            yield CachedExample(clip_id=f"c{i:05d}", variant=0, split="train", features=feats, floor=-0.5,
                                labels=labels.ids, text=labels.text)

    write_examples(work / "cache", examples(), model=str(model_dir))


def random_whisper(shape: str, tok, n_mels: int):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from whisper_tune.pipeline.core.tokens import SOT
    from whisper_tune.train.model import prepare_model

    d, layers, heads, ffn = SHAPES[shape]
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=n_mels, d_model=d, encoder_layers=layers,
                        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, decoder_start_token_id=tok.convert_tokens_to_ids(SOT),
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                        attn_implementation="sdpa")
    torch.manual_seed(0)
    return prepare_model(WhisperForConditionalGeneration(cfg), f"random whisper-{shape}", tokenizer=tok,
                         gradient_checkpointing=False)


def cache_lengths(cache) -> tuple[float, float]:
    """(mean clip seconds, mean label tokens as trained) over the train clips."""
    rows = [cache.get(cid, 0) for cid in cache.clip_ids("train")]
    seconds = np.mean([r.features.shape[1] * HOP_LENGTH / SAMPLE_RATE_HZ for r in rows])
    return float(seconds), float(np.mean([len(r.labels) - 1 for r in rows]))


# ----------------------------------------------------------------------------------------------------------
# Sampling utilisation and memory while an arm runs


class Sampler:
    """Samples (time, GPU utilisation % or None, resident anonymous kB, process CPU seconds) every `every`
    seconds in a thread."""

    def __init__(self, cuda: bool, every: float = 0.1) -> None:
        self.every, self.samples = every, []
        self._util = _gpu_util_reader() if cuda else (lambda: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._util(), _rss_anon_kb(), time.process_time()))
            self._stop.wait(self.every)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> tuple[float | None, int, float]:
        """(mean GPU utilisation %, peak resident anonymous kB, process CPU seconds) over [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        utils = [u for _, u, _, _ in inside if u is not None]
        cpu = inside[-1][3] - inside[0][3]
        return (float(np.mean(utils)) if utils else None), max((s[2] for s in inside), default=0), cpu


def _gpu_util_reader():
    import torch

    index = torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # noqa: BLE001 - no pynvml, or no driver access: try nvidia-smi
        pass

    def smi() -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(index)], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    return smi


def _rss_anon_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------------------------
# One arm


@dataclass(frozen=True)
class Arm:
    name: str
    micro: int
    accum: int
    checkpointing: bool
    seconds_per_step: float
    clips_per_step: float        # clips in one optimizer step (packed: windows x clips per window)
    audio_seconds_per_clip: float
    flops_per_step: float
    gpu_util: float | None
    peak_bytes: int
    cpu_seconds_per_step: float  # process CPU time (user + sys, all threads): steadier than wall time on a shared CPU

    @property
    def clips_per_s(self) -> float:
        return self.clips_per_step / self.seconds_per_step


def run_arm(net, dataset, collator, micro: int, accum: int, *, steps: int, warmup: int, out: Path, precision,
            compile_model: bool, workers: int) -> tuple[float, float | None, int, float]:
    """(seconds per timed optimizer step, mean GPU utilisation % over them, peak memory bytes, process CPU seconds
    per step) of this stage's trainer on `dataset` with micro-batch x accumulation."""
    import torch
    from transformers import PrinterCallback, Seq2SeqTrainingArguments

    from whisper_tune.train.batching import fast_path_args
    from whisper_tune.train.loop import training_classes
    from train_bench import _step_timer

    cuda = torch.cuda.is_available() and not precision.use_cpu
    args = Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
        learning_rate=1e-5, max_steps=warmup + steps, eval_strategy="no", save_strategy="no", report_to=[],
        logging_steps=10**6, remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=workers,
        dataloader_pin_memory=cuda, dataloader_persistent_workers=workers > 0, seed=42, disable_tqdm=True,
        **fast_path_args(cuda, compile_model), **precision.training_args())
    CacheTrainer, EpochCallback = training_classes()
    clock, epochs = _step_timer(), EpochCallback()
    trainer = CacheTrainer(model=net, args=args, data_collator=collator, train_dataset=dataset,
                           callbacks=[epochs, clock])
    epochs.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with Sampler(cuda) as sampler:
        trainer.train()
    start, end = clock.stamps[warmup], clock.stamps[warmup + steps]
    util, rss_kb, cpu = sampler.between(start, end)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else rss_kb * 1024
    return (end - start) / steps, util, peak, cpu / steps


# ----------------------------------------------------------------------------------------------------------
# One model shape: every arm, then the table


def _packed_dataset(cache, tok, seed: int):
    """The training dataset in packed mode (windows of several clips, timestamps in 20 % of labels)."""
    from whisper_tune.train.data import training_dataset

    return training_dataset(cache, tok, seed=seed, pack=True, timestamp_prob=0.2, planned_epochs=10)


def measure_shape(shape: str, work: Path, model_dir: Path, a, out: Path) -> tuple[list[Arm], str]:
    import gc

    import torch

    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.pipeline.models import load_processor
    from whisper_tune.pipeline.core.tokens import SOT
    from whisper_tune.train.batching import plan_batch
    from whisper_tune.train.data import Collator, TrainDataset
    from whisper_tune.train.model import choose_precision, set_checkpointing

    tok = load_processor(str(model_dir)).tokenizer
    cache = open_cache(work)
    clip_seconds, label_tokens = cache_lengths(cache)
    precision = choose_precision("auto")
    cuda = torch.cuda.is_available() and not precision.use_cpu
    d, layers, _, ffn = SHAPES[shape]
    flops_clip = train_flops_per_clip(d, layers, ffn, cache.meta.n_mels, len(tok), label_tokens)
    collator = Collator(sot_id=tok.convert_tokens_to_ids(SOT))
    clips = TrainDataset(cache, seed=42)
    guide_micro, guide_accum = a.guide
    arms_todo = [("guide", clips, 1.0)]
    arms_todo.append(("auto", clips, 1.0))
    if "packed" not in a.skip:
        packed = _packed_dataset(cache, tok, 42)
        arms_todo.append(("packed", packed, len(clips) / max(1, len(packed))))
    arms, reason = [], ""
    for name, dataset, clips_per_item in arms_todo:
        net = random_whisper(shape, tok, cache.meta.n_mels)
        if name == "guide":
            micro, accum, ckpt = guide_micro, guide_accum, True
            set_checkpointing(net, True)
        else:
            t = load_config(None, {"training.effective_batch": a.effective_batch,
                                   **({"training.pack": True} if name == "packed" else {})}).training
            choice = plan_batch(t, net, cache, clips.clip_ids, precision)
            micro, accum, ckpt = choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing
            reason = reason or choice.reason
        sec, util, peak, cpu = run_arm(net, dataset, collator, micro, accum, steps=a.steps, warmup=a.warmup,
                                  out=out / f"{shape}-{name}", precision=precision, compile_model=a.compile,
                                  workers=a.workers)
        per_step = micro * accum * clips_per_item
        arms.append(Arm(name, micro, accum, ckpt, sec, per_step, clip_seconds, flops_clip * micro * accum,
                        util, peak, cpu))
        del net
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return arms, reason


def print_table(shape: str, arms: list[Arm], device: str, peak: tuple[float | None, str], reason: str) -> None:
    flops, dtype = peak
    print(f"whisper-{shape} shape on {device} (peak: {'unknown' if flops is None else f'{flops / 1e12:.0f} TFLOP/s {dtype}'})")
    print(f"    auto chose: {reason}")
    head = ("arm", "micro x accum", "ckpt", "ms/step", "CPU ms/step", "clips/s", "audio s/s", "TFLOP/s", "of peak", "GPU util",
            "peak memory")
    print("    " + "  ".join(f"{h:>11}" for h in head))
    for arm in arms:
        fps = arm.flops_per_step / arm.seconds_per_step
        cells = (arm.name, f"{arm.micro} x {arm.accum}", "on" if arm.checkpointing else "off",
                 f"{arm.seconds_per_step * 1000:.0f}", f"{arm.cpu_seconds_per_step * 1000:.0f}",
                 f"{arm.clips_per_s:.2f}",
                 f"{arm.clips_per_s * arm.audio_seconds_per_clip:.1f}", f"{fps / 1e12:.3f}",
                 "unknown" if flops is None else f"{100 * fps / flops:.1f} %",
                 "n/a" if arm.gpu_util is None else f"{arm.gpu_util:.0f} %", f"{arm.peak_bytes / 1024**3:.2f} GiB")
        print("    " + "  ".join(f"{c:>11}" for c in cells))
    guide = arms[0]
    for arm in arms[1:]:
        cpu_rate = (guide.cpu_seconds_per_step / guide.clips_per_step) / max(1e-9, arm.cpu_seconds_per_step / arm.clips_per_step)
        print(f"    {arm.name} / guide: {arm.clips_per_s / guide.clips_per_s:.2f}x clips/s (wall), "
              f"{cpu_rate:.2f}x clips per CPU second, {arm.peak_bytes / guide.peak_bytes:.2f}x peak memory")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes (whisper-tiny and a one-layer model)")
    ap.add_argument("--shapes", nargs="*", help="model shapes (default: small medium; with --tiny: tiny micro)",
                    choices=sorted(SHAPES))
    ap.add_argument("--work", type=Path, help="an existing work folder whose cache to train on (80 mel bins)")
    ap.add_argument("--clips", type=int, default=512, help="generated clips when no --work is given")
    ap.add_argument("--seconds", type=float, nargs=2, default=(2.0, 15.0), help="generated clip lengths, s")
    ap.add_argument("--effective-batch", type=int, default=64)
    ap.add_argument("--guide", type=int, nargs=2, default=(4, 16), metavar=("MICRO", "ACCUM"),
                    help="the guide arm's micro-batch and accumulation (checkpointing on)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per arm")
    ap.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--compile", action="store_true", help="torch.compile in every arm")
    ap.add_argument("--skip", nargs="*", default=[], choices=("packed",))
    a = ap.parse_args(argv)
    shapes = a.shapes or (["tiny", "micro"] if a.tiny else ["small", "medium"])

    import torch

    from features_bench import make_model

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    peak = device_peak(device) if cuda else (None, "unknown")
    print(f"device: {device}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        root = Path(tmp)
        model_dir = make_model(root / "processor", 80)
        work = a.work
        if work is None:
            work = root / "work"
            synthetic_cache(work, model_dir, a.clips, tuple(a.seconds))
        for shape in shapes:
            arms, reason = measure_shape(shape, work, model_dir, a, root / "runs")
            print_table(shape, arms, device, peak, reason)


if __name__ == "__main__":
    main()
