"""The general set: everyday sentences scored beside the domain, so that forgetting shows in every run.

    csv = general_csv(cfg.training.general_csv)     # the CSV, or None when off / not found
    WORK/general/                                   # its manifest and cache, built by `features` (general_work)
    WORK/general/general.json                       # {"csv": the CSV it was built from}

`training.general_csv` (`--general-csv`): "" means the demo's everyday sentences (data/demo/everyday.csv of this
checkout, 12 sentences with audio) where they exist, "none" turns the set off, anything else is a CSV of clips
(every row is scored, whatever its split). `features` validates and featurizes it into WORK/general/ (its own
manifest and cache: clean variant only, no clip of it enters the domain's counts); `train` reads that cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from whisper_tune.pipeline.core.fileio import atomic_write_json

GENERAL_DIRNAME = "general"
RECORD_NAME = "general.json"
OFF = "none"
DEMO_GENERAL_CSV = Path(__file__).resolve().parents[2] / "data" / "demo" / "everyday.csv"


def general_csv(value: str) -> Path | None:
    """The general set's CSV for a training.general_csv value; None when it is off or the default is absent."""
    if value.strip().lower() == OFF:
        return None
    if not value.strip():
        return DEMO_GENERAL_CSV if DEMO_GENERAL_CSV.is_file() else None
    return Path(value).expanduser()


def general_work(work_dir: Path) -> Path:
    return Path(work_dir) / GENERAL_DIRNAME


def write_record(work_dir: Path, csv_path: Path) -> None:
    atomic_write_json(general_work(work_dir) / RECORD_NAME, {"csv": str(Path(csv_path).resolve())})


def built_from(work_dir: Path) -> Path | None:
    """The CSV WORK/general was built from; None when it was not built (or its record is unreadable)."""
    try:
        data = json.loads((general_work(work_dir) / RECORD_NAME).read_text(encoding="utf-8"))
        return Path(data["csv"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
