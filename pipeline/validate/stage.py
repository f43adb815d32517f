"""The `validate` stage: check every CSV row before any expensive work, write WORK/manifest.parquet.

    result = run_validate(csv_path=Path("data/clips.csv"), work_dir=Path("work"), cfg=load_config(None),
                          use_model=False)

Per row, in this order (a row may collect one audio problem and one transcript problem):
path present and local -> inside the CSV's folder (unless data.allow_outside) -> not a duplicate of an earlier
row (same resolved file; the first is kept) -> file exists -> not empty -> supported extension -> readable audio
to its end (header, last frames; MP3s decoded in full) -> duration strictly between data.min_seconds and
data.max_seconds; transcript not empty -> longer than data.min_text_chars (stripped) -> has letters or digits
after normalization -> with a model: label (prefix + text + end token) within the decoder's 448 tokens.

Rejected rows stay in the manifest with status "rejected" and the reason in words; the run goes on. The CSV as a
whole being unusable is a CsvError. Writes WORK/manifest.parquet and WORK/durations.png, prints a summary.
Splits (per path, or per group with data.group_column): pipeline/grouping.py; held-out clips repeating train
transcripts or audio: pipeline/leakage.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import polars as pl

from whisper_tune.pipeline.featurize.audio import AudioInfo, verify
from whisper_tune.pipeline.core.config import Config, check_output_folder
from whisper_tune.pipeline.core.constants import AUDIO_EXTENSIONS, MAX_LABEL_TOKENS
from whisper_tune.pipeline.validate.csvfile import CsvTable, read_table
from whisper_tune.pipeline.core.errors import AudioError, ModelError, WhisperTuneError, first_line
from whisper_tune.pipeline.core.fileio import disk_full_as_error
from whisper_tune.pipeline.validate.grouping import group_values, plan_splits
from whisper_tune.pipeline.validate.leakage import find_leaks
from whisper_tune.pipeline.validate.manifest import (COLUMNS, OPTIONAL_SCHEMA, SCHEMA, SPLITS, STATUS_OK, STATUS_REJECTED, clip_id,
                       split_name, write_manifest)
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.validate.report import ValidateResult, format_summary, summarize, write_duration_plot

PLOT_NAME = "durations.png"
PARALLEL_MIN_ROWS = 64          # below this, threads cost more than they save
MAX_THREADS = 8                 # header reads are I/O bound; MP3 decoding releases the GIL

# Problem kinds, in the order the summary lists them.
NO_PATH = "no audio path"
NOT_LOCAL = "not a local file"
OUTSIDE = "outside the CSV folder"
DUPLICATE = "duplicate path"
MISSING = "file not found"
EMPTY_FILE = "empty file"
BAD_TYPE = "unsupported file type"
UNREADABLE = "not readable audio"
TOO_SHORT = "audio too short"
TOO_LONG = "audio too long"
NO_TEXT = "empty transcript"
SHORT_TEXT = "transcript too short"
NO_WORDS = "transcript has no words"
LONG_LABEL = "label too long"
BAD_SPLIT = "unknown split"
BAD_AUDIT = "unknown audit mark"
KINDS = (NO_PATH, NOT_LOCAL, OUTSIDE, DUPLICATE, MISSING, EMPTY_FILE, BAD_TYPE, UNREADABLE, TOO_SHORT, TOO_LONG,
         NO_TEXT, SHORT_TEXT, NO_WORDS, LONG_LABEL, BAD_SPLIT, BAD_AUDIT)
AUDIT_COLUMN = "audit"          # optional CSV column: `ok` marks a row the audit flagged as fine

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


@dataclass(frozen=True)
class Problem:
    kind: str        # one of KINDS: what the summary counts
    detail: str      # the reason written to the manifest, with the numbers and the fix


@dataclass(frozen=True)
class Location:
    relpath: str             # posix path relative to the CSV's folder: the clip's identity (id, split)
    path: Path | None        # absolute, resolved; None when there is nothing to look at
    problem: Problem | None


@dataclass(frozen=True)
class AudioCheck:
    info: AudioInfo | None
    problem: Problem | None


# ---------------------------------------------------------------------------------------------- per-row checks

def locate(source: str, csv_dir: Path, *, allow_outside: bool) -> Location:
    """Where the CSV cell points: relative path for identity, resolved path for reading, or a problem."""
    s = source.strip()
    if not s:
        return Location("", None, Problem(NO_PATH, "no audio path: the audio cell is empty"))
    if _URL.match(s):
        return Location(s, None, Problem(NOT_LOCAL, f"not a local file: {s} (download the audio and "
                                                    "write its path relative to the CSV)"))
    if "\\" in s and os.sep == "/":
        s = s.replace("\\", "/")                      # a CSV written on Windows
    joined = Path(os.path.normpath(csv_dir / s))      # lexical: a symlinked audio folder stays inside
    resolved = joined.resolve()
    rel = os.path.relpath(joined, csv_dir)
    inside = _is_inside(rel)
    if not inside:
        rel_resolved = os.path.relpath(resolved, csv_dir.resolve())
        if _is_inside(rel_resolved):
            rel, inside = rel_resolved, True
    rel = Path(rel).as_posix()
    if not inside and not allow_outside:
        return Location(rel, resolved, Problem(
            OUTSIDE, f"outside the CSV folder: {resolved} is not under {csv_dir} (move it there, or pass "
                     "--allow-outside)"))
    return Location(rel, resolved, None)


def _is_inside(rel: str) -> bool:
    return rel != ".." and not rel.startswith(".." + os.sep) and not os.path.isabs(rel)


def check_audio(path: Path, *, min_seconds: float, max_seconds: float) -> AudioCheck:
    """Existence, size, type, readability to the end, duration. Pure: reads the file, changes nothing."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return AudioCheck(None, Problem(MISSING, f"file not found: {path}"))
    except OSError as err:
        return AudioCheck(None, Problem(UNREADABLE, f"cannot read the file ({err.strerror or err})"))
    if path.is_dir():
        return AudioCheck(None, Problem(UNREADABLE, "is a folder, not an audio file"))
    if size == 0:
        return AudioCheck(None, Problem(EMPTY_FILE, "empty file (0 bytes)"))
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        kinds = ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
        return AudioCheck(None, Problem(BAD_TYPE, f"unsupported file type '{path.suffix or '(none)'}' "
                                                  f"(supported: {kinds}); convert it to flac or wav"))
    try:
        info = verify(path)
    except AudioError as err:
        detail = str(err) if str(err).startswith("not a readable audio") else f"not readable audio: {err}"
        return AudioCheck(None, Problem(UNREADABLE, detail))
    if info.duration <= min_seconds:
        return AudioCheck(info, Problem(TOO_SHORT, f"audio too short: {info.duration:.2f} s (must be longer than "
                                                   f"{min_seconds:g} s; data.min_seconds / --min-seconds)"))
    if info.duration >= max_seconds:
        return AudioCheck(info, Problem(TOO_LONG, f"audio too long: {info.duration:.2f} s (must be shorter than "
                                                  f"{max_seconds:g} s; data.max_seconds / --max-seconds)"))
    return AudioCheck(info, None)


