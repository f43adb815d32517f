"""Audio in: probe headers, decode any supported format to mono float32 at 16 kHz, trim, peak-normalize.

Decoding uses soundfile (libsndfile: wav, flac, mp3, ogg/opus, aiff) and soxr for resampling; no ffmpeg.
Every failure is an AudioError whose message is a reason a user understands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import AudioError, first_line


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int       # Hz
    channels: int
    frames: int            # samples per channel, as the header says
    duration: float        # seconds
    format: str            # e.g. WAV, FLAC, MP3, OGG
    subtype: str           # e.g. PCM_16, FLOAT, MPEG_LAYER_III


def probe(path: Path | str) -> AudioInfo:
    """Read the header only. Raises AudioError for missing, empty or non-audio files."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError("file not found")
    if p.is_dir():
        raise AudioError("is a folder, not an audio file")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise AudioError(f"cannot read file ({err.strerror})") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise AudioError(f"not a readable audio file ({_short(err)})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError("audio header has no sample rate or channels")
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration=float(info.frames) / float(info.samplerate),
        format=str(info.format),
        subtype=str(info.subtype),
    )


# MP3 headers give an estimated length (Xing/VBR tables survive truncation), so MP3s are decoded in full to count
# their frames; every other format's length is checked by reading its last frames.
FULL_DECODE_FORMATS = ("MP3",)
_TAIL_FRAMES = 4096
_DECODE_BLOCK_FRAMES = 1 << 16


def verify(path: Path | str) -> AudioInfo:
    """probe() plus proof that the audio really reaches the length its header claims.

    Truncated or corrupt files (an MP3 cut short, a FLAC missing its end, ...) raise AudioError. For MP3 the
    returned duration is the decoded one. Cost: a seek and a few thousand frames, or one decode for MP3
    (hundreds of times faster than real time)."""
    import soundfile as sf

    info = probe(path)
    check_wav_length(path, info.sample_rate)
    try:
        with sf.SoundFile(str(path)) as f:
            if info.format in FULL_DECODE_FORMATS:
                decoded = 0
                while True:
                    block = f.read(_DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)
                    if block.shape[0] == 0:
                        break
                    decoded += block.shape[0]
                tolerance = max(2 * 1152, int(0.002 * info.frames))   # two MP3 frames, or 0.2 %
                if decoded + tolerance < info.frames:
                    raise AudioError(
                        f"truncated or corrupt file: the header says {info.duration:.2f} s but only "
                        f"{decoded / info.sample_rate:.2f} s decodes"
                    )
                return AudioInfo(info.sample_rate, info.channels, decoded, decoded / info.sample_rate,
                                 info.format, info.subtype)
            start = max(0, info.frames - _TAIL_FRAMES)
            f.seek(start)
            got = f.read(info.frames - start, dtype="float32", always_2d=True).shape[0]
    except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
        raise AudioError(f"truncated or corrupt file: its end cannot be decoded ({_short(err)})") from None
    if got < info.frames - start:
        raise AudioError(
            f"truncated or corrupt file: the header says {info.duration:.2f} s but the audio ends at "
            f"{(start + got) / info.sample_rate:.2f} s"
        )
    return info


_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)     # streaming writers leave the data size at 0 or -1: nothing to check


def wav_data_frames(path: Path | str) -> tuple[int, int] | None:
    """(frames the WAV header's data chunk declares, frames actually present), or None when not a plain WAV.

    libsndfile silently shortens a WAV whose data chunk is cut off, so the header is read here directly."""
    import struct

    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    body = f.read(min(length, 16))
                    block_align = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 else 0
                    f.seek(length + (length & 1) - len(body), 1)
                elif kind == b"data":
                    if block_align <= 0 or length in _WAV_UNKNOWN_SIZES:
                        return None
                    return length // block_align, max(0, size - f.tell()) // block_align
                else:
                    f.seek(length + (length & 1), 1)
    except (OSError, struct.error):
        return None


def check_wav_length(path: Path | str, sample_rate: int) -> None:
    """AudioError when a WAV holds fewer frames than its header declares (a file cut short in a copy)."""
    frames = wav_data_frames(path)
    if frames is None or sample_rate <= 0:
        return
    declared, present = frames
    if present < declared:
        raise AudioError(
            f"truncated or corrupt file: the header says {declared / sample_rate:.2f} s but only "
            f"{present / sample_rate:.2f} s of audio data is present"
        )


