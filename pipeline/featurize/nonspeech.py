"""Audio without speech, for the cache's non-speech pool (train draws `augment.no_speech_share` of its examples
from it; evaluate and each epoch's evaluation count the words a model emits on its held-out part).

    clips = non_speech_clips()                     # ten generated kinds: silence, room tone, hum, clicks, ...
    pool = build_pool(train_clips, heldout_clips, logmel=LogMel(filters), trim_top_db=30, normalize=True)

Three sources, each at the level a model meets it:
- the silences trimming removes from the user's own train clips (leading and trailing), at the clip's own gain
  (the gain peak normalization gives its speech), when at least MIN_SILENCE_S long;
- each clip's background noise: its quietest NOISE_BLOCK_S blocks (the bottom NOISE_SHARE of block energies, a
  noise floor estimate), strung together to NOISE_SECONDS, at the clip's own gain;
- generated noise (non_speech_clips): silence, room tone, pink and white noise, mains hum, clicks, fan, beep, rumble.
The held-out part is built from other clips (validation/test) and another seed of the generator, so the words a
model emits on it are not counted on audio it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from whisper_tune.pipeline.cache.nonspeech import HELDOUT, TRAIN, NonSpeechClip, NonSpeechPool
from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.hashing import stable_hex

POOL_CODE_VERSION = "nonspeech-1"
MIN_SILENCE_S = 0.5          # a trimmed-off silence shorter than this is not kept
MAX_SILENCE_S = 30.0         # Whisper's window
NOISE_BLOCK_S = 0.05         # noise floor blocks, seconds
NOISE_SHARE = 0.2            # the quietest share of a clip's blocks makes its noise floor
NOISE_SECONDS = 3.0          # length of a noise-floor clip
MIN_NOISE_S = 0.25           # a clip with fewer quiet seconds than this gives no noise-floor clip
SOURCE_CLIPS = {TRAIN: 24, HELDOUT: 10}   # clips per part whose silences and noise floor are used
GENERATED_SECONDS = {TRAIN: 5.0, HELDOUT: 4.0}
GENERATED_SEED = {TRAIN: 0, HELDOUT: 1}


def non_speech_clips(seconds: float = 5.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Ten kinds of audio without speech, float32 at 16 kHz. Seed 0 is the decode bench's set; another seed
    draws other noise and other levels and pitches (within a factor of 1.5) of the same kinds."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(1.0, np.arange(spectrum.size)))
    pink = np.fft.irfft(spectrum, n)
    clicks = np.zeros(n)
    clicks[rng.integers(0, n, 12)] = 0.8
    level, pitch = (1.0, 1.0) if seed == 0 else tuple(rng.uniform(1 / 1.5, 1.5, 2))
    clips = {
        "silence": np.zeros(n),
        "room tone": 0.003 * level * pink / np.abs(pink).max(),
        "quiet pink noise": 0.05 * level * pink / np.abs(pink).max(),
        "white noise": 0.05 * level * white,
        "mains hum 50 Hz": level * (0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)),
        "hum 60 Hz": 0.2 * level * np.sin(2 * np.pi * 60 * t),
        "clicks": level * clicks,
        "fan (low-passed noise)": 0.2 * level * np.convolve(white, np.ones(64) / 64, mode="same"),
        "beep 1 kHz": 0.3 * level * np.sin(2 * np.pi * 1000 * pitch * t) * (np.sin(2 * np.pi * 0.5 * t) > 0),
        "rumble": 0.3 * level * np.convolve(white, np.ones(800) / 800, mode="same") * 20,
    }
    return {k: np.clip(v, -1, 1).astype(np.float32) for k, v in clips.items()}


def clip_gain(samples: np.ndarray, top_db: float, normalize: bool) -> float:
    """The gain the clean clip gets: 1 / the peak of its trimmed speech under peak normalization, else 1."""
    from whisper_tune.pipeline.featurize.audio import trim

    if not normalize:
        return 1.0
    kept = trim(samples, top_db)
    peak = float(np.max(np.abs(kept))) if kept.size else 0.0
    return 1.0 / peak if peak > 0 else 1.0


def trimmed_silences(samples: np.ndarray, top_db: float, normalize: bool) -> list[np.ndarray]:
    """The leading and trailing parts trimming removes, each at least MIN_SILENCE_S long, at the clip's gain."""
    from whisper_tune.pipeline.featurize.audio import trim_bounds

    start, end = trim_bounds(samples, top_db)
    if end <= start:
        return []
    gain = clip_gain(samples, top_db, normalize)
    longest = int(MAX_SILENCE_S * SAMPLE_RATE_HZ)
    parts = [samples[:start][-longest:], samples[end:][:longest]]
    return [(p * gain).astype(np.float32) for p in parts if p.size >= MIN_SILENCE_S * SAMPLE_RATE_HZ]


