"""Non-speech training windows and the held-out non-speech set, from the cache's non-speech pool
(whisper_tune.pipeline.cache.nonspeech; built by `features`).

    labels = empty_labels(tokenizer)       # [<|startoftranscript|>, (language, task,) <|notimestamps|>, <|endoftext|>]
    train = with_non_speech(train, pool, share=0.05, labels=labels, seed=42)
    held = NonSpeechEval(pool, labels)     # what each epoch's evaluation counts the words of

The label of audio without speech is an empty transcript: the prefix every other window has, <|notimestamps|>,
then <|endoftext|> (what the tokenizer gives for ""). Whisper's own training marked such audio with <|nospeech|>
(<|nocaptions|> in the older vocabularies) right after <|startoftranscript|>, which is where generation reads the
no-speech probability; but decoding forces the prefix tokens, so what makes the decoded text empty is <|endoftext|>
right after them, and that is what these windows teach.

With the share s, an epoch of W speech windows gets round(W * s / (1 - s)) non-speech windows more (at least one),
so s is their share of the epoch's windows; each is one pool clip on its own (packed or not), drawn from
(seed, epoch, index). Drawn at train time: changing the share needs no new features.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from whisper_tune.pipeline.cache.nonspeech import HELDOUT, TRAIN, NonSpeechClip, NonSpeechPool
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.hashing import stable_int
from whisper_tune.pipeline.core.tokens import EOT, NO_TIMESTAMPS, SOT

from whisper_tune.train.data import Item

NON_SPEECH_ID = "nonspeech:"           # clip ids of non-speech items start with this


def empty_labels(tokenizer) -> np.ndarray:
    """The label ids of an empty transcript with this tokenizer's prefix (language, task, <|notimestamps|>)."""
    from whisper_tune.pipeline.models import token_id

    ids = np.asarray(tokenizer("").input_ids, dtype=np.int32)
    sot, no_ts, eot = (token_id(tokenizer, t) for t in (SOT, NO_TIMESTAMPS, EOT))
    if ids.size < 3 or int(ids[0]) != sot or int(ids[-2]) != no_ts or int(ids[-1]) != eot:
        raise ConfigError(f"the tokenizer gives {ids.tolist()} for an empty transcript, not <|startoftranscript|> "
                          "... <|notimestamps|> <|endoftext|>; train with --no-speech-share 0")
    return ids


def extra_windows(n_windows: int, share: float) -> int:
    """Non-speech windows to add to n_windows speech windows so that they are `share` of all."""
    if share <= 0 or n_windows <= 0:
        return 0
    return max(1, round(n_windows * share / (1.0 - share)))


def _item(clip: NonSpeechClip, labels: np.ndarray) -> Item:
    return Item(clip_id=NON_SPEECH_ID + clip.name, variant=0, features=clip.features, floor=float(clip.floor),
                labels=labels)


class WithNonSpeech(Dataset):
    """A training dataset with non-speech windows after each epoch's speech windows (the sampler shuffles them
    in): index `epoch * (W + N) + i` is speech window i of that epoch when i < W, else a pool clip."""

    def __init__(self, speech: Any, clips: Sequence[NonSpeechClip], share: float, labels: np.ndarray,
                 seed: int) -> None:
        self.speech, self.clips, self.share = speech, list(clips), float(share)
        self.labels, self.seed = np.asarray(labels, dtype=np.int32), seed
        self.n_speech = len(speech)
        self.n_non_speech = extra_windows(self.n_speech, self.share)

    def __len__(self) -> int:
        return self.n_speech + self.n_non_speech

    def __getattr__(self, name: str) -> Any:          # clip_ids, windows, locate, ... of the speech dataset
        if name.startswith("__") or name == "speech":
            raise AttributeError(name)
        return getattr(self.speech, name)

    def spread_to(self, windows: int) -> None:
        """The speech dataset's spread_to (a packed run counting clips), with the non-speech share kept."""
        self.speech.spread_to(windows)
        self.n_speech = len(self.speech)
        self.n_non_speech = extra_windows(self.n_speech, self.share)

    def is_non_speech(self, index: int) -> bool:
        return int(index) % len(self) >= self.n_speech

    def __getitem__(self, index: int) -> Item:
        epoch, i = divmod(int(index), len(self))
        if i < self.n_speech:
            return self.speech[epoch * self.n_speech + i]
        pick = stable_int("nonspeech", self.seed, epoch, i) % len(self.clips)
        return _item(self.clips[pick], self.labels)

    def describe(self) -> str:
        kinds = sorted({c.kind for c in self.clips})
        return (f"{self.speech.describe()}; plus {self.n_non_speech} non-speech windows per epoch "
                f"({self.share:.0%} of {len(self)}, empty transcript) from {len(self.clips)} pool clips "
                f"({', '.join(kinds)})")


def with_non_speech(speech: Any, pool: NonSpeechPool | None, *, share: float, labels: np.ndarray | None,
                    seed: int) -> tuple[Any, str]:
    """(the dataset with the share of non-speech windows, a line for the log). The speech dataset unchanged
    when the share is 0 or the cache has no pool (an older cache: the line says how to get one)."""
    if share <= 0:
        return speech, "non-speech windows: none (augment.no_speech_share = 0)"
    clips = pool.part(TRAIN) if pool is not None else []
    if not clips:
        return speech, ("non-speech windows: none, the cache has no non-speech pool (built before it existed); "
                        "re-run `whisper-tune features` to add one (no clip is featurized again)")
    mixed = WithNonSpeech(speech, clips, share, labels, seed)
    return mixed, f"non-speech windows: {mixed.n_non_speech} per epoch ({share:.0%})"


class NonSpeechEval(Dataset):
    """The held-out part of the pool as evaluation items (labels: the empty transcript)."""

    def __init__(self, pool: NonSpeechPool, labels: np.ndarray) -> None:
        self.clips = pool.part(HELDOUT)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Item:
        return _item(self.clips[int(index)], self.labels)

