"""Micro-batch, gradient accumulation and gradient checkpointing chosen from the device; CUDA fast paths.

    choice = plan_batch(cfg.training, model, cache, train_ids, precision)   # the train stage's entry point
    choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing, choice.eval_batch, choice.reason

The user states the effective batch (training.effective_batch, the guide's 64); the device picks the micro-batch:

- per device, effective_batch / devices clips go into one optimizer step; the micro-batch is a divisor of that
  number, so micro-batch x accumulation x devices == effective batch exactly. When devices do not divide the
  effective batch, the nearest multiple of the devices is used (64 on 3 GPUs: 21 per device, 63 in all) and the
  log says so.
- on CUDA, candidates are probed: one forward + backward on a full 30 s window with the cache's longest label (the
  shape is an argument: packed windows pass their own), gradients already held as during accumulation. A
  candidate fits when its peak memory plus the optimizer's state stays under the memory this process may use,
  less a safety margin. The largest candidate that fits without checkpointing is taken when it is at least
  USEFUL_MICRO_BATCH (or the whole per-device batch); otherwise checkpointing goes on and the largest candidate
  that fits with it is taken. Ranks agree on the smallest micro-batch any of them found.
- on the CPU (and Apple's MPS) nothing is probed: a small fixed micro-batch, checkpointing off.

`choose_batch` is the whole decision as a pure function of the request, the memory figures and a probe function,
so tests pass memory figures in. An explicit --batch-size N keeps --grad-accum as given (today's behaviour).

A packed run counts its batch in windows, or in clips (training.batch_unit = "clips", `count_in_clips`): then the
optimizer steps per epoch are those of an unpacked run of the same clips per step, ceil(clips / clips per step),
and the windows per step are as many as spread the epoch's windows over those steps (the dataset cuts its fullest
windows in two to make up the count); each step then sees the stated clips on average, as unpacked.
"""

from __future__ import annotations

import math

import os
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from whisper_tune.pipeline.core.config import AUTO, TrainingConfig
from whisper_tune.pipeline.core.constants import N_FRAMES
from whisper_tune.pipeline.core.errors import ConfigError

CPU_MICRO_BATCH = 4          # the guide's micro-batch, kept on the CPU
CPU_EVAL_BATCH = 8           # generation batch at evaluation on the CPU
USEFUL_MICRO_BATCH = 8       # 8 full windows keep a GPU busy: below this, checkpointing + a larger batch is tried
SAFETY_MARGIN = 0.10         # share of the usable memory left free (allocator fragmentation, evaluation, ...)
EVAL_BATCH_CAP = 64
ADAM_STATE_BYTES = 8         # AdamW's two float32 moments per trainable parameter (allocated at the first step)
GIB = 1024 ** 3

Probe = Callable[[int, bool], "int | None"]   # (micro-batch, checkpointing) -> peak bytes; None = out of memory


@dataclass(frozen=True)
class BatchRequest:
    """What the settings ask for. None = auto."""

    effective_batch: int = 64
    world_size: int = 1
    micro_batch: int | None = None
    grad_accum: int | None = None          # only with an explicit micro_batch
    checkpointing: bool | None = None
    eval_batch: int | None = None

    @staticmethod
    def of(t: TrainingConfig, world_size: int) -> "BatchRequest":
        def auto(value):
            return None if value == AUTO else value
        return BatchRequest(effective_batch=t.effective_batch, world_size=max(1, world_size),
                            micro_batch=auto(t.batch_size), grad_accum=auto(t.grad_accum),
                            checkpointing=auto(t.gradient_checkpointing), eval_batch=auto(t.eval_batch_size))


@dataclass(frozen=True)
class DeviceMemory:
    """Memory figures of one CUDA device, in bytes."""

    usable: int                  # what this process may use: free memory plus what it already holds
    optimizer: int = 0           # what the probe does not see: the optimizer's state
    margin: float = SAFETY_MARGIN

    @property
    def budget(self) -> int:
        return int(self.usable * (1.0 - self.margin)) - self.optimizer

    def fits(self, peak: int | None) -> bool:
        return peak is not None and peak <= self.budget


@dataclass(frozen=True)
class BatchChoice:
    micro_batch: int
    grad_accum: int
    world_size: int
    gradient_checkpointing: bool
    eval_batch: int
    requested_effective: int
    reason: str                  # one line for the log: what was chosen and why
    note: str = ""               # a warning for the log, or ""

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def describe(self) -> str:
        return (f"batch: micro-batch {self.micro_batch} x grad-accum {self.grad_accum} x {self.world_size} "
                f"device(s) = effective batch {self.effective_batch}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, eval batch {self.eval_batch}: {self.reason}")


