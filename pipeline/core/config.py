"""Settings: typed, frozen dataclasses loaded from one TOML file; CLI flags override the file.

    cfg = load_config(Path("whisper-tune.toml"), {"training.epochs": 3})

Every section and key is checked: an unknown key is a ConfigError naming the key and the file.
Defaults are the public fine-tuning guide's values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from whisper_tune.pipeline.core.constants import (BATCH_UNITS, CHUNK_SECONDS, DEFAULT_MODEL, LR_SCHEDULERS,
                                                  MAX_LABEL_TOKENS, PRECISIONS)
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.fileio import atomic_write_text

AUTO = "auto"                          # a setting the train stage picks from the device (train/batching.py)


@dataclass(frozen=True)
class ModelConfig:
    name: str = DEFAULT_MODEL          # hub id, local transformers folder, CTranslate2 folder, or "bundled:tiny.en"
    language: str = ""                 # "" = English (.en models; tokens.DEFAULT_LANGUAGE otherwise); e.g. "arabic"
    task: str = "transcribe"           # or "translate"


@dataclass(frozen=True)
class DataConfig:
    audio_column: str = ""             # "" = auto: audios, audio, path, file
    text_column: str = ""              # "" = auto: transcription, text, sentence
    test_share: float = 0.1            # share of clips in the test split (stable hash of the path)
    validation_share: float = 0.0      # share in the validation split (model selection in training); 0 = none
    seed: int = 42                     # split seed
    min_text_chars: int = 5            # transcripts must be LONGER than this many characters
    min_seconds: float = 1.0           # clips must be longer than this
    max_seconds: float = 30.0          # ... and shorter than this (Whisper's window)
    allow_outside: bool = False        # accept paths that leave the CSV's folder
    group_column: str = ""             # CSV column of speaker / session ids: each group goes to one split; "" = none
    subtitles_column: str = ""         # "" = auto: subtitles, srt, vtt, captions (a CSV of recordings + SRT/VTT)
    window_seconds: float = 30.0       # longest window cut from a recording along its cues (Whisper's 30 s input)
    dataset_split: str = ""            # split of a `datasets` folder or hub id (--dataset); "" = its only one or "train"
    skip_suspect: bool = False         # train leaves out the rows WORK/audit.parquet flags (whisper-tune audit)


@dataclass(frozen=True)
class AudioConfig:
    trim_top_db: float = 30.0          # leading/trailing silence below peak - top_db is trimmed; 0 = no trim
    peak_normalize: bool = True        # scale each clip so its peak is 1.0


def _default_transforms() -> tuple[dict[str, Any], ...]:
    return (
        {"name": "AddGaussianNoise", "p": 0.2, "min_amplitude": 0.0005, "max_amplitude": 0.003},
        {"name": "Gain", "p": 0.2, "min_gain_db": -2.0, "max_gain_db": 2.0},
    )


@dataclass(frozen=True)
class AugmentConfig:
    variants: int = 4                  # feature variants per clip; variant 0 is always the clean clip
    seed: int = 42                     # base seed; each variant's seed derives from (seed, clip id, variant)
    # audiomentations transforms, applied in order: {"name": <class name>, "p": prob, **kwargs}
    transforms: tuple[dict[str, Any], ...] = field(default_factory=_default_transforms)
    no_speech_share: float = 0.3       # share of training examples (in the batch's unit) that are non-speech, empty transcript


@dataclass(frozen=True)
class FeaturesConfig:
    text_normalization: str = "basic"  # "basic": lowercase, drop punctuation, keep letters/digits of every script; "none"
    shard_max_mb: float = 64.0         # a shard is closed once it reaches this size
    jobs: int = 0                      # worker processes; 0 = all cores
    batch_clips: int = 32              # clips per worker task
    scheduler: str = ""                # a Dask scheduler's address (tcp://host:8786); "" = $DASK_SCHEDULER_ADDRESS or local


# Whisper's linear projections a LoRA adapter may wrap: attention (self and cross) and the feed-forward block.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
LORA_DEFAULT_TARGETS = ",".join(LORA_MODULES)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: float = 5.0
    batch_size: int | str = AUTO       # micro-batch per device: "auto" (fits the GPU; 4 on the CPU) or a number
    eval_batch_size: int | str = AUTO  # generation batch at evaluation: "auto" or a number
    grad_accum: int | str = AUTO       # "auto": effective_batch / (batch_size x devices); a number needs a batch_size
    effective_batch: int = 64          # clips per optimizer step over all devices (the guide's 4 x 16)
    learning_rate: float = 1e-5
    warmup: float = 0.05               # < 1: share of total steps; >= 1: a step count
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.01
    early_stopping_patience: int = 3   # evaluations without WER improvement; 0 = off
    generation_max_length: int = 128
    max_steps: int = -1                # > 0 overrides epochs
    precision: str = "auto"            # auto, bf16, fp16, fp32
    seed: int = 42
    gradient_checkpointing: bool | str = AUTO   # "auto": off when the micro-batch fits the GPU without it
    compile: bool = False              # torch.compile the model (unmeasured here)
    freeze_encoder: bool = False
    logging_steps: int = 50
    save_total_limit: int = 2
    dataloader_workers: int = 1
    eval_max_clips: int = 0            # 0 = whole test split at each evaluation
    lora_rank: int = 0                 # > 0: train LoRA adapters of this rank on a frozen base (peft); 0 = off
    lora_alpha: float = 0.0            # LoRA scaling numerator; 0 = twice the rank
    lora_dropout: float = 0.05         # dropout on the LoRA path
    lora_targets: str = LORA_DEFAULT_TARGETS  # comma-separated projections that get adapters
    pack: bool = False                 # pack several clips into each 30 s window (train/packing.py)
    batch_unit: str = "clips"          # packed: batch_size and effective_batch count "clips" (as unpacked) or "windows"
    timestamp_prob: float = 0.2        # share of training windows labelled with timestamps (distil-whisper's 0.2)
    prompt_prob: float = 0.2           # share of windows of recordings given their previous text as a prompt
                                       # (<|startofprev|>, masked from the loss; distil-whisper's 0.2); clips have none
    spec_augment: bool = False         # SpecAugment masks on the encoder input while training (transformers' own)
    mask_time_prob: float = 0.05       # with spec_augment: share of frames masked in spans of 10 (transformers' default)
    mask_feature_prob: float = 0.0     # with spec_augment: share of mel bins masked in spans of 10 (transformers' default)
    general_csv: str = ""              # CSV of everyday sentences scored each epoch (forgetting); "" = the demo's, "none" = off
    forgetting_warn: float = 2.0       # warn when the general set's WER rises more than this many points over the base's


BACKENDS = ("auto", "transformers", "ctranslate2")
WHISPER_TEMPERATURES = "0.0,0.2,0.4,0.6,0.8,1.0"


@dataclass(frozen=True)
class DecodeConfig:
    """How `evaluate` and `transcribe` decode (training's own evaluation keeps the trainer's greedy generation)."""
    backend: str = "auto"              # auto (CTranslate2 when installed and the model converts), transformers, ctranslate2
    beam_size: int = 1                 # 1 = greedy
    guards: bool = True                # Whisper's hallucination guards below; false = plain decoding
    temperature: str = WHISPER_TEMPERATURES   # fallback temperatures, tried in order while a guard rejects the text
    compression_ratio_threshold: float = 2.4  # text whose gzip compression ratio is above this is retried (0 = off)
    logprob_threshold: float = -1.0    # text whose mean token log-probability is below this is retried
    no_speech_threshold: float = 0.6   # no-speech probability above this (with a low log-probability) = no text; 1 = off
    prompt: str = ""                   # initial prompt (vocabulary, spelling) before the first window
    condition_on_previous_text: bool = False  # long-form: each window sees the text of the one before
    word_timestamps: bool = False      # word-level times (JSONL "words"; word-level subtitles)
    vad: bool = False                  # skip non-speech with faster-whisper's bundled Silero VAD (long recordings)


def temperatures(text: str) -> tuple[float, ...]:
    """decode.temperature ("0.0,0.2,...") as a tuple of floats; ValueError for anything else."""
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(text)
    return values


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


_SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "audio": AudioConfig,
    "augment": AugmentConfig,
    "features": FeaturesConfig,
    "training": TrainingConfig,
    "decode": DecodeConfig,
}


_SECTION_NAMES = {cls: name for name, cls in _SECTION_TYPES.items()}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert one value against its annotation (str, int, float, bool, tuple of dicts)."""
    hint = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, annotation)
    if isinstance(hint, tuple):        # (AUTO, int) or (AUTO, bool): "auto" or a value
        return _auto_or(value, hint[1], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    # tuple[dict[str, Any], ...]: the augmentation chain
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where}: expected a list of tables like {{name = \"Gain\", p = 0.2}}, got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}[{i}]: every transform needs a name, e.g. name = \"AddGaussianNoise\"")
    return tuple(dict(v) for v in value)


def _auto_or(value: Any, inner: type, where: str) -> Any:
    if isinstance(value, str) and value.strip().lower() in (AUTO, "on", "off"):
        word = value.strip().lower()
        if word == AUTO or inner is bool:
            return AUTO if word == AUTO else word == "on"
    try:
        return _coerce(value, inner, where)
    except ConfigError:
        what = "a whole number" if inner is int else "on or off"
        raise ConfigError(f"{where}: expected \"auto\" or {what}, got {value!r}") from None


def _check_batch_settings(t: TrainingConfig, bad: Any) -> None:
    for key in ("batch_size", "eval_batch_size", "grad_accum", "effective_batch"):
        value = getattr(t, key)
        if value != AUTO and value < 1:
            raise bad(f"training.{key}", value, '"auto" or 1 or more' if key != "effective_batch" else "1 or more")
    if t.batch_size == AUTO and t.grad_accum != AUTO:
        raise bad("training.grad_accum", t.grad_accum, '"auto" while training.batch_size is "auto" (the '
                  "accumulation is derived from training.effective_batch, --effective-batch); or give an explicit "
                  "--batch-size with it")


def _validate(cfg: Config, source: str, origin: Mapping[str, str] | None = None) -> None:
    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{(origin or {}).get(key, source)}: {key} = {value!r} is not allowed; expected {expected}")

    d, t, a, f = cfg.data, cfg.training, cfg.augment, cfg.features
    if not 0.0 <= d.test_share < 1.0:
        raise bad("data.test_share", d.test_share, "a share in [0, 1), e.g. 0.1")
    if not 0.0 <= d.validation_share < 1.0 - d.test_share:
        raise bad("data.validation_share", d.validation_share,
                  f"a share in [0, {1.0 - d.test_share:g}) (1 - data.test_share), e.g. 0.05 or 0 for none")
    if d.group_column != d.group_column.strip() or d.group_column.strip().lower() == "split":
        raise bad("data.group_column", d.group_column,
                  "the name of a CSV column of speaker or session ids (not 'split', no surrounding spaces), "
                  "e.g. \"speaker\", or \"\" for none")
    if d.subtitles_column != d.subtitles_column.strip():
        raise bad("data.subtitles_column", d.subtitles_column, "a CSV column name without surrounding spaces, "
                  "or \"\" for the automatic choice")
    if not 1.0 <= d.window_seconds <= CHUNK_SECONDS:
        raise bad("data.window_seconds", d.window_seconds, f"1 to {CHUNK_SECONDS:g} seconds (Whisper reads "
                  f"{CHUNK_SECONDS:g} s at most; --window-seconds)")
    if d.min_seconds < 0 or d.max_seconds <= d.min_seconds:
        raise bad("data.max_seconds", d.max_seconds, f"more than data.min_seconds ({d.min_seconds})")
    if a.variants < 1:
        raise bad("augment.variants", a.variants, "1 or more (variant 0 is the clean clip)")
    if f.text_normalization not in ("basic", "none"):
        raise bad("features.text_normalization", f.text_normalization, '"basic" or "none"')
    if f.scheduler and not re.fullmatch(r"([a-z0-9+]+://)?[^\s/:]+(:[0-9]+)?", f.scheduler):
        raise bad("features.scheduler", f.scheduler, 'a Dask scheduler address such as "tcp://10.0.0.5:8786" '
                  '(--scheduler), or "" to run on this machine')
    if t.precision not in PRECISIONS:
        raise bad("training.precision", t.precision, f"{', '.join(PRECISIONS)} (--precision)")
    if t.lr_scheduler not in LR_SCHEDULERS:
        raise bad("training.lr_scheduler", t.lr_scheduler, f"one of {', '.join(LR_SCHEDULERS)} (--lr-scheduler)")
    _check_batch_settings(t, bad)
    if t.batch_unit not in BATCH_UNITS:
        raise bad("training.batch_unit", t.batch_unit, f"{' or '.join(BATCH_UNITS)} (--batch-unit)")
    if t.learning_rate <= 0:
        raise bad("training.learning_rate", t.learning_rate, "a positive number, e.g. 1e-5")
    if not 0.0 <= t.timestamp_prob <= 1.0:
        raise bad("training.timestamp_prob", t.timestamp_prob, "a probability in [0, 1], e.g. 0.2 (--timestamp-prob)")
    if not 0.0 <= t.prompt_prob <= 1.0:
        raise bad("training.prompt_prob", t.prompt_prob, "a probability in [0, 1], e.g. 0.2 (--prompt-prob)")
    _check_spec_augment(t, bad)
    if cfg.model.task not in ("transcribe", "translate"):
        raise bad("model.task", cfg.model.task, '"transcribe" or "translate"')
    _check_language(cfg.model.language, bad)
    for key, value, expected in _range_problems(cfg):
        raise bad(key, value, expected)
    _validate_lora(t, bad)
    _validate_decode(cfg.decode, bad)


def _validate_decode(c: DecodeConfig, bad) -> None:
    if c.backend not in BACKENDS:
        raise bad("decode.backend", c.backend, "auto, transformers or ctranslate2 (--backend)")
    if not 1 <= c.beam_size <= 32:
        raise bad("decode.beam_size", c.beam_size, "1 (greedy) to 32 beams (--beam-size)")
    try:
        temperatures(c.temperature)
    except ValueError:
        raise bad("decode.temperature", c.temperature, 'comma-separated temperatures of 0 or more, e.g. '
                  f'"{WHISPER_TEMPERATURES}" or "0" for no fallback (--temperature)') from None
    checks = [
        ("compression_ratio_threshold", c.compression_ratio_threshold >= 0,
         "0 (off) or a ratio such as 2.4 (--compression-ratio-threshold)"),
        ("logprob_threshold", c.logprob_threshold <= 0, "a log-probability of 0 or below, e.g. -1.0 (--logprob-threshold)"),
        ("no_speech_threshold", 0 <= c.no_speech_threshold <= 1,
         "a probability in [0, 1], e.g. 0.6; 1 = off (--no-speech-threshold)"),
    ]
    for key, ok, expected in checks:
        value = getattr(c, key)
        if not ok or not math.isfinite(value):
            raise bad(f"decode.{key}", value, expected)


MAX_SEED = 2**32 - 1              # numpy and torch seeds are 32-bit


def _check_spec_augment(t: TrainingConfig, bad: Any) -> None:
    """SpecAugment's mask shares are probabilities; turned on, it must mask something."""
    for key in ("mask_time_prob", "mask_feature_prob"):
        value = getattr(t, key)
        if not 0.0 <= value < 1.0:
            flag = key.replace("_", "-")
            raise bad(f"training.{key}", value, f"a share in [0, 1), e.g. 0.05 (--{flag})")
    if t.spec_augment and t.mask_time_prob == 0 and t.mask_feature_prob == 0:
        raise bad("training.mask_time_prob", t.mask_time_prob, "above 0 (or training.mask_feature_prob above 0) "
                  "while training.spec_augment is on; or turn it off with --no-spec-augment")


def _check_language(language: str, bad: Any) -> None:
    """model.language: a Whisper language name or code (English needs no lookup, so loads stay quick)."""
    from whisper_tune.pipeline.core.errors import ModelError
    from whisper_tune.pipeline.core.tokens import is_english, language_code

    if is_english(language):
        return
    try:
        language_code(language)
    except ModelError:
        raise bad("model.language", language, 'a Whisper language name like "french" or a code like "fr" '
                  '("" for English)') from None


def _range_problems(cfg: Config) -> list[tuple[str, Any, str]]:
    """Every numeric setting outside its meaningful range: (key, value, what is expected), flags and TOML alike."""
    d, a, g, f, t = cfg.data, cfg.audio, cfg.augment, cfg.features, cfg.training
    checks = [
        ("data.seed", d.seed, 0 <= d.seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}"),
        ("data.min_text_chars", d.min_text_chars, d.min_text_chars >= 0, "0 or more"),
        ("audio.trim_top_db", a.trim_top_db, a.trim_top_db >= 0, "0 (no trim) or a positive dB value, e.g. 30"),
        ("augment.seed", g.seed, 0 <= g.seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}"),
        ("features.shard_max_mb", f.shard_max_mb, f.shard_max_mb > 0, "a positive size in MB, e.g. 64"),
        ("features.jobs", f.jobs, f.jobs >= 0, "0 (all cores) or a positive number of workers (--jobs)"),
        ("features.batch_clips", f.batch_clips, f.batch_clips >= 1, "1 or more clips per worker task"),
        ("training.epochs", t.epochs, t.epochs > 0, "a positive number of epochs, e.g. 5 (--epochs)"),
        ("training.warmup", t.warmup, t.warmup >= 0, "0 or more: a share of the steps below 1, else a step count"
                                                     " (--warmup)"),
        ("training.weight_decay", t.weight_decay, t.weight_decay >= 0, "0 or more, e.g. 0.01 (--weight-decay)"),
        ("training.early_stopping_patience", t.early_stopping_patience, t.early_stopping_patience >= 0,
         "0 (off) or more evaluations (--early-stopping-patience)"),
        ("training.generation_max_length", t.generation_max_length,
         1 <= t.generation_max_length <= MAX_LABEL_TOKENS,
         f"1 to {MAX_LABEL_TOKENS} tokens (--generation-max-length)"),
        ("training.max_steps", t.max_steps, t.max_steps == -1 or t.max_steps >= 1,
         "-1 (train for --epochs) or a positive step count (--max-steps)"),
        ("training.seed", t.seed, 0 <= t.seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED} (--seed)"),
        ("training.logging_steps", t.logging_steps, t.logging_steps >= 1, "1 or more steps (--logging-steps)"),
        ("training.save_total_limit", t.save_total_limit, t.save_total_limit >= 1,
         "1 or more checkpoints kept (--save-total-limit)"),
        ("training.dataloader_workers", t.dataloader_workers, t.dataloader_workers >= 0,
         "0 (load in the training process) or more worker processes (--dataloader-workers)"),
        ("training.eval_max_clips", t.eval_max_clips, t.eval_max_clips >= 0, "0 (all) or more clips (--eval-max-clips)"),
        ("augment.no_speech_share", g.no_speech_share, 0 <= g.no_speech_share <= 0.5,
         "0 (no non-speech windows) up to 0.5, e.g. 0.3 (--no-speech-share)"),
        ("training.forgetting_warn", t.forgetting_warn, t.forgetting_warn >= 0,
         "0 or more WER points, e.g. 2.0 (--forgetting-warn)"),
    ]
    for section in (d, a, g, f, t):                     # nan and inf pass every comparison above unnoticed
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                key = f"{_SECTION_NAMES[type(section)]}.{item.name}"
                checks.insert(0, (key, value, False, "a finite number"))
    return [(key, value, expected) for key, value, ok, expected in checks if not ok]


def check_output_folder(path: Path | str, flag: str) -> Path:
    """A folder a stage writes into: it may exist as a folder or not at all, never as a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is an existing file; expected a folder (a new one or an existing one): "
                          f"choose another {flag}")
    return p


def _validate_lora(t: "TrainingConfig", bad) -> None:
    if t.lora_rank < 0:
        raise bad("training.lora_rank", t.lora_rank, "0 (off) or a rank like 8, 16, 32 (--lora-rank)")
    if t.lora_alpha < 0:
        raise bad("training.lora_alpha", t.lora_alpha, "0 (twice the rank) or a positive number (--lora-alpha)")
    if not 0.0 <= t.lora_dropout < 1.0:
        raise bad("training.lora_dropout", t.lora_dropout, "a probability in [0, 1), e.g. 0.05 (--lora-dropout)")
    names = lora_target_names(t.lora_targets)
    unknown = [n for n in names if n not in LORA_MODULES]
    if unknown or not names:
        raise bad("training.lora_targets", t.lora_targets,
                  f"a comma-separated subset of {LORA_DEFAULT_TARGETS} (--lora-targets)")


def lora_target_names(text: str) -> tuple[str, ...]:
    """training.lora_targets as a tuple of module names ("q_proj, v_proj" -> ("q_proj", "v_proj"))."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _build(raw: Mapping[str, Any], source: str, origin: Mapping[str, str] | None = None) -> Config:
    """The Config of `raw`; errors name `source` (the file, or "defaults"), or the flag that set the key
    (`origin`: "training.max_steps" -> "--max-steps")."""
    origin = origin or {}
    sections: dict[str, Any] = {}
    for name, section in raw.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(
                f"{source}: unknown section [{name}]; known sections are {', '.join(_SECTION_TYPES)}"
            )
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of settings, got {section!r}")
        cls = _SECTION_TYPES[name]
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in section.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key '{name}.{key}'; known keys in [{name}] are {', '.join(sorted(known))}"
                )
            values[key] = _coerce(value, _simple_hint(hints[key]), f"{origin.get(f'{name}.{key}', source)}: {name}.{key}")
        sections[name] = cls(**values)
    cfg = Config(**sections)
    _validate(cfg, source, origin)
    return cfg


