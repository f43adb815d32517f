"""Non-speech training windows and the held-out non-speech set, from the cache's non-speech pool
(whisper_tune.pipeline.cache.nonspeech; built by `features`).

    labels = empty_labels(tokenizer)       # [<|startoftranscript|>, (language, task,) <|notimestamps|>, <|endoftext|>]
    train = with_non_speech(train, pool, share=0.05, labels=labels, seed=42, unit=share_unit(pack, batch_unit))
    held = NonSpeechEval(pool, labels)     # what each epoch's evaluation counts the words of

The label of audio without speech is an empty transcript: the prefix every other window has, <|notimestamps|>,
then <|endoftext|> (what the tokenizer gives for ""). Whisper's own training marked such audio with <|nospeech|>
(<|nocaptions|> in the older vocabularies) right after <|startoftranscript|>, which is where generation reads the
no-speech probability; but decoding forces the prefix tokens, so what makes the decoded text empty is <|endoftext|>
right after them, and that is what these windows teach. Greedy decoding with Whisper's generation config cannot
give it, though: `begin_suppress_tokens` (Whisper's suppress_blank) forbids <|endoftext|> and a space as the first
token, so a model that learned these windows writes its next choice, "." on the demo, and stops (0 words).

The share counts examples the way the batch counts them (`unit`). Each non-speech window is one pool clip on its
own (packed or not), so with the share s an epoch of C speech examples gets round(C * s / (1 - s)) non-speech
windows more (at least one): C is the epoch's windows when the batch counts windows (unpacked, a window is a
clip), and its train clips when a packed run counts clips (training.batch_unit = "clips"): then s is the share of
the clips the run shows, not of its packed windows (about 5 clips each on the demo, so a share of windows would
be about a fifth as many clips). Drawn from (seed, epoch, index) at train time: changing the share needs no new
features.
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
UNITS = ("windows", "clips")           # what the share counts: the batch's unit


def empty_labels(tokenizer) -> np.ndarray:
    """The label ids of an empty transcript with this tokenizer's prefix (language, task, <|notimestamps|>)."""
    from whisper_tune.pipeline.models import token_id

    ids = np.asarray(tokenizer("").input_ids, dtype=np.int32)
    sot, no_ts, eot = (token_id(tokenizer, t) for t in (SOT, NO_TIMESTAMPS, EOT))
    if ids.size < 3 or int(ids[0]) != sot or int(ids[-2]) != no_ts or int(ids[-1]) != eot:
        raise ConfigError(f"the tokenizer gives {ids.tolist()} for an empty transcript, not <|startoftranscript|> "
                          "... <|notimestamps|> <|endoftext|>; train with --no-speech-share 0")
    return ids


def extra_windows(n_examples: int, share: float) -> int:
    """Non-speech windows (one clip each) to add to n_examples speech examples so that they are `share` of all."""
    if share <= 0 or n_examples <= 0:
        return 0
    return max(1, round(n_examples * share / (1.0 - share)))


def share_unit(pack: bool, batch_unit: str) -> str:
    """What the non-speech share counts in a run: clips when a packed batch counts clips, else windows."""
    return "clips" if pack and batch_unit == "clips" else "windows"


def _item(clip: NonSpeechClip, labels: np.ndarray) -> Item:
    return Item(clip_id=NON_SPEECH_ID + clip.name, variant=0, features=clip.features, floor=float(clip.floor),
                labels=labels)


class WithNonSpeech(Dataset):
    """A training dataset with non-speech windows after each epoch's speech windows (the sampler shuffles them
    in): index `epoch * (W + N) + i` is speech window i of that epoch when i < W, else a pool clip. N counts the
    share in `unit`: of the speech windows, or of the speech dataset's train clips (a packed run counting clips);
    it stays when spread_to gives the speech more windows."""

    def __init__(self, speech: Any, clips: Sequence[NonSpeechClip], share: float, labels: np.ndarray,
                 seed: int, unit: str = "windows") -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
        self.speech, self.clips, self.share, self.unit = speech, list(clips), float(share), unit
        self.labels, self.seed = np.asarray(labels, dtype=np.int32), seed
        self.n_speech = len(speech)
        self.n_non_speech = extra_windows(self.speech_examples, self.share)

    @property
    def speech_examples(self) -> int:
        """The speech examples per epoch the share is counted against, in the share's unit."""
        return len(self.speech.clip_ids) if self.unit == "clips" else self.n_speech

    @property
    def clips_per_epoch(self) -> int:
        """Train clips per epoch, non-speech windows included (one clip each): what a batch counting clips counts."""
        return len(self.speech.clip_ids) + self.n_non_speech

    def __len__(self) -> int:
        return self.n_speech + self.n_non_speech

    def __getattr__(self, name: str) -> Any:          # clip_ids, windows, locate, ... of the speech dataset
        if name.startswith("__") or name == "speech":
            raise AttributeError(name)
        return getattr(self.speech, name)

    def spread_to(self, windows: int) -> None:
        """At least `windows` windows per epoch in all (a packed run counting clips): the speech dataset's
        spread_to for what the non-speech windows leave; counted in clips their number stays, counted in windows
        it keeps its share of the spread windows."""
        if self.unit == "clips":
            self.speech.spread_to(windows - self.n_non_speech)
            self.n_speech = len(self.speech)
            return
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
        of = (f"{self.n_non_speech / len(self):.0%} of {len(self)} windows, {self.share:.0%} of "
              f"{self.clips_per_epoch} clips" if self.unit == "clips" else f"{self.share:.0%} of {len(self)}")
        return (f"{self.speech.describe()}; plus {self.n_non_speech} non-speech windows per epoch "
                f"({of}, empty transcript) from {len(self.clips)} pool clips ({', '.join(kinds)})")


def with_non_speech(speech: Any, pool: NonSpeechPool | None, *, share: float, labels: np.ndarray | None,
                    seed: int, unit: str = "windows") -> tuple[Any, str]:
    """(the dataset with the share of non-speech windows, counted in `unit` (share_unit), a line for the log).
    The speech dataset unchanged when the share is 0 or the cache has no pool (an older cache: the line says how
    to get one)."""
    if share <= 0:
        return speech, "non-speech windows: none (augment.no_speech_share = 0)"
    clips = pool.part(TRAIN) if pool is not None else []
    if not clips:
        return speech, ("non-speech windows: none, the cache has no non-speech pool (built before it existed); "
                        "re-run `whisper-tune features` to add one (no clip is featurized again)")
    mixed = WithNonSpeech(speech, clips, share, labels, seed, unit)
    return mixed, f"non-speech windows: {mixed.n_non_speech} per epoch ({share:.0%} of the {unit})"


class NonSpeechEval(Dataset):
    """The held-out part of the pool as evaluation items (labels: the empty transcript)."""

    def __init__(self, pool: NonSpeechPool, labels: np.ndarray) -> None:
        self.clips = pool.part(HELDOUT)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Item:
        return _item(self.clips[int(index)], self.labels)

