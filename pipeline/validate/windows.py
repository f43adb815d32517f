"""Windows along the cues: a long recording's cues checked one by one, then merged into windows of at most
data.window_seconds (30 s, Whisper's input), never cutting inside a cue.

    checked = check_cues(cues, duration=5400.0, window_seconds=30.0)     # one CueCheck per cue, in file order
    windows = cut_windows([c.cue for c in checked if c.problem is None], duration=5400.0, window_seconds=30.0)
    windows[0].start, windows[0].end, windows[0].cue_times()              # seconds; cue times relative, 0.02 s grid

Per cue, first rule that applies (each is one reason in the report; the cue alone is left out, never its
neighbours): a malformed time, or an end not after its start -> empty text (nothing with letters or digits) ->
longer than window_seconds -> past the end of the audio (start at or after the end, or end more than
END_TOLERANCE_S after it) -> out of order (starts before the previous kept cue starts) -> overlapping (starts more
than OVERLAP_TOLERANCE_S before the previous kept cue ends) -> with a tokenizer: its label alone over the decoder's
448 tokens.

Cutting: walk the kept cues in order; a window starts LEAD_S before its first cue (never before the previous cue's
end, nor so early that the first cue would not fit) and takes the next cue while that cue still ends within
window_seconds of the window's start (and, with a tokenizer, while the label with one timestamp pair per cue fits
the 448 tokens). It ends TAIL_S after its last cue, never after the next cue's start, the audio's end or the
limit. So a window holds only whole cues and the true silences between them, and no speech of any other cue.

What the manifest keeps of a window (pipeline/validate/manifest.py WINDOW_SCHEMA), for the stages that come after
validate: `recording` (the recording's path relative to the CSV: the group, the long-form evaluation unit),
`start` / `end` (seconds in the recording: the audio range features cuts from the once-decoded recording),
`cue_starts` / `cue_ends` (seconds relative to the window start, on Whisper's 0.02 s timestamp grid) and
`cue_texts` (each cue's text: the label `<|t0|> text<|t1|>...` is built at features time from these, or
`<|notimestamps|>` + the joined `text` per training.timestamp_prob), `window_index` (order in the recording) and
`previous_text` (the last PREVIOUS_TEXT_CHARS characters of the recording's earlier windows, cut at a word: the
`<|startofprev|>` prompt, which features cuts to its last 223 tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.validate.checks import Problem

TIME_STEP_S = 0.02            # Whisper's timestamp tokens: <|0.00|> ... <|30.00|> every 20 ms
LEAD_S = 0.5                  # silence kept before a window's first cue, at most
TAIL_S = 0.5                  # ... and after its last cue
END_TOLERANCE_S = 0.25        # a cue may end this much after the audio (subtitle tools round up)
OVERLAP_TOLERANCE_S = 0.01    # cues touching within half a timestamp step do not overlap
PREVIOUS_TEXT_CHARS = 2000    # earlier text kept per window for prompts (more than 223 tokens of English)
LABEL_FRAME_TOKENS = 4        # <|startoftranscript|> <|lang|> <|task|> ... <|endoftext|>: prefix and end
TIMESTAMP_TOKENS = 2          # a start and an end timestamp token per cue

# Problem kinds, in the order the summary lists them.
BAD_TIME = "malformed cue time"
CUE_NO_TEXT = "empty cue text"
LONG_CUE = "cue too long"
PAST_END = "cue past the end of the audio"
OUT_OF_ORDER = "cue out of order"
OVERLAP = "overlapping cue"
CUE_LONG_LABEL = "cue label too long"
KINDS = (BAD_TIME, CUE_NO_TEXT, LONG_CUE, PAST_END, OUT_OF_ORDER, OVERLAP, CUE_LONG_LABEL)


@dataclass(frozen=True)
class Cue:
    """One subtitle cue or segment-table row of a recording."""

    where: str                  # how the report names it: "cue 12 (00:01:02,500)" or "row 7"
    start: float | None         # seconds in the recording; None when its time could not be read
    end: float | None
    text: str
    time_problem: str = ""      # why its time could not be read ("" when it could)


@dataclass(frozen=True)
class CueCheck:
    cue: Cue
    problem: Problem | None


@dataclass(frozen=True)
class Window:
    start: float                # seconds in the recording
    end: float
    cues: tuple[Cue, ...]

    @property
    def text(self) -> str:
        return " ".join(c.text.strip() for c in self.cues)

    def cue_times(self) -> tuple[tuple[float, float], ...]:
        """Each cue's (start, end) relative to the window start, on the 0.02 s grid, within [0, window length]."""
        length = on_grid(self.end - self.start)
        return tuple((min(on_grid(c.start - self.start), length), min(on_grid(c.end - self.start), length))
                     for c in self.cues)


def on_grid(seconds: float) -> float:
    """Nearest multiple of TIME_STEP_S (never negative), rounded to 2 decimals so it prints as Whisper's tokens."""
    return round(max(0.0, round(seconds / TIME_STEP_S) * TIME_STEP_S), 2)


