"""WER on held-out clips whose transcript does not occur in train: the number that measures transcription, not memory.

    flags = text_in_train_flags(work_dir, clip_ids)         # clip id -> True when a train clip says the same text
    unseen = unseen_scores(flags, clip_ids, refs, hyps, baseline_hyps)

The flags come from the manifest's `text_in_train` column (written by validate); a manifest written before that
column existed gets them computed from its text and split columns. Without a manifest (only cache/ was copied)
there are no flags, and evaluate prints the overall numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from whisper_tune.pipeline.core.errors import ManifestError
from whisper_tune.pipeline.validate.leakage import text_in_train
from whisper_tune.pipeline.validate.manifest import STATUS_OK, read_manifest

from whisper_tune.train.metrics import word_error_rate

COLUMN = "text_in_train"


@dataclass(frozen=True)
class UnseenScores:
    clips: int                        # clips whose transcript does not occur in train
    wer: float                        # percent, normalized text, on those clips
    seen_clips: int                   # clips whose transcript does
    seen_wer: float
    baseline_wer: float | None = None          # the baseline on the unseen-text clips
    baseline_seen_wer: float | None = None


def text_in_train_flags(work_dir: Path, clip_ids: Sequence[str]) -> dict[str, bool] | None:
    """clip id -> whether its transcript occurs in train, for the given ids; None without a manifest."""
    try:
        frame = read_manifest(work_dir)
    except ManifestError:
        return None
    ids = frame["id"].cast(str).to_list()
    if COLUMN in frame.columns:
        flags = [bool(f) for f in frame[COLUMN].fill_null(False).to_list()]
    else:
        kept = [s == STATUS_OK for s in frame["status"].to_list()]
        flags = text_in_train(frame["text"].cast(str).to_list(), frame["split"].cast(str).to_list(), kept)
    known = dict(zip(ids, flags))
    return {cid: known[cid] for cid in clip_ids if cid in known}


def unseen_scores(flags: Mapping[str, bool] | None, clip_ids: Sequence[str], refs: Sequence[str],
                  hyps: Sequence[str], baseline_hyps: Sequence[str] | None = None) -> UnseenScores | None:
    """WER on the clips whose text is not in train and on those whose text is; None unless both kinds exist."""
    if not flags:
        return None
    seen = [flags.get(cid, False) for cid in clip_ids]
    if all(seen) or not any(seen):
        return None

    def wer(texts: Sequence[str], want: bool) -> float:
        picked = [i for i, s in enumerate(seen) if s == want]
        return word_error_rate([refs[i] for i in picked], [texts[i] for i in picked])

    return UnseenScores(
        clips=seen.count(False), wer=wer(hyps, False), seen_clips=seen.count(True), seen_wer=wer(hyps, True),
        baseline_wer=None if baseline_hyps is None else wer(baseline_hyps, False),
        baseline_seen_wer=None if baseline_hyps is None else wer(baseline_hyps, True),
    )


def format_unseen(u: UnseenScores, split: str, overall_wer: float) -> str:
    base = ""
    if u.baseline_wer is not None:
        base = f"; baseline {u.baseline_wer:.2f} % unseen, {u.baseline_seen_wer:.2f} % seen"
    return (f"WER {overall_wer:.2f} % on all {u.clips + u.seen_clips} {split} clips; {u.wer:.2f} % on the "
            f"{u.clips} whose transcript does not occur in train, {u.seen_wer:.2f} % on the {u.seen_clips} whose "
            f"transcript does (the model trained on those sentences){base}")
