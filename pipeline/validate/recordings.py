"""Long recordings for `validate`: a CSV of recordings + subtitle files, or of segments, into windowed manifest rows.

    result = validate_recordings(table, work_dir, cfg, subtitles=True, segments=None, tokenizer=None, echo=print)

Per recording (a row of `audios,subtitles`, or every row of one file in `audios,start,end,transcription`): the
audio is located and checked as a clip is (checks.locate, checks.check_audio; any length is fine), its cues are read
(subtitles.py, segments.py), checked and cut into windows (windows.py). The manifest gets one row per window and
one rejected row per bad cue (its reason), or one rejected row for a recording whose audio or subtitles cannot be
used. All windows of a recording share its split: the recording's path is the group (or --group-column's value
when given, which may hold several recordings), so no recording straddles train and test.

What the later stages read from these rows (the design the manifest serves; windows.py names each column):
- features: the usable rows grouped by `path` and sorted by `start`: one decode per recording, every window cut
  as samples [start, end) of it; a window's fingerprint covers the recording's content hash, its `start` / `end`
  and its `cue_starts` / `cue_ends` / `cue_texts`, so editing one cue changes only the ids and fingerprints of its
  own window. Windows are not trimmed (cue times stay exact): pipeline/featurize/windows.py.
  Labels: `<|t|> text<|t'|>` per cue from the cue columns, or `<|notimestamps|>` + `text`, per
  training.timestamp_prob.
- prompts: `previous_text` (empty for a recording's first window) is the `<|startofprev|>` text.
- long-form evaluation: the test rows of one `recording` in `window_index` order give its reference (their
  `cue_texts` joined) and its reference cue times (`start` + each relative cue time); `recording_seconds` is the
  length to decode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import polars as pl

from whisper_tune.pipeline.core.fileio import disk_full_as_error
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.featurize.audio import AudioInfo
from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.validate.grouping import plan_splits
from whisper_tune.pipeline.validate.leakage import find_leaks
from whisper_tune.pipeline.validate.rows import Record, SplitSettings
from whisper_tune.pipeline.validate.manifest import (OPTIONAL_SCHEMA, SCHEMA, STATUS_OK, STATUS_REJECTED,
                                                     WINDOW_SCHEMA, clip_id, with_extras, write_manifest)
from whisper_tune.pipeline.validate.checks import (DUPLICATE, KINDS as CLIP_KINDS, Location, Problem, check_all,
                                                   given_splits, locate)
from whisper_tune.pipeline.validate.report import (PLOT_NAME, ValidateResult, format_summary, summarize,
                                                  write_duration_plot)
from whisper_tune.pipeline.validate.segments import segment_cues
from whisper_tune.pipeline.validate.subtitles import SubtitleError, read_cues
from whisper_tune.pipeline.validate.windows import KINDS as CUE_KINDS, Cue, Window, check_cues, cut_windows, \
    previous_texts

SUBTITLE_COLUMNS = ("subtitles", "srt", "vtt", "captions")
NO_SUBTITLES = "subtitles not usable"
KINDS = CLIP_KINDS + (NO_SUBTITLES,) + CUE_KINDS


@dataclass
class Recording:
    """One long recording: where its rows come from, its audio, and its cues."""

    source: str                              # the audio cell as written
    location: Location
    rows: list[int]                          # table indexes of its CSV rows (one for a subtitles CSV)
    subtitles: str = ""                      # the subtitles cell as written
    info: AudioInfo | None = None
    problem: Problem | None = None
    cues: list[tuple[int, Cue]] = field(default_factory=list)   # (table index of the cue's row, cue)


@dataclass(frozen=True)
class Row:
    """One manifest row: a window, a rejected cue, or a rejected recording."""

    recording: Recording
    table_index: int
    window: Window | None = None
    cue: Cue | None = None
    window_index: int | None = None
    previous_text: str = ""
    problem: Problem | None = None


def validate_recordings(table: CsvTable, work_dir: Path, cfg, *, segments: tuple[str, str] | None,
                        tokenizer=None, echo: Callable[[str], None] | None = print) -> ValidateResult:
    """table: a subtitles CSV (its text column is the subtitles column) or, with `segments` (start and end column
    names), a segments CSV. Writes the manifest and the durations plot like stage.run_validate."""
    d = cfg.data
    csv_dir = Path(os.path.abspath(table.path.parent))
    recordings = _recordings(table, csv_dir, segments=segments, allow_outside=d.allow_outside)
    norm = cfg.features.text_normalization
    label_tokens = _token_counter(tokenizer, recordings, norm)
    rows = [row for rec in recordings for row in _rows(rec, window_seconds=d.window_seconds, normalization=norm,
                                                       label_tokens=label_tokens)]
    rows.sort(key=lambda r: r.table_index)
    view = _row_table(table, rows)
    given, split_problem = given_splits(view)
    records = [Record(csv_row=csv_row, source=source, text=text, relpath=row.recording.location.relpath,
                      path=str(row.recording.location.path or ""), given=pin,
                      problems=[p for p in (row.problem, bad_split) if p is not None])
               for row, csv_row, source, text, pin, bad_split in zip(rows, view.rows, view.sources, view.texts,
                                                                     given, split_problem)]
    plan = plan_splits(view, records, SplitSettings.of(d))
    leaks = find_leaks(records)
    frame = _frame(table, rows, records, segments=segments,
                   flags={"text_in_train": leaks.text_in_train, "audio_in_train": leaks.audio_in_train})
    with disk_full_as_error(work_dir):
        out = write_manifest(frame, work_dir)
        plot = write_duration_plot(frame, work_dir / PLOT_NAME)
    result = replace(summarize(view, records, frame, out, plot, KINDS), groups=plan.report,
                     group_hint=plan.hint, leakage=leaks, unit="window", recordings=len(recordings))
    if echo is not None:
        echo(format_summary(result))
    return result


def _recordings(table: CsvTable, csv_dir: Path, *, segments: tuple[str, str] | None,
                allow_outside: bool) -> list[Recording]:
    """The recordings in CSV order, each located, checked, and with its cues read (or a problem)."""
    if segments is None:
        recordings = [Recording(source=s, location=locate(s, csv_dir, allow_outside=allow_outside), rows=[i],
                                subtitles=table.texts[i]) for i, s in enumerate(table.sources)]
    else:
        recordings = [Recording(source=table.sources[cues[0][0]], rows=[i for i, _ in cues], cues=cues,
                                location=locate(source, csv_dir, allow_outside=allow_outside))
                      for source, cues in segment_cues(table, segments).items()]
    first: dict[Path, int] = {}
    to_read: list[Recording] = []
    for rec in recordings:
        loc = rec.location
        if loc.problem is not None or loc.path is None:
            rec.problem = loc.problem
        elif loc.path in first:
            rec.problem = Problem(DUPLICATE, f"duplicate path: same recording as row {first[loc.path]} (the "
                                             "first row naming a file is the one kept)")
        else:
            first[loc.path] = table.rows[rec.rows[0]]
            to_read.append(rec)
    checks = check_all([rec.location.path for rec in to_read], min_seconds=0.0, max_seconds=float("inf"))
    for rec, check in zip(to_read, checks):
        rec.info, rec.problem = check.info, check.problem
        if rec.problem is None and segments is None:
            rec.problem, rec.cues = _subtitle_cues(rec, csv_dir, allow_outside=allow_outside)
    return recordings


def _subtitle_cues(rec: Recording, csv_dir: Path, *, allow_outside: bool) -> tuple[Problem | None, list]:
    where = locate(rec.subtitles, csv_dir, allow_outside=allow_outside)
    if where.problem is not None or where.path is None:
        detail = where.problem.detail.replace("audio", "subtitles") if where.problem else "no subtitles file"
        return Problem(NO_SUBTITLES, f"subtitles not usable: {detail}"), []
    try:
        return None, [(rec.rows[0], cue) for cue in read_cues(where.path)]
    except SubtitleError as err:
        return Problem(NO_SUBTITLES, f"subtitles not usable: {err}"), []


def _token_counter(tokenizer, recordings: Sequence[Recording], normalization: str) -> Callable[[str], int] | None:
    """Text tokens of each cue (without special tokens) with the model's tokenizer, counted once per text."""
    if tokenizer is None:
        return None
    texts = sorted({c.text for rec in recordings for _, c in rec.cues})
    normalized = [" " + normalize_text(t, normalization) for t in texts]
    counts = dict(zip(texts, (len(ids) for ids in tokenizer(normalized, add_special_tokens=False)["input_ids"])))
    return lambda text: counts.get(text, 0)


