"""Training data straight from the feature cache: the training dataset, the per-epoch variant schedule, the
sampler, the collator.

    cache = open_cache(work_dir)
    train = training_dataset(cache, tokenizer, seed=42, pack=False, timestamp_prob=0.0, planned_epochs=5)
    evals = EvalDataset(cache)                    # clean variant 0 of every test clip
    sampler = EpochSampler(len(train), seed=42)   # shuffles per epoch and tells the dataset which epoch it is
    collate = Collator(sot_id=token_id(tokenizer, SOT))  # whisper_tune.pipeline.models.token_id, whisper_tune.pipeline.core.tokens.SOT
    batch = dense_features(collate(items))        # on the training device: Whisper's (B, n_mels, 3000) input

TrainDataset is the one training dataset: one clip per example (its labels as stored, or with Whisper's
timestamps in a share of them), or several clips packed into each 30 s window (`pack=True`; the window building
is whisper_tune.train.packing). Items hold the cache's trimmed float16 features (memory-mapped by the reader),
so nothing is copied into RAM beyond the batch being collated (a packed window is built per item). The sampler
yields `epoch * n + index`; the dataset decodes the epoch from it, so worker processes and DDP ranks never need
shared state to agree on the schedule.

Only whisper_tune.pipeline.cache/errors/constants are imported here: no audio library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS, N_FRAMES
from whisper_tune.pipeline.core.errors import CacheError, ConfigError
from whisper_tune.pipeline.core.hashing import stable_int, stable_unit

from whisper_tune.train.packing import (CueSpan, LabelTokens, Piece, cue_texts, epoch_windows, padding_share,
                                        split_to, window_features, window_labels)

LABEL_PAD = -100                     # ignored by the cross-entropy loss
FLOOR_KEY = "input_floor"            # compact batches (see Collator): each clip's floor value
FRAMES_KEY = "input_frames"          # ... and its number of stored frames
TRACE_ENV = "WHISPER_TUNE_TRACE_DIR"  # debugging aid: each rank appends the (epoch, clip, variant) it reads here


class CacheReader(Protocol):
    """The part of whisper_tune.pipeline.cache.FeatureCache that training uses."""

    def clip_ids(self, split: str | None = None) -> list[str]: ...
    def variants(self, clip_id: str) -> list[int]: ...
    def get(self, clip_id: str, variant: int = 0) -> Any: ...


def _stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts, identical in every process (unlike hash())."""
    return stable_int(*map(str, parts), size=8, sep=b"\x1f")


def scheduled_variant(seed: int, epoch: int, clip_id: str, variants: Sequence[int]) -> int:
    """The variant that clip `clip_id` contributes in `epoch`.

    Each block of len(variants) consecutive epochs (0..V-1, V..2V-1, ...) walks through a permutation of the
    clip's variants drawn from (seed, clip, block): every variant, the clean one included, is seen once per block,
    in an order that differs between clips and between blocks. A pure function of its arguments.
    """
    if not variants:
        raise CacheError(f"clip {clip_id!r} has no feature variant in the cache; re-run `whisper-tune features`")
    n = len(variants)
    if n == 1:
        return int(variants[0])
    block, position = divmod(epoch, n)
    # the permutation: variants ordered by a keyed hash of (seed, clip, block, variant)
    order = sorted(variants, key=lambda v: _stable_seed(seed, clip_id, block, v))
    return int(order[position])


@dataclass(frozen=True)
class Item:
    """One example as the collator wants it."""

    clip_id: str
    variant: int
    features: np.ndarray   # float16 (n_mels, T), T <= 3000
    floor: float           # value of every frame past T
    labels: np.ndarray     # int32 token ids as stored (may start with <|startoftranscript|>)
    prompt: np.ndarray | None = None   # previous-text ids the decoder sees after <|startofprev|> (never learned)


class _ReopensCache:
    """Pickles as the cache folder, not the open memory maps: a spawned DataLoader worker reopens the cache
    instead of receiving a copy of every mapped shard (forked workers inherit the maps and never pickle)."""

    cache: CacheReader

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        folder = getattr(self.cache, "cache_dir", None)
        if folder is not None:
            state["cache"] = Path(folder)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("cache"), Path):
            from whisper_tune.pipeline.cache import FeatureCache

            state["cache"] = FeatureCache(state["cache"])
        self.__dict__.update(state)


def _item(cache: CacheReader, clip_id: str, variant: int) -> Item:
    ex = cache.get(clip_id, variant)
    return Item(clip_id=clip_id, variant=variant, features=ex.features, floor=float(ex.floor), labels=ex.labels)


