"""The manifest: WORK/manifest.parquet, one row per CSV row, written by `whisper-tune validate`.

Columns (every later stage uses only rows with status == "ok"):

    id           str    stable clip id: a hash of the path relative to the CSV's folder
    path         str    absolute, resolved path of the audio file ("" when the CSV cell is empty)
    source       str    the path exactly as written in the CSV
    text         str    the transcript exactly as written in the CSV
    duration     f64    seconds (null when the file could not be read)
    sample_rate  i64    Hz (null when the file could not be read)
    channels     i64    (null when the file could not be read)
    split        str    "train", "validation" or "test": the CSV's split column, else a seeded hash of the
                        relative path (of the group value with --group-column: pipeline/grouping.py), so adding
                        rows never moves a clip
    status       str    "ok" or "rejected"
    reason       str    why a row was rejected, in plain words; "" when ok
    csv_row      i64    1-based data row of the CSV (the header is not counted)
    text_in_train  bool  a usable validation/test clip whose normalized transcript a usable train clip also says
    audio_in_train bool  a usable validation/test clip with the same file bytes as a usable train clip
                        (both False for train and rejected rows; manifests written before them lack both columns,
                        and every reader treats them as optional)
    audit_ok     bool   the CSV's optional `audit` column says `ok`: `whisper-tune audit` never flags the row
                        (optional too: older manifests lack it)
    ...                 the CSV's other columns, as text (renamed csv_<name> if the name is taken above)

Windows of long recordings (a CSV of recordings + SRT/VTT, or of segments: pipeline/validate/recordings.py) are
rows too, with the columns of WINDOW_SCHEMA besides (a manifest of clips has none of them):

    recording    str    the recording's path relative to the CSV's folder: its group and long-form unit
    subtitles    str    the subtitle file as written in the CSV ("" for a segments table)
    start, end   f64    the window's range in the recording, seconds (duration = end - start); for a rejected
                        cue its own times when readable
    window_index i64    order of the window in its recording (null for rejected rows)
    cue_starts   list[f64]  each cue's start and end relative to the window start, seconds on Whisper's 0.02 s
    cue_ends     list[f64]  grid: the timestamp tokens of the label (windows.py)
    cue_texts    list[str]  each cue's text; `text` is them joined by spaces
    previous_text  str  the recording's text before this window (its last 2000 characters): the prompt
    recording_seconds f64  the whole recording's duration

A rejected cue is a row of its own (status "rejected", its reason), so nothing but the cue is lost.

Rejected rows get a split too (the one they would have once fixed), so the column is never empty.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from whisper_tune.pipeline.core.errors import ManifestError, first_line
from whisper_tune.pipeline.core.fileio import atomic_path
from whisper_tune.pipeline.core.hashing import stable_hex, stable_unit
from whisper_tune.pipeline.core.constants import SPLIT_ALIASES, SPLITS

MANIFEST_NAME = "manifest.parquet"

SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "path": pl.String(),
    "source": pl.String(),
    "text": pl.String(),
    "duration": pl.Float64(),
    "sample_rate": pl.Int64(),
    "channels": pl.Int64(),
    "split": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "csv_row": pl.Int64(),
}
COLUMNS: tuple[str, ...] = tuple(SCHEMA)
# Written by validate since the leakage report; optional when reading (older manifests lack them).
OPTIONAL_SCHEMA: dict[str, pl.DataType] = {"text_in_train": pl.Boolean(), "audio_in_train": pl.Boolean(),
                                           "audit_ok": pl.Boolean()}

WINDOW_SCHEMA: dict[str, pl.DataType] = {
    "recording": pl.String(),
    "subtitles": pl.String(),
    "start": pl.Float64(),
    "end": pl.Float64(),
    "window_index": pl.Int64(),
    "cue_starts": pl.List(pl.Float64()),
    "cue_ends": pl.List(pl.Float64()),
    "cue_texts": pl.List(pl.String()),
    "previous_text": pl.String(),
    "recording_seconds": pl.Float64(),
}

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"


def split_name(value: str) -> str:
    """A split as the CSV's split column and --split accept it (any case; dev, val and valid mean validation),
    in its manifest spelling; an unknown name comes back lowercased for the caller to refuse."""
    name = value.strip().lower()
    return SPLIT_ALIASES.get(name, name)


def manifest_path(work_dir: Path | str) -> Path:
    return Path(work_dir) / MANIFEST_NAME


def clip_id(relpath: str) -> str:
    """Stable id of a clip: 16 hex digits of blake2b over its path relative to the CSV's folder (posix form)."""
    return stable_hex(relpath, size=8)