def _rows(rec: Recording, *, window_seconds: float, normalization: str,
          label_tokens: Callable[[str], int] | None) -> list[Row]:
    if rec.problem is not None or rec.info is None:
        return [Row(rec, rec.rows[0], problem=rec.problem)]
    origin = {id(cue): i for i, cue in rec.cues}
    checks = check_cues([c for _, c in rec.cues], duration=rec.info.duration, window_seconds=window_seconds,
                        normalization=normalization, label_tokens=label_tokens)
    good = [c.cue for c in checks if c.problem is None]
    windows = cut_windows(good, duration=rec.info.duration, window_seconds=window_seconds, label_tokens=label_tokens)
    rows = [Row(rec, origin[id(w.cues[0])], window=w, window_index=k, previous_text=prev)
            for k, (w, prev) in enumerate(zip(windows, previous_texts(windows)))]
    rows += [Row(rec, origin[id(c.cue)], cue=c.cue, problem=c.problem) for c in checks if c.problem is not None]
    return rows


def _row_table(table: CsvTable, rows: Sequence[Row]) -> CsvTable:
    """The manifest rows seen as a CSV table (csv row, source, text, the CSV's other cells): what grouping, the
    split column, leakage and the summary read."""
    def label(row: Row) -> str:
        where = f" {row.cue.where}" if row.cue is not None and row.recording.subtitles else ""
        return f"{row.recording.subtitles or row.recording.source}{where}"

    return replace(table, rows=tuple(table.rows[r.table_index] for r in rows),
                   sources=tuple(label(r) if r.problem is not None else r.recording.source for r in rows),
                   texts=tuple(_text(r) for r in rows),
                   extras={name: tuple(cells[r.table_index] for r in rows) for name, cells in table.extras.items()})


