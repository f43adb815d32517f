"""Settings: typed, frozen dataclasses loaded from one TOML file; CLI flags override the file.

    cfg = load_config(Path("whisper-tune.toml"), {"training.epochs": 3})

Every section and key is checked: an unknown key is a ConfigError naming the key and the file.
Defaults are the public fine-tuning guide's values.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .constants import DEFAULT_MODEL
from .errors import ConfigError
from .fileio import atomic_write_text


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


@dataclass(frozen=True)
class FeaturesConfig:
    text_normalization: str = "basic"  # "basic": lowercase, drop punctuation, keep letters/digits of every script; "none"
    shard_max_mb: float = 64.0         # a shard is closed once it reaches this size
    jobs: int = 0                      # worker processes; 0 = all cores
    batch_clips: int = 32              # clips per worker task


@dataclass(frozen=True)
class TrainingConfig:
    epochs: float = 5.0
    batch_size: int = 4
    eval_batch_size: int = 4
    grad_accum: int = 16
    learning_rate: float = 1e-5
    warmup: float = 0.05               # < 1: share of total steps; >= 1: a step count
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.01
    early_stopping_patience: int = 3   # evaluations without WER improvement; 0 = off
    generation_max_length: int = 128
    max_steps: int = -1                # > 0 overrides epochs
    precision: str = "auto"            # auto, bf16, fp16, fp32
    seed: int = 42
    gradient_checkpointing: bool = True
    freeze_encoder: bool = False
    logging_steps: int = 50
    save_total_limit: int = 2
    dataloader_workers: int = 1
    eval_max_clips: int = 0            # 0 = whole test split at each evaluation
    pack: bool = False                 # pack several clips into each 30 s window (train/packing.py)
    timestamp_prob: float = 0.2        # share of training windows labelled with timestamps (distil-whisper's 0.2)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


_SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "audio": AudioConfig,
    "augment": AugmentConfig,
    "features": FeaturesConfig,
    "training": TrainingConfig,
}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert one value against its annotation (str, int, float, bool, tuple of dicts)."""
    hint = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, annotation)
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


def _validate(cfg: Config, source: str) -> None:
    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r} is not allowed; expected {expected}")

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
    if d.min_seconds < 0 or d.max_seconds <= d.min_seconds:
        raise bad("data.max_seconds", d.max_seconds, f"more than data.min_seconds ({d.min_seconds})")
    if a.variants < 1:
        raise bad("augment.variants", a.variants, "1 or more (variant 0 is the clean clip)")
    if f.text_normalization not in ("basic", "none"):
        raise bad("features.text_normalization", f.text_normalization, '"basic" or "none"')
    if t.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise bad("training.precision", t.precision, "auto, bf16, fp16 or fp32")
    if t.batch_size < 1 or t.eval_batch_size < 1 or t.grad_accum < 1:
        raise bad("training.batch_size/eval_batch_size/grad_accum", (t.batch_size, t.eval_batch_size, t.grad_accum), "1 or more")
    if t.learning_rate <= 0:
        raise bad("training.learning_rate", t.learning_rate, "a positive number, e.g. 1e-5")
    if not 0.0 <= t.timestamp_prob <= 1.0:
        raise bad("training.timestamp_prob", t.timestamp_prob, "a probability in [0, 1], e.g. 0.2 (--timestamp-prob)")
    if cfg.model.task not in ("transcribe", "translate"):
        raise bad("model.task", cfg.model.task, '"transcribe" or "translate"')


def _build(raw: Mapping[str, Any], source: str) -> Config:
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
            values[key] = _coerce(value, _simple_hint(hints[key]), f"{source}: {name}.{key}")
        sections[name] = cls(**values)
    cfg = Config(**sections)
    _validate(cfg, source)
    return cfg


def _simple_hint(hint: Any) -> Any:
    if hint in (str, int, float, bool):
        return hint
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if isinstance(hint, types.UnionType):
        return str
    return hint


def load_config(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the TOML file (or defaults when path is None), then apply overrides like {"training.epochs": 3}.

    Overrides whose value is None are ignored (an unset CLI flag)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass --config with an existing TOML file "
                              "(see whisper-tune.example.toml)")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8-sig"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{p} is not valid TOML: {err}") from None
    raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        raw[section][key] = value
    return _build(raw, source)


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
