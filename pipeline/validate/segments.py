"""Segment tables: a CSV whose rows are stretches of longer files (`audios,start,end,transcription`).

    columns = segment_columns(table)            # ("start", "end") as the CSV names them, or None: not a segments CSV
    cues = segment_cues(table, columns)         # {audio cell: [(table index, windows.Cue), ...]} in CSV order

As exported by ELAN, Label Studio, Praat or a transcription vendor. Times are seconds ("62.5") or clock times
("01:02.5", "00:01:02.500", a comma as decimal mark too). Each row is a cue of its file; the rows of one file
are sorted by start time (tables are often grouped by speaker tier, not by time), then cut into windows like
subtitles (pipeline/validate/windows.py). A cell that is no time is the cue's own reason, "malformed cue time".
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.validate.windows import Cue

START_COLUMNS = ("start", "start_time", "begin", "from")
END_COLUMNS = ("end", "end_time", "stop", "to")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def segment_columns(table: CsvTable) -> tuple[str, str] | None:
    """The CSV's own names of its start and end columns (any case), when it has both."""
    by_lower = {name.strip().lower(): name for name in reversed(list(table.extras))}
    start = next((by_lower[c] for c in START_COLUMNS if c in by_lower), None)
    end = next((by_lower[c] for c in END_COLUMNS if c in by_lower), None)
    return (start, end) if start and end else None


def parse_time(cell: str) -> float:
    """Seconds from "62.5", "01:02.5" or "00:01:02.500" (comma decimals too). ValueError with the reason."""
    s = cell.strip()
    if not s:
        raise ValueError("the cell is empty")
    match = _CLOCK.match(s)
    if match:
        hours, minutes, seconds = match.groups()
        minutes_i, seconds_f = int(minutes), float(seconds.replace(",", "."))
        if hours is not None and minutes_i >= 60 or seconds_f >= 60:
            raise ValueError(f"{s!r} has minutes or seconds of 60 or more")
        return int(hours or 0) * 3600 + minutes_i * 60 + seconds_f
    try:
        value = float(s.replace(",", ".")) if s.count(",") == 1 and "." not in s else float(s)
    except ValueError:
        raise ValueError(f"{s!r} is not seconds (62.5) nor a clock time (00:01:02.500)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{s!r} is not a time of 0 s or more")
    return value


def segment_cues(table: CsvTable, columns: tuple[str, str]) -> dict[str, list[tuple[int, Cue]]]:
    """Per audio cell (stripped): its rows as cues, sorted by start (unreadable times first, in CSV order)."""
    starts, ends = table.extras[columns[0]], table.extras[columns[1]]
    by_file: dict[str, list[tuple[int, Cue]]] = defaultdict(list)
    for i, (source, text) in enumerate(zip(table.sources, table.texts)):
        times, problems = [], []
        for column, cell in ((columns[0], starts[i]), (columns[1], ends[i])):
            try:
                times.append(parse_time(cell))
            except ValueError as err:
                times.append(None)
                problems.append(f"column '{column}': {err}")
        cue = Cue(where=f"row {table.rows[i]}", start=times[0], end=times[1], text=text,
                  time_problem="; ".join(problems))
        by_file[source.strip()].append((i, cue))
    return {source: sorted(rows, key=lambda r: (r[1].start is not None, r[1].start or 0.0, r[0]))
            for source, rows in by_file.items()}
