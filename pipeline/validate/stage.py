"""The `validate` stage: check every CSV row before any expensive work, write WORK/manifest.parquet.

    result = run_validate(csv_path=Path("data/clips.csv"), work_dir=Path("work"), cfg=load_config(None),
                          use_model=False)

Per row, in this order (a row may collect one audio problem and one transcript problem):
path present and local -> inside the CSV's folder (unless data.allow_outside) -> not a duplicate of an earlier
row (same resolved file; the first is kept) -> file exists -> not empty -> supported extension -> readable audio
to its end (header, last frames; MP3s decoded in full) -> duration strictly between data.min_seconds and
data.max_seconds; transcript not empty -> longer than data.min_text_chars (stripped) -> has letters or digits
after normalization -> with a model: label (prefix + text + end token) within the decoder's 448 tokens.

The same checks (checks.py) serve a `--dataset` (dataset.py), whose rows are clips too. A CSV with a subtitles
column (recordings + SRT/VTT) or with start and end columns (segments of longer files) is cut into windows
along its cues instead (recordings.py), into the same manifest and report.

Rejected rows stay in the manifest with status "rejected" and the reason in words; the run goes on. The CSV as a
whole being unusable is a CsvError. Writes WORK/manifest.parquet and WORK/durations.png, prints a summary.
Splits (per path, or per group with data.group_column): pipeline/grouping.py; held-out clips repeating train
transcripts or audio: pipeline/leakage.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import polars as pl

from whisper_tune.pipeline.core.config import Config, check_output_folder
from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS
from whisper_tune.pipeline.validate.csvfile import CsvTable, column_names, read_table
from whisper_tune.pipeline.core.errors import ConfigError, ModelError, WhisperTuneError, first_line
from whisper_tune.pipeline.core.fileio import disk_full_as_error
from whisper_tune.pipeline.validate.grouping import group_values, plan_splits
from whisper_tune.pipeline.validate.leakage import find_leaks
from whisper_tune.pipeline.validate.rows import Record, SplitSettings
from whisper_tune.pipeline.validate.manifest import (OPTIONAL_SCHEMA, SCHEMA, STATUS_OK, STATUS_REJECTED, clip_id,
                       with_extras, write_manifest)
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.validate.report import (PLOT_NAME, ValidateResult, format_summary, summarize,
                                                  write_duration_plot)
from whisper_tune.pipeline.validate.checks import (DUPLICATE, KINDS, LONG_LABEL, MISSING, Location, Problem,
                                                  audit_marks, check_all, check_text, given_splits, locate)


def label_lengths(tokenizer, texts: Sequence[str], normalization: str) -> list[int]:
    """Token count of each label as training builds it: prefix tokens + normalized text + end token."""
    if not texts:
        return []
    encoded = tokenizer([normalize_text(t, normalization) for t in texts])
    return [len(ids) for ids in encoded["input_ids"]]


def _load_tokenizer(cfg: Config):
    from whisper_tune.pipeline.models import load_processor, resolve_model

    spec = cfg.model.name
    try:
        return load_processor(resolve_model(spec), cfg.model.language, cfg.model.task).tokenizer
    except WhisperTuneError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as err:
        first = first_line(err)
        raise ModelError(f"cannot load the tokenizer of --model {spec} to check label lengths: {first[:200]}; "
                         "validate without --model to skip that check") from None


# ---------------------------------------------------------------------------------------------- the stage

def run_validate(*, csv_path: Path | None = None, work_dir: Path, cfg: Config, use_model: bool,
                 dataset: str | Path | None = None, echo: Callable[[str], None] | None = print) -> ValidateResult:
    """Check every row of csv_path (or of a `datasets` folder / Arrow / Parquet / hub id), write
    work_dir/manifest.parquet and durations.png, print a summary.

    A CSV of clips (audio + transcript), of recordings (audio + subtitles: recordings.py) or of segments (audio +
    start + end + transcript: segments.py), told apart by its columns.
    use_model: also check label lengths with cfg.model.name's tokenizer (ModelError when it cannot load).
    echo: where the summary goes (None = silent)."""
    work_dir = check_output_folder(work_dir, "--work")
    d = cfg.data
    if (csv_path is None) == (dataset is None):
        raise ConfigError("validate needs exactly one input: --csv FILE or --dataset PATH")
    if dataset is not None:
        from whisper_tune.pipeline.validate.dataset import read_dataset

        table, locations = read_dataset(dataset, work_dir, split=d.dataset_split, audio_column=d.audio_column,
                                        text_column=d.text_column)
        tokenizer = _load_tokenizer(cfg) if use_model else None
        return _validate_clips(table, locations, work_dir, cfg, tokenizer=tokenizer, echo=echo)
    csv_path = Path(csv_path)
    table, segments, recordings = _read_any(csv_path, d)
    tokenizer = _load_tokenizer(cfg) if use_model else None        # fail before the slow part
    if d.group_column:
        group_values(table, d.group_column)                          # ... and so does a missing group column
    if recordings or segments is not None:
        from whisper_tune.pipeline.validate.recordings import validate_recordings

        return validate_recordings(table, work_dir, cfg, segments=segments, tokenizer=tokenizer, echo=echo)
    csv_dir = Path(os.path.abspath(csv_path.parent))
    locations = [locate(s, csv_dir, allow_outside=d.allow_outside) for s in table.sources]
    return _validate_clips(table, locations, work_dir, cfg, tokenizer=tokenizer, echo=echo,
                           hint_dir=csv_dir)


def _read_any(csv_path: Path, d) -> tuple[CsvTable, tuple[str, str] | None, bool]:
    """The CSV as a table, its segment columns (start, end) if it is a segments table, and whether it is a CSV of
    recordings + subtitles (its text column is then the subtitles column)."""
    from whisper_tune.pipeline.validate.recordings import SUBTITLE_COLUMNS
    from whisper_tune.pipeline.validate.segments import segment_columns

    names = {n.lower() for n in column_names(csv_path)}
    if d.subtitles_column or names & set(SUBTITLE_COLUMNS):
        table = read_table(csv_path, audio_column=d.audio_column, text_column=d.subtitles_column,
                           text_columns=SUBTITLE_COLUMNS, text_flag="--subtitles-column")
        return table, None, True
    table = read_table(csv_path, audio_column=d.audio_column, text_column=d.text_column)
    return table, segment_columns(table), False


def _validate_clips(table: CsvTable, locations: list[Location], work_dir: Path, cfg: Config, *, tokenizer,
                    echo: Callable[[str], None] | None, hint_dir: Path | None = None) -> ValidateResult:
    """One clip per row: the checks of the module docstring, the splits, the manifest and the summary."""
    d = cfg.data
    given, split_problem = given_splits(table)
    audit_ok, audit_problem = audit_marks(table)
    records = [Record(csv_row=row, source=source, text=text, relpath=loc.relpath, given=pin, audit_ok=mark,
                      path=str(loc.path) if loc.path is not None else "")
               for row, source, text, loc, pin, mark in zip(table.rows, table.sources, table.texts, locations, given,
                                                            audit_ok)]
    audio_problem = _check_clips(records, locations, d, hint_dir)
    text_problem = _check_texts(records, cfg, tokenizer)
    for r, *found in zip(records, audio_problem, text_problem, split_problem, audit_problem):
        r.problems = [p for p in found if p is not None]
    plan = plan_splits(table, records, SplitSettings.of(d))
    leaks = find_leaks(records)
    frame = _manifest_frame(records, table.extras,
                            flags={"text_in_train": leaks.text_in_train, "audio_in_train": leaks.audio_in_train,
                                   "audit_ok": [r.audit_ok for r in records]})
    with disk_full_as_error(work_dir):
        out = write_manifest(frame, work_dir)
        plot = write_duration_plot(frame, work_dir / PLOT_NAME)
    result = replace(summarize(table, records, frame, out, plot, KINDS), groups=plan.report,
                     group_hint=plan.hint, leakage=leaks)
    if echo is not None:
        echo(format_summary(result))
    return result


def _check_clips(records: list[Record], locations: list[Location], d, hint_dir: Path | None) -> list[Problem | None]:
    """Each record's audio problem (located, not a duplicate, readable, long enough); sets record.info."""
    problems: list[Problem | None] = [None] * len(records)
    first_row: dict[Path, int] = {}
    to_read: list[int] = []
    for i, (r, loc) in enumerate(zip(records, locations)):
        if loc.problem is not None or loc.path is None:
            problems[i] = loc.problem
            continue
        if loc.path in first_row:
            problems[i] = Problem(DUPLICATE, f"duplicate path: same file as row {first_row[loc.path]} "
                                             "(the first row naming a file is the one kept)")
            continue
        first_row[loc.path] = r.csv_row
        to_read.append(i)
    checks = check_all([locations[i].path for i in to_read if locations[i].path], min_seconds=d.min_seconds,
                       max_seconds=d.max_seconds)
    for i, check in zip(to_read, checks):
        records[i].info = check.info
        problems[i] = _with_cwd_hint(check.problem, records[i].source, hint_dir) if hint_dir else check.problem
    return problems


