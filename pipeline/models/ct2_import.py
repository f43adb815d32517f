"""Import a CTranslate2 / faster-whisper Whisper folder into a transformers checkpoint.

A CTranslate2 folder holds `model.bin` (the weights), `config.json` (suppress ids, language ids, alignment heads)
and `tokenizer.json`. The weights are read by whisper_tune.pipeline.models.ct2_binary (the model.bin layout is documented there).

The import result is cached by a hash of the folder's content, so a folder is converted once per machine:
`$WHISPER_TUNE_CACHE/imported/<hash>` (default `~/.cache/whisper-tune/imported/<hash>`), written to a temporary
folder first and renamed into place when complete.

This module needs numpy, torch and transformers only (no audio libraries): the training machine uses it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from whisper_tune.pipeline.core.errors import ModelError
from whisper_tune.pipeline.core.fileio import atomic_write_json
from whisper_tune.pipeline.core.hashing import file_digest, stable_hex
from whisper_tune.pipeline.core.tokens import (EOT, NO_TIMESTAMPS, SOT, SPECIAL_TOKENS, START_OF_PREV, TASK_TOKENS, TIMESTAMP_STEP_S,
                      TRANSLATE, timestamp_token)
from whisper_tune.pipeline.models.ct2_binary import Ct2Model, read_model_bin
from whisper_tune.pipeline.models.folder import CT2_FILES, is_multilingual, optional_token_id, read_json, tokenizer_from_file

IMPORTER_VERSION = 2          # bump when the output of the importer changes (part of the cache key)
MARKER = "whisper-tune-import.json"
HASHED_FILES = ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json")
CACHE_ENV = "WHISPER_TUNE_CACHE"

NON_LANGUAGE_TOKENS = frozenset(SPECIAL_TOKENS)


# ---------------------------------------------------------------------------------------------- mapping to HF names

def _count_layers(model: Ct2Model, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in model.variables):
        n += 1
    return n


def _split_rows(array: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise ModelError(f"model.bin: {name} has {array.shape[0]} rows, not divisible into {parts} projections")
    return [part.copy() for part in np.split(array, parts, axis=0)]


def state_dict_from_ct2(model: Ct2Model) -> dict[str, np.ndarray]:
    """WhisperForConditionalGeneration state-dict arrays (float32) from a CTranslate2 WhisperSpec model."""
    if model.spec and model.spec != "WhisperSpec":
        raise ModelError(f"the CTranslate2 model is a {model.spec}, not a Whisper model (WhisperSpec)")
    f = model.float32
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = f(f"{ct2}/weight")
        if bias:
            sd[f"{hf}.bias"] = f(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        sd[f"{hf}.weight"] = f(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = f(f"{ct2}/beta")

    def fused(hf_prefix: str, ct2: str, names: tuple[str, ...]) -> None:
        weights = _split_rows(f(f"{ct2}/weight"), len(names), f"{ct2}/weight")
        biases = _split_rows(f(f"{ct2}/bias"), len(names), f"{ct2}/bias")
        for proj, w, b in zip(names, weights, biases):
            sd[f"{hf_prefix}.{proj}.weight"] = w
            if proj != "k_proj":  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                sd[f"{hf_prefix}.{proj}.bias"] = b

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"{enc}.{conv}", f"encoder/{conv}")
    sd[f"{enc}.embed_positions.weight"] = f("encoder/position_encodings/encodings")
    def self_attention(hf: str, ct: str) -> None:
        fused(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")

    def feed_forward(hf: str, ct: str) -> None:
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    for i in range(_count_layers(model, "encoder")):
        hf, ct = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        self_attention(hf, ct)
        feed_forward(hf, ct)
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = f("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = f("decoder/position_encodings/encodings")
    for i in range(_count_layers(model, "decoder")):
        hf, ct = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        self_attention(hf, ct)
        fused(f"{hf}.encoder_attn", f"{ct}/attention/linear_0", ("q_proj",))
        fused(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        feed_forward(hf, ct)
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    projection = "decoder/projection/weight"
    sd["proj_out.weight"] = f(projection) if model.has(projection) else sd[f"{dec}.embed_tokens.weight"].copy()
    return sd


@dataclass(frozen=True)
class Dimensions:
    n_mels: int
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tied_output: bool


def dimensions(model: Ct2Model, sd: Mapping[str, np.ndarray]) -> Dimensions:
    conv1 = sd["model.encoder.conv1.weight"]
    embed = sd["model.decoder.embed_tokens.weight"]
    enc_layers = _count_layers(model, "encoder")
    dec_layers = _count_layers(model, "decoder")
    if enc_layers == 0 or dec_layers == 0:
        raise ModelError("model.bin has no encoder or decoder layers; is this a CTranslate2 Whisper model?")
    tied = bool(np.array_equal(sd["proj_out.weight"], embed))
    return Dimensions(
        n_mels=int(conv1.shape[1]), vocab_size=int(embed.shape[0]), d_model=int(embed.shape[1]),
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_heads=model.scalar("encoder/num_heads"), decoder_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(sd["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(sd["model.decoder.embed_positions.weight"].shape[0]),
        tied_output=tied,
    )


# ------------------------------------------------------------------------------------- config, generation, processor

def _required(tokenizer, token: str, folder: Path) -> int:
    tid = optional_token_id(tokenizer, token)
    if tid is None:
        raise ModelError(f"{folder / 'tokenizer.json'} has no {token} token; expected a Whisper tokenizer")
    return tid


def language_ids(tokenizer, ct2_config: Mapping[str, Any]) -> dict[str, int]:
    """{"<|en|>": id, ...}: the config's lang_ids named through the tokenizer, else the tokenizer's language tokens."""
    ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    if not ids:
        sot = optional_token_id(tokenizer, SOT)
        end = optional_token_id(tokenizer, TRANSLATE)
        if sot is not None and end is not None:
            ids = list(range(sot + 1, end))
    out: dict[str, int] = {}
    for tid in ids:
        token = tokenizer.convert_ids_to_tokens(tid)
        if isinstance(token, str) and token.startswith("<|") and token.endswith("|>") and token not in NON_LANGUAGE_TOKENS:
            out[token] = tid
    return out


def add_timestamp_tokens(tokenizer, vocab_size: int, folder: Path) -> None:
    """Name the ids past the tokenizer's last token <|0.00|>, <|0.02|>, ... as CTranslate2's converter does,
    so that the tokenizer covers the whole vocabulary (timestamp decoding needs them)."""
    from tokenizers import AddedToken

    have = len(tokenizer)
    if have > vocab_size:
        raise ModelError(f"{folder / 'tokenizer.json'} has {have} tokens but the model only {vocab_size}; "
                         "the tokenizer belongs to another model")
    if have < vocab_size:
        tokenizer.add_tokens([AddedToken(timestamp_token(i * TIMESTAMP_STEP_S), special=False, normalized=False)
                              for i in range(vocab_size - have)])


def build_configs(dims: Dimensions, tokenizer, ct2_config: Mapping[str, Any], folder: Path):
    """(WhisperConfig, GenerationConfig) for the imported model."""
    from transformers import GenerationConfig, WhisperConfig

    eot = _required(tokenizer, EOT, folder)
    sot = _required(tokenizer, SOT, folder)
    no_ts = _required(tokenizer, NO_TIMESTAMPS, folder)
    multilingual = is_multilingual(tokenizer)
    suppress = [int(i) for i in ct2_config.get("suppress_ids") or []]
    begin_suppress = [int(i) for i in ct2_config.get("suppress_ids_begin") or []]
    heads = [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads") or []]
    if not heads:  # CTranslate2's own default: every head of the last half of the decoder layers
        heads = [[layer, head] for layer in range(dims.decoder_layers // 2, dims.decoder_layers)
                 for head in range(dims.decoder_heads)]
    config = WhisperConfig(
        vocab_size=dims.vocab_size, num_mel_bins=dims.n_mels, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads, decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim, decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions, max_target_positions=dims.max_target_positions,
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        tie_word_embeddings=dims.tied_output,
    )
    gen: dict[str, Any] = dict(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=no_ts, suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        alignment_heads=heads, max_length=dims.max_target_positions, max_initial_timestamp_index=50,
        return_timestamps=False, is_multilingual=multilingual,
    )
    prev = optional_token_id(tokenizer, START_OF_PREV)
    if prev is not None:
        gen["prev_sot_token_id"] = prev
    if multilingual:
        gen["lang_to_id"] = language_ids(tokenizer, ct2_config)
        gen["task_to_id"] = {task: _required(tokenizer, token, folder) for task, token in TASK_TOKENS.items()}
    return config, GenerationConfig(**gen)


# --------------------------------------------------------------------------------------------------- cache + import

def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "whisper-tune") / "imported"


def content_hash(folder: Path) -> str:
    """Hash of the files that define the model (names and bytes) and of the importer version."""
    parts: list[str | int] = [f"whisper-tune-ct2-import-{IMPORTER_VERSION}"]
    for name in HASHED_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            parts += [name, path.stat().st_size, file_digest(path)]
        except OSError as err:
            raise ModelError(f"cannot read {path}: {err}") from None
    return stable_hex(*parts, size=16)


def is_complete(out: Path) -> bool:
    return (out / MARKER).is_file() and (out / "config.json").is_file()


def import_ct2(folder: Path, cache_dir: Path | None = None) -> Path:
    """Import the CTranslate2 Whisper folder once; return the cached transformers folder."""
    folder = Path(folder).expanduser().resolve()
    for name in CT2_FILES:
        if not (folder / name).is_file():
            raise ModelError(f"{folder} has no {name}; a CTranslate2 Whisper folder needs model.bin, config.json "
                             "and tokenizer.json (as faster-whisper models ship them)")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    out = root / content_hash(folder)
    if is_complete(out):
        return out
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=root))
    except OSError as err:
        raise ModelError(f"cannot write the imported model under {root}: {err}; set {CACHE_ENV} to a writable folder") from None
    try:
        _write_checkpoint(folder, tmp)
        _relax_permissions(tmp)
        if out.exists() and not is_complete(out):
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if not is_complete(out):  # not another process finishing first: a real failure
                raise
    except OSError as err:
        raise ModelError(f"cannot write the imported model to {out}: {err}; set {CACHE_ENV} to a writable folder") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _relax_permissions(folder: Path) -> None:
    """mkdtemp makes private folders; give the finished import the permissions of any new folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _write_checkpoint(folder: Path, out: Path) -> None:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    ct2_config = read_json(folder / "config.json")
    tokenizer = tokenizer_from_file(folder / "tokenizer.json")
    ct2 = read_model_bin(folder / "model.bin")
    sd = state_dict_from_ct2(ct2)
    dims = dimensions(ct2, sd)
    del ct2
    add_timestamp_tokens(tokenizer, dims.vocab_size, folder)
    config, generation = build_configs(dims, tokenizer, ct2_config, folder)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    if dims.tied_output:
        tensors.pop("proj_out.weight")
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if not (dims.tied_output and k == "proj_out.weight")]
    if missing or unexpected:
        raise ModelError(f"{folder}: the weights do not fit a Whisper model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if dims.tied_output:
        model.tie_weights()
    model.generation_config = generation
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=dims.n_mels), tokenizer=tokenizer).save_pretrained(out)
    atomic_write_json(out / MARKER, {
        "source": str(folder), "importer_version": IMPORTER_VERSION, "n_mels": dims.n_mels,
        "vocab_size": dims.vocab_size, "multilingual": bool(generation.is_multilingual),
    })

