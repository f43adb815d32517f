"""Packed 30 s training windows and Whisper-format labels, built on the fly from the per-clip feature cache.

Whisper's encoder always reads 30 s (3000 frames). A 6 s clip alone leaves 80 % of that window as padding; a
packed window lays several clips of the epoch's schedule one after another, with short silent gaps, so one
encoder pass sees several times more speech:

    |clip a (its scheduled variant)|gap|clip b      |gap|clip c   |  ... floor up to frame 3000
    <|0.00|> text a<|4.12|><|4.40|> text b<|11.02|><|11.30|> text c<|16.84|><|endoftext|>

Windows (`plan_windows`): the epoch's clips in a seeded order, next-fit: a clip that does not fit in the space
(frames, or decoder tokens) left in the current window starts the next one. Every clip is in exactly one window
per epoch. Each clip starts on an even frame (the 0.02 s timestamp grid) after a gap of GAP_FRAMES.

Features (`window_features`): the cache stores each clip's trimmed log-mel frames with its own floor (its peak
- 8, Whisper's clamp). The window puts each clip's frames at its offset and fills the rest with the window floor,
the highest of its clips' floors, raising every frame below it: max(max(x, p_i - 8), P - 8) = max(x, P - 8).
That is exactly the log-mel of the concatenated audio (each clip peak-normalized on its own, silence in the
gaps), except for (1) three frames around each clip's start: its first two, whose STFT window reflected the
clip's own first 200 samples where the joined audio has silence, and the gap's last one, whose window reaches
40 samples into the clip (up to 0.8 apart on Whisper's scaled log-mel, whose values span about -1.5..1.5), and
(2) float16 rounding everywhere else (under 4e-3). On four clips filling a window the mean difference is under
2e-3. tests/test_packing.py checks these bounds against WhisperFeatureExtractor on the joined audio.

Labels (`window_labels`): with probability `timestamp_prob` per window, Whisper's timestamped format (each clip's
text between its start and end time within the window, 0.02 s steps); otherwise <|notimestamps|> and the texts
one after another (each starts with Whisper's leading space, so they read as joined by spaces). The prefix
(<|startoftranscript|>, language, task) is the one stored with the clip's labels.

A window cut from a long recording (validate + features) carries its own cues: the same labels with each cue's
text between its own times (`CueSpan`, `cue_texts`); it is never packed with other clips.

This module only builds windows and labels; the training dataset (whisper_tune.train.data.TrainDataset) calls
it when packing (`pack=True`) or timestamp labels (`timestamp_prob` > 0) are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from whisper_tune.pipeline.core.constants import HOP_LENGTH, MAX_LABEL_TOKENS, N_FRAMES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.core.hashing import stable_int
from whisper_tune.pipeline.core.tokens import EOT, NO_TIMESTAMPS, SOT, TIMESTAMP_STEP_S

FRAME_S = HOP_LENGTH / SAMPLE_RATE_HZ        # 0.01 s per log-mel frame
GAP_FRAMES = (10, 50)                        # silence between packed clips: 0.1 to 0.5 s (uniform, seeded)
EDGE_FRAMES = 2                              # a clip's first frames, which differ from the joined audio's
MAX_TIMESTAMP_STEPS = round(30.0 / TIMESTAMP_STEP_S)   # <|30.00|>, the last timestamp token


@dataclass(frozen=True)
class LabelTokens:
    """The special token ids that window labels need; timestamps are no_timestamps + 1 + steps, as Whisper's
    vocabularies and transformers' generation both lay them out (a bare tokenizer.json may not name them)."""

    sot: int
    no_timestamps: int
    eot: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "LabelTokens":
        from whisper_tune.pipeline.models import token_id

        return cls(sot=token_id(tokenizer, SOT), no_timestamps=token_id(tokenizer, NO_TIMESTAMPS),
                   eot=token_id(tokenizer, EOT))

    def timestamp(self, seconds: float) -> int:
        steps = min(MAX_TIMESTAMP_STEPS, max(0, round(seconds / TIMESTAMP_STEP_S)))
        return self.no_timestamps + 1 + steps

    def split(self, labels: np.ndarray, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(prefix without <|notimestamps|>, text ids) of stored labels `prefix <|notimestamps|> text <|eot|>`."""
        ids = np.asarray(labels)
        where = np.flatnonzero(ids == self.no_timestamps)
        if where.size != 1 or int(ids[-1]) != self.eot:
            raise CacheError(f"clip {clip_id!r} has labels without one <|notimestamps|> and a final <|endoftext|>; "
                             "rebuild them with `whisper-tune features`")
        return ids[: where[0]], ids[where[0] + 1: -1]


@dataclass(frozen=True)
class Piece:
    """One clip in a window: which clip and variant, where it starts (frames) and how many frames it has."""

    clip_id: str
    variant: int
    offset: int
    frames: int
    text_tokens: int

    @property
    def start_s(self) -> float:
        return self.offset * FRAME_S

    @property
    def end_s(self) -> float:
        """Where the clip's audio ends: its T stored frames cover n samples with T*160 - 360 < n <= T*160 - 200."""
        return (self.offset * HOP_LENGTH + max(0, self.frames * HOP_LENGTH - 280)) / SAMPLE_RATE_HZ


def label_length(pieces: Sequence[Piece], prefix_len: int) -> int:
    """Tokens of a window's timestamped labels (the longer form): prefix, 2 timestamps + text per clip, eot."""
    return prefix_len + sum(p.text_tokens + 2 for p in pieces) + 1


def _even(frame: int) -> int:
    return frame + (frame % 2)


def plan_windows(clips: Sequence[tuple[str, int, int, int]], gap_seed: int, prefix_len: int = 4,
                 capacity: int = N_FRAMES, max_tokens: int = MAX_LABEL_TOKENS) -> list[tuple[Piece, ...]]:
    """Next-fit packing of (clip id, variant, frames, text tokens) in the given order (see the module doc)."""
    windows: list[list[Piece]] = []
    end = 0
    for k, (clip_id, variant, frames, tokens) in enumerate(clips):
        if frames > capacity:
            raise CacheError(f"clip {clip_id!r} has {frames} frames; a window holds {capacity}; "
                             "rebuild the cache with `whisper-tune features`")
        current = windows[-1] if windows else None
        if current:
            gap = GAP_FRAMES[0] + stable_int("gap", gap_seed, k) % (GAP_FRAMES[1] - GAP_FRAMES[0] + 1)
            start = _even(end + gap)
            piece = Piece(clip_id, variant, start, frames, tokens)
            if start + frames <= capacity and label_length([*current, piece], prefix_len) <= max_tokens:
                current.append(piece)
                end = start + frames
                continue
        windows.append([Piece(clip_id, variant, 0, frames, tokens)])
        end = frames
    return [tuple(w) for w in windows]


def epoch_windows(clips: Sequence[tuple[str, int, int, int]], seed: int, epoch: int) -> list[tuple[Piece, ...]]:
    """An epoch's windows before split_to: its scheduled (clip id, variant, frames, text tokens), given in clip
    order, shuffled by (seed, epoch), then packed next-fit with gaps drawn from (seed, epoch)."""
    order = np.random.default_rng(stable_int("pack", seed, epoch)).permutation(len(clips))
    return plan_windows([clips[i] for i in order.tolist()], stable_int("gaps", seed, epoch))


def split_to(windows: Sequence[tuple[Piece, ...]], count: int) -> list[tuple[Piece, ...]]:
    """`count` windows: the fullest ones (most clips) cut in two until there are enough, or the last ones
    dropped when there are too many (an epoch beyond those the window count was planned for)."""
    out = list(windows)
    while len(out) < count:
        i = max(range(len(out)), key=lambda j: (len(out[j]), -j))
        if len(out[i]) < 2:
            break
        w = out[i]
        half = len(w) // 2
        shift = w[half].offset
        tail = tuple(Piece(p.clip_id, p.variant, p.offset - shift, p.frames, p.text_tokens) for p in w[half:])
        out[i: i + 1] = [w[:half], tail]
    return out[:count]


def window_features(parts: Sequence[tuple[np.ndarray, float]], pieces: Sequence[Piece]) -> tuple[np.ndarray, float]:
    """float16 (n_mels, T) frames of a window and its floor (see the module doc), from each clip's
    (cached trimmed features, floor)."""
    floor = max(f for _, f in parts)
    width = pieces[-1].offset + pieces[-1].frames
    out = np.full((parts[0][0].shape[0], width), floor, dtype=np.float16)
    for (feats, _), p in zip(parts, pieces):
        np.maximum(feats, np.float16(floor), out=out[:, p.offset: p.offset + p.frames])
    return out, float(floor)


class Timed(Protocol):
    """Something said from start_s to end_s seconds of a window: a packed clip (Piece), a cue (CueSpan)."""

    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...


@dataclass(frozen=True)
class CueSpan:
    """A cue of a window cut from a long recording: its times relative to the window start, as the cache holds
    them (on the 0.02 s grid already)."""

    start_s: float
    end_s: float


def cue_texts(text: np.ndarray, cue_tokens: np.ndarray) -> list[np.ndarray]:
    """A window's stored text ids split into its cues' (cue_tokens[i] ids each)."""
    if int(np.sum(cue_tokens)) != len(text):
        raise CacheError(f"a window's labels hold {len(text)} text ids but its cues {int(np.sum(cue_tokens))}; "
                         "rebuild them with `whisper-tune features`")
    return np.split(np.asarray(text), np.cumsum(cue_tokens)[:-1])


def window_labels(tokens: LabelTokens, prefix: np.ndarray, texts: Sequence[np.ndarray], pieces: Sequence[Timed],
                  timestamps: bool) -> np.ndarray:
    """int32 labels in Whisper's format (see the module doc): each text between its piece's start and end."""
    parts: list[np.ndarray] = [np.asarray(prefix, dtype=np.int32)]
    if timestamps:
        for text, p in zip(texts, pieces):
            parts += [np.array([tokens.timestamp(p.start_s)], np.int32), np.asarray(text, np.int32),
                      np.array([tokens.timestamp(p.end_s)], np.int32)]
    else:
        parts += [np.array([tokens.no_timestamps], np.int32), *(np.asarray(t, np.int32) for t in texts)]
    parts.append(np.array([tokens.eot], np.int32))
    return np.concatenate(parts)


def planned_epochs(epochs: float, max_steps: int) -> int:
    """Epochs whose windows fix the run's windows per epoch (max_steps runs: the first one)."""
    return 1 if max_steps > 0 else max(1, math.ceil(epochs))


def padding_share(windows: Sequence[Sequence[Piece]]) -> float:
    """Share of the encoder's frames (3000 per window) that hold no clip frame: padding and gaps."""
    if not windows:
        return 0.0
    used = sum(p.frames for w in windows for p in w)
    return 1.0 - used / (len(windows) * N_FRAMES)
