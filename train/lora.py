"""LoRA fine-tuning (training.lora_rank > 0): low-rank adapters on a frozen Whisper, built on peft.

    settings = lora_settings(cfg.training)               # None when training.lora_rank = 0
    model = add_adapters(load_model(...), settings)      # a peft PeftModel: only the adapters train
    ...                                                  # Seq2SeqTrainer saves and resumes adapter checkpoints
    save_model(trainer, output_dir)                      # OUTPUT_DIR: merged Whisper; OUTPUT_DIR/adapter: peft

The adapters wrap Whisper's attention projections (q_proj, k_proj, v_proj, out_proj of self- and
cross-attention) and the feed-forward block (fc1, fc2) of every encoder and decoder layer, or of the decoder
alone with --freeze-encoder. The convolutions, embeddings and layer norms stay frozen.

After training, OUTPUT_DIR holds the adapter merged into the base weights: a plain WhisperForConditionalGeneration
that evaluate, transcribe and export read unchanged. OUTPUT_DIR/adapter holds the adapter alone (a few MB), which
peft loads onto the same base: `PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(BASE),
"OUTPUT_DIR/adapter")`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_tune.pipeline.core.config import LORA_MODULES, TrainingConfig, lora_target_names
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.fileio import replace_folder

ADAPTER_DIR = "adapter"                      # OUTPUT_DIR/adapter: the peft adapter alone
ADAPTER_CONFIG = "adapter_config.json"       # what peft writes beside the adapter weights (also in checkpoints)
INSTALL_HINT = "pip install 'whisper-tune[lora]' (or pip install peft)"


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]
    decoder_only: bool          # --freeze-encoder: adapters in the decoder only
    seed: int = 42              # the adapters' random initialisation (training.seed)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def describe(self) -> str:
        where = "decoder" if self.decoder_only else "encoder and decoder"
        return (f"LoRA rank {self.rank} (alpha {self.alpha:g}, dropout {self.dropout:g}) on "
                f"{','.join(self.targets)} of the {where}")


def lora_settings(t: TrainingConfig) -> LoraSettings | None:
    """The LoRA settings of a run, or None when training.lora_rank is 0 (full fine-tuning)."""
    if t.lora_rank <= 0:
        return None
    return LoraSettings(rank=t.lora_rank, alpha=t.lora_alpha if t.lora_alpha > 0 else 2.0 * t.lora_rank,
                        dropout=t.lora_dropout, targets=lora_target_names(t.lora_targets),
                        decoder_only=t.freeze_encoder, seed=t.seed)


def require_peft(rank: int):
    """The peft module, or a one-line ConfigError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"--lora-rank {rank} needs the peft package, which is not installed; "
                          f"{INSTALL_HINT}, or train without --lora-rank") from None
    return peft


def target_pattern(targets: tuple[str, ...], decoder_only: bool) -> str:
    """A regular expression peft full-matches against module names, e.g. model.decoder.layers.3.self_attn.q_proj."""
    stacks = "decoder" if decoder_only else "(?:encoder|decoder)"
    return rf"model\.{stacks}\.layers\.\d+\.(?:(?:self_attn|encoder_attn)\.)?(?:{'|'.join(targets)})"


def add_adapters(model, settings: LoraSettings | None):
    """Wrap a WhisperForConditionalGeneration in a peft model whose adapters alone train; `model` when settings
    is None. Call after load_model (gradient checkpointing and language settings carry over)."""
    if settings is None:
        return model
    peft = require_peft(settings.rank)
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=target_pattern(settings.targets, settings.decoder_only), bias="none")
    import torch

    # the same seed gives the same initial adapters, whatever ran before in this process; Trainer reads
    # accepts_loss_kwargs (False, see whisper_tune.train.model.load_model) from the base under the wrapper
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return peft.get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; for a peft model the total is the base's plus the adapters'."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:            # tied weights (Whisper's output projection is the token embedding)
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def describe_trainable(model, settings: LoraSettings | None, freeze_encoder: bool = False) -> str:
    """One log line: what trains, and its share of the parameters."""
    trainable, total = count_parameters(model)
    what = (settings.describe() if settings is not None else
            "full fine-tuning of the decoder (encoder frozen)" if freeze_encoder else "full fine-tuning")
    return f"{what}: {trainable / 1e6:.2f} M of {total / 1e6:.2f} M parameters trainable ({100 * trainable / total:.2f} %)"


