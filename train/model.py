"""The model to fine-tune, set up as the guide does (with its bugs fixed), and the numeric precision to train in.

    precision = choose_precision("auto")            # bf16 / fp16 / fp32 from the hardware
    model = load_model(resolved, language="", task="transcribe", gradient_checkpointing=True,
                       spec_augment=SpecAugment.of(cfg.training))

Language and task go on the generation config (not forced_decoder_ids, which transformers no longer honours);
suppress tokens are cleared as the guide does; the KV cache is off while training. SpecAugment is transformers'
own for Whisper (`apply_spec_augment`, `mask_time_prob`, `mask_feature_prob` on the model config): the model
masks its input features in forward() while training only, so evaluation and generate() see them unmasked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from whisper_tune.pipeline.core.errors import ConfigError, ModelError, first_line
from whisper_tune.pipeline.models import is_multilingual
from whisper_tune.pipeline.core.tokens import DEFAULT_LANGUAGE, is_english



@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment settings for the model config (training.spec_augment, mask_time_prob, mask_feature_prob)."""

    on: bool = False
    mask_time_prob: float = 0.05       # share of frames masked (spans of the config's mask_time_length, 10)
    mask_feature_prob: float = 0.0     # share of mel bins masked (spans of mask_feature_length, 10)

    @staticmethod
    def of(training) -> "SpecAugment":
        return SpecAugment(training.spec_augment, training.mask_time_prob, training.mask_feature_prob)

    def describe(self) -> str:
        if not self.on:
            return "SpecAugment off"
        return (f"SpecAugment on while training: {self.mask_time_prob:g} of the frames and "
                f"{self.mask_feature_prob:g} of the mel bins masked (evaluation unmasked)")


def set_spec_augment(net, spec: SpecAugment) -> None:
    """Write the settings onto the model config, which Whisper's forward() reads (off: apply_spec_augment false,
    whatever the checkpoint said)."""
    net.config.apply_spec_augment = spec.on
    if spec.on:
        net.config.mask_time_prob = spec.mask_time_prob
        net.config.mask_feature_prob = spec.mask_feature_prob


@dataclass(frozen=True)
class Precision:
    name: str        # "bf16", "fp16" or "fp32"
    use_cpu: bool    # train on the CPU even if an accelerator is visible (transformers needs it for CPU bf16)
    reason: str      # one line for the log

    def training_args(self) -> dict[str, bool]:
        args = {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}
        if self.use_cpu:
            args["use_cpu"] = True
        return args


