"""Per-clip audio work (decode, trim, normalize, augment, log-mel) and the worker pool that runs it.

Workers come from joblib's multiprocessing backend, which forks them: they inherit the libraries and the
warmed-up log-mel/augmentation objects of this process instead of importing torch and audiomentations again
(seconds per worker, more than a small run's whole work). Tasks go out in waves of one per worker, so a kill
loses at most the tasks in flight; tasks shrink for small runs so that there are several waves (progress
updates) and no worker idles for long.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from whisper_tune.pipeline.cache import FeatureRow
from whisper_tune.pipeline.core.errors import AudioError
from whisper_tune.pipeline.core.system import usable_cores
from whisper_tune.pipeline.featurize.plan import ClipJob


@dataclass(frozen=True)
class WorkerSettings:
    mel_filters: np.ndarray = field(repr=False)
    transforms: tuple[dict[str, Any], ...]
    augment_seed: int
    trim_top_db: float
    peak_normalize: bool
    key: str                         # fingerprint of all of the above (per-process cache key)


@dataclass(frozen=True)
class TaskResult:
    rows: list[FeatureRow]
    skipped: list[tuple[str, str]]          # (clip id, reason)
    decoded: int
    computed: int
    aliased: int


_WORKER_STATE: dict[str, Any] = {}


def worker_tools(settings: WorkerSettings):
    """LogMel and Augmenter, built once per process."""
    tools = _WORKER_STATE.get(settings.key)
    if tools is None:
        from whisper_tune.pipeline.featurize.augment import Augmenter
        from whisper_tune.pipeline.featurize.logmel import LogMel

        tools = (LogMel(settings.mel_filters), Augmenter(settings.transforms, settings.augment_seed))
        _WORKER_STATE.clear()
        _WORKER_STATE[settings.key] = tools
    return tools


def featurize_clip(job: ClipJob, settings: WorkerSettings) -> tuple[list[FeatureRow], str | None, int, int]:
    """Pure per-clip work: -> (rows, skip reason or None, variants computed, variants aliased)."""
    from whisper_tune.pipeline.featurize import audio

    logmel, augmenter = worker_tools(settings)
    try:
        clean = audio.prepare(audio.load(job.path), top_db=settings.trim_top_db, normalize=settings.peak_normalize)
    except AudioError as err:
        return [], str(err), 0, 0
    rows: list[FeatureRow] = []
    computed = aliased = 0
    for variant, fp in job.variants:
        samples = clean
        if variant != 0:
            try:
                aug = augmenter(clean, job.clip_id, variant)
            except AudioError as err:
                return [], str(err), 0, 0
            if not aug.fired:
                rows.append(FeatureRow(job.clip_id, variant, fp, None, 0.0, alias_of=0))
                aliased += 1
                continue
            samples = aug.samples
        mel = logmel(samples)
        rows.append(FeatureRow(job.clip_id, variant, fp, mel.features.astype(np.float16), mel.floor))
        computed += 1
    return rows, None, computed, aliased


def featurize_task(jobs: Sequence[ClipJob], settings: WorkerSettings) -> TaskResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one core per worker; also makes results independent of the machine's core count
    try:
        rows: list[FeatureRow] = []
        skipped: list[tuple[str, str]] = []
        computed = aliased = 0
        for job in jobs:
            clip_rows, reason, c, a = featurize_clip(job, settings)
            if reason is not None:
                skipped.append((job.clip_id, reason))
                continue
            rows.extend(clip_rows)
            computed += c
            aliased += a
        return TaskResult(rows=rows, skipped=skipped, decoded=len(jobs), computed=computed, aliased=aliased)
    finally:
        torch.set_num_threads(threads)


def _warm_up(settings: WorkerSettings) -> None:
    """Build the tools here, once: forked workers inherit them, warmed up."""
    from whisper_tune.pipeline.featurize import audio  # noqa: F401

    logmel, _ = worker_tools(settings)
    warm = np.zeros(4_000, np.float32)
    warm[::50] = 0.5
    logmel(warm)


def run_tasks(jobs: list[ClipJob], settings: WorkerSettings | None, jobs_setting: int, batch_clips: int,
              on_start: Callable[[], None]) -> Iterator[TaskResult]:
    """Yield task results as they finish; on_start runs once the workers exist (threads started then are not
    copied into them)."""
    if not jobs or settings is None:
        on_start()
        return
    n_jobs = max(1, int(jobs_setting) or usable_cores())
    size = max(1, min(int(batch_clips), -(-len(jobs) // (4 * n_jobs))))   # several tasks per worker
    tasks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    n_jobs = min(n_jobs, len(tasks))
    _warm_up(settings)
    if n_jobs == 1:
        on_start()
        for task in tasks:
            yield featurize_task(task, settings)
        return
    import gc

    from joblib import Parallel, delayed

    gc.freeze()   # fork-friendly (copy-on-write) and keeps joblib's gc.collect() at pool start cheap
    try:
        with Parallel(n_jobs=n_jobs, backend="multiprocessing", batch_size=1) as parallel:
            on_start()
            for start in range(0, len(tasks), n_jobs):
                yield from parallel(delayed(featurize_task)(task, settings) for task in tasks[start:start + n_jobs])
    finally:
        gc.unfreeze()


class Progress:
    def __init__(self, total: int) -> None:
        self.bar = None
        if total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="clip", desc="features", dynamic_ncols=True, file=sys.stderr,
                            smoothing=0.1, mininterval=0.5)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