def trains_record(settings: LoraSettings | None, freeze_encoder: bool) -> dict[str, Any]:
    """What decides which parameters train, and so the shape of the optimizer state, keyed by the flag that sets
    it: recorded with every checkpoint (train/checkpoints.py write_marker) and compared by check_checkpoint."""
    record: dict[str, Any] = {"lora-rank": settings.rank if settings else 0, "freeze-encoder": bool(freeze_encoder)}
    if settings is not None:
        record.update({"lora-targets": ",".join(m for m in LORA_MODULES if m in settings.targets), "lora-alpha": float(settings.alpha),
                       "lora-dropout": float(settings.dropout)})
    return record


def _adapter_record(adapter_config: dict[str, Any]) -> dict[str, Any]:
    """trains_record's LoRA part as peft's adapter_config.json gives it (a checkpoint from before the record)."""
    record: dict[str, Any] = {"lora-rank": int(adapter_config.get("r", 0))}
    if isinstance(adapter_config.get("lora_alpha"), (int, float)):
        record["lora-alpha"] = float(adapter_config["lora_alpha"])
    if isinstance(adapter_config.get("lora_dropout"), (int, float)):
        record["lora-dropout"] = float(adapter_config["lora_dropout"])
    pattern = adapter_config.get("target_modules")
    if isinstance(pattern, str) and pattern.startswith(r"model\."):          # the pattern target_pattern wrote
        record["freeze-encoder"] = pattern.startswith(r"model\.decoder\.")
        record["lora-targets"] = ",".join(m for m in LORA_MODULES if m in pattern.rpartition("(?:")[2])
    return record


def _as_flag(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}"


def check_checkpoint(checkpoint: str | Path, settings: LoraSettings | None, freeze_encoder: bool = False) -> None:
    """--resume: the checkpoint must have been trained with the same settings of what trains as this run
    (LoRA or not, rank, targets, alpha, dropout, --freeze-encoder); else a ConfigError naming the flag."""
    from whisper_tune.train.checkpoints import recorded_trains

    adapter_config = Path(checkpoint) / ADAPTER_CONFIG
    if settings is None and adapter_config.is_file():
        raise ConfigError(f"--resume: {checkpoint} holds a LoRA adapter checkpoint, but this run has --lora-rank 0; "
                          f"pass the run's --lora-rank (see whisper-tune.toml in the output folder)")
    if settings is not None and not adapter_config.is_file():
        raise ConfigError(f"--resume: {checkpoint} holds full model weights, not a LoRA adapter; resume it without "
                          f"--lora-rank, or start the LoRA run in another --output-dir")
    saved = recorded_trains(Path(checkpoint)) or {}
    if settings is not None:
        import json

        try:
            peft_record = _adapter_record(json.loads(adapter_config.read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            peft_record = {}
        saved = {**peft_record, **saved}
        if saved.get("lora-rank") != settings.rank:
            raise ConfigError(f"--resume: {checkpoint} holds a rank-{saved.get('lora-rank')} adapter but --lora-rank "
                              f"is {settings.rank}; pass --lora-rank {saved.get('lora-rank')}")
    now = trains_record(settings, freeze_encoder)
    for flag in ("lora-targets", "freeze-encoder", "lora-alpha", "lora-dropout"):
        if flag in saved and flag in now and saved[flag] != now[flag]:
            raise ConfigError(f"--resume: {checkpoint} was trained with {_as_flag(flag, saved[flag])} but this run "
                              f"has {_as_flag(flag, now[flag])}, which trains other parameters than the saved "
                              f"optimizer state holds; pass {_as_flag(flag, saved[flag])}, or start the new setting "
                              "in another --output-dir")


def is_adapter_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_model(trainer, output_dir: Path) -> None:
    """Save the trained model to output_dir: as it is after full fine-tuning; after LoRA, the adapter to
    output_dir/adapter, then the adapter merged into the base weights to output_dir (the main process only)."""
    output_dir = Path(output_dir)
    model = trainer.model
    if not is_adapter_model(model):
        trainer.save_model(str(output_dir))
        return
    if not trainer.args.should_save:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    adapter, tmp = output_dir / ADAPTER_DIR, output_dir / f".{ADAPTER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    replace_folder(tmp, adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(output_dir))