def check_text(text: str, *, min_chars: int, normalization: str) -> Problem | None:
    stripped = text.strip()
    if not stripped:
        return Problem(NO_TEXT, "empty transcript")
    if len(stripped) <= min_chars:
        return Problem(SHORT_TEXT, f"transcript too short: {len(stripped)} characters (must be longer than "
                                   f"{min_chars}; data.min_text_chars / --min-text-chars)")
    if not normalize_text(text, normalization):
        return Problem(NO_WORDS, "transcript has no letters or digits")
    return None


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

def run_validate(*, csv_path: Path, work_dir: Path, cfg: Config, use_model: bool,
                 echo: Callable[[str], None] | None = print) -> ValidateResult:
    """Check every row of csv_path, write work_dir/manifest.parquet and durations.png, print a summary.

    use_model: also check label lengths with cfg.model.name's tokenizer (ModelError when it cannot load).
    echo: where the summary goes (None = silent)."""
    csv_path, work_dir = Path(csv_path), check_output_folder(work_dir, "--work")
    d = cfg.data
    table = read_table(csv_path, audio_column=d.audio_column, text_column=d.text_column)
    tokenizer = _load_tokenizer(cfg) if use_model else None        # fail before the slow part
    if d.group_column:
        group_values(table, d.group_column)                          # ... and so does a missing group column

    csv_dir = Path(os.path.abspath(csv_path.parent))
    n = len(table)
    audio_problem: list[Problem | None] = [None] * n
    infos: list[AudioInfo | None] = [None] * n
    locations = [locate(s, csv_dir, allow_outside=d.allow_outside) for s in table.sources]

    first_row: dict[Path, int] = {}
    to_read: list[int] = []
    for i, loc in enumerate(locations):
        if loc.problem is not None or loc.path is None:
            audio_problem[i] = loc.problem
            continue
        if loc.path in first_row:
            audio_problem[i] = Problem(DUPLICATE, f"duplicate path: same file as row {first_row[loc.path]} "
                                                  "(the first row naming a file is the one kept)")
            continue
        first_row[loc.path] = table.rows[i]
        to_read.append(i)

    checks = _check_all([locations[i].path for i in to_read if locations[i].path], min_seconds=d.min_seconds,
                        max_seconds=d.max_seconds)
    for i, check in zip(to_read, checks):
        infos[i], audio_problem[i] = check.info, _with_cwd_hint(check.problem, table.sources[i], csv_dir)

    norm = cfg.features.text_normalization
    text_problem = [check_text(t, min_chars=d.min_text_chars, normalization=norm) for t in table.texts]
    if tokenizer is not None:
        todo = [i for i in range(n) if text_problem[i] is None]
        for i, length in zip(todo, label_lengths(tokenizer, [table.texts[i] for i in todo], norm)):
            if length > MAX_LABEL_TOKENS:
                text_problem[i] = Problem(LONG_LABEL, f"label too long: {length} tokens with the model's prefix "
                                                      f"and end tokens (the decoder takes at most "
                                                      f"{MAX_LABEL_TOKENS}); split the clip")

    given, split_problem = given_splits(table)
    audit_ok, audit_problem = audit_marks(table)
    problems = [[p for p in (audio_problem[i], text_problem[i], split_problem[i], audit_problem[i]) if p is not None]
                for i in range(n)]
    kept = [not p for p in problems]
    plan = plan_splits(table, [loc.relpath for loc in locations], given, kept, group_column=d.group_column,
                       seed=d.seed, test_share=d.test_share, validation_share=d.validation_share)
    paths = [str(loc.path) if loc.path is not None else "" for loc in locations]
    leaks = find_leaks(texts=table.texts, paths=paths, splits=plan.splits, kept=kept, rows=table.rows)
    frame = _manifest_frame(table, locations, infos, problems, splits=plan.splits,
                            flags={"text_in_train": leaks.text_in_train, "audio_in_train": leaks.audio_in_train,
                                   "audit_ok": audit_ok})
    with disk_full_as_error(work_dir):
        out = write_manifest(frame, work_dir)
        plot = write_duration_plot(frame, work_dir / PLOT_NAME)
    result = replace(summarize(table, frame, problems, out, plot, KINDS), groups=plan.report, group_hint=plan.hint,
                     leakage=leaks)
    if echo is not None:
        echo(format_summary(result))
    return result