def per_device_batch(effective: int, world_size: int) -> tuple[int, str]:
    """Clips per device per optimizer step, and a note when the devices do not divide the effective batch."""
    per_device = max(1, round(effective / world_size))
    if per_device * world_size == effective:
        return per_device, ""
    return per_device, (f"note: the effective batch {effective} is not a multiple of {world_size} devices; using "
                        f"{per_device * world_size} ({per_device} per device), the nearest one "
                        "(--effective-batch sets it)")


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending, by trial division up to sqrt(n) (instant even for --effective-batch 10**9)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def _gib(n: int | None) -> str:
    return "out of memory" if n is None else f"{n / GIB:.1f} GiB"


class _Search:
    """Probes candidates lazily (each at most once) and finds the largest that fits, assuming that memory grows
    with the micro-batch (binary search over the sorted candidates)."""

    def __init__(self, probe: Probe, memory: DeviceMemory) -> None:
        self.probe, self.memory = probe, memory
        self.seen: dict[tuple[int, bool], int | None] = {}

    def peak(self, micro: int, checkpointing: bool) -> int | None:
        key = (micro, checkpointing)
        if key not in self.seen:
            self.seen[key] = self.probe(micro, checkpointing)
        return self.seen[key]

    def largest(self, candidates: Sequence[int], checkpointing: bool) -> int | None:
        lo, hi, best = 0, len(candidates) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.memory.fits(self.peak(candidates[mid], checkpointing)):
                best, lo = candidates[mid], mid + 1
            else:
                hi = mid - 1
        return best

    def figures(self) -> str:
        probes = ", ".join(f"{m}{' ckpt' if c else ''}: {_gib(p)}" for (m, c), p in sorted(self.seen.items()))
        m = self.memory
        return (f"usable {_gib(m.usable)}, budget {_gib(m.budget)} after a {m.margin:.0%} margin and "
                f"{_gib(m.optimizer)} of optimizer state; probe peaks {probes}")


def choose_batch(req: BatchRequest, memory: DeviceMemory | None = None, probe: Probe | None = None) -> BatchChoice:
    """The micro-batch, accumulation, checkpointing and eval batch for `req`. memory/probe None: the CPU (nothing
    probed). A pure function of its arguments (given a pure probe)."""
    world = max(1, req.world_size)
    if req.micro_batch is not None:
        return _explicit(req, world, memory, probe)
    per_device, note = per_device_batch(req.effective_batch, world)
    if memory is None or probe is None:
        micro = max(d for d in divisors(per_device) if d <= CPU_MICRO_BATCH)
        ckpt = bool(req.checkpointing)
        reason = (f"no CUDA device: fixed micro-batch {micro} (a divisor of {per_device} clips per device), "
                  f"checkpointing {'on (asked for)' if ckpt else 'off (only trades compute for memory)'}")
        return BatchChoice(micro, per_device // micro, world, ckpt, req.eval_batch or CPU_EVAL_BATCH,
                           req.effective_batch, reason, note)
    search = _Search(probe, memory)
    micro, ckpt, why = _auto_micro(search, divisors(per_device), req.checkpointing)
    eval_batch = req.eval_batch or min(EVAL_BATCH_CAP, micro * (1 if ckpt else 2))
    return BatchChoice(micro, per_device // micro, world, ckpt, eval_batch, req.effective_batch,
                       f"{why} ({search.figures()})", note)


def _auto_micro(search: _Search, candidates: list[int], checkpointing: bool | None) -> tuple[int, bool, str]:
    """(micro-batch, checkpointing, why) for an automatic micro-batch."""
    per_device = candidates[-1]
    off = None if checkpointing is True else search.largest(candidates, False)
    if off is not None and (checkpointing is False or off >= min(USEFUL_MICRO_BATCH, per_device)):
        return off, False, f"micro-batch {off} is the largest of {candidates} that fits without checkpointing"
    on = None if checkpointing is False else search.largest(candidates, True)
    if on is not None and (off is None or on > off):
        return on, True, (f"micro-batch {on} fits with checkpointing" + (
            f" (without it only {off} fits)" if off else " (not even 1 fits without it)"))
    if off is not None:
        return off, False, f"micro-batch {off} fits without checkpointing (checkpointing lets no larger one fit)"
    raise ConfigError(
        f"not even a micro-batch of 1 fits this GPU's memory ({search.figures()}); free the GPU, train with "
        "--freeze-encoder, or choose a smaller --model")