def _simple_hint(hint: Any) -> Any:
    if hint in (str, int, float, bool):
        return hint
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if isinstance(hint, types.UnionType):
        members = set(typing.get_args(hint))
        for inner in (bool, int):
            if members == {inner, str}:
                return (AUTO, inner)
        return str
    return hint


def load_config(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None,
                flags: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (or defaults when path is None), then apply overrides like {"training.epochs": 3}.

    Overrides whose value is None are ignored (an unset CLI flag). An error in a value a flag set names that flag
    (`flags` maps keys to them: {"training.max_steps": "--max-steps"}); any other names the file or "defaults"."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder; pass --config with a TOML file (such as "
                              f"{p / 'whisper-tune.toml'}; see whisper-tune.example.toml)")
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass --config with an existing TOML file "
                              "(see whisper-tune.example.toml)")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8-sig"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{p} is not valid TOML: {err}") from None
    raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    origin: dict[str, str] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if dotted in (flags or {}):
            origin[dotted] = flags[dotted]
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        raw[section][key] = value
    return _build(raw, source, origin)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as TOML (atomically), so a run records exactly what it used."""
    lines: list[str] = []
    data = cfg.to_dict()
    for section, values in data.items():
        lines.append(f"[{section}]")
        arrays = []
        for key, value in values.items():
            if isinstance(value, list):
                arrays.append((key, value))
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        for key, items in arrays:
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
                lines.append("")
    atomic_write_text(path, "\n".join(lines))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
