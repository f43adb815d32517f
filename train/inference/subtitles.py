"""Subtitles from timed segments: SubRip (.srt) and WebVTT (.vtt).

    text = render_subtitles([Segment(0.0, 2.5, "Hello there."), Segment(2.5, 4.1, "Next line.")], "srt")

Segments come from Whisper's timestamp tokens through decode.Decoder.transcribe (`transcribe -o out.srt`); this
module only formats them. Times are
seconds from the start of the recording; a segment whose end is not after its start (a model that predicted no
timestamp) lasts SHORTEST_S, and cues never run backwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.train.inference.decode import Segment

SUBTITLE_SUFFIXES = {".srt": "srt", ".vtt": "vtt"}
SHORTEST_S = 0.5                   # a cue without a usable end lasts this long


def clock(seconds: float, fmt: str) -> str:
    """'00:01:02,345' (srt) or '00:01:02.345' (vtt)."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if fmt == 'srt' else '.'}{ms:03d}"


def cues(segments: Sequence[Segment]) -> list[Segment]:
    """Segments with text, in time order, each ending after it starts and starting no earlier than the last."""
    out: list[Segment] = []
    last = 0.0
    for seg in segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        start = max(seg.start, last)
        end = seg.end if seg.end > start else start + SHORTEST_S
        out.append(Segment(start, end, text))
        last = start
    return out


def render_subtitles(segments: Sequence[Segment], fmt: str) -> str:
    """The whole .srt or .vtt file as text."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"unknown subtitle format {fmt!r}; expected 'srt' or 'vtt'")
    blocks = [] if fmt == "srt" else ["WEBVTT\n"]
    for n, cue in enumerate(cues(segments), start=1):
        head = f"{n}\n" if fmt == "srt" else ""
        blocks.append(f"{head}{clock(cue.start, fmt)} --> {clock(cue.end, fmt)}\n{cue.text}\n")
    return "\n".join(blocks)


def subtitle_paths(output: Path, inputs: Sequence[Path]) -> list[Path]:
    """One subtitle file per input: `output` itself for one input; for several, OUTPUT_STEM.INPUT_STEM.srt
    beside it. Inputs that share a stem get a short hash of their full path instead of a counter
    (OUTPUT_STEM.INPUT_STEM-1a2b3c4d.srt), so every name is unique and stays the same whichever other inputs
    were given or failed."""
    output = Path(output)
    if len(inputs) == 1:
        return [output]
    stems = [Path(p).stem for p in inputs]
    shared = {s for s in stems if stems.count(s) > 1}
    taken = {s for s in stems if s not in shared}
    tags = []
    for path, stem in zip(inputs, stems):
        tag = stem
        if stem in shared:
            tag = f"{stem}-{stable_hex(str(Path(path).expanduser().resolve()), size=4)}"
            while tag in taken:                  # a hash that spells another input's stem: lengthen it
                tag += "x"
        taken.add(tag)
        tags.append(tag)
    return [output.with_name(f"{output.stem}.{tag}{output.suffix}") for tag in tags]


def word_segments(segments: Sequence[Segment]) -> list[Segment]:
    """One segment per word (word-level subtitles); a segment without word times stays whole."""
    out: list[Segment] = []
    for seg in segments:
        out.extend([Segment(w.start, w.end, w.word) for w in seg.words] if seg.words else [seg])
    return out