class _Trace:
    """Appends what this process reads to TRACE_DIR/draws-rank<R>.tsv when WHISPER_TUNE_TRACE_DIR is set."""

    def __init__(self) -> None:
        folder = os.environ.get(TRACE_ENV)
        rank = os.environ.get("RANK", "0")
        self.path = Path(folder) / f"draws-rank{rank}.tsv" if folder else None

    def __call__(self, epoch: int, clip_id: str, variant: int) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"{epoch}\t{clip_id}\t{variant}\n")


class TrainDataset(_ReopensCache, Dataset):
    """The train split. Index `epoch * W + i` is example i of that epoch, built from the variants scheduled for it.

    Unpacked (the default), W is the number of train clips and example i is clip i: its features as the cache
    holds them and its labels as stored, or, in a `timestamp_prob` share of examples, in Whisper's timestamped
    format. Packed (`pack=True`), example i is the epoch's window i of several clips (see
    whisper_tune.train.packing); W is fixed for the run: the most that any of the first `planned_epochs` epochs
    needs (an epoch that needs fewer cuts its fullest windows in two). Packing and timestamps need `tokens`.
    """

    def __init__(self, cache: CacheReader, seed: int, *, pack: bool = False, timestamp_prob: float = 0.0,
                 tokens: LabelTokens | None = None, planned_epochs: int = 1, split: str = "train",
                 prompt_prob: float = 0.0) -> None:
        self.cache = cache
        self.seed = seed
        self.pack = pack
        self.timestamp_prob = float(timestamp_prob)
        self.prompt_prob = float(prompt_prob)
        self.tokens = tokens
        if pack or self.timestamp_prob > 0:
            self._label_tokens()
        self.clip_ids = cache.clip_ids(split)
        self._trace = _Trace()
        self._sizes: dict[tuple[str, int], tuple[int, int, bool]] = {}
        self._plans: dict[int, list[tuple[Piece, ...]]] = {}
        self.examples_per_epoch = len(self.clip_ids)
        if pack:
            self.examples_per_epoch = max(len(self._packed(e)) for e in range(max(1, planned_epochs)))

    def __len__(self) -> int:
        return self.examples_per_epoch

    def spread_to(self, windows: int) -> None:
        """Packed: at least `windows` windows per epoch from now on (each epoch cuts its fullest windows in two to
        make up the count; see packing.split_to). Called before training starts, when the batch counts clips."""
        if not self.pack:
            raise ValueError("spread_to needs a packed dataset (pack=True)")
        if windows > self.examples_per_epoch:
            self.examples_per_epoch = int(windows)
            self._plans = {}

    def locate(self, index: int) -> tuple[int, str, int]:
        """(epoch, clip id, variant) for a sampler index of the unpacked dataset."""
        epoch, i = divmod(int(index), len(self.clip_ids))
        clip_id = self.clip_ids[i]
        return epoch, clip_id, scheduled_variant(self.seed, epoch, clip_id, self.cache.variants(clip_id))

    def uses_timestamps(self, epoch: int, index: int) -> bool:
        """Whether example `index` of `epoch` has timestamped labels (never when timestamp_prob is 0)."""
        return stable_unit("timestamps", self.seed, epoch, index) < self.timestamp_prob

    def uses_prompt(self, epoch: int, index: int) -> bool:
        """Whether example `index` of `epoch`, if it is a window of a recording with earlier text, gets its
        previous-text prompt (never when prompt_prob is 0)."""
        return stable_unit("prompt", self.seed, epoch, index) < self.prompt_prob

    def windows(self, epoch: int) -> list[tuple[Piece, ...]]:
        """The epoch's examples as windows of clips (one clip each when unpacked); memoized, since a worker
        asks for each epoch many times."""
        if epoch not in self._plans:
            if self.pack:
                plan = split_to(self._packed(epoch), self.examples_per_epoch)
            else:
                plan = [(Piece(c, v, 0, f, t),) for c, v, f, t in self._scheduled(epoch)]
            self._plans = {epoch: plan}
        return self._plans[epoch]

    def __getitem__(self, index: int) -> Item:
        epoch, i = divmod(int(index), self.examples_per_epoch)
        if not self.pack:
            _, clip_id, variant = self.locate(index)
            return self._single(epoch, i, clip_id, variant)
        windows = self.windows(epoch)
        pieces = windows[i % len(windows)]
        if len(pieces) == 1:     # a clip alone, or a window of a recording (never packed with others)
            return self._single(epoch, i, pieces[0].clip_id, pieces[0].variant)
        examples = [self.cache.get(p.clip_id, p.variant) for p in pieces]
        for p in pieces:
            self._trace(epoch, p.clip_id, p.variant)
        features, floor = window_features([(ex.features, float(ex.floor)) for ex in examples], pieces)
        labels = self._labels([ex.labels for ex in examples], pieces, self.uses_timestamps(epoch, i))
        return Item(clip_id="+".join(p.clip_id for p in pieces), variant=pieces[0].variant, features=features,
                    floor=floor, labels=labels)

    def _single(self, epoch: int, i: int, clip_id: str, variant: int) -> Item:
        """Example i of the epoch holding one clip or one window of a recording: its features as cached, its
        labels as stored or timestamped, and (a window with earlier text, in a prompt_prob share) its prompt."""
        self._trace(epoch, clip_id, variant)
        ex = self.cache.get(clip_id, variant)
        labels = ex.labels
        if self.uses_timestamps(epoch, i):
            labels = self._timed(ex)
        prompt = getattr(ex, "prompt", None)
        keep = MAX_LABEL_TOKENS - len(labels)      # the decoder takes prompt + labels: the prompt is cut first
        use = prompt is not None and len(prompt) > 0 and keep > 0 and self.uses_prompt(epoch, i)
        return Item(clip_id=clip_id, variant=variant, features=ex.features, floor=float(ex.floor), labels=labels,
                    prompt=np.asarray(prompt[-keep:], np.int32) if use else None)

    def _timed(self, ex) -> np.ndarray:
        """An example's labels with timestamps: a window's cues each between its own times, a clip's text
        between 0 and its end."""
        tokens = self._label_tokens()
        if not getattr(ex, "is_window", False):
            piece = Piece(ex.clip_id, ex.variant, 0, int(ex.features.shape[1]), 0)
            return self._labels([ex.labels], (piece,), True)
        prefix, text = tokens.split(ex.labels, ex.clip_id)
        spans = [CueSpan(float(a), float(b)) for a, b in zip(ex.cue_starts, ex.cue_ends)]
        return window_labels(tokens, prefix, cue_texts(text, ex.cue_tokens), spans, True)

    def describe(self) -> str:
        """One line for the train stage's log: what an epoch feeds the encoder."""
        prompts = f", previous-text prompts in {self.prompt_prob:.0%} of windows of recordings" \
            if self.prompt_prob > 0 else ""
        if not self.pack and self.timestamp_prob <= 0:
            return f"training examples: one clip per 30 s window ({len(self)} per epoch), no timestamps{prompts}"
        windows = self.windows(0)
        return (f"training examples: {len(windows)} windows per epoch of {len(self.clip_ids)} clips "
                f"({'packed' if self.pack else 'one clip each'}), {padding_share(windows):.0%} of encoder frames "
                f"padding, timestamps in {self.timestamp_prob:.0%} of labels{prompts}")

    def _labels(self, stored: Sequence[np.ndarray], pieces: Sequence[Piece], timestamps: bool) -> np.ndarray:
        """The labels of a window of these clips (their stored labels), in Whisper's format."""
        tokens = self._label_tokens()
        split = [tokens.split(labels, p.clip_id) for labels, p in zip(stored, pieces)]
        return window_labels(tokens, split[0][0], [text for _, text in split], pieces, timestamps)

    def _label_tokens(self) -> LabelTokens:
        if self.tokens is None:
            raise ValueError("windows and timestamp labels need the tokenizer's LabelTokens: pass tokens= "
                             "(or build the dataset with training_dataset)")
        return self.tokens

    def _size(self, clip_id: str, variant: int) -> tuple[int, int, bool]:
        """(frames, text tokens, whether a window of a recording) of one clip variant, read once."""
        key = (clip_id, variant)
        if key not in self._sizes:
            ex = self.cache.get(clip_id, variant)
            _, text = self._label_tokens().split(ex.labels, clip_id)
            self._sizes[key] = (int(ex.features.shape[1]), int(text.size), bool(getattr(ex, "is_window", False)))
        return self._sizes[key]

    def _scheduled(self, epoch: int, windows: bool | None = None) -> list[tuple[str, int, int, int]]:
        """(clip id, scheduled variant, frames, text tokens) of every train clip, in clip order; `windows`:
        only the windows of recordings (True) or only the plain clips (False)."""
        out = []
        for clip_id in self.clip_ids:
            variant = scheduled_variant(self.seed, epoch, clip_id, self.cache.variants(clip_id))
            frames, tokens, is_window = self._size(clip_id, variant)
            if windows is None or windows == is_window:
                out.append((clip_id, variant, frames, tokens))
        return out

    def _packed(self, epoch: int) -> list[tuple[Piece, ...]]:
        """Plain clips packed; each window of a recording a window of its own (it is one already)."""
        alone = [(Piece(c, v, 0, f, t),) for c, v, f, t in self._scheduled(epoch, windows=True)]
        return epoch_windows(self._scheduled(epoch, windows=False), self.seed, epoch) + alone


