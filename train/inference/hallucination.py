"""Hallucination figures: the words a model emits on audio without speech, and repetition loops.

    figures = hallucination(decoder, pool.part("heldout"), batch_size=16, outputs=main.hypotheses)

Decodes the held-out part of the cache's non-speech pool (whisper_tune.pipeline.cache.nonspeech: trimmed-off
silences and noise floors of held-out clips, and generated noise the model was never trained on) with the same
decoder and options as the evaluated split. Words are counted after normalization; a loop is an n-gram repeated
back to back or a compression ratio over 2.4 (whisper_tune.pipeline.core.text.has_loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from whisper_tune.pipeline.core.text import has_loop, word_count


@dataclass(frozen=True)
class Hallucination:
    clips: int                       # held-out non-speech clips decoded
    words: int                       # words emitted on them
    clips_with_text: int
    loop_share: float                # share of the non-speech outputs stuck in a loop
    split_loop_share: float          # share of the evaluated split's outputs stuck in a loop
    texts: tuple[str, ...] = field(repr=False, default=())

    @property
    def words_per_clip(self) -> float:
        return self.words / self.clips if self.clips else 0.0

    def to_json(self, prefix: str = "") -> dict:
        return {f"{prefix}nonspeech_clips": self.clips, f"{prefix}nonspeech_words_per_clip": self.words_per_clip,
                f"{prefix}nonspeech_clips_with_text": self.clips_with_text,
                f"{prefix}nonspeech_loop_share": self.loop_share, f"{prefix}loop_share": self.split_loop_share}


def loop_share(texts: Sequence[str]) -> float:
    return float(np.mean([has_loop(t) for t in texts])) if texts else 0.0


def hallucination(decoder, clips, *, batch_size: int, outputs: Sequence[str]) -> Hallucination:
    """Decode the non-speech clips; figures beside the loop share of the split's `outputs`."""
    texts: list[str] = []
    for start in range(0, len(clips), batch_size):
        batch = np.stack([c.padded() for c in clips[start:start + batch_size]]).astype(np.float32, copy=False)
        texts.extend(decoder.decode(batch))
    return Hallucination(clips=len(texts), words=sum(word_count(t) for t in texts),
                         clips_with_text=sum(word_count(t) > 0 for t in texts), loop_share=loop_share(texts),
                         split_loop_share=loop_share(outputs), texts=tuple(texts))


def format_hallucination(main: Hallucination, base: Hallucination | None, main_name: str, base_name: str) -> str:
    """Lines for evaluate's table: words per non-speech clip and loops, model (and baseline)."""
    lines = [f"\nnon-speech check: {main.clips} held-out clips without speech (silences, noise floors, generated "
             "noise); words emitted per clip, clips with any text, outputs stuck in a repetition loop:"]
    for name, h in ((main_name, main), (f"{base_name} (baseline)", base)):
        if h is not None:
            lines.append(f"  {name}: {h.words_per_clip:.2f} words per non-speech clip ({h.clips_with_text} of "
                         f"{h.clips} with text), loops {h.loop_share:.0%} of non-speech and "
                         f"{h.split_loop_share:.0%} of the split's outputs")
    return "\n".join(lines)