def _explicit(req: BatchRequest, world: int, memory: DeviceMemory | None, probe: Probe | None) -> BatchChoice:
    """--batch-size N: N and --grad-accum as given (auto accumulation: the nearest to the effective batch)."""
    micro = int(req.micro_batch or 1)
    accum = req.grad_accum or max(1, round(req.effective_batch / (micro * world)))
    how = f"micro-batch {micro} from --batch-size"
    if req.checkpointing is not None or memory is None or probe is None:
        ckpt = bool(req.checkpointing)
        return BatchChoice(micro, accum, world, ckpt, req.eval_batch or (CPU_EVAL_BATCH if memory is None else micro),
                           req.effective_batch, f"{how}, checkpointing {'on' if ckpt else 'off'} as set")
    search = _Search(probe, memory)
    ckpt = not memory.fits(search.peak(micro, False))
    note = ""
    if ckpt and not memory.fits(search.peak(micro, True)):
        note = (f"warning: micro-batch {micro} does not fit this GPU even with checkpointing ({search.figures()}); "
                "expect out-of-memory, or lower --batch-size (or use --batch-size auto)")
    why = "does not fit without checkpointing" if ckpt else "fits without checkpointing"
    return BatchChoice(micro, accum, world, ckpt, req.eval_batch or min(EVAL_BATCH_CAP, micro * (1 if ckpt else 2)),
                       req.effective_batch, f"{how} {why} ({search.figures()})", note)