def training_dataset(cache: CacheReader, tokenizer, *, seed: int, pack: bool, timestamp_prob: float,
                     planned_epochs: int, vocab_size: int | None = None, prompt_prob: float = 0.0) -> TrainDataset:
    """The train-split dataset for these settings. ConfigError when timestamps are asked for but the model's
    vocabulary (vocab_size, when given) ends before <|30.00|>."""
    if not pack and timestamp_prob <= 0:
        return TrainDataset(cache, seed=seed, prompt_prob=prompt_prob)
    tokens = LabelTokens.from_tokenizer(tokenizer)
    if timestamp_prob > 0 and vocab_size is not None and tokens.timestamp(30.0) >= vocab_size:
        raise ConfigError(f"training.timestamp_prob = {timestamp_prob:g} but the model's vocabulary has "
                          f"{vocab_size} tokens, no timestamp tokens after <|notimestamps|> "
                          f"({tokens.no_timestamps}); train with --timestamp-prob 0")
    return TrainDataset(cache, seed=seed, pack=pack, timestamp_prob=timestamp_prob, tokens=tokens,
                        planned_epochs=planned_epochs, prompt_prob=prompt_prob)


class EvalDataset(_ReopensCache, Dataset):
    """The clean variant (0) of every clip of a split, in the cache's order; `max_clips` > 0 keeps the first ones."""

    def __init__(self, cache: CacheReader, split: str = "test", max_clips: int = 0) -> None:
        self.cache = cache
        ids = cache.clip_ids(split)
        self.clip_ids = ids[:max_clips] if max_clips > 0 else ids

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, index: int) -> Item:
        return _item(self.cache, self.clip_ids[int(index)], 0)