def noise_floor(samples: np.ndarray, top_db: float, normalize: bool) -> np.ndarray | None:
    """The clip's quietest blocks strung together (NOISE_SECONDS, repeated if need be), at the clip's gain;
    None when it has fewer than MIN_NOISE_S of them or they are digital silence."""
    block = int(NOISE_BLOCK_S * SAMPLE_RATE_HZ)
    n_blocks = samples.size // block
    if n_blocks == 0:
        return None
    blocks = np.asarray(samples[: n_blocks * block], dtype=np.float32).reshape(n_blocks, block)
    energy = np.mean(np.square(blocks), axis=1)
    quiet = np.sort(np.argsort(energy, kind="stable")[: max(1, int(n_blocks * NOISE_SHARE))])
    if quiet.size * NOISE_BLOCK_S < MIN_NOISE_S or float(energy[quiet].max()) == 0.0:
        return None
    noise = blocks[quiet].reshape(-1)
    want = int(NOISE_SECONDS * SAMPLE_RATE_HZ)
    noise = np.tile(noise, -(-want // noise.size))[:want]
    return (noise * clip_gain(samples, top_db, normalize)).astype(np.float32)


@dataclass(frozen=True)
class SourceClip:
    """A user's clip whose silences and noise floor go into the pool."""

    clip_id: str
    source_hash: str         # the audio's content hash, as the cache index records it
    load: Callable[[], np.ndarray]


def pick_sources(candidates: Iterable[tuple[str, str]], n: int, salt: str) -> list[tuple[str, str]]:
    """n of the (clip id, source hash) pairs, chosen by a stable hash of the id (the same on every run)."""
    return sorted(candidates, key=lambda c: stable_hex(salt, c[0]))[:n]


def pool_fingerprint(feature_fp: str, audio_fp: str, sources: dict[str, Sequence[tuple[str, str]]]) -> str:
    """What the pool is made of: the code, the feature and audio settings, and each part's source clips."""
    parts = [POOL_CODE_VERSION, feature_fp, audio_fp, repr(sorted(GENERATED_SECONDS.items()))]
    for part in (TRAIN, HELDOUT):
        parts += [part, *(f"{cid}={h}" for cid, h in sources.get(part, ()))]
    return stable_hex(*parts)


def part_audio(part: str, sources: Sequence[SourceClip], top_db: float,
               normalize: bool) -> list[tuple[str, str, np.ndarray]]:
    """(name, kind, samples) of one part: its clips' silences and noise floors, then the generated kinds."""
    from whisper_tune.pipeline.core.errors import AudioError

    out: list[tuple[str, str, np.ndarray]] = []
    for src in sources:
        try:
            samples = src.load()
        except (AudioError, OSError):
            continue                       # `features` already reported the clip if it is unreadable
        for i, silence in enumerate(trimmed_silences(samples, top_db, normalize)):
            out.append((f"{src.clip_id}/silence-{i}", "silence", silence))
        noise = noise_floor(samples, top_db, normalize)
        if noise is not None:
            out.append((f"{src.clip_id}/noise", "noise", noise))
    for kind, samples in non_speech_clips(GENERATED_SECONDS[part], GENERATED_SEED[part]).items():
        out.append((f"generated/{kind}", "generated", samples))
    return out


def build_pool(sources: dict[str, Sequence[SourceClip]], *, logmel, fingerprint: str, top_db: float,
               normalize: bool) -> NonSpeechPool:
    """Log-mel features (as the cache stores a clip: its reached frames, float16, and the floor) of both parts."""
    clips = []
    for part in (TRAIN, HELDOUT):
        for name, kind, samples in part_audio(part, sources.get(part, ()), top_db, normalize):
            mel = logmel(samples)
            clips.append(NonSpeechClip(name=name, kind=kind, part=part,
                                       features=mel.features.astype(np.float16), floor=float(mel.floor)))
    return NonSpeechPool(fingerprint=fingerprint, clips=tuple(clips))


def refresh_pool(cache_dir, rows, index, *, feature_fp: str, audio_fp: str, logmel: Callable[[], object],
                 top_db: float, normalize: bool) -> str:
    """Bring WORK/cache/nonspeech.npz up to date with the cached clips; -> one line for the stage's report.

    rows: the manifest's usable rows (id, path, split); index: the cache index just written (its source hashes).
    Windows of long recordings are no source (their file is a whole recording, not a clip with its own silences).
    The pool is rebuilt only when its fingerprint changed (other source clips, audio or feature settings)."""
    from whisper_tune.pipeline.cache.nonspeech import stored_fingerprint, write_pool
    from whisper_tune.pipeline.featurize.audio import load

    cached = {cid: e for cid, e in index.clips.items() if e.complete and e.source is not None}
    if "window_index" in rows.columns:
        rows = rows.filter(rows["window_index"].is_null())
    paths = dict(zip(rows["id"].to_list(), rows["path"].to_list()))
    chosen: dict[str, list[tuple[str, str]]] = {}
    for part, splits in ((TRAIN, ("train",)), (HELDOUT, ("validation", "test"))):
        candidates = [(cid, e.source.hash) for cid, e in cached.items() if e.split in splits and cid in paths]
        chosen[part] = pick_sources(candidates, SOURCE_CLIPS[part], part)
    fingerprint = pool_fingerprint(feature_fp, audio_fp, chosen)
    if stored_fingerprint(cache_dir) == fingerprint:
        return "features: non-speech pool up to date"
    sources = {part: [SourceClip(cid, h, lambda p=paths[cid]: load(p)) for cid, h in pairs]
               for part, pairs in chosen.items()}
    pool = build_pool(sources, logmel=logmel(), fingerprint=fingerprint, top_db=top_db, normalize=normalize)
    write_pool(cache_dir, pool)
    return f"features: non-speech pool built ({pool.describe()})"