def split_position(relpath: str, seed: int) -> float:
    """Where a clip falls in [0, 1): blake2b(seed, relative path) as a uniform number. Depends on nothing else."""
    return stable_unit(seed, relpath, sep=b"\x00")


def assign_split(relpath: str, *, seed: int, test_share: float, validation_share: float = 0.0) -> str:
    """"test" for clips whose split_position is below test_share, "validation" for the next validation_share,
    else "train". Changing validation_share never moves a test clip."""
    return split_at(split_position(relpath, seed), test_share=test_share, validation_share=validation_share)


def split_at(position: float, *, test_share: float, validation_share: float) -> str:
    """The split of a position in [0, 1): test below test_share, validation below test_share + validation_share,
    else train (per path here, per group in pipeline/grouping.py)."""
    if position < test_share:
        return "test"
    return "validation" if position < test_share + validation_share else "train"


def with_extras(frame: pl.DataFrame, extras: dict[str, tuple[str, ...]] | dict[str, list[str]]) -> pl.DataFrame:
    """The CSV's other columns added as text, each renamed csv_<name> while its name is taken."""
    added: dict[str, pl.Series] = {}
    for name, values in extras.items():
        column = name
        while column in frame.columns or column in SCHEMA or column in OPTIONAL_SCHEMA or column in added:
            column = f"csv_{column}"
        added[column] = pl.Series(column, list(values), dtype=pl.String)
    return frame.with_columns(**added) if added else frame


def has_windows(frame: pl.DataFrame) -> bool:
    """Whether the manifest holds windows of long recordings (rows with a start time)."""
    return "window_index" in frame.columns and frame["window_index"].is_not_null().any()


def write_manifest(frame: pl.DataFrame, work_dir: Path | str) -> Path:
    """Write WORK/manifest.parquet atomically (temporary name in the same folder, then rename)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"manifest frame lacks the columns {', '.join(missing)}")
    frame = _conform(frame, "manifest frame")
    out = manifest_path(work_dir)
    with atomic_path(out) as tmp:
        frame.write_parquet(tmp)
    return out


def read_manifest(work_dir: Path | str) -> pl.DataFrame:
    """The manifest as a polars DataFrame. ManifestError when it is missing, unreadable or not ours."""
    path = manifest_path(work_dir)
    rerun = f"run `whisper-tune validate --csv YOUR.csv --work {work_dir}` to write it"
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}; {rerun}")
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        reason = first_line(err)
        raise ManifestError(f"{path} is not a readable manifest ({reason[:160]}); {rerun}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path} lacks the columns {', '.join(missing)}; it was not written by "
                            f"whisper-tune validate; {rerun}")
    try:
        frame = _conform(frame, str(path))
    except ManifestError as err:
        raise ManifestError(f"{err}; {rerun}") from None
    bad_status = set(frame["status"].unique().to_list()) - {STATUS_OK, STATUS_REJECTED}
    if bad_status:
        raise ManifestError(f"{path} has unknown status values {sorted(map(str, bad_status))}; {rerun}")
    return frame


def _conform(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """Cast the standard columns to SCHEMA where that loses nothing (int -> float, all-null); refuse otherwise."""
    wrong, casts = [], []
    for column, dtype in SCHEMA.items():
        have = frame.schema[column]
        if have == dtype:
            continue
        if have == pl.Null or (have.is_numeric() and dtype.is_numeric() and (dtype.is_float() or have.is_integer())):
            casts.append(pl.col(column).cast(dtype))
        else:
            wrong.append(f"{column} ({have}, expected {dtype})")
    if wrong:
        raise ManifestError(f"{what} has columns of the wrong type: {', '.join(wrong)}")
    return frame.with_columns(casts) if casts else frame


def usable(frame: pl.DataFrame, split: str | None = None) -> pl.DataFrame:
    """Rows with status "ok", optionally of one split only."""
    rows = frame.filter(pl.col("status") == STATUS_OK)
    if split is not None:
        rows = rows.filter(pl.col("split") == split)
    return rows