def _with_cwd_hint(problem: Problem | None, source: str, csv_dir: Path) -> Problem | None:
    """A missing file that exists relative to the current folder: say that paths are relative to the CSV."""
    if problem is None or problem.kind != MISSING:
        return problem
    s = source.strip()
    if not s or os.path.isabs(s) or not Path(s).is_file():
        return problem
    return Problem(MISSING, f"{problem.detail} (paths are relative to the CSV's folder {csv_dir}; "
                            f"{s} exists relative to the current folder instead)")


def _check_all(paths: list[Path], *, min_seconds: float, max_seconds: float) -> list[AudioCheck]:
    def one(path: Path) -> AudioCheck:
        return check_audio(path, min_seconds=min_seconds, max_seconds=max_seconds)

    with _quiet_native_stderr():          # libmpg123 prints warnings for damaged MP3s; the reasons say it better
        if len(paths) < PARALLEL_MIN_ROWS:
            return [one(p) for p in paths]
        from joblib import Parallel, delayed

        threads = max(1, min(MAX_THREADS, os.cpu_count() or 1))
        return list(Parallel(n_jobs=threads, prefer="threads")(delayed(one)(p) for p in paths))


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while native decoders run (they write there directly)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def given_splits(table: CsvTable) -> tuple[list[str], list[Problem | None]]:
    """An optional `split` column (train, validation or test, any case; dev, val and valid mean validation) fixes a
    row's split; a blank cell means the hash decides.

    Teams with a fixed held-out set (other speakers, other rooms) keep it that way across runs."""
    column = next((name for name in table.extras if name.strip().lower() == "split"), None)
    n = len(table)
    if column is None:
        return [""] * n, [None] * n
    given: list[str] = []
    problems: list[Problem | None] = []
    for value in table.extras[column]:
        v = split_name(value or "")
        ok = v in SPLITS or v == ""
        given.append(v if ok else "")
        problems.append(None if ok else Problem(
            BAD_SPLIT, f"unknown split {value!r} in column '{column}': use {', '.join(SPLITS)} "
                       "or leave it blank for the automatic split"))
    return given, problems