def _check_texts(records: list[Record], cfg: Config, tokenizer) -> list[Problem | None]:
    """Each record's transcript problem (empty, short, no words; with a tokenizer: label too long)."""
    norm = cfg.features.text_normalization
    problems = [check_text(r.text, min_chars=cfg.data.min_text_chars, normalization=norm) for r in records]
    if tokenizer is not None:
        todo = [i for i, p in enumerate(problems) if p is None]
        for i, length in zip(todo, label_lengths(tokenizer, [records[i].text for i in todo], norm)):
            if length > MAX_LABEL_TOKENS:
                problems[i] = Problem(LONG_LABEL, f"label too long: {length} tokens with the model's prefix "
                                                  f"and end tokens (the decoder takes at most "
                                                  f"{MAX_LABEL_TOKENS}); split the clip")
    return problems


def _with_cwd_hint(problem: Problem | None, source: str, csv_dir: Path) -> Problem | None:
    """A missing file that exists relative to the current folder: say that paths are relative to the CSV."""
    if problem is None or problem.kind != MISSING:
        return problem
    s = source.strip()
    if not s or os.path.isabs(s) or not Path(s).is_file():
        return problem
    return Problem(MISSING, f"{problem.detail} (paths are relative to the CSV's folder {csv_dir}; "
                            f"{s} exists relative to the current folder instead)")


