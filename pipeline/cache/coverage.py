"""How much of the manifest the feature cache holds: the advice after an interrupted `features` run.

    note = uncached_note(Path("work"), cache, "train")   # None when every usable clip is cached or was rejected

A clip of the manifest is accounted for when the cache holds it or recorded why it was skipped (silent audio,
...). Anything else was never featurized: a `features` run was stopped before reaching it, and re-running
`features` (which resumes) is the fix, not the split settings.
"""

from __future__ import annotations

from pathlib import Path

from whisper_tune.pipeline.core.errors import ManifestError
from whisper_tune.pipeline.validate.manifest import read_manifest, usable


def uncached_note(work_dir: Path | str, cache, split: str) -> str | None:
    """One line saying how many of the manifest's usable `split` clips the cache holds, or None when none is
    missing (or there is no readable manifest to compare with)."""
    try:
        wanted = set(usable(read_manifest(work_dir), split)["id"].to_list())
    except ManifestError:
        return None
    cached = wanted & set(cache.clip_ids(split))
    skipped = wanted & set(getattr(cache, "skipped", None) or {})
    missing = len(wanted - cached - skipped)
    if missing == 0:
        return None
    return (f"the cache in {Path(work_dir) / 'cache'} holds {len(cached)} of the manifest's {len(wanted)} usable "
            f"{split} clips ({missing} not featurized yet: a features run was interrupted?); re-run "
            f"`whisper-tune features --work {work_dir}` to finish it (it resumes where it stopped)")
