"""`train --skip-suspect` (data.skip_suspect): leave out the rows `whisper-tune audit` flagged.

    cache, note = skip_suspects(cache, work_dir)     # what the datasets read: clip_ids() without the flagged
    kept, left_out = leave_out(clip_ids, read_suspects(work_dir, cache))   # the filter itself, on clip ids

A flag holds only while the clip's label is the one audited (a label fixed in the CSV since then is trained on)
and the clip is not marked ok in the CSV's `audit` column. Train and validation clips alike are left out: a wrong
validation label would mislead the choice of the best epoch. Test clips are never audited nor left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Sequence

from whisper_tune.pipeline.core.errors import CacheError, ConfigError, first_line
from whisper_tune.pipeline.core.text import normalize_text

from whisper_tune.train.inference.audit import AUDIT_NAME, AUDITED_SPLITS, SUSPECT


def leave_out(clip_ids: Sequence[str], suspects: Collection[str]) -> tuple[list[str], int]:
    """The clip ids without the suspects (order kept), and how many were left out."""
    kept = [cid for cid in clip_ids if cid not in suspects]
    return kept, len(clip_ids) - len(kept)


def read_suspects(work_dir: Path, cache) -> set[str]:
    """Clip ids that WORK/audit.parquet flags, whose label is unchanged since and that are not marked ok."""
    import polars as pl

    path = Path(work_dir) / AUDIT_NAME
    if not path.is_file():
        raise ConfigError(f"--skip-suspect (data.skip_suspect) needs {path}, which does not exist; run "
                          f"`whisper-tune audit --work {work_dir} --model MODEL` first, or train without it")
    try:
        frame = pl.read_parquet(path, columns=["clip_id", "label", "verdict"])
    except (OSError, pl.exceptions.PolarsError) as err:
        raise CacheError(f"{path} is not a readable audit ({first_line(err)[:160]}); re-run "
                         f"`whisper-tune audit --work {work_dir} --model MODEL`") from None
    known = set(cache.clip_ids())
    out = set()
    for cid, label, verdict in frame.iter_rows():
        if verdict == SUSPECT and cid in known and not cache.audit_ok(cid) and label == _label(cache, cid):
            out.add(cid)
    return out


def _label(cache, clip_id: str) -> str:
    """The clip's label as the audit scored it (normalized transcript)."""
    return normalize_text(cache.transcript(clip_id) or cache.get(clip_id, 0).text)


def skip_suspects(cache, work_dir: Path) -> tuple["SkippingCache", str]:
    """The cache without the flagged clips, and one line saying how many were left out of which split."""
    suspects = read_suspects(work_dir, cache)
    view = SkippingCache(cache, suspects)
    counts = {split: view.left_out(split) for split in AUDITED_SPLITS}
    return view, (f"--skip-suspect: left out {counts['train']} train and {counts['validation']} validation clips "
                  f"that {Path(work_dir) / AUDIT_NAME} flags")


class SkippingCache:
    """A cache whose clip_ids() leaves the suspects out (they count as skipped); the rest is the cache's own."""

    def __init__(self, cache, suspects: Collection[str]) -> None:
        self._cache = cache
        self._suspects = frozenset(suspects)

    def clip_ids(self, split: str | None = None) -> list[str]:
        return leave_out(self._cache.clip_ids(split), self._suspects)[0]

    def left_out(self, split: str) -> int:
        return leave_out(self._cache.clip_ids(split), self._suspects)[1]

    def skipped_count(self, split: str) -> int:
        """The cache's own skipped clips plus those left out, so the coverage check still adds up."""
        return self._cache.skipped_count(split) + self.left_out(split)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):          # pickling and copying look for dunders before __init__ ran
            raise AttributeError(name)
        return getattr(self._cache, name)
