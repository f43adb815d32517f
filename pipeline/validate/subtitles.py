"""Subtitle files of long recordings (SRT, WebVTT) -> cues, read with pysubs2.

    cues = read_cues(Path("meetings/monday.srt"))      # list[windows.Cue], in file order; SubtitleError if unusable

The format comes from the file's extension (.srt, .vtt), else from its content (pysubs2 tells SRT and WebVTT
apart). Formatting tags (<i>, {\\an8}) are dropped and line breaks become spaces. pysubs2 reads a block whose time
line it cannot parse as text of the cue before it; such a line is split off again here and becomes a cue of its
own with a malformed time, so the report names it and the cue before keeps only its own text.
A file that cannot be used at all (missing, not text, not subtitles) is one SubtitleError naming the file; the
recording's row then carries that reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from whisper_tune.pipeline.core.errors import WhisperTuneError
from whisper_tune.pipeline.validate.windows import Cue

FORMATS = {".srt": "srt", ".vtt": "vtt"}
_NUMBER_LINE = re.compile(r"^\s*\d+\s*$")


class SubtitleError(WhisperTuneError):
    """A subtitle file that cannot be read as SRT or WebVTT."""


def read_cues(path: Path) -> list[Cue]:
    import pysubs2

    text = _read_text(path)
    fmt = FORMATS.get(path.suffix.lower())
    try:
        subs = pysubs2.SSAFile.from_string(text, format_=fmt)
    except pysubs2.exceptions.FormatAutodetectionError:
        raise SubtitleError(f"subtitles {path} are neither SRT nor WebVTT (no line like "
                            "'00:00:01,000 --> 00:00:04,000'); export them as .srt or .vtt") from None
    except (pysubs2.exceptions.Pysubs2Error, ValueError) as err:
        raise SubtitleError(f"cannot read subtitles {path}: {err}") from None
    if subs.format not in ("srt", "vtt"):
        raise SubtitleError(f"subtitles {path} are in the {subs.format} format; export them as .srt or .vtt")
    cues: list[Cue] = []
    for event in subs.events:
        if event.is_comment:
            continue
        own, swallowed = _split_swallowed(event.plaintext)
        number = len(cues) + 1
        cues.append(Cue(where=f"cue {number} ({_clock(event.start)})", start=event.start / 1000.0,
                        end=event.end / 1000.0, text=own))
        for line, body in swallowed:
            cues.append(Cue(where=f"cue {len(cues) + 1} (after {_clock(event.start)})", start=None, end=None,
                            text=body, time_problem=f"{line.strip()!r} is not a time range like "
                                                    "00:01:02,500 --> 00:01:04,000"))
    if not cues:
        raise SubtitleError(f"subtitles {path} have no cues; expected blocks like "
                            "'1 / 00:00:01,000 --> 00:00:04,000 / text'")
    return cues


def _split_swallowed(plain: str) -> tuple[str, list[tuple[str, str]]]:
    """A cue's text, and the (time line, text) of every block pysubs2 folded into it (its time line unreadable)."""
    lines = plain.split("\n")
    starts = [i for i, line in enumerate(lines) if "-->" in line]
    if not starts:
        return _flat(lines), []

    def own(chunk: list[str]) -> str:
        if chunk and _NUMBER_LINE.match(chunk[-1]):      # the next block's number
            chunk = chunk[:-1]
        return _flat(chunk)

    text = own(lines[:starts[0]])
    swallowed = []
    for k, i in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else len(lines)
        swallowed.append((lines[i], own(lines[i + 1:stop]) if k + 1 < len(starts) else _flat(lines[i + 1:stop])))
    return text, swallowed


def _flat(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def _clock(ms: int) -> str:
    s, ms = divmod(int(ms), 1000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise SubtitleError(f"subtitles file not found: {path}" if not path.exists()
                            else f"subtitles {path} is a folder, not a file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SubtitleError(f"cannot read subtitles {path}: {err.strerror or err}") from None
    for encoding in ("utf-8-sig", "utf-16"):
        if encoding == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SubtitleError(f"subtitles {path} are not UTF-8 text; save them as UTF-8")
