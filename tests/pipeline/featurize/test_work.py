"""The per-clip task and its pools (pipeline/featurize/work.py): results streamed as they finish with a bounded
number in flight (the rest cancelled when the caller stops), transient read errors retried inside the task,
and a worker that cannot see WORK or an audio file refused in one line."""

from __future__ import annotations

import errno
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest

from whisper_tune.testing import tone, write_audio
from whisper_tune.pipeline.cache import FEATURE_KIND, shard_path
from whisper_tune.pipeline.core.errors import WorkerError
from whisper_tune.pipeline.featurize import audio, work
from whisper_tune.pipeline.featurize.plan import ClipJob
from whisper_tune.pipeline.featurize.pool import stream


@pytest.fixture(scope="module")
def settings_for():
    from transformers import WhisperFeatureExtractor

    filters = np.asarray(WhisperFeatureExtractor(feature_size=80).mel_filters)

    def make(cache_dir) -> work.WorkerSettings:
        return work.WorkerSettings(mel_filters=filters, transforms=(), augment_seed=0, trim_top_db=30.0,
                                   peak_normalize=True, key="test", cache_dir=str(cache_dir), prefix="all")
    return make


def test_stream_yields_as_tasks_finish_with_a_bounded_number_in_flight():
    gates = {i: threading.Event() for i in range(6)}
    running, most = set(), [0]
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            running.add(i)
            most[0] = max(most[0], len(running))
        gates[i].wait(10)
        with lock:
            running.discard(i)
        return i

    with ThreadPoolExecutor(8) as pool:
        futures = stream(lambda i: pool.submit(task, i), range(6), 2, wait)
        gates[1].set()
        assert next(futures).result() == 1               # the second task first: no waves, no order
        gates[0].set()
        gates[2].set()
        assert {next(futures).result(), next(futures).result()} == {0, 2}
        submitted = most[0]
        futures.close()                                   # the caller stops (Ctrl-C, an error)
        for g in gates.values():
            g.set()
    assert submitted <= 2                                 # never more than in_flight at once


def test_stream_cancels_what_is_pending_when_stopped():
    started = threading.Event()
    release = threading.Event()
    seen = []

    def task(i: int) -> int:
        started.set()
        release.wait(10)
        return i

    with ThreadPoolExecutor(1) as pool:
        def submit(i):
            f = pool.submit(task, i)
            seen.append(f)
            return f
        futures = stream(submit, range(10), 3, wait)
        started.wait(10)
        release.set()
        next(futures)
        futures.close()
    assert len(seen) <= 4 and any(f.cancelled() for f in seen)


def test_transient_read_errors_are_retried_then_the_clip_skipped(tmp_path, settings_for, monkeypatch):
    path = write_audio(tmp_path / "a.wav", tone(0.8))
    monkeypatch.setattr(work, "READ_RETRY_PAUSE_S", 0.0)
    real, calls = audio.load, []

    def flaky(p):
        calls.append(p)
        if len(calls) < work.READ_TRIES:
            raise OSError(errno.EIO, "Input/output error")
        return real(p)

    monkeypatch.setattr(audio, "load", flaky)
    job = ClipJob("a", str(path), ((0, "fp0"),))
    result = work.featurize_task([job], settings_for(tmp_path))
    assert len(calls) == work.READ_TRIES and result.skipped == [] and result.computed == 1
    assert [r[:3] for r in result.shards[0].rows] == [("a", 0, "fp0")]
    assert shard_path(tmp_path, result.shards[0].info.name).is_file()       # the task wrote its own shard
    assert result.shards[0].info.kind == FEATURE_KIND

    def broken(p):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audio, "load", broken)
    result = work.featurize_task([job], settings_for(tmp_path))
    assert result.skipped == [("a", f"cannot read audio file (Input/output error; tried {work.READ_TRIES} times)")]
    assert result.shards == []


def test_a_worker_that_cannot_see_work_or_the_audio_is_refused(tmp_path, settings_for):
    path = write_audio(tmp_path / "a.wav", tone(0.8))
    job = ClipJob("a", str(path), ((0, "fp0"),))
    with pytest.raises(WorkerError, match=r"cannot see the cache folder .*/nowhere/cache: every worker must see "
                                          r"WORK at the same path"):
        work.featurize_task([job], settings_for(tmp_path / "nowhere" / "cache"))
    gone = ClipJob("b", str(tmp_path / "elsewhere.wav"), ((0, "fp0"),))
    with pytest.raises(WorkerError, match=r"cannot see the audio file .*elsewhere\.wav, which the run was started "
                                          r"with: every worker must see the audio at the same paths"):
        work.featurize_task([gone], settings_for(tmp_path))