def _manifest_frame(records: list[Record], extras: dict[str, tuple[str, ...]], *,
                    flags: dict[str, Sequence[bool]]) -> pl.DataFrame:
    ids: list[str] = []
    seen: set[str] = set()
    for r in records:
        cid = clip_id(r.relpath)
        if cid in seen:                   # a later duplicate (rejected): keep ids unique within the manifest
            cid = f"{cid}-r{r.csv_row}"
        seen.add(cid)
        ids.append(cid)
    data = {
        "id": ids,
        "path": [r.path for r in records],
        "source": [r.source for r in records],
        "text": [r.text for r in records],
        "duration": [r.info.duration if r.info else None for r in records],
        "sample_rate": [r.info.sample_rate if r.info else None for r in records],
        "channels": [r.info.channels if r.info else None for r in records],
        "split": [r.split for r in records],
        "status": [STATUS_OK if r.kept else STATUS_REJECTED for r in records],
        "reason": ["; ".join(x.detail for x in r.problems) for r in records],
        "csv_row": [r.csv_row for r in records],
    }
    frame = pl.DataFrame(data, schema=SCHEMA).with_columns(
        pl.Series(name, list(values), dtype=OPTIONAL_SCHEMA[name]) for name, values in flags.items())
    return with_extras(frame, extras)


__all__ = ["ValidateResult", "run_validate"]
