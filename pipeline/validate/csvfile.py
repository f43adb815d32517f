"""The user's CSV: read with polars, every column as text, audio and transcript columns found by name.

    table = read_table(Path("data/clips.csv"))        # audios/audio/path/file + transcription/text/sentence
    table.sources, table.texts, table.extras, table.rows

Accepted: UTF-8 with or without BOM (UTF-16 with BOM too, as some spreadsheet programs save it), quoted fields with
commas and newlines, comma / semicolon / tab separators (picked from the header line). Blank lines are skipped.
Anything that makes the file unusable as a whole is a CsvError with a one-line message naming the file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from whisper_tune.pipeline.core.errors import CsvError, first_line

AUDIO_COLUMNS = ("audios", "audio", "path", "file")
TEXT_COLUMNS = ("transcription", "text", "sentence")
SEPARATORS = (",", ";", "\t", "|")
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class CsvTable:
    path: Path
    audio_column: str                     # the CSV's own name for it
    text_column: str
    rows: tuple[int, ...]                 # 1-based data row of each record (header not counted, blank lines are)
    sources: tuple[str, ...]              # audio cell, as written ("" when empty)
    texts: tuple[str, ...]                # transcript cell, as written ("" when empty)
    extras: dict[str, tuple[str, ...]]    # every other column, as text, in CSV order

    def __len__(self) -> int:
        return len(self.rows)


def read_table(path: Path | str, *, audio_column: str = "", text_column: str = "",
               text_columns: tuple[str, ...] = TEXT_COLUMNS, text_flag: str = "--text-column") -> CsvTable:
    """Read the CSV; audio_column / text_column ("" = auto: the first of text_columns found) are matched
    case-insensitively, spaces stripped. A CSV of recordings passes its subtitles column as the text column."""
    p = Path(path)
    text = _read_text(p)
    separator = _separator(text)
    try:
        frame = pl.read_csv(io.BytesIO(text.encode("utf-8")), has_header=True, separator=separator,
                            infer_schema=False, raise_if_empty=True)
    except pl.exceptions.NoDataError:
        raise CsvError(f"CSV {p} is empty; expected a header line like 'audios,transcription' "
                       "and one row per clip") from None
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as err:
        raise CsvError(f"cannot parse CSV {p}: {_diagnose(text, separator) or first_line(err)}") from None

    columns = _clean_names(frame.columns)
    frame.columns = columns
    frame = frame.with_columns(pl.all().fill_null(""))
    row_numbers = list(range(1, frame.height + 1))
    blank = frame.select(pl.all_horizontal(pl.all().str.strip_chars() == "")).to_series().to_list() \
        if frame.width else []
    keep = [i for i, is_blank in enumerate(blank) if not is_blank]
    if not keep:
        raise CsvError(f"CSV {p} has a header ({_names(columns)}) but no rows; add one row per clip")

    audio = _pick(p, columns, audio_column, AUDIO_COLUMNS, "audio", "--audio-column")
    kind = "text" if text_columns == TEXT_COLUMNS else text_flag.lstrip("-").removesuffix("-column")
    transcript = _pick(p, columns, text_column, text_columns, kind, text_flag)
    if audio == transcript:
        raise CsvError(f"CSV {p}: the audio and {kind} columns are both '{audio}'; name them with "
                       f"--audio-column and {text_flag}")

    def cells(name: str) -> tuple[str, ...]:
        values = frame[name].to_list()
        return tuple(values[i] for i in keep)

    return CsvTable(
        path=p,
        audio_column=audio,
        text_column=transcript,
        rows=tuple(row_numbers[i] for i in keep),
        sources=cells(audio),
        texts=cells(transcript),
        extras={name: cells(name) for name in columns if name not in (audio, transcript)},
    )


def column_names(path: Path | str) -> list[str]:
    """The CSV's header names, cleaned as read_table cleans them (to tell which kind of CSV it is)."""
    text = _read_text(Path(path))
    header = next(csv.reader(io.StringIO(text.lstrip("\r\n"), newline=""), delimiter=_separator(text)), [])
    return _clean_names(header)


def _read_text(p: Path) -> str:
    if not p.exists():
        raise CsvError(f"CSV file {p} does not exist; check the --csv path")
    if p.is_dir():
        raise CsvError(f"{p} is a folder; --csv needs a CSV file")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise CsvError(f"cannot read CSV {p}: {err.strerror or err}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise CsvError(f"CSV {p} starts with a UTF-16 mark but is not valid UTF-16; save it as CSV UTF-8") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise CsvError(f"{p} is not a CSV text file (it contains binary data); --csv needs a UTF-8 CSV "
                       "with a header line like 'audios,transcription'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CsvError(f"CSV {p} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
                       "save it as CSV UTF-8") from None
    if not text.strip():
        raise CsvError(f"CSV {p} is empty; expected a header line like 'audios,transcription' "
                       "and one row per clip")
    return text


def _separator(text: str) -> str:
    """The separator that appears most in the header line (comma when none does)."""
    header = text.lstrip("\r\n").splitlines()[0] if text.strip() else ""
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] > 0 else ","


def _clean_names(names: list[str]) -> list[str]:
    """Strip spaces; name empty headers column_N; keep names unique."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names, start=1):
        clean = name.strip() or f"column_{i}"
        base, n = clean, 2
        while clean in seen:
            clean, n = f"{base}_{n}", n + 1
        seen.add(clean)
        out.append(clean)
    return out


def pick_column(columns: list[str], wanted: str, candidates: tuple[str, ...], *, what: str, kind: str, flag: str,
                error: type[Exception] = CsvError) -> str:
    """The column `wanted` names (any case; the first of equal names), else the first of `candidates` present;
    `error` naming `what` (the CSV, the dataset), the columns found and the flag that names one, when neither is."""
    by_lower: dict[str, str] = {}
    for name in columns:
        by_lower.setdefault(name.lower(), name)
    if wanted.strip():
        found = by_lower.get(wanted.strip().lower())
        if found is None:
            raise error(f"{what} has no column '{wanted.strip()}' (given with {flag}); "
                        f"columns found: {_names(columns)}")
        return found
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    raise error(f"{what} has no {kind} column: expected one of {', '.join(candidates)}, "
                f"found {_names(columns)}; name yours with {flag} NAME")


def _pick(p: Path, columns: list[str], wanted: str, candidates: tuple[str, ...], kind: str, flag: str) -> str:
    return pick_column(columns, wanted, candidates, what=f"CSV {p}", kind=kind, flag=flag)


def _names(columns: list[str], limit: int = 10) -> str:
    shown = [repr(c if len(c) <= 40 else c[:37] + "...") for c in columns[:limit]]
    more = f" and {len(columns) - limit} more" if len(columns) > limit else ""
    return ", ".join(shown) + more


def _diagnose(text: str, separator: str) -> str:
    """A precise reason for a CSV polars refused: a row with too many fields, or an unclosed quote."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    try:
        header = next(reader)
        for record in reader:
            if len(record) > len(header):
                return (f"line {reader.line_num} has {len(record)} fields but the header has {len(header)}; "
                        "put quotes around transcripts that contain the separator "
                        f"{'comma' if separator == ',' else repr(separator)}")
    except csv.Error as err:
        return f"line {reader.line_num}: {err} (an unclosed quote?)"
    return ""
