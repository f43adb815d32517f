"""WER on held-out clips whose transcript does not occur in train: the number that measures transcription, not memory.

    flags = text_in_train_flags(cache, clip_ids)            # clip id -> True when a train clip says the same text
    unseen = unseen_scores(flags, clip_ids, refs, hyps, baseline_hyps)

The flags come from the cache index (validate finds them, `features` records them per clip), so evaluate needs no
manifest: copying cache/ alone to the GPU box keeps the number. A cache written before the index recorded them
gives no flags (None), and the result says to re-run features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from whisper_tune.train.metrics import word_error_rate

OLD_CACHE_NOTE = ("the cache predates per-clip leakage flags; re-run `whisper-tune features` (no audio work) to "
                  "record them")


@dataclass(frozen=True)
class UnseenScores:
    clips: int                                  # clips whose transcript does not occur in train
    wer: float | None                           # percent, normalized text, on those clips; None when there are none
    seen_clips: int                             # clips whose transcript does
    seen_wer: float | None
    baseline_wer: float | None = None           # the baseline on the unseen-text clips
    baseline_seen_wer: float | None = None
    note: str = ""                              # which side is empty, in words ("" when both have clips)


def text_in_train_flags(cache, clip_ids: Sequence[str]) -> dict[str, bool] | None:
    """clip id -> whether its transcript occurs in train; None when the cache does not record it."""
    if not cache.meta.usable:
        return None
    return {cid: cache.text_in_train(cid) for cid in clip_ids}


def unseen_scores(flags: Mapping[str, bool] | None, clip_ids: Sequence[str], refs: Sequence[str],
                  hyps: Sequence[str], baseline_hyps: Sequence[str] | None = None) -> UnseenScores:
    """WER apart on the clips whose text is not in train and on those whose text is (None for an empty side)."""
    if flags is None:
        return UnseenScores(clips=0, wer=None, seen_clips=0, seen_wer=None, note=OLD_CACHE_NOTE)
    seen = [bool(flags.get(cid, False)) for cid in clip_ids]

    def wer(texts: Sequence[str] | None, want: bool) -> float | None:
        picked = [i for i, s in enumerate(seen) if s == want]
        if texts is None or not picked:
            return None
        return word_error_rate([refs[i] for i in picked], [texts[i] for i in picked])

    n_seen = seen.count(True)
    note = ""
    if n_seen == len(seen):
        note = f"every one of the {n_seen} clips says a sentence that a train clip says: no unseen-text WER"
    elif n_seen == 0:
        note = f"no clip says a sentence that a train clip says: the unseen-text WER is the WER of all {len(seen)}"
    return UnseenScores(clips=len(seen) - n_seen, wer=wer(hyps, False), seen_clips=n_seen, seen_wer=wer(hyps, True),
                        baseline_wer=wer(baseline_hyps, False), baseline_seen_wer=wer(baseline_hyps, True), note=note)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def format_unseen(u: UnseenScores, split: str, overall_wer: float) -> str:
    if u.note and u.clips == 0 and u.seen_clips == 0:
        return f"unseen-text WER: not known ({u.note})"
    base = ""
    if u.baseline_wer is not None or u.baseline_seen_wer is not None:
        base = f"; baseline {_pct(u.baseline_wer)} unseen, {_pct(u.baseline_seen_wer)} seen"
    line = (f"WER {overall_wer:.2f} % on all {u.clips + u.seen_clips} {split} clips; {_pct(u.wer)} on the "
            f"{u.clips} whose transcript does not occur in train, {_pct(u.seen_wer)} on the {u.seen_clips} whose "
            f"transcript does (the model trained on those sentences){base}")
    return line + (f" ({u.note})" if u.note else "")
