"""Log-mel features equal to WhisperFeatureExtractor's, computed only over the frames the audio reaches.

WhisperFeatureExtractor zero-pads every clip to 30 s (480 000 samples), reflect-pads 200 samples each side, takes
a 400-sample Hann STFT every 160 samples, drops the last frame, projects onto its mel filters, takes log10
(clamped at 1e-10), floors everything at (max - 8) and rescales with (x + 4) / 4. Frame i's window covers samples
i*160-200 .. i*160+200, so every frame from T = ceil((len + 200) / 160) on sees only zeros: its log-mel is -10
before the floor, i.e. one constant per clip. We compute the T frames (float32 torch STFT on exactly the samples
the padded signal has there) and that constant; `CachedExample.padded()` rebuilds the full (n_mels, 3000) input.

A long recording (long-form evaluation) is computed whole, as WhisperFeatureExtractor(truncation=False) does:
samples // 160 frames, reflect padding at both ends, one (max - 8) floor over the whole recording
(`LogMel.whole`, in blocks of frames so that no recording-length STFT is held).

Each clip is computed on its own, in a shape that depends on that clip only, so the result does not depend on
which other clips share a batch or a worker (byte-identical caches from whole runs, part runs and resumed runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_tune.pipeline.core.constants import HOP_LENGTH, LOG_CLAMP, LOG_RANGE, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.hashing import stable_hex

FEATURE_CODE_VERSION = "logmel-1"
WHOLE_BLOCK_FRAMES = N_FRAMES  # frames per STFT block of a whole recording
_PAD = N_FFT // 2              # 200 samples of reflect padding (center=True)


def frames_reached(n_samples: int) -> int:
    """Number of leading frames whose window touches the first n_samples samples (capped at 3000)."""
    n = min(int(n_samples), N_SAMPLES)
    return max(1, min(N_FRAMES, -(-(n + _PAD) // HOP_LENGTH)))


def padded_region(audio: np.ndarray, length: int) -> np.ndarray:
    """The first `length` samples of reflect-pad(zero-pad(audio[:480000], 480000), 200), built without the zeros."""
    a = np.asarray(audio, dtype=np.float32)[:N_SAMPLES]
    mid_len = min(N_SAMPLES, length - _PAD)
    y = np.zeros(max(mid_len, _PAD + 1), dtype=np.float32)
    k = min(a.size, y.size)
    y[:k] = a[:k]
    parts = [y[_PAD:0:-1], y[:mid_len]]
    if length > _PAD + N_SAMPLES:          # the right reflection, only for clips that fill the 30 s window
        extra = length - _PAD - N_SAMPLES
        parts.append(y[N_SAMPLES - 2: N_SAMPLES - 2 - extra: -1])
    return np.concatenate(parts)


@dataclass(frozen=True)
class LogMelResult:
    features: np.ndarray   # float32 (n_mels, T)
    floor: float           # value of every frame from T to 3000


class LogMel:
    """Whisper log-mel for one mel filter bank (80 or 128 bins). Build once per process; call per clip."""

    def __init__(self, mel_filters: np.ndarray) -> None:
        import torch

        filters = np.asarray(mel_filters)
        if filters.ndim != 2 or filters.shape[0] != N_FFT // 2 + 1:
            raise ValueError(f"mel filters must have shape ({N_FFT // 2 + 1}, n_mels), got {filters.shape}")
        self.n_mels = int(filters.shape[1])
        self._filters = torch.from_numpy(np.ascontiguousarray(filters.T, dtype=np.float32))
        self._window = torch.hann_window(N_FFT)
        self.fingerprint = stable_hex(
            f"{FEATURE_CODE_VERSION}|{SAMPLE_RATE_HZ}|{N_FFT}|{HOP_LENGTH}|{N_SAMPLES}|{LOG_CLAMP}|{LOG_RANGE}|"
            f"{filters.shape}", np.ascontiguousarray(filters, dtype=np.float32).tobytes(), size=12, sep=b"")

    @classmethod
    def from_feature_extractor(cls, fe) -> "LogMel":
        for name, want in (("n_fft", N_FFT), ("hop_length", HOP_LENGTH), ("sampling_rate", SAMPLE_RATE_HZ),
                           ("n_samples", N_SAMPLES)):
            got = getattr(fe, name, want)
            if got != want:
                raise ValueError(f"feature extractor has {name}={got}; whisper-tune supports {want}")
        return cls(fe.mel_filters)

    def __call__(self, audio: np.ndarray) -> LogMelResult:
        import torch

        t = frames_reached(len(audio))
        region = padded_region(audio, (t - 1) * HOP_LENGTH + N_FFT)
        stft = torch.stft(torch.from_numpy(region), N_FFT, HOP_LENGTH, window=self._window, center=False,
                          return_complex=True)
        parts = torch.view_as_real(stft)
        power = (parts[..., 0] ** 2 + parts[..., 1] ** 2).contiguous()
        log_spec = torch.clamp(self._filters @ power, min=LOG_CLAMP).log10()
        silent = torch.clamp(torch.zeros(1, dtype=torch.float32), min=LOG_CLAMP).log10()[0]  # log of a zero frame
        peak = log_spec.max()
        if t < N_FRAMES:
            peak = torch.maximum(peak, silent)
        low = peak - LOG_RANGE
        log_spec = (torch.maximum(log_spec, low) + 4.0) / 4.0
        floor = float((torch.maximum(silent, low) + 4.0) / 4.0)
        return LogMelResult(features=log_spec.numpy(), floor=floor)

    def whole(self, audio: np.ndarray) -> LogMelResult:
        """The log-mel of a whole recording of any length: what WhisperFeatureExtractor gives with
        truncation=False (samples // 160 frames, one floor for the recording), and the value of a frame of
        silence as `floor` (what pads a last window)."""
        import torch

        a = np.ascontiguousarray(audio, dtype=np.float32)
        if a.size <= _PAD:
            raise ValueError(f"a recording needs more than {_PAD} samples, got {a.size}")
        padded = torch.from_numpy(np.pad(a, _PAD, mode="reflect"))
        n_frames = a.size // HOP_LENGTH
        blocks = []
        for f0 in range(0, n_frames, WHOLE_BLOCK_FRAMES):
            f1 = min(n_frames, f0 + WHOLE_BLOCK_FRAMES)
            region = padded[f0 * HOP_LENGTH:(f1 - 1) * HOP_LENGTH + N_FFT]
            stft = torch.stft(region, N_FFT, HOP_LENGTH, window=self._window, center=False, return_complex=True)
            power = stft.abs() ** 2
            blocks.append(torch.clamp(self._filters @ power, min=LOG_CLAMP).log10())
        log_spec = torch.cat(blocks, dim=1)
        low = log_spec.max() - LOG_RANGE
        log_spec = (torch.maximum(log_spec, low) + 4.0) / 4.0
        silent = float(np.log10(LOG_CLAMP))
        return LogMelResult(features=log_spec.numpy(), floor=(max(silent, float(low)) + 4.0) / 4.0)
