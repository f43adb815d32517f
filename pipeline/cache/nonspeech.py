"""The cache's non-speech pool: log-mel rows of audio without speech, in WORK/cache/nonspeech.npz.

    pool = read_pool(cache_dir)          # None for a cache built before the pool existed
    pool.part("train")                   # what train draws its non-speech windows from
    pool.part("heldout")                 # what evaluate counts the words of (never trained on)

Its own file, apart from the clip index: the pool is no clip of the manifest, so it never enters a split, a clip
count, a WER or a per-clip table. One .npz (no pickles): every clip's features concatenated along time (float16),
their offsets, floors and a JSON header (format version, the pool's fingerprint, each clip's name, kind and part)
with the checksum of the feature bytes. Written whole or not at all (fileio.atomic_write_bytes); a damaged or
foreign file is one CacheError naming the command that rebuilds it. Needs no audio library (train reads it).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_tune.pipeline.cache.reader import padded_frames
from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.core.fileio import atomic_write_bytes
from whisper_tune.pipeline.core.hashing import stable_hex

POOL_NAME = "nonspeech.npz"
POOL_FORMAT = "whisper-tune-nonspeech"
POOL_VERSION = 1
TRAIN, HELDOUT = "train", "heldout"      # the pool's two parts


@dataclass(frozen=True)
class NonSpeechClip:
    name: str                # where it comes from: "<clip id>/silence-0", "<clip id>/noise", "generated/<kind>"
    kind: str                # silence, noise or generated
    part: str                # TRAIN or HELDOUT
    features: np.ndarray     # float16 (n_mels, T), the frames the audio reaches, as the cache stores a clip
    floor: float             # the value of every frame past T

    def padded(self) -> np.ndarray:
        """float32 (n_mels, 3000): Whisper's input for this audio."""
        return padded_frames(self.features, self.floor)


@dataclass(frozen=True)
class NonSpeechPool:
    fingerprint: str
    clips: tuple[NonSpeechClip, ...]

    def part(self, part: str) -> list[NonSpeechClip]:
        return [c for c in self.clips if c.part == part]

    def describe(self) -> str:
        kinds = {}
        for c in self.clips:
            kinds[(c.part, c.kind)] = kinds.get((c.part, c.kind), 0) + 1
        return "; ".join(f"{part}: " + ", ".join(f"{kinds[(part, k)]} {k}" for k in ("silence", "noise", "generated")
                                                  if (part, k) in kinds)
                         for part in (TRAIN, HELDOUT) if any(p == part for p, _ in kinds))


def pool_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / POOL_NAME


def _hint(cache_dir: Path) -> str:
    return f"re-run `whisper-tune features --work {Path(cache_dir).parent}` to rebuild it"


def write_pool(cache_dir: Path, pool: NonSpeechPool) -> Path:
    n_mels = {c.features.shape[0] for c in pool.clips}
    if len(n_mels) > 1:
        raise ValueError(f"non-speech clips of different mel bins: {sorted(n_mels)}")
    features = (np.concatenate([c.features for c in pool.clips], axis=1).astype(np.float16) if pool.clips
                else np.zeros((0, 0), np.float16))
    offsets = np.cumsum([0] + [c.features.shape[1] for c in pool.clips]).astype(np.int64)
    header = {"format": POOL_FORMAT, "version": POOL_VERSION, "fingerprint": pool.fingerprint,
              "checksum": stable_hex(features.tobytes(), size=16),
              "clips": [{"name": c.name, "kind": c.kind, "part": c.part} for c in pool.clips]}
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)), features=features, offsets=offsets,
             floors=np.array([c.floor for c in pool.clips], np.float64))
    path = pool_path(cache_dir)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_pool(cache_dir: Path) -> NonSpeechPool | None:
    """The pool, checked; None when the cache has none (built before it existed)."""
    path = pool_path(cache_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            features, offsets, floors = data["features"], data["offsets"], data["floors"]
        if not isinstance(header, dict) or header.get("format") != POOL_FORMAT:
            raise ValueError("not a whisper-tune non-speech pool")
        if header.get("version") != POOL_VERSION:
            raise ValueError(f"version {header.get('version')!r}, this whisper-tune reads {POOL_VERSION}")
        entries = header["clips"]
        if len(entries) + 1 != offsets.size or len(entries) != floors.size:
            raise ValueError("its clip list and its arrays disagree")
        if stable_hex(features.tobytes(), size=16) != header["checksum"]:
            raise ValueError("its features fail their checksum")
        clips = tuple(NonSpeechClip(name=str(e["name"]), kind=str(e["kind"]), part=str(e["part"]),
                                    features=features[:, int(offsets[i]):int(offsets[i + 1])], floor=float(floors[i]))
                      for i, e in enumerate(entries))
        return NonSpeechPool(fingerprint=str(header["fingerprint"]), clips=clips)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise CacheError(f"{path} is not a usable non-speech pool ({err}); {_hint(cache_dir)}") from None


def stored_fingerprint(cache_dir: Path) -> str:
    """The stored pool's fingerprint; "" when there is none or it cannot be read (it is then rebuilt)."""
    try:
        pool = read_pool(cache_dir)
    except CacheError:
        return ""
    return pool.fingerprint if pool is not None else ""