def check_cues(cues: Sequence[Cue], *, duration: float, window_seconds: float, normalization: str = "basic",
               label_tokens: Callable[[str], int] | None = None) -> list[CueCheck]:
    """One CueCheck per cue, in order (see the module docstring for the rules)."""
    out: list[CueCheck] = []
    previous: Cue | None = None
    for cue in cues:
        problem = _cue_problem(cue, previous, duration=duration, window_seconds=window_seconds,
                               normalization=normalization, label_tokens=label_tokens)
        out.append(CueCheck(cue, problem))
        if problem is None:
            previous = cue
    return out


def _cue_problem(cue: Cue, previous: Cue | None, *, duration: float, window_seconds: float, normalization: str,
                 label_tokens: Callable[[str], int] | None) -> Problem | None:
    if cue.time_problem or cue.start is None or cue.end is None:
        return Problem(BAD_TIME, f"malformed cue time: {cue.time_problem or 'no time'}")
    if not (math.isfinite(cue.start) and math.isfinite(cue.end)) or cue.start < 0:
        return Problem(BAD_TIME, f"malformed cue time: {cue.start} --> {cue.end}")
    if cue.end <= cue.start:
        return Problem(BAD_TIME, f"malformed cue time: it ends at {cue.end:.3f} s, not after its start "
                                    f"{cue.start:.3f} s")
    if not normalize_text(cue.text, normalization):
        return Problem(CUE_NO_TEXT, "empty cue text (no letters or digits)")
    if cue.end - cue.start > window_seconds:
        return Problem(LONG_CUE, f"cue too long: {cue.end - cue.start:.2f} s (a window holds at most "
                                    f"{window_seconds:g} s, data.window_seconds); split the cue")
    if cue.start >= duration or cue.end > duration + END_TOLERANCE_S:
        return Problem(PAST_END, f"cue past the end of the audio: {cue.start:.2f}-{cue.end:.2f} s, the "
                                    f"audio is {duration:.2f} s long (subtitles of another file?)")
    if previous is not None and cue.start < previous.start:
        return Problem(OUT_OF_ORDER, f"cue out of order: starts at {cue.start:.2f} s, before the previous "
                                        f"cue ({previous.where}) at {previous.start:.2f} s; sort the cues by time")
    if previous is not None and cue.start < previous.end - OVERLAP_TOLERANCE_S:
        return Problem(OVERLAP, f"overlapping cue: starts at {cue.start:.2f} s, before the previous cue "
                                   f"({previous.where}) ends at {previous.end:.2f} s; fix the times or merge them")
    if label_tokens is not None:
        length = LABEL_FRAME_TOKENS + TIMESTAMP_TOKENS + label_tokens(cue.text)
        if length > MAX_LABEL_TOKENS:
            return Problem(CUE_LONG_LABEL, f"cue label too long: {length} tokens with the model's prefix, "
                                              f"timestamps and end token (the decoder takes at most "
                                              f"{MAX_LABEL_TOKENS}); split the cue")
    return None


def cut_windows(cues: Sequence[Cue], *, duration: float, window_seconds: float,
                label_tokens: Callable[[str], int] | None = None) -> list[Window]:
    """Kept cues (ordered, not overlapping, each within window_seconds) -> windows, in order."""
    windows: list[Window] = []
    i, previous_end = 0, 0.0
    while i < len(cues):
        first = cues[i]
        start = max(previous_end, first.start - LEAD_S, first.end - window_seconds, 0.0)
        taken = [first]
        tokens = LABEL_FRAME_TOKENS + _cue_tokens(first, label_tokens)
        j = i + 1
        while j < len(cues) and cues[j].end - start <= window_seconds:
            more = _cue_tokens(cues[j], label_tokens)
            if tokens + more > MAX_LABEL_TOKENS:
                break
            taken.append(cues[j])
            tokens += more
            j += 1
        last = taken[-1]
        end = min(last.end + TAIL_S, start + window_seconds, max(duration, last.end))
        if j < len(cues):
            end = min(end, max(cues[j].start - LEAD_S, last.end))     # never into the next window
        windows.append(Window(start=start, end=end, cues=tuple(taken)))
        previous_end, i = last.end, j
    return windows


def _cue_tokens(cue: Cue, label_tokens: Callable[[str], int] | None) -> int:
    return TIMESTAMP_TOKENS + (label_tokens(cue.text) if label_tokens is not None else 0)


def previous_texts(windows: Sequence[Window], limit: int = PREVIOUS_TEXT_CHARS) -> list[str]:
    """Per window: the text of the windows before it in the recording, its last `limit` characters cut at a word."""
    out: list[str] = []
    earlier = ""
    for window in windows:
        out.append(_tail(earlier, limit))
        earlier = _tail(f"{earlier} {window.text}".strip(), limit)
    return out


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return cut[space + 1:] if 0 <= space < len(cut) - 1 else cut
