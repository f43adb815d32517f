"""Subtitles from timed segments: SubRip (.srt) and WebVTT (.vtt).

    text = render_subtitles([Segment(0.0, 2.5, "Hello there."), Segment(2.5, 4.1, "Next line.")], "srt")

Segments come from Whisper's timestamp tokens (train/inference/transcribe: `transcribe -o out.srt`). Times are
seconds from the start of the recording; a segment whose end is not after its start (a model that predicted no
timestamp) lasts SHORTEST_S, and cues never run backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SUBTITLE_SUFFIXES = {".srt": "srt", ".vtt": "vtt"}
SHORTEST_S = 0.5                   # a cue without a usable end lasts this long


@dataclass(frozen=True)
class Segment:
    start: float                   # seconds
    end: float                     # seconds
    text: str


def subtitle_format(path: Path | None) -> str | None:
    """'srt' or 'vtt' from a file name's suffix, else None."""
    return None if path is None else SUBTITLE_SUFFIXES.get(Path(path).suffix.lower())


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
    beside it (-2, -3, ... when two inputs share a name)."""
    output = Path(output)
    if len(inputs) == 1:
        return [output]
    seen: dict[str, int] = {}
    paths = []
    for path in inputs:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        tag = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        paths.append(output.with_name(f"{output.stem}.{tag}{output.suffix}"))
    return paths


def timed_segments(decoder, features, attention_mask=None) -> list[list[Segment]]:
    """Greedy decoding with Whisper's timestamp tokens: the segments of each recording, in seconds from its
    start, each text as decoded (with its leading space, if the model wrote one). `decoder` is a
    whisper_tune.train.inference.decode.TransformersDecoder; features (batch, n_mels, frames), more than 3000 frames going through
    long-form decoding as in generate_texts."""
    import numpy as np
    import torch

    kwargs = dict(decoder.generate_kwargs, return_timestamps=True, return_segments=True)
    with torch.inference_mode():
        inputs = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(decoder.device, decoder.dtype)
        if inputs.shape[-1] > 3000:
            kwargs["condition_on_prev_tokens"] = False
            if attention_mask is not None:
                kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask)).to(decoder.device)
        out = decoder.model.generate(input_features=inputs, **kwargs)
    decode = decoder.processor.tokenizer.decode
    return [[Segment(float(s["start"]), float(s["end"]), decode(s["tokens"], skip_special_tokens=True))
             for s in segs] for segs in out["segments"]]
