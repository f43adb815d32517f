"""`whisper-tune export`: a CTranslate2 folder that faster-whisper loads directly.

    whisper-tune export --model work/model --to ct2 --quantization int8 work/model-ct2

What the folder gets, and the conversion pitfalls each file avoids:
- model.bin + config.json from ctranslate2's TransformersConverter (offline, from the resolved local model).
  config.json carries suppress_ids / suppress_ids_begin from the model's generation config and, for multilingual
  models, the language token ids; missing values are filled from the tokenizer so CTranslate2 never sees null.
- tokenizer.json: faster-whisper otherwise downloads openai/whisper-tiny's tokenizer from the hub (fails offline,
  and is the wrong vocabulary for a model with added tokens).
- preprocessor_config.json: faster-whisper reads the number of mel bins (feature_size) from it; without it a
  128-mel model (large-v3) is fed 80-mel features. transformers 5 saves a processor's feature extractor inside
  processor_config.json, so this file is written from the feature extractor.

The folder is written under a temporary name next to OUT, verified, and only then renamed into place; an older
export in OUT is replaced, anything else there is refused. Verification loads the folder with
faster_whisper.WhisperModel and transcribes a short generated clip (greedy, no VAD).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.constants import SAMPLE_RATE_HZ
from pipeline.errors import ConfigError, ModelError
from pipeline.models import EOT, is_ct2_folder, is_multilingual, load_processor, resolve_model

QUANTIZATIONS = ("int8", "int8_float16", "float16", "float32")
TARGETS = ("ct2",)


@dataclass(frozen=True)
class Verification:
    segments: int            # segments faster-whisper returned for the test clip
    text: str                # their text
    n_mels: int              # mel bins faster-whisper feeds the model
    seconds: float


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    source: str              # the resolved transformers model
    quantization: str
    size_bytes: int          # whole folder on disk
    verification: Verification | None


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_target(out_dir: Path, source: str) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"export folder {out_dir} is a file; pass a folder path as OUT")
    src = Path(source)
    if src.exists() and out_dir.exists() and src.resolve() == out_dir.resolve():
        raise ConfigError(f"export folder {out_dir} is the model's own folder; pass a new folder as OUT")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_ct2_folder(out_dir):
        raise ConfigError(f"export folder {out_dir} already holds other files; pass a new or empty folder as OUT "
                          "(an earlier export there would be replaced)")


def convert(source: str, tmp: Path, quantization: str) -> None:
    """TransformersConverter into tmp (model.bin + config.json + vocabulary)."""
    from ctranslate2.converters import TransformersConverter

    try:
        TransformersConverter(source).convert(str(tmp), quantization=quantization, force=True)
    except (OSError, ValueError, RuntimeError, NotImplementedError, KeyError) as err:
        raise ModelError(f"cannot convert {source} to CTranslate2: {str(err).splitlines()[0] if str(err) else err!r}") from None


def write_support_files(source: str, folder: Path, processor) -> None:
    """tokenizer.json, preprocessor_config.json, and a complete config.json (see the module doc)."""
    src = Path(source)
    if (src / "tokenizer.json").is_file():
        shutil.copyfile(src / "tokenizer.json", folder / "tokenizer.json")
    else:
        processor.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    fe = processor.feature_extractor
    pre = {
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": int(fe.feature_size),
        "sampling_rate": int(fe.sampling_rate), "hop_length": int(fe.hop_length),
        "chunk_length": int(fe.chunk_length), "n_fft": int(fe.n_fft), "n_samples": int(fe.n_samples),
        "nb_max_frames": int(fe.nb_max_frames), "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False, "processor_class": "WhisperProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", encoding="utf-8")

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tok = processor.tokenizer
    if config.get("suppress_ids") is None:
        config["suppress_ids"] = []
    if config.get("suppress_ids_begin") is None:
        config["suppress_ids_begin"] = [220, tok.convert_tokens_to_ids(EOT)]   # Whisper's " " and <|endoftext|>
    if is_multilingual(tok) and not config.get("lang_ids"):
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        vocab = tok.get_vocab()
        config["lang_ids"] = sorted(vocab[f"<|{c}|>"] for c in LANGUAGES if f"<|{c}|>" in vocab)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def test_clip(seconds: float = 2.0) -> np.ndarray:
    """A short voiced-like signal (a 150 Hz pulse train with harmonics and a little noise): enough to run
    the whole faster-whisper path; its text is not checked."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = x / np.max(np.abs(x)) * 0.5 + 0.005 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def verify_export(folder: Path, expected_mels: int) -> Verification:
    """Load with faster-whisper and transcribe the test clip; ModelError if anything is off."""
    from faster_whisper import WhisperModel

    start = time.perf_counter()
    try:
        model = WhisperModel(str(folder), device="auto", compute_type="default")
        n_mels = int(model.model.n_mels)
        fe_mels = int(model.feature_extractor.mel_filters.shape[0])
        if n_mels != expected_mels or fe_mels != expected_mels:
            raise ModelError(f"export check failed: the model takes {n_mels} mel bins, faster-whisper computes "
                             f"{fe_mels}, the source model {expected_mels}")
        if model.hf_tokenizer.token_to_id("<|startoftranscript|>") is None:
            raise ModelError("export check failed: tokenizer.json has no <|startoftranscript|> token")
        segments, _info = model.transcribe(
            test_clip(), language="en" if model.model.is_multilingual else None, beam_size=1, temperature=0.0,
            without_timestamps=True, vad_filter=False, condition_on_previous_text=False,
        )
        segments = list(segments)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here means the export is not usable
        raise ModelError(f"export check failed: faster-whisper could not load or run {folder}: {err}") from None
    return Verification(segments=len(segments), text=" ".join(s.text.strip() for s in segments),
                        n_mels=n_mels, seconds=time.perf_counter() - start)


def replace_folder(tmp: Path, out_dir: Path) -> None:
    """Move tmp to out_dir; an earlier export there is swapped out first and then deleted."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_export(*, model: str, out_dir: Path, to: str = "ct2", quantization: str = "int8",
               verify: bool = True) -> ExportResult:
    if to.lower() not in TARGETS:
        raise ConfigError(f"--to {to}: unknown target; expected ct2 (CTranslate2 / faster-whisper)")
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"--quantization {quantization}: expected one of {', '.join(QUANTIZATIONS)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    source = resolve_model(model)
    check_target(out_dir, source)
    processor = load_processor(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"converting {model} to CTranslate2 ({quantization}) ...")
    try:
        convert(source, tmp, quantization)
        write_support_files(source, tmp, processor)
        verification = None
        if verify:
            verification = verify_export(tmp, int(processor.feature_extractor.feature_size))
        replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result = ExportResult(out_dir=out_dir, source=source, quantization=quantization,
                          size_bytes=folder_size(out_dir), verification=verification)
    print(f"exported {model} -> {out_dir}  (ct2, {quantization}, {result.size_bytes / 1e6:.1f} MB on disk)")
    if verification is not None:
        print(f"verified with faster-whisper: loads with {verification.n_mels} mel bins and its tokenizer, and "
              f"transcribes a {len(test_clip()) / SAMPLE_RATE_HZ:.0f} s generated clip (no speech in it; "
              f"{verification.segments} segment(s)) in {verification.seconds:.1f} s")
    else:
        print("not verified (--no-verify)")
    return result
