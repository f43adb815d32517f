"""`whisper-tune export`: a CTranslate2 folder that faster-whisper loads directly.

    whisper-tune export --model work/model --to ct2 --quantization int8 work/model-ct2

The conversion itself (and what each file of the folder is for) is whisper_tune.pipeline.models.ct2_export.

The folder is written under a temporary name next to OUT (`.OUT.tmp-<pid>`), verified, and only then renamed into
place; an older export in OUT is replaced. OUT must be new, empty or an earlier export holding only EXPORT_FILES:
anything else there (notes, other models, folders) is refused, never deleted, and so is a source model inside OUT.
Temporary folders that a killed export left (their process gone) are removed first. Verification loads the folder with
faster_whisper.WhisperModel and transcribes a short generated clip, verification_clip() (greedy, no VAD).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import ConfigError, ModelError
from whisper_tune.pipeline.core.fileio import folder_tmp_name, replace_folder, sweep_stale_folders
from whisper_tune.pipeline.models import load_processor, resolve_model
from whisper_tune.pipeline.models.ct2_export import QUANTIZATIONS, convert, write_support_files
from whisper_tune.pipeline.core.tokens import SOT

log = logging.getLogger(__name__)

TARGETS = ("ct2",)
# Every file an export writes (ct2_export: the converter's model.bin, config.json and vocabulary, then
# tokenizer.json and preprocessor_config.json; older CTranslate2 wrote vocabulary.txt).
EXPORT_FILES = frozenset({"model.bin", "config.json", "vocabulary.json", "vocabulary.txt", "tokenizer.json",
                          "preprocessor_config.json"})


@dataclass(frozen=True)
class Verification:
    segments: int            # segments faster-whisper returned for verification_clip()
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


def check_target(out_dir: Path, source: str, model: str = "") -> None:
    """OUT may be replaced as a whole: refuse a file, a folder holding (or being) the source model, and a folder
    holding anything an export does not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"export folder {out_dir} is a file; pass a folder path as OUT")
    if not out_dir.is_dir():
        return
    target = out_dir.resolve()
    for src in dict.fromkeys(Path(name) for name in (model, source) if name):
        if src.exists() and src.resolve() == target:
            raise ConfigError(f"export folder {out_dir} is the model's own folder; pass a new folder as OUT")
        if src.exists() and src.resolve().is_relative_to(target):
            raise ConfigError(f"export folder {out_dir} holds the source model {src} (an export replaces the whole "
                              "folder); move the model out of it, or pass another folder as OUT")
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out_dir.iterdir()
                     if p.name not in EXPORT_FILES or not p.is_file())
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"export folder {out_dir} holds {shown}, which an export does not write (an export "
                          "replaces the whole folder); move them out, or pass a new or empty folder as OUT")


def verification_clip(seconds: float = 2.0) -> np.ndarray:
    """A short voiced-like signal (a 150 Hz pulse train with harmonics and a little noise): enough to run
    the whole faster-whisper path; its text is not checked."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = x / np.max(np.abs(x)) * 0.5 + 0.005 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def verify_export(folder: Path, expected_mels: int) -> Verification:
    """Load with faster-whisper and transcribe verification_clip(); ModelError if anything is off."""
    from faster_whisper import WhisperModel

    start = time.perf_counter()
    try:
        model = WhisperModel(str(folder), device="auto", compute_type="default")
        n_mels = int(model.model.n_mels)
        fe_mels = int(model.feature_extractor.mel_filters.shape[0])
        if n_mels != expected_mels or fe_mels != expected_mels:
            raise ModelError(f"export check failed: the model takes {n_mels} mel bins, faster-whisper computes "
                             f"{fe_mels}, the source model {expected_mels}")
        if model.hf_tokenizer.token_to_id(SOT) is None:
            raise ModelError(f"export check failed: tokenizer.json has no {SOT} token")
        segments, _info = model.transcribe(
            verification_clip(), language="en" if model.model.is_multilingual else None, beam_size=1, temperature=0.0,
            without_timestamps=True, vad_filter=False, condition_on_previous_text=False,
        )
        segments = list(segments)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here means the export is not usable
        raise ModelError(f"export check failed: faster-whisper could not load or run {folder}: {err}") from None
    return Verification(segments=len(segments), text=" ".join(s.text.strip() for s in segments),
                        n_mels=n_mels, seconds=time.perf_counter() - start)


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
    check_target(out_dir, source, model)
    processor = load_processor(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in sweep_stale_folders(out_dir):
        log.info(f"removed {stale}, left by an export that was killed")
    tmp = folder_tmp_name(out_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    log.info(f"converting {model} to CTranslate2 ({quantization}) ...")
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
              f"transcribes a {len(verification_clip()) / SAMPLE_RATE_HZ:.0f} s generated clip (no speech in it; "
              f"{verification.segments} segment(s)) in {verification.seconds:.1f} s")
    else:
        print("not verified (--no-verify)")
    return result
