"""The cache lock: its holder is named, a dead holder's lock is free, forked workers do not keep it, and part
runs share the cache but exclude a whole run."""

from __future__ import annotations

import os

import pytest

from whisper_tune.pipeline.cache import CacheLock
from whisper_tune.pipeline.core.errors import CacheError


def test_importing_the_cache_registers_no_fork_hook():
    import subprocess
    import sys

    code = ("import os; calls = []; os.register_at_fork = lambda **k: calls.extend(k.values()); "
            "import whisper_tune.pipeline.cache, whisper_tune.pipeline.featurize; "
            "print(sum(str(getattr(f, '__module__', '')).startswith('pipeline') for f in calls))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"     # the hook is registered by the first lock taken


def test_lock_names_its_holder_and_is_released(tmp_path):
    with CacheLock(tmp_path):
        with pytest.raises(CacheError, match=rf"pid {os.getpid()} on host .* since"):
            CacheLock(tmp_path).acquire()
    with CacheLock(tmp_path):      # released: free again
        pass


def test_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("pid 999999 on host elsewhere since 2020-01-01 00:00:00 UTC\n")
    with CacheLock(tmp_path) as lock:
        assert f"pid {os.getpid()}" in lock.holder()


def test_forked_children_do_not_keep_the_lock(tmp_path):
    import signal
    import time

    lock = CacheLock(tmp_path).acquire()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child (fork handlers have run): says so, then sleeps holding whatever it inherited
        os.write(ready_w, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        from whisper_tune.pipeline.cache.lock import _HELD_LOCK_FDS

        _HELD_LOCK_FDS.discard(lock._fd)
        os.close(lock._fd)          # the run "dies" without unlocking: only its own descriptor goes away
        lock._fd = None
        with CacheLock(tmp_path):   # free, because the forked child closed its inherited copy
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


def test_part_runs_share_the_cache_but_exclude_a_whole_run(tmp_path):
    one = [lock.acquire() for lock in CacheLock.for_run(tmp_path, (1, 2))]
    two = [lock.acquire() for lock in CacheLock.for_run(tmp_path, (2, 2))]     # parts side by side
    with pytest.raises(CacheError, match=r"part-1-of-2"):
        CacheLock.for_run(tmp_path, (1, 2))[1].acquire()                        # the same part twice
    with pytest.raises(CacheError, match=rf"pid {os.getpid()} .*part-1-of-2.*part-2-of-2"):
        CacheLock.for_run(tmp_path, None)[0].acquire()                          # a whole run meanwhile
    for lock in reversed(one + two):
        lock.release()
    whole = CacheLock.for_run(tmp_path, None)[0].acquire()
    with pytest.raises(CacheError, match=rf"pid {os.getpid()} on host"):
        CacheLock.for_run(tmp_path, (1, 2))[0].acquire()                        # a part while a whole run writes
    whole.release()