class EpochSampler(Sampler[int]):
    """A seeded shuffle per epoch, yielding indices that carry the epoch (see TrainDataset).

    Every process builds the same order from (seed, epoch), which is what accelerate's batch sharding needs to
    hand each DDP rank distinct batches. Trainer calls set_epoch() before each epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng(_stable_seed("order", self.seed, self.epoch)).permutation(self.n)
        base = self.epoch * self.n
        return iter((base + order).tolist())


def _empty_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it lives in shared memory, so handing it to the
    training process costs no copy (what torch's default_collate does too)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(numel, device=proto.device)
    return proto.new(storage).resize_(shape)


@dataclass(frozen=True)
class Collator:
    """Batches Items compactly; dense_features() (on the training device) makes Whisper's input from them.

    input_features: float16 (B, n_mels, T_max), each clip's stored frames as the cache holds them (zeros past
    them); input_floor: float32 (B,), each clip's floor; input_frames: int64 (B,), each clip's stored frames.
    labels: int64 (B, L), padded with -100, without the leading <|startoftranscript|> (the model prepends it as
    decoder start token; keeping it teaches it twice).

    When an item has a previous-text prompt, the batch also carries decoder_input_ids, for every item: the prompt's
    `<|startofprev|> p1 .. pk` then the item's labels from <|startoftranscript|> on, shifted as the model would
    shift them; its labels are -100 at every prompt position and at the one predicting <|startoftranscript|>
    (k + 1 of them), so the decoder sees the prompt but is never trained to say it. Items without a prompt get
    `<|startoftranscript|> labels[:-1]`, what the model builds from labels alone.

    Expanding to 3000 float32 frames on the CPU would write about 1 MB per clip (80 mel bins) and ship it to the
    GPU; the compact batch is 5-10x smaller for clips of 3-6 s and costs the loader only a float16 copy.
    """

    sot_id: int
    n_frames: int = N_FRAMES
    prev_id: int | None = None        # <|startofprev|>: needed once an item has a prompt

    def __call__(self, items: Sequence[Item]) -> dict[str, torch.Tensor]:
        n_mels = items[0].features.shape[0]
        frames = [it.features.shape[1] for it in items]
        for it, t in zip(items, frames):
            if it.features.shape[0] != n_mels or t > self.n_frames:
                raise CacheError(
                    f"clip {it.clip_id!r} has features of shape {it.features.shape}; expected ({n_mels}, <= "
                    f"{self.n_frames}); rebuild the cache with `whisper-tune features`"
                )
        width_t = max(1, max(frames))
        feats = _empty_batch((len(items), n_mels, width_t), torch.float16)
        out = feats.numpy()
        labels = [self.strip_start(it.labels) for it in items]
        width = max(1, max(len(lab) for lab in labels))
        label_arr = np.full((len(items), width), LABEL_PAD, dtype=np.int64)
        for i, (it, t, lab) in enumerate(zip(items, frames, labels)):
            out[i, :, :t] = it.features
            out[i, :, t:] = 0
            label_arr[i, : len(lab)] = lab
        batch = {
            "input_features": feats,
            FLOOR_KEY: torch.tensor([it.floor for it in items], dtype=torch.float32),
            FRAMES_KEY: torch.tensor(frames, dtype=torch.int64),
            "labels": torch.from_numpy(label_arr),
        }
        if any(it.prompt is not None and len(it.prompt) for it in items):
            batch.update(self.prompted(items))
        return batch

    def prompted(self, items: Sequence[Item]) -> dict[str, torch.Tensor]:
        """labels and decoder_input_ids of a batch in which some items have a prompt (see the class doc)."""
        if self.prev_id is None:
            raise ValueError("items with prompts need the Collator's prev_id (<|startofprev|>)")
        decoder, targets = [], []
        for it in items:
            labels = np.asarray(self.strip_start(it.labels), np.int64)       # without <|startoftranscript|>
            prompt = np.asarray(it.prompt if it.prompt is not None else (), np.int64)
            head = np.concatenate([[self.prev_id], prompt]) if prompt.size else np.zeros(0, np.int64)
            decoder.append(np.concatenate([head, [self.sot_id], labels[:-1]]))
            targets.append(np.concatenate([np.full(head.size, LABEL_PAD, np.int64), labels]))
        width = max(len(d) for d in decoder)
        dec = np.full((len(items), width), self.sot_id, dtype=np.int64)      # padding: never a target
        lab = np.full((len(items), width), LABEL_PAD, dtype=np.int64)
        for i, (d, t) in enumerate(zip(decoder, targets)):
            dec[i, : len(d)] = d
            lab[i, : len(t)] = t
        return {"labels": torch.from_numpy(lab), "decoder_input_ids": torch.from_numpy(dec)}

    def strip_start(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) and int(labels[0]) == self.sot_id:
            return labels[1:]
        return labels


def dense_features(batch: dict[str, Any], n_frames: int = N_FRAMES) -> dict[str, Any]:
    """A Collator batch with input_features expanded to Whisper's float32 (B, n_mels, 3000), on the batch's
    device: each clip's stored frames, then its floor. Equal to WhisperFeatureExtractor's output for the clip.
    A batch that is already dense passes through unchanged."""
    if FLOOR_KEY not in batch:
        return batch
    out = dict(batch)
    compact, floor, frames = out.pop("input_features"), out.pop(FLOOR_KEY), out.pop(FRAMES_KEY)
    # on a CPU, per-clip numpy copies beat torch's large elementwise ops (its intra-op threads get in the way)
    expand = _expand_numpy if compact.device.type == "cpu" else _expand_torch
    out["input_features"] = expand(compact, floor, frames, n_frames)
    return out


def _expand_torch(compact: torch.Tensor, floor: torch.Tensor, frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    b, n_mels, t = compact.shape
    floor = floor.to(torch.float32)[:, None, None]
    stored = torch.arange(t, device=compact.device)[None, None, :] < frames[:, None, None]
    head = torch.where(stored, compact.to(torch.float32), floor)
    return torch.cat([head, floor.expand(b, n_mels, n_frames - t)], dim=2)


def _expand_numpy(compact: torch.Tensor, floor: torch.Tensor, frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    b, n_mels, _ = compact.shape
    dense = np.empty((b, n_mels, n_frames), dtype=np.float32)
    src, floors = compact.numpy(), floor.to(torch.float32).numpy()
    for i, stored in enumerate(frames.tolist()):
        dense[i, :, :stored] = src[i, :, :stored]
        dense[i, :, stored:] = floors[i]
    return torch.from_numpy(dense)
