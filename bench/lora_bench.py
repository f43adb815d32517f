"""Benchmark: full fine-tuning against LoRA at the same micro-batch, on Whisper-shaped random models.

    .venv/bin/python bench/lora_bench.py                                    # GPU: medium and large-v3 shapes
    .venv/bin/python bench/lora_bench.py --shapes test test-128 --steps 2   # CPU: tiny shapes, seconds

For each shape and arm (full: every weight trains; LoRA: the adapters whisper_tune.train.lora puts on the projections, base
frozen) it builds the model from its shape (random weights, nothing downloaded), then times optimizer steps
(forward, backward, AdamW step) on random 30 s log-mel batches with `--label-tokens` target tokens, after one
warm-up step. It reports the trainable parameters, the peak memory (CUDA: torch's peak allocated memory; CPU: the
process's peak resident memory over the arm, Linux only) and clips/s. Precision follows whisper_tune.train.model's choice
(bf16 where supported), with fp32 weights as in training; gradient checkpointing is on as in `train`'s default.

`lora_rows(...)` returns the rows for another benchmark to print (see format_rows).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

# Whisper's published shapes (large-v3: 128 mel bins and one more vocabulary entry); test*: the test suite's size.
SHAPES: dict[str, dict[str, int]] = {
    "medium": dict(d_model=1024, layers=24, heads=16, ffn=4096, n_mels=80, vocab=51865),
    "large-v3": dict(d_model=1280, layers=32, heads=20, ffn=5120, n_mels=128, vocab=51866),
    "small": dict(d_model=768, layers=12, heads=12, ffn=3072, n_mels=80, vocab=51865),
    "test": dict(d_model=64, layers=1, heads=2, ffn=128, n_mels=80, vocab=51865),
    "test-128": dict(d_model=64, layers=1, heads=2, ffn=128, n_mels=128, vocab=51866),
}
FRAMES = 3000                     # Whisper's 30 s input


@dataclass(frozen=True)
class LoraBenchRow:
    shape: str
    arm: str                      # "full" or "LoRA r=R"
    micro_batch: int
    trainable: int
    total: int
    peak_memory_mb: float | None  # None where it cannot be measured
    clips_per_s: float
    memory_kind: str              # "cuda allocated" or "process RSS"


def whisper_of_shape(name: str, device: str):
    """A random WhisperForConditionalGeneration of a named shape, built on `device` (fp32, as train loads it)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    s = SHAPES[name]
    cfg = WhisperConfig(vocab_size=s["vocab"], num_mel_bins=s["n_mels"], d_model=s["d_model"],
                        encoder_layers=s["layers"], decoder_layers=s["layers"],
                        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                        encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"], max_source_positions=1500,
                        max_target_positions=448, decoder_start_token_id=50258, pad_token_id=50257,
                        eos_token_id=50257, bos_token_id=50257)
    torch.manual_seed(0)
    with torch.device(device):
        model = WhisperForConditionalGeneration(cfg)
    model.config.use_cache = False
    model.activation_checkpointing_enable()
    return model


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def _peak_mb(device: str) -> float | None:
    import torch

    from whisper_tune.pipeline.core.system import peak_rss_mb

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def measure(shape: str, lora_rank: int, *, micro_batch: int, steps: int, label_tokens: int,
            device: str) -> LoraBenchRow:
    """One arm: build, one warm-up step, `steps` timed steps; lora_rank 0 = full fine-tuning."""
    import torch

    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.train.lora import add_adapters, count_parameters, lora_settings
    from whisper_tune.train.model import choose_precision

    _peak_reset(device)
    settings = lora_settings(load_config(None, {"training.lora_rank": lora_rank}).training)
    model = add_adapters(whisper_of_shape(shape, device), settings)
    model.train()
    trainable, total = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    bf16 = choose_precision("auto").name == "bf16"
    gen = torch.Generator(device=device).manual_seed(1)
    n_mels = SHAPES[shape]["n_mels"]
    features = torch.randn(micro_batch, n_mels, FRAMES, generator=gen, device=device)
    labels = torch.randint(0, 50000, (micro_batch, label_tokens), generator=gen, device=device)

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_features=features, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()                                  # warm-up: optimizer state, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = _peak_mb(device)
    del model, optimizer, features, labels
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return LoraBenchRow(shape=shape, arm=f"LoRA r={lora_rank}" if lora_rank else "full", micro_batch=micro_batch,
                        trainable=trainable, total=total, peak_memory_mb=None if peak is None else round(peak, 1),
                        clips_per_s=round(steps * micro_batch / seconds, 3),
                        memory_kind="cuda allocated" if device.startswith("cuda") else "process RSS")


def lora_rows(shapes=("medium", "large-v3"), *, lora_rank: int = 32, micro_batch: int = 8, steps: int = 5,
              label_tokens: int = 64, device: str | None = None) -> list[LoraBenchRow]:
    """Full and LoRA rows for each shape, at the same micro-batch. device: default cuda when visible, else cpu.
    An arm that runs out of GPU memory is reported with clips/s 0 and no peak (the other arm still runs)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for shape in shapes:
        for rank in (0, lora_rank):
            try:
                rows.append(measure(shape, rank, micro_batch=micro_batch, steps=steps, label_tokens=label_tokens,
                                    device=device))
            except torch.OutOfMemoryError:
                gc.collect()
                torch.cuda.empty_cache()
                rows.append(LoraBenchRow(shape, f"LoRA r={rank}" if rank else "full", micro_batch, 0, 0, None, 0.0,
                                         "out of memory"))
    return rows


def format_rows(rows: list[LoraBenchRow]) -> str:
    lines = [f"{'shape':10}{'arm':11}{'batch':>6}{'trainable':>22}{'peak MB':>10}{'clips/s':>9}  memory"]
    for r in rows:
        share = f"{r.trainable / 1e6:.1f} M ({100 * r.trainable / r.total:.2f} %)" if r.total else "-"
        peak = f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "-"
        lines.append(f"{r.shape:10}{r.arm:11}{r.micro_batch:>6}{share:>22}{peak:>10}{r.clips_per_s:>9.2f}  "
                     f"{r.memory_kind}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["medium", "large-v3"], choices=sorted(SHAPES))
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--label-tokens", type=int, default=64)
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when visible)")
    a = p.parse_args(argv)
    print(format_rows(lora_rows(tuple(a.shapes), lora_rank=a.lora_rank, micro_batch=a.micro_batch, steps=a.steps,
                                label_tokens=a.label_tokens, device=a.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