def cpu_supports_bf16() -> bool:
    """True on x86 CPUs with native bf16 math (AVX512-BF16 or AMX); False where unknown (then fp32 is safer)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:  # pragma: no cover - exotic builds
            continue
    return False


def choose_precision(requested: str = "auto", *, cuda: bool | None = None, cuda_bf16: bool | None = None,
                     cpu_bf16: bool | None = None, mps: bool | None = None) -> Precision:
    """Pick the training precision. `requested` is auto, bf16, fp16 or fp32 (--precision).

    auto: bf16 on GPUs that support it, otherwise fp16 on CUDA, bf16 on CPUs with native bf16, otherwise fp32.
    Without CUDA (and without Apple's MPS) training is marked use_cpu, which transformers needs both for bf16 on
    the CPU and for DDP over gloo on CPUs. The keyword probes default to the real hardware; tests pass them in.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda_bf16 is None:
        cuda_bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    if mps is None:
        mps = (not cuda) and torch.backends.mps.is_available()
    if cpu_bf16 is None:
        cpu_bf16 = (not cuda) and cpu_supports_bf16()
    on_cpu = not cuda and not mps

    if requested == "fp32":
        return Precision("fp32", on_cpu, "fp32 (forced by --precision)")
    if requested == "fp16":
        if not cuda:
            raise ConfigError("--precision fp16 needs a CUDA GPU and none is visible; use --precision auto, "
                              "bf16 or fp32 on this machine")
        return Precision("fp16", False, "fp16 (forced by --precision)")
    if requested == "bf16":
        if cuda and not cuda_bf16:
            raise ConfigError("--precision bf16: this GPU has no bf16 support; use --precision fp16 or auto")
        return Precision("bf16", not cuda, "bf16 (forced by --precision)" + ("" if cuda else " on the CPU"))
    if cuda:
        if cuda_bf16:
            return Precision("bf16", False, "bf16 (the GPU supports it)")
        return Precision("fp16", False, "fp16 (the GPU has no bf16)")
    if cpu_bf16:
        return Precision("bf16", True, "bf16 (the CPU has native bf16)")
    return Precision("fp32", on_cpu, "fp32 (no CUDA GPU, and the CPU has no native bf16)")


def load_model(model: str, *, language: str = "", task: str = "transcribe", tokenizer=None,
               gradient_checkpointing: bool = True, freeze_encoder: bool = False,
               spec_augment: SpecAugment = SpecAugment()):
    """WhisperForConditionalGeneration from a resolved model (hub id or transformers folder), ready to fine-tune,
    with PyTorch's scaled-dot-product attention (SDPA: fused kernels on CUDA).

    `tokenizer` (the processor's) decides whether the vocabulary is multilingual; only then are language and
    task set on the generation config (tokens.DEFAULT_LANGUAGE when no language is given).
    """
    from transformers import WhisperForConditionalGeneration

    try:
        net = WhisperForConditionalGeneration.from_pretrained(model, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a Whisper model from {model}: {first_line(err)}") from None
    return prepare_model(net, model, language=language, task=task, tokenizer=tokenizer,
                         gradient_checkpointing=gradient_checkpointing, freeze_encoder=freeze_encoder,
                         spec_augment=spec_augment)


def prepare_model(net, model: str, *, language: str = "", task: str = "transcribe", tokenizer=None,
                  gradient_checkpointing: bool = True, freeze_encoder: bool = False,
                  spec_augment: SpecAugment = SpecAugment()):
    """Set up a loaded (or freshly built) Whisper for fine-tuning as the guide does; `model` names it in errors."""
    gen = net.generation_config
    gen.forced_decoder_ids = None
    gen.suppress_tokens = []
    multilingual = is_multilingual(tokenizer) if tokenizer is not None else bool(getattr(gen, "is_multilingual", False))
    if multilingual:
        gen.language = language or DEFAULT_LANGUAGE
        gen.task = task
    elif not is_english(language):
        raise ConfigError(f"model.language = {language!r}, but {model} is English-only; use a multilingual model "
                          "(e.g. openai/whisper-small) or leave language empty")
    if getattr(net.config, "forced_decoder_ids", None) is not None:
        net.config.forced_decoder_ids = None
    net.config.use_cache = False
    # Whisper's forward takes **kwargs but its loss ignores num_items_in_batch (a per-batch token mean). Left as
    # is, Trainer would treat that loss as already normalized by the token count: it would skip dividing by the
    # gradient-accumulation steps and multiply by the number of DDP processes, inflating gradients and the logged
    # loss by grad_accum x world_size. Declaring no loss kwargs restores the plain mean over micro-batches.
    net.accepts_loss_kwargs = False
    set_spec_augment(net, spec_augment)
    set_checkpointing(net, gradient_checkpointing)
    if freeze_encoder:
        net.freeze_encoder()
    return net


def set_checkpointing(net, on: bool) -> None:
    """Gradient (activation) checkpointing on or off: less activation memory for about a third more compute."""
    if on:
        enable = getattr(net, "activation_checkpointing_enable", None)
        if enable is not None:
            enable()
        else:  # transformers < 5
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(net, "activation_checkpointing_disable", None) is not None:
        net.activation_checkpointing_disable()
    else:  # transformers < 5
        net.gradient_checkpointing_disable()
