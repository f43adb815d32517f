"""Convert a transformers Whisper checkpoint into a CTranslate2 / faster-whisper folder.

What the folder gets, and the conversion pitfalls each file avoids:
- model.bin + config.json from ctranslate2's TransformersConverter (offline, from the resolved local model).
  config.json carries suppress_ids / suppress_ids_begin from the model's generation config and, for multilingual
  models, the language token ids; missing values are filled from the tokenizer so CTranslate2 never sees null.
- tokenizer.json: faster-whisper otherwise downloads openai/whisper-tiny's tokenizer from the hub (fails offline,
  and is the wrong vocabulary for a model with added tokens).
- preprocessor_config.json: faster-whisper reads the number of mel bins (feature_size) from it; without it a
  128-mel model (large-v3) is fed 80-mel features. transformers 5 saves a processor's feature extractor inside
  processor_config.json, so this file is written from the feature extractor.

converted_folder() keeps one conversion per model content under the user cache folder (beside the CTranslate2
imports: `$WHISPER_TUNE_CACHE/converted/<hash>`), so `--backend auto` converts a model once per machine.

The reverse direction is whisper_tune.pipeline.models.ct2_import; the `export` command (checks, verification with
faster-whisper, replacing an earlier export) is whisper_tune.train.inference.export.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from whisper_tune.pipeline.core.errors import ModelError, first_line
from whisper_tune.pipeline.core.fileio import atomic_write_json
from whisper_tune.pipeline.core.hashing import file_digest, stable_hex
from whisper_tune.pipeline.core.tokens import EOT, language_tokens
from whisper_tune.pipeline.models.folder import is_multilingual, read_json

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float16", "float16", "float32")
WHISPER_SPACE_ID = 220        # Whisper's " " token: suppressed at the start of a transcript, with <|endoftext|>


def convert(source: str, folder: Path, quantization: str) -> None:
    """TransformersConverter into folder (model.bin + config.json + vocabulary)."""
    from ctranslate2.converters import TransformersConverter

    try:
        TransformersConverter(source).convert(str(folder), quantization=quantization, force=True)
    except (OSError, ValueError, RuntimeError, NotImplementedError, KeyError) as err:
        raise ModelError(f"cannot convert {source} to CTranslate2: {first_line(err)}") from None


def write_support_files(source: str, folder: Path, processor) -> None:
    """tokenizer.json, preprocessor_config.json, and a complete config.json (see the module doc)."""
    src = Path(source)
    if (src / "tokenizer.json").is_file():
        shutil.copyfile(src / "tokenizer.json", folder / "tokenizer.json")
    else:
        processor.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    fe = processor.feature_extractor
    atomic_write_json(folder / "preprocessor_config.json", {
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": int(fe.feature_size),
        "sampling_rate": int(fe.sampling_rate), "hop_length": int(fe.hop_length),
        "chunk_length": int(fe.chunk_length), "n_fft": int(fe.n_fft), "n_samples": int(fe.n_samples),
        "nb_max_frames": int(fe.nb_max_frames), "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False, "processor_class": "WhisperProcessor",
    })

    config_path = folder / "config.json"
    config = read_json(config_path)
    tok = processor.tokenizer
    if config.get("suppress_ids") is None:
        config["suppress_ids"] = []
    if config.get("suppress_ids_begin") is None:
        config["suppress_ids_begin"] = [WHISPER_SPACE_ID, tok.convert_tokens_to_ids(EOT)]
    if is_multilingual(tok) and not config.get("lang_ids"):
        config["lang_ids"] = sorted(language_tokens(tok.get_vocab()).values())
    atomic_write_json(config_path, config)


CONVERTER_VERSION = 1          # bump when what convert() + write_support_files() write changes (part of the key)
CACHE_QUANTIZATION = "float16"  # what --backend auto keeps: CTranslate2 computes in float32 on a CPU, float16 on a GPU
CONVERTED_MARKER = "whisper-tune-converted.json"


def conversion_key(source: str, quantization: str = CACHE_QUANTIZATION) -> str:
    """Hash of a model's files (names, sizes, bytes), the quantization and the converter version; a hub id that
    is not on disk is keyed by its name."""
    parts: list[str | int] = [f"whisper-tune-ct2-convert-{CONVERTER_VERSION}", quantization]
    folder = Path(source)
    if not folder.is_dir():
        return stable_hex(*parts, "hub", source, size=16)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            parts += [str(path.relative_to(folder)), path.stat().st_size, file_digest(path)]
        except OSError as err:
            raise ModelError(f"cannot read {path}: {err}") from None
    return stable_hex(*parts, size=16)


def converted_folder(source: str, processor: Callable[[], Any], cache_dir: Path | None = None) -> Path:
    """A CTranslate2 folder for the resolved transformers model `source`, converted once (ModelError when the
    model does not convert); written under a temporary name and renamed into place when complete.
    `processor()` gives the model's WhisperProcessor (loaded only when a conversion is needed)."""
    from whisper_tune.pipeline.models.ct2_import import CACHE_ENV, cache_root

    root = Path(cache_dir) if cache_dir is not None else cache_root().parent / "converted"
    out = root / conversion_key(source)
    if (out / CONVERTED_MARKER).is_file():
        return out
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=root))
    except OSError as err:
        raise ModelError(f"cannot write a CTranslate2 conversion under {root}: {err}; set {CACHE_ENV} to a "
                         "writable folder") from None
    try:
        log.info(f"converting {source} to CTranslate2 once (cached in {out}) ...")
        convert(source, tmp, CACHE_QUANTIZATION)
        write_support_files(source, tmp, processor())
        atomic_write_json(tmp / CONVERTED_MARKER, {"source": source, "quantization": CACHE_QUANTIZATION,
                                                   "converter_version": CONVERTER_VERSION})
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / CONVERTED_MARKER).is_file():   # not another process finishing first: a real failure
                raise
    except OSError as err:
        raise ModelError(f"cannot write the CTranslate2 conversion to {out}: {err}; set {CACHE_ENV} to a "
                         "writable folder") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
