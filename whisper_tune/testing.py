"""Shared test helpers, one of each: generated audio, the tiny random Whisper builder, the import blocker, and
small real feature caches.

    from whisper_tune.testing import tone, write_audio, make_tiny_whisper, blocked_python, build_cache

whisper_tune.testing.py turns the tiny models into the session fixtures `tiny_model` / `tiny_model_128` and re-exports the
audio helpers. The benchmarks in bench/ build their models with `make_tiny_whisper` too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from whisper_tune.pipeline.cache import CachedExample, open_cache, write_examples
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.featurize.stage import run_features
from whisper_tune.pipeline.validate.manifest import write_manifest

SR = 16_000
REPO_ROOT = Path(__file__).resolve().parent.parent   # the checkout (tests, bench/ and data/ live beside the package)


def load_script(path: Path | str):
    """A script (bench/*.py, data/demo/*.py) as a module, without touching sys.path. It is registered in
    sys.modules under its file name first, as dataclasses look their module up while they are built."""
    import importlib.util

    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if path.stem in sys.modules and getattr(sys.modules[path.stem], "__file__", None) == str(path):
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module

# --------------------------------------------------------------------------------------------------- audio


def tone(seconds: float, sr: int = SR, freq: float = 440.0, amp: float = 0.5,
         pad_silence: float = 0.0, seed: int = 0) -> np.ndarray:
    """A tone with a little noise, optionally surrounded by `pad_silence` seconds of silence each side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    pad = np.zeros(int(pad_silence * sr))
    return np.concatenate([pad, x, pad]).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    """Write with soundfile; the format follows the extension (wav, flac, mp3, ogg)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".mp3": "MP3", ".ogg": "OGG", ".flac": "FLAC", ".wav": "WAV"}[path.suffix.lower()]
    sf.write(str(path), samples, sr, format=fmt, subtype=subtype)
    return path


def srt_clock(seconds: float) -> str:
    """SRT's HH:MM:SS,mmm."""
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def write_srt(path: Path, cues: Sequence[tuple[float, float, str]]) -> Path:
    """An SRT file of (start s, end s, text) cues."""
    path.write_text("\n".join(f"{i}\n{srt_clock(a)} --> {srt_clock(b)}\n{t}\n" for i, (a, b, t) in enumerate(cues, 1)),
                    encoding="utf-8")
    return path


def cue_times(n: int, first: float = 0.6, length: float = 2.0, gap: float = 1.5) -> list[tuple[float, float, str]]:
    """n cues of `length` s every `length + gap` s, each with words of its own ("Word3a word3b.")."""
    return [(first + (length + gap) * i, first + (length + gap) * i + length, f"Word{i}a word{i}b.") for i in range(n)]


def cue_recording(path: Path, cues: Sequence[tuple[float, float, str]], seconds: float, sr: int = 44_100,
                  seed: int = 0) -> Path:
    """A recording of quiet noise with a tone of its own pitch during each cue (44.1 kHz: features resamples)."""
    rng = np.random.default_rng(seed)
    x = 0.005 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    for i, (a, b, _) in enumerate(cues):
        part = tone(b - a, sr=sr, freq=200 + 25 * (i % 24), amp=0.3, seed=seed * 1000 + i)
        x[int(a * sr): int(a * sr) + part.size] += part
    return write_audio(path, x, sr=sr)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(path: Path, text: str, voice: str = "en-us", speed: int = 160) -> Path:
    """espeak-ng speech to a wav file (tests that use it skip where espeak-ng is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


# ---------------------------------------------------------------------------------------- tiny Whisper

# WhisperConfig shapes: the test suite's model (default) and Whisper tiny.en's own sizes (benchmarks).
TEST_SHAPE = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
TINY_EN_SHAPE = dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                     decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536)


def bundled_tokenizer():
    """tiny.en's real tokenizer (from the bundled CTranslate2 model; no network)."""
    from whisper_tune.pipeline.models import bundled_model_dir, tokenizer_from_file
    from whisper_tune.pipeline.models.ct2_import import add_timestamp_tokens

    tok = tokenizer_from_file(bundled_model_dir() / "tokenizer.json")
    add_timestamp_tokens(tok, len(tok) + 1501, bundled_model_dir())   # <|0.00|> .. <|30.00|>, as tiny.en has them
    return tok


def bundled_suppress_ids() -> dict[str, list[int]]:
    """tiny.en's suppress lists, as generation-config keywords."""
    from whisper_tune.pipeline.models import bundled_model_dir, read_json

    ct2 = read_json(bundled_model_dir() / "config.json")
    return {"suppress_tokens": ct2["suppress_ids"], "begin_suppress_tokens": ct2["suppress_ids_begin"]}


def tiny_whisper(tokenizer, *, n_mels: int = 80, seed: int = 0, multilingual: bool = False,
                 config: dict[str, Any] | None = None, generation: dict[str, Any] | None = None):
    """A randomly initialised WhisperForConditionalGeneration for `tokenizer` (in memory).

    `config` overrides WhisperConfig keywords (TEST_SHAPE and the special-token ids by default); `generation`
    overrides GenerationConfig keywords."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from whisper_tune.pipeline.core.tokens import NO_TIMESTAMPS, SOT

    sot, eot = tokenizer.convert_tokens_to_ids(SOT), tokenizer.eos_token_id
    settings = dict(vocab_size=len(tokenizer), num_mel_bins=n_mels, max_source_positions=1500,
                    max_target_positions=448, decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot,
                    pad_token_id=eot, **TEST_SHAPE)
    settings.update(config or {})
    cfg = WhisperConfig(**settings)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(**{
        "decoder_start_token_id": sot, "eos_token_id": eot, "pad_token_id": eot, "bos_token_id": cfg.bos_token_id,
        "no_timestamps_token_id": tokenizer.convert_tokens_to_ids(NO_TIMESTAMPS), "is_multilingual": multilingual,
        "max_length": cfg.max_target_positions, **(generation or {})})
    return model


def make_tiny_whisper(folder: Path, n_mels: int = 80, seed: int = 0, *, weights: bool = True,
                      config: dict[str, Any] | None = None, generation: dict[str, Any] | None = None) -> Path:
    """Save a tiny random Whisper with tiny.en's real tokenizer and suppress lists, plus its processor, to `folder`.

    weights=False saves the config and processor only (enough for the features stage)."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    tok = bundled_tokenizer()
    suppress = bundled_suppress_ids()
    config = {"suppress_tokens": [], "begin_suppress_tokens": suppress["begin_suppress_tokens"], **(config or {})}
    model = tiny_whisper(tok, n_mels=n_mels, seed=seed, config=config, generation={**suppress, **(generation or {})})
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        model.save_pretrained(folder)
    else:
        model.config.save_pretrained(folder)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tok)
    processor.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ import blocker

AUDIO_PACKAGES = ("librosa", "audiomentations", "soundfile", "soxr")
# The features stage's audio side; featurize.labels is not among them: train/ tokenizes with it, audio-free.
AUDIO_MODULES = tuple(f"whisper_tune.pipeline.featurize.{m}" for m in ("audio", "augment", "logmel", "work", "stage"))

_SITECUSTOMIZE = textwrap.dedent("""
    import importlib.abc, importlib.util, os, sys

    PACKAGES = {packages!r}
    MODULES = {modules!r}

    def _blocked(name):
        return name.split(".")[0] in PACKAGES or any(name == m or name.startswith(m + ".") for m in MODULES)

    _find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        full = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        return None if _blocked(full) else _find_spec(name, package)

    importlib.util.find_spec = find_spec

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if _blocked(name):
                if os.environ.get("BLOCKED_IMPORT_LOG"):
                    with open(os.environ["BLOCKED_IMPORT_LOG"], "a") as f:
                        f.write(name + "\\n")
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: this stage must not need it)",
                                          name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


def import_blocker(folder: Path, packages: Sequence[str] = AUDIO_PACKAGES,
                   modules: Sequence[str] = AUDIO_MODULES) -> Path:
    """A folder with a sitecustomize.py that makes `packages` look uninstalled (find_spec says None) and makes
    importing them or `modules` raise ModuleNotFoundError, logging each attempt to $BLOCKED_IMPORT_LOG if set."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(packages=tuple(packages), modules=tuple(modules)))
    return folder


_SHARD_KILLER = textwrap.dedent("""
    import os, signal, sys
    from whisper_tune.pipeline.cache import shard

    _write, _done = shard.write_shard, [0]

    def write_shard(*args, **kwargs):
        info = _write(*args, **kwargs)
        _done[0] += 1
        if _done[0] >= {after}:            # the shard is in place (renamed): die before the index records it
            os.kill(os.getpid(), signal.SIGKILL)
        return info

    for _module in list(sys.modules.values()):     # the cache package has bound it already (cache/__init__ ...)
        if getattr(_module, "write_shard", None) is _write:
            _module.write_shard = write_shard
""")


def shard_killer(folder: Path, after: int = 1) -> Path:
    """A folder with a sitecustomize.py that SIGKILLs a process right after its `after`-th shard is renamed into
    place: put it first on a child's PYTHONPATH for a deterministic "killed in the middle of writing"."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SHARD_KILLER.format(after=int(after)))
    return folder


def kill_once_after_a_shard(marker: str) -> None:
    """Make THIS process die by SIGKILL right after its next shard is renamed into place, unless another process
    did first: the first one to create `marker` dies (one worker of a cluster, its result never sent). Run it in
    workers with `client.run(kill_once_after_a_shard, path)`; a worker started afterwards is not armed."""
    import signal

    from whisper_tune.pipeline.cache import shard

    write = shard.write_shard

    def write_then_die(*args, **kwargs):
        info = write(*args, **kwargs)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return info
        os.kill(os.getpid(), signal.SIGKILL)

    for module in list(sys.modules.values()):      # every module that bound write_shard at import
        if getattr(module, "write_shard", None) is write:
            module.write_shard = write_then_die


def blocked_python(args: Sequence[str], blocker: Path, *, log: Path | None = None, cwd: Path | None = None,
                   timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python *args` with `blocker` (from import_blocker) first on PYTHONPATH, then this checkout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(blocker)}
    if log is not None:
        env["BLOCKED_IMPORT_LOG"] = str(log)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


# ------------------------------------------------------------------------------------------- feature caches

TEXTS = [
    "the cat sat on the mat", "a quick brown fox", "hello world how are you", "my name is john",
    "the patient showed signs of fever", "one two three four", "good morning everyone", "please call me back",
    "it is raining today", "open the window", "the meeting starts at noon", "thank you very much",
]


def synthetic_examples(tokenizer, *, n_train: int, n_test: int, variants: int, n_mels: int = 80,
                       seed: int = 0, frames: tuple[int, int] = (150, 600), n_validation: int = 0) -> list:
    """CachedExamples with synthetic log-mel-like features (a distinct pattern per clip, a little noise per
    variant, a per-clip floor) and real labels, so a cache is what `whisper-tune features` hands to training
    without decoding any audio."""
    from whisper_tune.pipeline.cache import CachedExample
    from whisper_tune.pipeline.featurize.labels import make_labels

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_train + n_validation + n_test):
        clip_id = f"clip{i:04d}.wav"
        split = "train" if i < n_train else "validation" if i < n_train + n_validation else "test"
        text = TEXTS[i % len(TEXTS)]
        labels = make_labels(text, tokenizer, "basic")
        t = int(rng.integers(*frames))
        base = (np.sin(np.arange(t)[None, :] * (0.01 + 0.003 * i) + np.arange(n_mels)[:, None] * 0.1) * 0.5
                + 0.2 * rng.standard_normal((n_mels, t)))
        floor = float(-0.6 - 0.01 * i)
        for v in range(variants):
            feats = base + (0.05 * v) * rng.standard_normal((n_mels, t))
            out.append(CachedExample(clip_id=clip_id, variant=v, split=split,
                                     features=np.maximum(feats, floor).astype(np.float16), floor=floor,
                                     labels=labels.ids, text=labels.text))
    return out


def build_cache(work: Path, model_dir: Path, *, n_train: int = 8, n_test: int = 2, variants: int = 3,
                n_mels: int = 80, seed: int = 0, **kwargs):
    """WORK/cache for model_dir's tokenizer (fingerprint included, so training accepts it)."""
    from whisper_tune.pipeline.cache import write_examples
    from whisper_tune.pipeline.featurize.labels import tokenizer_fingerprint
    from whisper_tune.pipeline.models import load_processor

    tokenizer = load_processor(str(model_dir)).tokenizer
    examples = synthetic_examples(tokenizer, n_train=n_train, n_test=n_test, variants=variants, n_mels=n_mels,
                                  seed=seed, **kwargs)
    return write_examples(Path(work) / "cache", examples, model=str(model_dir),
                          tokenizer_fingerprint=tokenizer_fingerprint(tokenizer, "basic"))


# ------------------------------------------------------------------ cache/features tests: a work folder, snapshots

TEXTS = ["Hello, World!", "the cat sat on the mat", "Good morning, everyone.", "one two three four",
         "It's raining today", "please call me back", "open the window", "thank you very much",
         "the meeting starts at noon", "a quick brown fox", "seven patients wait", "see you tomorrow"]


def manifest_row(cid: str, path: Path, text: str, split: str, i: int) -> dict:
    return dict(id=cid, path=str(path), source=path.name, text=text, duration=1.0, sample_rate=16_000,
                channels=1, split=split, status="ok", reason="", csv_row=i + 1)


def make_work(root: Path, n: int = 5, seconds: float = 0.8) -> tuple[Path, list[dict]]:
    """root/work with a manifest of n generated clips (clip00 in test, the rest in train)."""
    rows = []
    for i in range(n):
        path = write_audio(root / "audio" / f"clip{i:02d}.wav",
                           tone(seconds + 0.1 * i, freq=220 + 40 * i, pad_silence=0.2, seed=i))
        rows.append(manifest_row(f"clip{i:02d}", path, TEXTS[i % len(TEXTS)], "test" if i == 0 else "train", i))
    work = root / "work"
    write_manifest(pl.DataFrame(rows), work)
    return work, rows


def features_config(model: Path, **over):
    base = {"model.name": str(model), "features.jobs": 1, "features.batch_clips": 2, "augment.variants": 3,
            "augment.transforms": [{"name": "AddGaussianNoise", "p": 0.5, "min_amplitude": 0.001,
                                    "max_amplitude": 0.01}, {"name": "Gain", "p": 0.3}]}
    base.update(over)
    return load_config(None, base)


def run(work: Path, cfg, part=None):
    return run_features(work_dir=work, cfg=cfg, part=part, echo=None)


def snapshot(work: Path) -> dict:
    """Every (clip, variant) the cache returns, as bytes and values."""
    cache = open_cache(work)
    out = {}
    for cid in cache.clip_ids():
        for v in cache.variants(cid):
            ex = cache.get(cid, v)
            out[(cid, v)] = (ex.features.tobytes(), ex.features.shape, ex.floor, ex.labels.tobytes(), ex.text,
                             ex.split)
    return out


def shard_bytes(work: Path) -> dict[str, bytes]:
    """The cache's shard files (index segments left out: their names carry the time of writing)."""
    from whisper_tune.pipeline.cache.shard import is_shard_name

    return {p.name: p.read_bytes() for p in sorted((work / "cache").glob("*.arrow")) if is_shard_name(p.name)}


def synthetic(n_clips: int = 3, variants: int = 2, n_mels: int = 80, seed: int = 0) -> list[CachedExample]:
    """In-memory examples for write_examples (clip0 in test, the rest in train)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_clips):
        t = int(rng.integers(50, 400))
        labels = np.array([50257, 50362, 100 + i, 200 + i, 50256], np.int32)
        for v in range(variants):
            feats = rng.uniform(-1, 1, (n_mels, t)).astype(np.float16)
            out.append(CachedExample(f"clip{i}", v, "test" if i == 0 else "train", feats, -0.5 - i / 10,
                                     labels, f"text {i}"))
    return out


def flip_bytes(path: Path, n: int = 16, where: float = 0.5, keep_mtime: bool = True) -> None:
    """Bit rot: invert n bytes in the middle of a file, and (like `touch -r`) restore its mtime."""
    import os

    st = path.stat()
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------------------------------- settings


def train_config(model, **training):
    """A quick training Config for tiny models; `training` overrides any field of [training]."""
    base = {"batch_size": 2, "eval_batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3, "warmup": 0.0,
            "lr_scheduler": "constant", "epochs": 3, "logging_steps": 1, "generation_max_length": 8,
            "early_stopping_patience": 0, "dataloader_workers": 0, "gradient_checkpointing": False,
            "save_total_limit": 2}
    base.update(training)
    return load_config(None, {"model.name": str(model), **{f"training.{k}": v for k, v in base.items()}})


def write_work(work: Path, clips: list[tuple[str, np.ndarray, str, str]], n_mels: int = 80,
               audit_ok: Sequence[str] = ()) -> Path:
    """A work folder with a manifest and a cache holding the clean variant of each (id, audio, text, split);
    `audit_ok`: clip ids the CSV's `audit` column marks ok."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    examples = []
    for cid, audio, text, split in clips:
        feats = fe(audio, sampling_rate=16_000, return_tensors="np").input_features[0]
        examples.append(CachedExample(clip_id=cid, variant=0, split=split, features=feats.astype(np.float16),
                                      floor=float(feats.min()), labels=np.array([50257], np.int32),
                                      text=normalize_text(text)))
    from whisper_tune.pipeline.validate.leakage import text_in_train

    leaks = text_in_train([c[2] for c in clips], [c[3] for c in clips], [True] * len(clips))   # as validate finds
    write_examples(work / "cache", examples, transcripts={c[0]: c[2] for c in clips},
                   text_in_train={c[0] for c, leak in zip(clips, leaks) if leak}, audit_ok=set(audit_ok))
    n = len(clips)
    write_manifest(pl.DataFrame({
        "id": [c[0] for c in clips], "path": [f"/data/{c[0]}.wav" for c in clips],
        "source": [f"{c[0]}.wav" for c in clips], "text": [c[2] for c in clips],
        "duration": [len(c[1]) / 16_000 for c in clips], "sample_rate": [16_000] * n, "channels": [1] * n,
        "split": [c[3] for c in clips], "status": ["ok"] * n, "reason": [""] * n, "csv_row": list(range(1, n + 1)),
        "audit_ok": [c[0] in audit_ok for c in clips],
    }), work)
    return work


def write_pool(cache_dir: Path, *, n_mels: int = 80, n_train: int = 3, n_heldout: int = 2, seed: int = 0):
    """A small non-speech pool in cache_dir (what `features` writes), of flat low-level noise features."""
    from whisper_tune.pipeline.cache.nonspeech import HELDOUT, TRAIN, NonSpeechClip, NonSpeechPool, write_pool as write

    rng = np.random.default_rng(seed)
    clips = []
    for part, n in ((TRAIN, n_train), (HELDOUT, n_heldout)):
        for i in range(n):
            t = int(rng.integers(100, 300))
            feats = (-0.7 + 0.05 * rng.standard_normal((n_mels, t))).astype(np.float16)
            clips.append(NonSpeechClip(f"generated/noise {part} {i}", "generated", part, feats, -0.75))
    pool = NonSpeechPool(fingerprint=f"test-{seed}", clips=tuple(clips))
    write(Path(cache_dir), pool)
    return pool


def only_segment(work: Path) -> Path:
    """The one index segment of a work folder's cache (a finished whole run leaves one)."""
    from whisper_tune.pipeline.cache.segments import segment_files

    [path] = segment_files(Path(work) / "cache")
    return path


def rewrite_segment(path: Path, doc: Any = None, table: Any = None, name: str | None = None) -> Path:
    """Rewrite an index segment as a crafted one: doc(d) edits its JSON part in place, table(t) returns a new
    clip table; written under `name` (default: the same file). -> the path written."""
    import json as _json

    import pyarrow as pa
    import pyarrow.ipc as ipc

    from whisper_tune.pipeline.cache.segments import META_KEY

    t = ipc.open_file(pa.BufferReader(Path(path).read_bytes())).read_all()   # a copy: the file is rewritten
    d = _json.loads(t.schema.metadata[META_KEY])
    if doc is not None:
        doc(d)
    if table is not None:
        t = table(t)
    t = t.replace_schema_metadata({META_KEY: _json.dumps(d).encode()})
    out = Path(path).with_name(name) if name else Path(path)
    with pa.OSFile(str(out), "wb") as sink, ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    return out
