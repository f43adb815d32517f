"""Per-clip audio work (decode, trim, normalize, augment, log-mel), the task that writes its own shards, and the
pools that run tasks: local worker processes or a Dask cluster (featurize/cluster.py).

A task writes its clips' feature shards itself, straight into WORK/cache (atomic, named by their rows, so a task
run again after a worker died writes the same file again), and returns only what the index needs: the run's one
CacheWriter records it. Results are taken as they finish, never in waves: locally from a pool of forked
worker processes (they inherit the libraries and the warmed-up log-mel/augmentation objects of this
process instead of importing torch and audiomentations again), on a cluster from Dask's futures (pool.stream). At most
a few tasks per worker are in flight, so a kill loses at most those; tasks shrink for small runs so that there
are several per worker (progress updates) and no worker idles for long.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from whisper_tune.pipeline.cache import FeatureRow
from whisper_tune.pipeline.cache.writer import WrittenShard, write_feature_shards
from whisper_tune.pipeline.core.errors import AudioError, WorkerError
from whisper_tune.pipeline.core.system import usable_cores
from whisper_tune.pipeline.featurize.plan import ClipJob
from whisper_tune.pipeline.featurize.pool import stream

READ_TRIES = 3                   # a transient OSError (NFS hiccup, EIO) is retried this often, then the clip skipped
READ_RETRY_PAUSE_S = 0.2         # doubled after each try
TASKS_IN_FLIGHT_PER_WORKER = 2   # bounded: a kill loses at most these; enough that no worker waits for the next


@dataclass(frozen=True)
class WorkerSettings:
    mel_filters: np.ndarray = field(repr=False)
    transforms: tuple[dict[str, Any], ...]
    augment_seed: int
    trim_top_db: float
    peak_normalize: bool
    key: str                         # fingerprint of all of the above (per-process cache key)
    cache_dir: str = ""              # WORK/cache, as every worker sees it (a shared folder on a cluster)
    prefix: str = "all"              # the run's shard name prefix
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class TaskResult:
    shards: list[WrittenShard]              # written by the task; only their index records travel
    skipped: list[tuple[str, str]]          # (clip id, reason)
    decoded: int                            # clips and windows whose audio was decoded
    computed: int
    aliased: int
    recordings: int = 0                     # long recordings decoded (each once per task) for their windows


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


def where() -> str:
    """This process, as a message names it (a worker's host and pid)."""
    return f"the worker on {socket.gethostname()} (pid {os.getpid()})"


def must_see(path: str, what: str = "audio file") -> None:
    """A file this process cannot see at all is not a bad clip but a worker that lacks the shared folder."""
    if not os.path.exists(path):
        raise WorkerError(f"{where()} cannot see the {what} {path}, which the run was started with: "
                          "every worker must see the audio at the same paths (a shared file system)")


def load_audio(path: str) -> np.ndarray:
    """audio.load with transient OSErrors retried (READ_TRIES); a file this process cannot see at all is not
    a bad clip but a worker that lacks the shared folder: WorkerError."""
    from whisper_tune.pipeline.featurize import audio

    failure = ""
    for attempt in range(READ_TRIES):
        if attempt:
            time.sleep(READ_RETRY_PAUSE_S * 2 ** (attempt - 1))
        must_see(path)
        try:
            return audio.load(path)
        except OSError as err:
            failure = err.strerror or str(err)
    raise AudioError(f"cannot read audio file ({failure}; tried {READ_TRIES} times)")


def featurize_clip(job: ClipJob, settings: WorkerSettings) -> tuple[list[FeatureRow], str | None, int, int]:
    """Pure per-clip work: -> (rows, skip reason or None, variants computed, variants aliased)."""
    from whisper_tune.pipeline.featurize import audio

    try:
        clean = audio.prepare(load_audio(job.path), top_db=settings.trim_top_db, normalize=settings.peak_normalize)
    except AudioError as err:
        return [], str(err), 0, 0
    return featurize_samples(job, clean, settings)


def featurize_samples(job: ClipJob, clean: np.ndarray, settings: WorkerSettings, *,
                      keep_length: bool = False) -> tuple[list[FeatureRow], str | None, int, int]:
    """The clean clip's variants as feature rows (as featurize_clip). keep_length (windows, whose cue times must
    hold): a variant whose augmentation changed the length (TimeStretch) is stored as the clean one."""
    logmel, augmenter = worker_tools(settings)
    rows: list[FeatureRow] = []
    computed = aliased = 0
    for variant, fp in job.variants:
        samples = clean
        if variant != 0:
            try:
                aug = augmenter(clean, job.clip_id, variant)
            except AudioError as err:
                return [], str(err), 0, 0
            if not aug.fired or (keep_length and aug.samples.size != clean.size):
                rows.append(FeatureRow(job.clip_id, variant, fp, None, 0.0, alias_of=0))
                aliased += 1
                continue
            samples = aug.samples
        mel = logmel(samples)
        rows.append(FeatureRow(job.clip_id, variant, fp, mel.features.astype(np.float16), mel.floor))
        computed += 1
    return rows, None, computed, aliased


def write_rows(rows: list[FeatureRow], settings: WorkerSettings) -> list[WrittenShard]:
    """The task's rows as shards in the shared cache folder; a worker that cannot see or write it is refused."""
    cache_dir = Path(settings.cache_dir)
    if not cache_dir.is_dir():
        raise WorkerError(f"{where()} cannot see the cache folder {cache_dir}: every worker must see WORK at the "
                          "same path as the machine that runs `features` (a shared file system)")
    try:
        return write_feature_shards(cache_dir, settings.prefix, rows, settings.max_bytes)
    except PermissionError as err:
        raise WorkerError(f"{where()} cannot write into the cache folder {cache_dir} ({err.strerror}): give "
                          "the workers write access to WORK") from None


def featurize_task(jobs: Sequence[ClipJob], settings: WorkerSettings) -> TaskResult:
    """A task's clips, or the windows of one recording (decoded once), featurized; their shards written."""
    import torch

    from whisper_tune.pipeline.featurize.windows import featurize_windows

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one core per worker; also makes results independent of the machine's core count
    try:
        rows: list[FeatureRow] = []
        skipped: list[tuple[str, str]] = []
        computed = aliased = 0
        if jobs and jobs[0].is_window:
            must_see(jobs[0].path, "recording")
            results = featurize_windows(jobs, settings, featurize_samples)
        else:
            results = ((job, *featurize_clip(job, settings)) for job in jobs)
        for job, clip_rows, reason, c, a in results:
            if reason is not None:
                skipped.append((job.clip_id, reason))
                continue
            rows.extend(clip_rows)
            computed += c
            aliased += a
        shards = write_rows(rows, settings) if rows else []
        recordings = len({job.path for job in jobs if job.is_window})
        return TaskResult(shards=shards, skipped=skipped, decoded=len(jobs), computed=computed, aliased=aliased,
                          recordings=recordings)
    finally:
        torch.set_num_threads(threads)


def _warm_up(settings: WorkerSettings) -> None:
    """Build the tools here, once: forked workers inherit them, warmed up."""
    from whisper_tune.pipeline.featurize import audio  # noqa: F401

    logmel, _ = worker_tools(settings)
    warm = np.zeros(4_000, np.float32)
    warm[::50] = 0.5
    logmel(warm)


def split_tasks(jobs: list[ClipJob], batch_clips: int, n_workers: int) -> list[list[ClipJob]]:
    """Consecutive tasks of at most batch_clips clips, several per worker; windows of long recordings go in tasks
    of their own, one recording each (featurize/windows.py recording_tasks)."""
    from whisper_tune.pipeline.featurize.windows import recording_tasks

    clips = [job for job in jobs if not job.is_window]
    size = max(1, min(int(batch_clips), -(-len(clips) // (4 * max(1, n_workers)))))
    return recording_tasks(jobs) + [clips[i:i + size] for i in range(0, len(clips), size)]


def run_tasks(jobs: list[ClipJob], settings: WorkerSettings | None, jobs_setting: int, batch_clips: int,
              on_start: Callable[[], None], scheduler: str = "") -> Iterator[TaskResult]:
    """Yield task results as they finish; on_start runs once the workers exist (threads started then are not
    copied into them). scheduler: a Dask scheduler's address, "" for local processes."""
    if not jobs or settings is None:
        on_start()
        return
    if scheduler:
        from whisper_tune.pipeline.featurize.cluster import DaskPool

        with DaskPool(scheduler) as pool:
            on_start()
            yield from pool.run(featurize_task, split_tasks(jobs, batch_clips, pool.n_workers), settings,
                                TASKS_IN_FLIGHT_PER_WORKER * pool.n_workers)
        return
    n_jobs = max(1, int(jobs_setting) or usable_cores())
    tasks = split_tasks(jobs, batch_clips, n_jobs)
    n_jobs = min(n_jobs, len(tasks))
    _warm_up(settings)
    if n_jobs == 1:
        on_start()
        for task in tasks:
            yield featurize_task(task, settings)
        return
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    gc.freeze()   # fork-friendly: the workers share this process's objects copy-on-write
    try:
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            submit = functools.partial(pool.submit, featurize_task, settings=settings)
            futures = stream(submit, tasks, TASKS_IN_FLIGHT_PER_WORKER * n_jobs, wait, on_start)
            try:
                for future in futures:
                    yield future.result()
            except BrokenProcessPool:
                raise WorkerError("a features worker process died (killed, or out of memory); finished work "
                                  "is kept: re-run the same command to do the rest") from None
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
