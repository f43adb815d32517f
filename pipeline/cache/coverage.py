"""How much of the manifest the feature cache holds: the advice after an interrupted `features` run.

    note = uncached_note(Path("work"), cache, "train")   # None when every usable clip is cached or was rejected

`features` records in the index how many usable clips each split of the manifest has, so this needs the cache
alone (the GPU box may have nothing else). A clip is accounted for when the cache holds it or recorded why it was
skipped (silent audio, ...). Anything else was never featurized: a `features` run was stopped before reaching it,
and re-running `features` (which resumes) is the fix, not the split settings.
"""

from __future__ import annotations

from pathlib import Path


def uncached_note(work_dir: Path | str, cache, split: str) -> str | None:
    """One line saying how many of the manifest's usable `split` clips the cache holds, or None when none is
    missing (or the index does not record the manifest's counts)."""
    wanted = int(cache.meta.usable.get(split, 0))
    cached = len(cache.clip_ids(split))
    skipped = cache.skipped_count(split)
    missing = wanted - cached - skipped
    if missing <= 0:
        return None
    return (f"the cache in {Path(work_dir) / 'cache'} holds {cached} of the manifest's {wanted} usable "
            f"{split} clips ({missing} not featurized yet: a features run was interrupted?); re-run "
            f"`whisper-tune features --work {work_dir}` to finish it (it resumes where it stopped)")