@dataclass(frozen=True)
class ClipCount:
    """A packed run whose batch counts clips: as many optimizer steps per epoch as an unpacked run of
    clips_per_step clips per step, and the windows per step (over all devices) that spread the epoch over them."""

    clips: int               # train clips per epoch
    windows: int             # packed windows per epoch, as packing laid them out
    clips_per_step: int      # over all devices, as the settings ask
    steps_per_epoch: int     # ceil(clips / clips_per_step): an unpacked run's
    windows_per_step: int    # over all devices

    @property
    def windows_per_epoch(self) -> int:
        return self.windows_per_step * self.steps_per_epoch

    def describe(self) -> str:
        return (f"batch counted in clips: {self.clips_per_step} clips per step, so {self.steps_per_epoch} steps per "
                f"epoch of {self.clips} clips (as unpacked); packed {self.clips / max(1, self.windows):.1f} clips "
                f"per window on average: {_count(self.windows_per_step, 'window')} per step, {self.windows_per_epoch} "
                f"windows per epoch (packing laid out {self.windows})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def clips_per_step(t: TrainingConfig, world_size: int) -> int:
    """Clips per optimizer step over all devices that the batch settings ask for (counted as unpacked)."""
    if t.batch_size == AUTO:
        return int(t.effective_batch)
    micro = int(t.batch_size)
    accum = int(t.grad_accum) if t.grad_accum != AUTO else max(1, round(t.effective_batch / (micro * world_size)))
    return micro * accum * world_size


def count_in_clips(t: TrainingConfig, clips: int, windows: int, world_size: int) -> tuple[TrainingConfig, ClipCount]:
    """The batch settings in windows for a packed run that counts clips (training.batch_unit = "clips"), and the
    count. An explicit micro-batch keeps its accumulation: the micro-batch in windows is the fewest that make up
    the windows per step with it; an automatic one gets the windows per step as its effective batch."""
    world = max(1, world_size)
    per_step = clips_per_step(t, world)
    steps = max(1, math.ceil(clips / per_step))
    per_device = max(1, math.ceil(math.ceil(windows / steps) / world))
    if t.batch_size == AUTO:
        windowed = replace(t, effective_batch=per_device * world)
    else:
        accum = clips_per_step(t, world) // (int(t.batch_size) * world)
        micro = max(1, math.ceil(per_device / accum))
        per_device = micro * accum
        windowed = replace(t, batch_size=micro, grad_accum=accum)
    return windowed, ClipCount(clips=clips, windows=windows, clips_per_step=per_step, steps_per_epoch=steps,
                               windows_per_step=per_device * world)


def agree(choice: BatchChoice, smallest_micro: int, any_checkpointing: bool) -> BatchChoice:
    """The choice every rank uses: the smallest micro-batch any rank found, checkpointing if any rank needs it."""
    if smallest_micro == choice.micro_batch and any_checkpointing == choice.gradient_checkpointing:
        return choice
    per_device = choice.micro_batch * choice.grad_accum
    accum = per_device // smallest_micro if per_device % smallest_micro == 0 else choice.grad_accum
    return replace(choice, micro_batch=smallest_micro, grad_accum=accum, gradient_checkpointing=any_checkpointing,
                   eval_batch=min(choice.eval_batch, max(smallest_micro, 1) * 2),
                   reason=choice.reason + "; ranks agreed on the most careful choice")


# ------------------------------------------------------------------------------------------------------------
# The device side: probe shape, probe, memory figures, and the train stage's entry point


@dataclass(frozen=True)
class ProbeShape:
    """One training example as the probe builds it: a full window of n_mels x frames, label_tokens labels."""

    n_mels: int
    label_tokens: int
    frames: int = N_FRAMES


def has_prompts(cache, clip_ids) -> bool:
    """Whether any train example has a previous-text prompt (windows of long recordings after the first)."""
    return any(len(getattr(cache.get(cid, 0), "prompt", ())) for cid in clip_ids)


def longest_label(cache, clip_ids: Sequence[str]) -> int:
    """Tokens of the longest label among the clips (what the collator keeps: without <|startoftranscript|>)."""
    return max((len(cache.get(cid, 0).labels) - 1 for cid in clip_ids), default=1)


def make_probe(model, shape: ProbeShape, dtype: torch.dtype | None) -> Probe:
    """A probe on the model's CUDA device: forward + backward of `micro` random examples of `shape` under autocast
    to `dtype` (None: float32), with every trainable parameter's gradient already allocated (as from the
    previous micro-batch of an accumulation). Returns the peak allocated bytes, None when out of memory."""
    from whisper_tune.train.model import set_checkpointing

    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def probe(micro: int, checkpointing: bool) -> int | None:
        set_checkpointing(model, checkpointing)
        model.train()
        for p in trainable:
            p.grad = torch.zeros_like(p)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            feats = torch.randn(micro, shape.n_mels, shape.frames, device=device)
            labels = torch.randint(0, vocab, (micro, shape.label_tokens), device=device)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(input_features=feats, labels=labels).loss
            loss.backward()
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            return None
        except RuntimeError as err:     # cuBLAS / cuDNN report running out of memory in their own words
            if "out of memory" in str(err).lower() or "ALLOC_FAILED" in str(err):
                return None
            raise
        finally:
            feats = labels = loss = None  # noqa: F841 - free the probe's tensors before the next one
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    return probe


def device_memory(model, device: torch.device) -> DeviceMemory:
    """Free memory on the device plus what this process's allocator already holds; AdamW's state on top."""
    free, _total = torch.cuda.mem_get_info(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return DeviceMemory(usable=int(free) + int(torch.cuda.memory_reserved(device)),
                        optimizer=ADAM_STATE_BYTES * trainable)


def world_size() -> int:
    """Processes in this run, as torchrun and accelerate launch announce them."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def training_device() -> torch.device:
    """This rank's device; starts the process group under torchrun / accelerate launch (as Trainer would)."""
    from accelerate import PartialState

    return PartialState().device


def _agree_across_ranks(choice: BatchChoice) -> BatchChoice:
    import torch.distributed as dist

    if choice.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return choice
    both = torch.tensor([choice.micro_batch, -int(choice.gradient_checkpointing)], device="cuda")
    dist.all_reduce(both, op=dist.ReduceOp.MIN)
    return agree(choice, int(both[0]), bool(-int(both[1])))


def plan_batch(t: TrainingConfig, model, cache, clip_ids: Sequence[str], precision,
               shape: ProbeShape | None = None) -> BatchChoice:
    """The train stage's batch choice (probing on CUDA), applied to the model's checkpointing. `shape` overrides
    the probe's example (packed windows); by default a 30 s window with the longest label of clip_ids."""
    from whisper_tune.train.model import set_checkpointing

    req = BatchRequest.of(t, world_size())
    cuda = torch.cuda.is_available() and not precision.use_cpu
    needs_probe = cuda and (req.micro_batch is None or req.checkpointing is None)
    if not needs_probe:
        choice = choose_batch(req)
        if cuda and req.eval_batch is None:
            choice = replace(choice, eval_batch=min(EVAL_BATCH_CAP, choice.micro_batch * 2))
    else:
        device = training_device()
        model.to(device)
        if shape is None:
            labels = min(longest_label(cache, clip_ids), int(model.config.max_target_positions))
            if t.pack or (t.prompt_prob > 0 and has_prompts(cache, clip_ids)):   # packed, prompted: the limit
                labels = int(model.config.max_target_positions)
            shape = ProbeShape(n_mels=int(model.config.num_mel_bins), label_tokens=labels)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.name)
        choice = choose_batch(req, device_memory(model, device), make_probe(model, shape, dtype))
        choice = _agree_across_ranks(choice)
    set_checkpointing(model, choice.gradient_checkpointing)
    return choice


def fast_path_args(cuda: bool, compile_model: bool) -> dict:
    """Seq2SeqTrainingArguments for the fast paths: fused AdamW on CUDA, torch.compile when asked. TF32 matmuls
    are switched on here on GPUs that have them (Ampere and later)."""
    args: dict = {"torch_compile": bool(compile_model)}
    if cuda:
        args["optim"] = "adamw_torch_fused"
        if torch.cuda.get_device_capability()[0] >= 8:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    return args
