"""Windows of a long recording: one streamed decode for all windows (what `features` does) against decoding the
whole file for each window, on the same generated recording and windows, in one run.

    .venv/bin/python bench/windows_bench.py --minutes 10

Prints seconds per window and the peak memory the audio arrays take (tracemalloc; both ways keep the windows they
compare) for both ways, their ratio, and the largest difference between the samples they cut (streamed and
resampled block by block vs whole).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from whisper_tune.pipeline.featurize import audio
from whisper_tune.pipeline.featurize.windows import cut_spans
from whisper_tune.pipeline.validate.windows import Cue, cut_windows
from whisper_tune.testing import cue_recording, cue_times


def measure(fn):
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the generated recording")
    ap.add_argument("--per-window", type=int, default=0, help="decode whole for only the first N windows (0 = all)")
    args = ap.parse_args()
    seconds = args.minutes * 60
    cues = cue_times(int((seconds - 2) // 3.5))
    with tempfile.TemporaryDirectory() as tmp:
        path = cue_recording(Path(tmp) / "talk.flac", cues, seconds)
        windows = cut_windows([Cue(f"cue {i}", a, b, t) for i, (a, b, t) in enumerate(cues)], duration=seconds,
                              window_seconds=30.0)
        spans = [(w.start, w.end) for w in windows]
        n = args.per_window or len(spans)
        # both ways keep the samples of the first n windows (to compare them) and let the others go
        streamed, t_stream, m_stream = measure(lambda: {i: x for i, x in cut_spans(str(path), spans) if i < n})

        def whole_per_window():
            out = {}
            for i, (a, b) in enumerate(spans[:n]):
                samples = audio.load(path)
                out[i] = samples[round(a * 16_000): round(b * 16_000)].copy()
            return out

        whole, t_whole, m_whole = measure(whole_per_window)
    diff = max(float(np.abs(streamed[i] - whole[i]).max()) for i in whole)
    per_s, per_w = t_stream / len(spans), t_whole / n
    print(f"{args.minutes:g} min recording (44.1 kHz FLAC), {len(spans)} windows of <= 30 s; whole-file decodes "
          f"for {n} of them")
    print(f"one streamed decode : {per_s * 1000:8.1f} ms per window ({t_stream:.1f} s), peak audio memory "
          f"{m_stream:7.1f} MB")
    print(f"decode per window   : {per_w * 1000:8.1f} ms per window ({t_whole:.1f} s for {n}), peak audio memory "
          f"{m_whole:7.1f} MB")
    print(f"ratio               : {per_w / per_s:.1f}x faster per window, {m_whole / max(m_stream, 1e-9):.1f}x less "
          f"memory; largest sample difference {diff:.2g}")


if __name__ == "__main__":
    main()
