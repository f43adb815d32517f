"""Windows of long recordings in `features`: each recording decoded once per task, every window cut from it.

    tasks = recording_tasks(jobs)               # the window jobs of each recording, in order, in bounded tasks
    for job, rows, reason, computed, aliased in featurize_windows(tasks[0], settings): ...

A task holds the windows of ONE recording (at most WINDOWS_PER_TASK of them, consecutive in time, so a very long
recording becomes a few tasks that workers share). It streams the recording block by block (audio.stream: decode
and resample to 16 kHz, BLOCK_S at a time), starting PREROLL_S before its first window on a frame where the file's
and Whisper's sample grids meet (audio.aligned_start), and cuts each window's samples [start, end) as the stream
passes its end. Only the samples from the next window's start on are kept, so a worker holds at most one window
and one block of a recording, whatever its length, and never decodes it twice in a task.

A window is then what a clip is after decoding, except for trimming: it is NOT trimmed (validate already cut it to
at most 0.5 s of silence before its first cue and after its last, and trimming would move the cue times its labels
carry), only peak-normalized (audio.peak_normalize, when audio.peak_normalize is on) and checked to be audible. Its
augmented variants, log-mel and shards are those of a clip (work.featurize_samples); a variant whose augmentation
changes the length (TimeStretch) is stored as the clean window.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import AudioError
from whisper_tune.pipeline.featurize.plan import ClipJob

WINDOWS_PER_TASK = 64      # a task's windows: up to ~32 min of a recording with 30 s windows
BLOCK_S = 10.0             # seconds decoded and resampled at a time
PREROLL_S = 1.0            # a task starting inside a recording decodes this much before its first window


def recording_tasks(jobs: Sequence[ClipJob]) -> list[list[ClipJob]]:
    """The window jobs grouped by recording (in order of first appearance), each recording's sorted by start and
    cut into tasks of at most WINDOWS_PER_TASK consecutive windows. Plain clip jobs are left out."""
    by_path: dict[str, list[ClipJob]] = {}
    for job in jobs:
        if job.is_window:
            by_path.setdefault(job.path, []).append(job)
    tasks = []
    for windows in by_path.values():
        windows.sort(key=lambda j: j.span)  # type: ignore[arg-type, return-value]
        tasks += [windows[i:i + WINDOWS_PER_TASK] for i in range(0, len(windows), WINDOWS_PER_TASK)]
    return tasks


def cut_spans(path: str, spans: Sequence[tuple[float, float]], block_s: float = BLOCK_S,
              preroll_s: float = PREROLL_S) -> Iterator[tuple[int, np.ndarray]]:
    """(index into spans, mono 16 kHz samples of [start, end)) for every span, decoding `path` once from just
    before the earliest span; in order of their ends. A span past the end of the audio gets what there is of
    it (possibly nothing). AudioError when the file cannot be decoded."""
    from whisper_tune.pipeline.featurize import audio

    if not spans:
        return
    bounds = [(max(0, round(a * SAMPLE_RATE_HZ)), max(0, round(b * SAMPLE_RATE_HZ))) for a, b in spans]
    order = sorted(range(len(spans)), key=lambda i: bounds[i])
    info = audio.probe(path)
    frame, origin = audio.aligned_start(max(0.0, spans[order[0]][0] - preroll_s), info.sample_rate)
    pending = list(order)            # not yet cut, by start
    kept = np.zeros(0, np.float32)   # the stream's samples from sample `origin` on
    for block in audio.stream(path, block_s, start_frame=frame):
        kept = np.concatenate([kept, block])
        reached = origin + kept.size
        for i in [i for i in pending if bounds[i][1] <= reached]:
            pending.remove(i)
            yield i, kept[bounds[i][0] - origin: bounds[i][1] - origin].copy()
        keep_from = min([bounds[i][0] for i in pending] + [reached])
        if keep_from > origin:
            kept = kept[keep_from - origin:]
            origin = keep_from
    for i in pending:                # the audio ended first (a window may end a little after it)
        a, b = bounds[i]
        yield i, kept[max(0, a - origin): max(0, b - origin)].copy()


def window_samples(samples: np.ndarray, *, normalize: bool) -> np.ndarray:
    """A window's clean samples: audible, peak-normalized, never trimmed (see the module doc)."""
    from whisper_tune.pipeline.featurize import audio

    audio.check_audible(samples)
    out = audio.peak_normalize(samples) if normalize else samples
    return np.ascontiguousarray(out, dtype=np.float32)


def featurize_windows(jobs: Sequence[ClipJob], settings, featurize: Callable[..., tuple]) -> Iterator[tuple]:
    """(job, feature rows, skip reason or None, variants computed, variants aliased) per window of one recording
    (a task of recording_tasks), the recording decoded once; `featurize(job, clean samples, settings,
    keep_length=True)` makes a window's rows (work.featurize_samples). An undecodable recording skips every
    window not cut yet with its reason; a silent window is skipped alone."""
    path = jobs[0].path
    if any(job.path != path for job in jobs):
        raise ValueError("featurize_windows takes the windows of one recording (recording_tasks)")
    done: set[int] = set()
    try:
        for i, samples in cut_spans(path, [job.span for job in jobs]):  # type: ignore[misc]
            done.add(i)
            try:
                clean = window_samples(samples, normalize=settings.peak_normalize)
            except AudioError as err:
                yield jobs[i], [], _where(jobs[i], err), 0, 0
                continue
            yield (jobs[i], *featurize(jobs[i], clean, settings, keep_length=True))
    except AudioError as err:
        for i, job in enumerate(jobs):
            if i not in done:
                yield job, [], f"cannot read the recording ({err})", 0, 0


def _where(job: ClipJob, err: AudioError) -> str:
    start, end = job.span  # type: ignore[misc]
    return f"window {start:.2f}-{end:.2f} s of the recording: {err}"