def decode(path: Path | str) -> tuple[np.ndarray, int]:
    """Decode the whole file: (samples float32 of shape (frames, channels), sample rate)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError("file not found")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
        raise AudioError(f"cannot decode audio ({_short(err)})") from None
    return data, int(sr)


def to_mono_16k(data: np.ndarray, sample_rate: int) -> np.ndarray:
    """Average channels and resample to 16 kHz with soxr (high quality)."""
    mono = data.mean(axis=1) if data.ndim == 2 else data
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sample_rate != SAMPLE_RATE_HZ and mono.size:
        import soxr

        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32, copy=False)
    return mono


def load(path: Path | str) -> np.ndarray:
    """Decode to mono float32 at 16 kHz. Raises AudioError for undecodable, empty, NaN or infinite audio."""
    data, sr = decode(path)
    check_wav_length(path, sr)
    if data.size == 0:
        raise AudioError("no audio samples")
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite samples")
    return to_mono_16k(data, sr)


def aligned_start(seconds: float, sample_rate: int) -> tuple[int, int]:
    """(frame of the file, 16 kHz sample) at or before `seconds` where the two rates' sample grids meet (every
    sample_rate / gcd(sample_rate, 16000) frames: 441 at 44.1 kHz, 10 ms): a stream started there gives the 16 kHz
    samples of a stream from the beginning, from that sample on (after the resampler's first few milliseconds)."""
    period = sample_rate // math.gcd(int(sample_rate), SAMPLE_RATE_HZ)
    frame = max(0, int(seconds * sample_rate)) // period * period
    return frame, frame * SAMPLE_RATE_HZ // sample_rate


def stream(path: Path | str, block_seconds: float = 10.0, start_frame: int = 0) -> Iterator[np.ndarray]:
    """Mono float32 16 kHz blocks of about `block_seconds`, decoded and resampled block by block (soxr's
    streaming resampler), so memory is bounded by a block whatever the file's length. AudioError as load().
    start_frame: the file's frame to start at (aligned_start gives one whose samples match a stream from 0)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError("file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(p))
    except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
        raise AudioError(f"cannot decode audio ({_short(err)})") from None
    with f:
        sr = int(f.samplerate)
        check_wav_length(p, sr)
        frames = max(1, int(block_seconds * sr))
        if start_frame > 0:
            try:
                f.seek(int(start_frame))
            except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
                raise AudioError(f"cannot seek in the audio ({_short(err)})") from None
        resampler = None
        if sr != SAMPLE_RATE_HZ:
            import soxr

            resampler = soxr.ResampleStream(sr, SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ")
        while True:
            try:
                block = f.read(frames, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
                raise AudioError(f"cannot decode audio ({_short(err)})") from None
            last = block.shape[0] < frames
            if not np.isfinite(block).all():
                raise AudioError("audio contains NaN or infinite samples")
            mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                yield mono
            if last:
                return


TRIM_FRAME = 2048   # samples per loudness frame (librosa.effects.trim's default)
TRIM_HOP = 512      # samples between frames


def trim(samples: np.ndarray, top_db: float) -> np.ndarray:
    """Remove leading and trailing silence quieter than peak - top_db; 0 = no trim.

    The same computation as librosa.effects.trim (centered 2048-sample RMS frames every 512 samples, dB relative
    to the loudest frame), in plain NumPy: worker processes then never pay librosa's import and JIT start-up."""
    start, end = trim_bounds(samples, top_db)
    return samples[start:end]


def trim_bounds(samples: np.ndarray, top_db: float) -> tuple[int, int]:
    """(start, end) of what trim() keeps: samples[:start] and samples[end:] are the silences it removes."""
    if top_db <= 0 or samples.size == 0:
        return 0, int(samples.size)
    y = np.asarray(samples, dtype=np.float32)
    padded = np.pad(y, TRIM_FRAME // 2, mode="constant")
    n_frames = 1 + (padded.size - TRIM_FRAME) // TRIM_HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(TRIM_FRAME, n_frames), strides=(padded.itemsize, TRIM_HOP * padded.itemsize), writeable=False
    )
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=-2))
    magnitude = np.abs(rms)
    ref = np.max(magnitude)
    db = 10.0 * np.log10(np.maximum(1e-10, np.square(magnitude)))
    db -= 10.0 * np.log10(np.maximum(1e-10, np.abs(ref**2)))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    start = int(loud[0]) * TRIM_HOP
    end = min(y.size, (int(loud[-1]) + 1) * TRIM_HOP)
    return start, end


def peak_normalize(samples: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        samples = samples / peak
    return samples.astype(np.float32, copy=False)


# A clip whose de-meaned signal never swings further than this (peak to peak, full scale = 1.0) holds no speech:
# 0.001 is -60 dBFS, about 33 steps of 16-bit audio, far below any recorded voice. A constant (DC) file, an
# all-zero one and one of near silence are all rejected by it.
SILENCE_PEAK_TO_PEAK = 1e-3


def check_audible(samples: np.ndarray) -> None:
    """AudioError for an all-zero, constant (DC only) or near-silent signal."""
    if samples.size == 0 or float(np.max(np.abs(samples))) == 0.0:
        raise AudioError("silent audio (all samples are zero)")
    swing = float(np.max(samples) - np.min(samples))
    if swing < SILENCE_PEAK_TO_PEAK:
        raise AudioError(f"silent or constant audio: the signal varies by only {swing:.2g} peak to peak "
                         f"(less than {SILENCE_PEAK_TO_PEAK:g}, i.e. -60 dBFS); a clip needs audible speech")


def prepare(samples: np.ndarray, *, top_db: float, normalize: bool) -> np.ndarray:
    """The clean clip: trimmed, then peak-normalized. Raises AudioError when nothing audible is left."""
    check_audible(samples)
    out = trim(samples, top_db)
    if out.size == 0:
        raise AudioError(f"nothing left after trimming silence (top_db={top_db})")
    if normalize:
        out = peak_normalize(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def _short(err: BaseException) -> str:
    text = first_line(err, limit=10_000)
    text = re.sub(r"^Error opening '.*?': ", "", text)   # libsndfile repeats the path; callers name the file
    if text.startswith("File does not exist or is not a regular file"):   # what libsndfile says for garbage data
        text = "format not recognised or data corrupt"
    return text.rstrip(".")[:160]
