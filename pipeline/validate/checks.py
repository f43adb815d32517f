"""Per-row checks shared by every input form of `validate`: where an audio cell points, whether the file is usable
audio, whether a transcript has words, and the CSV's own split column. Pure functions: they read, never write.

    loc = locate("clips/a.wav", csv_dir, allow_outside=False)        # Location(relpath, path, problem)
    check = check_audio(loc.path, min_seconds=1.0, max_seconds=30.0)  # AudioCheck(info, problem)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from whisper_tune.pipeline.core.constants import AUDIO_EXTENSIONS
from whisper_tune.pipeline.core.errors import AudioError
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.featurize.audio import AudioInfo, verify
from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.validate.manifest import SPLITS, split_name

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

PARALLEL_MIN_ROWS = 64          # below this, threads cost more than they save
MAX_THREADS = 8                 # header reads are I/O bound; MP3 decoding releases the GIL

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


def check_all(paths: list[Path], *, min_seconds: float, max_seconds: float) -> list[AudioCheck]:
    """check_audio for each path (in threads for many), with the native decoders' own warnings silenced."""
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
