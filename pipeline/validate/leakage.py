"""Leakage: held-out clips (test, validation) that repeat training material, found by `validate`.

    report = find_leaks(records)                     # rows.Record, splits set by plan_splits
    report.text_in_train, report.audio_in_train     # one flag per record, written to the manifest

Two kinds, both counted per held-out split over usable clips only:
- same text: the clip's normalized transcript (normalize_text "basic", as WER scores it) is also the transcript of
  a usable train clip. The model was trained on that exact sentence, so its test WER there measures memory.
- same audio: the clip's file has the same bytes as a train clip's file (another path, same recording). Files are
  compared by size first, so only files whose size also occurs on the other side are read and hashed.

Nothing here decodes audio: `train/inference/unseen.py` uses text_in_train() on old manifests that lack the column.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from whisper_tune.pipeline.core.hashing import file_digest
from whisper_tune.pipeline.core.text import normalize_text, flatten_and_cut
from whisper_tune.pipeline.validate.rows import Record

HELD_OUT = ("test", "validation")
EXAMPLES = 3
COLUMNS = ("text_in_train", "audio_in_train")


@dataclass(frozen=True)
class Leak:
    csv_row: int          # the held-out row
    train_row: int        # a train row with the same text / bytes
    text: str             # the held-out row's transcript as written


@dataclass(frozen=True)
class LeakageReport:
    held_out: dict[str, int]                         # split -> usable clips
    same_text: dict[str, int]                        # split -> clips whose normalized transcript occurs in train
    same_audio: dict[str, int]                       # split -> clips whose file bytes occur in train
    text_examples: dict[str, tuple[Leak, ...]] = field(default_factory=dict)
    audio_examples: dict[str, tuple[Leak, ...]] = field(default_factory=dict)
    text_in_train: tuple[bool, ...] = ()             # per row (False for train and rejected rows)
    audio_in_train: tuple[bool, ...] = ()

    @property
    def any(self) -> bool:
        return any(self.same_text.values()) or any(self.same_audio.values())


def text_in_train(texts: Sequence[str], splits: Sequence[str], kept: Sequence[bool]) -> list[bool]:
    """Per row: a usable held-out clip whose normalized transcript is also a usable train clip's."""
    train = {normalize_text(t) for t, s, k in zip(texts, splits, kept) if k and s == "train"}
    return [bool(k and s in HELD_OUT and normalize_text(t) in train) for t, s, k in zip(texts, splits, kept)]


def _first_train_row(records: Sequence[Record], keys: Sequence[object]) -> dict[object, int]:
    """key -> CSV row of the first usable train record with that key (keys one per record, None for none)."""
    first: dict[object, int] = {}
    for r, key in zip(records, keys):
        if r.kept and r.split == "train" and key is not None:
            first.setdefault(key, r.csv_row)
    return first


def audio_keys(records: Sequence[Record]) -> list[str | None]:
    """Content digest of each usable file whose size occurs on both sides (train and held out); None otherwise."""
    sizes: list[int | None] = []
    for r in records:
        try:
            sizes.append(os.stat(r.path).st_size if r.kept and r.path else None)
        except OSError:
            sizes.append(None)
    sides: dict[int, set[bool]] = defaultdict(set)
    for size, r in zip(sizes, records):
        if size is not None:
            sides[size].add(r.split == "train")
    out: list[str | None] = []
    for r, size in zip(records, sizes):
        both = size is not None and len(sides[size]) == 2
        try:
            out.append(f"{size}:{file_digest(r.path)}" if both else None)
        except OSError:
            out.append(None)
    return out


def find_leaks(records: Sequence[Record]) -> LeakageReport:
    """Count and flag held-out records that repeat a train record's text or audio bytes (splits already set)."""
    norm = [normalize_text(r.text) if r.kept else None for r in records]
    digests = audio_keys(records)
    text_row = _first_train_row(records, norm)
    audio_row = _first_train_row(records, digests)
    held = [r.kept and r.split in HELD_OUT for r in records]
    same_text = [bool(h and n in text_row) for h, n in zip(held, norm)]
    same_audio = [bool(h and d is not None and d in audio_row) for h, d in zip(held, digests)]

    def examples(flags: list[bool], keys: Sequence[object], first: dict[object, int]) -> dict[str, tuple[Leak, ...]]:
        out: dict[str, list[Leak]] = {s: [] for s in HELD_OUT}
        for r, flag, key in zip(records, flags, keys):
            if flag and len(out[r.split]) < EXAMPLES:
                out[r.split].append(Leak(r.csv_row, first[key], r.text))
        return {s: tuple(v) for s, v in out.items()}

    def count(flags: list[bool]) -> dict[str, int]:
        return {s: sum(1 for f, r in zip(flags, records) if f and r.split == s) for s in HELD_OUT}

    return LeakageReport(
        held_out={s: sum(1 for r in records if r.kept and r.split == s) for s in HELD_OUT},
        same_text=count(same_text), same_audio=count(same_audio),
        text_examples=examples(same_text, norm, text_row), audio_examples=examples(same_audio, digests, audio_row),
        text_in_train=tuple(same_text), audio_in_train=tuple(same_audio),
    )


def format_leakage(report: LeakageReport) -> list[str]:
    """Summary lines: counts per held-out split, a few examples, and what they do to the test number."""
    r = report
    held = [s for s in HELD_OUT if r.held_out[s]]
    if not held:
        return []
    if not r.any:
        return ["  leakage: no " + " or ".join(held) + " clip repeats a train clip's transcript or audio bytes"]
    lines = ["  leakage (held-out clips that repeat training material):"]
    for s in held:
        n = r.held_out[s]
        lines.append(f"    {s}: {r.same_text[s]} of {n} clips say a sentence that a train clip says "
                     f"(normalized text); {r.same_audio[s]} have the same audio bytes as a train clip")
        for kind, shown in (("same text", r.text_examples.get(s, ())), ("same audio", r.audio_examples.get(s, ()))):
            for ex in shown:
                lines.append(f"      {kind}: row {ex.csv_row} (train row {ex.train_row}): {flatten_and_cut(ex.text, 70)}")
    lines.append("    the model trains on these sentences, so its WER on them measures memory and makes the test "
                 "number look better than on new speech; `evaluate` also reports the WER on the clips whose text "
                 "is not in train (manifest columns text_in_train, audio_in_train)")
    if any(r.same_audio.values()):
        lines.append("    identical audio is the same recording on both sides: remove one copy or pin both with "
                     "the split column")
    return lines