def audit_marks(table: CsvTable) -> tuple[list[bool], list[Problem | None]]:
    """An optional `audit` column (any case): `ok` marks a row that `whisper-tune audit` flagged as fine, so it is
    never flagged again; a blank cell marks nothing. Any other value is a problem of its row, named in words."""
    column = next((name for name in table.extras if name.strip().lower() == AUDIT_COLUMN), None)
    n = len(table)
    if column is None:
        return [False] * n, [None] * n
    marks: list[bool] = []
    problems: list[Problem | None] = []
    for value in table.extras[column]:
        v = (value or "").strip().lower()
        marks.append(v == "ok")
        problems.append(None if v in ("ok", "") else Problem(
            BAD_AUDIT, f"unknown audit mark {value!r} in column '{column}': write ok to keep a row the audit "
                       "flagged, or leave it blank"))
    return marks, problems


def _manifest_frame(table: CsvTable, locations: list[Location], infos: list[AudioInfo | None],
                    problems: list[list[Problem]], *, splits: list[str],
                    flags: dict[str, Sequence[bool]]) -> pl.DataFrame:
    ids: list[str] = []
    seen: set[str] = set()
    for loc, row in zip(locations, table.rows):
        cid = clip_id(loc.relpath)
        if cid in seen:                   # a later duplicate (rejected): keep ids unique within the manifest
            cid = f"{cid}-r{row}"
        seen.add(cid)
        ids.append(cid)
    data = {
        "id": ids,
        "path": [str(loc.path) if loc.path is not None else "" for loc in locations],
        "source": list(table.sources),
        "text": list(table.texts),
        "duration": [info.duration if info else None for info in infos],
        "sample_rate": [info.sample_rate if info else None for info in infos],
        "channels": [info.channels if info else None for info in infos],
        "split": splits,
        "status": [STATUS_REJECTED if p else STATUS_OK for p in problems],
        "reason": ["; ".join(x.detail for x in p) for p in problems],
        "csv_row": list(table.rows),
    }
    frame = pl.DataFrame(data, schema=SCHEMA).with_columns(
        pl.Series(name, list(values), dtype=OPTIONAL_SCHEMA[name]) for name, values in flags.items())
    extras = {}
    for name, values in table.extras.items():
        column = name
        while column in COLUMNS or column in OPTIONAL_SCHEMA or column in extras:
            column = f"csv_{column}"
        extras[column] = pl.Series(column, list(values), dtype=pl.String)
    return frame.with_columns(**extras) if extras else frame


__all__ = ["ValidateResult", "run_validate", "locate", "check_audio", "check_text", "format_summary",
           "write_duration_plot"]