def _text(row: Row) -> str:
    if row.window is not None:
        return row.window.text
    return row.cue.text if row.cue is not None else ""


def _frame(table: CsvTable, rows: Sequence[Row], records: Sequence[Record], *,
           segments: tuple[str, str] | None, flags: dict[str, Sequence[bool]]) -> pl.DataFrame:
    ids: list[str] = []
    seen: set[str] = set()
    for row in rows:
        cid = clip_id(_identity(row))
        if cid in seen:
            cid = f"{cid}-r{table.rows[row.table_index]}"
        seen.add(cid)
        ids.append(cid)
    spans = [_span(r) for r in rows]
    times = [r.window.cue_times() if r.window is not None else () for r in rows]
    info = [r.recording.info for r in rows]
    data = {
        "id": ids,
        "path": [str(r.recording.location.path or "") for r in rows],
        "source": [r.recording.source for r in rows],
        "text": [_text(r) for r in rows],
        "duration": [round(e - s, 3) if s is not None and e is not None and r.window is not None else None
                     for r, (s, e) in zip(rows, spans)],
        "sample_rate": [i.sample_rate if i else None for i in info],
        "channels": [i.channels if i else None for i in info],
        "split": [r.split for r in records],
        "status": [STATUS_OK if r.kept else STATUS_REJECTED for r in records],
        "reason": ["; ".join(x.detail for x in r.problems) for r in records],
        "csv_row": [table.rows[r.table_index] for r in rows],
        "recording": [r.recording.location.relpath for r in rows],
        "subtitles": [r.recording.subtitles for r in rows],
        "start": [s for s, _ in spans],
        "end": [e for _, e in spans],
        "window_index": [r.window_index for r in rows],
        "cue_starts": [[a for a, _ in t] for t in times],
        "cue_ends": [[b for _, b in t] for t in times],
        "cue_texts": [[c.text.strip() for c in r.window.cues] if r.window is not None else [] for r in rows],
        "previous_text": [r.previous_text for r in rows],
        "recording_seconds": [i.duration if i else None for i in info],
    }
    frame = pl.DataFrame(data, schema={**SCHEMA, **WINDOW_SCHEMA}).with_columns(
        pl.Series(name, list(values), dtype=OPTIONAL_SCHEMA[name]) for name, values in flags.items())
    skip = set(segments or ())
    return with_extras(frame, {name: [cells[r.table_index] for r in rows]
                               for name, cells in table.extras.items() if name not in skip})


def _span(row: Row) -> tuple[float | None, float | None]:
    if row.window is not None:
        return round(row.window.start, 3), round(row.window.end, 3)
    if row.cue is not None:
        return row.cue.start, row.cue.end
    return None, None


def _identity(row: Row) -> str:
    """What a row's id hashes: the recording and the window's range (editing one cue moves only its window's
    id), a rejected cue's place, or the recording alone."""
    rel = row.recording.location.relpath
    if row.window is not None:
        return f"{rel}@{round(row.window.start * 1000)}-{round(row.window.end * 1000)}"
    if row.cue is not None:
        return f"{rel}#{row.cue.where}"
    return rel
