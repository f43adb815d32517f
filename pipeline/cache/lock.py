"""The cache lock: who may write WORK/cache right now.

fcntl.flock on a lock file holding "pid host start-time". A dead holder's lock is free again (the kernel drops
flocks with the process), so a stale file is simply taken over. A whole run takes WORK/cache/.lock exclusively.
A `--part i/N` run takes it shared (parts run side by side) and its own `.lock.part-i-of-N` exclusively; so a
whole run and part runs never write at the same time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from whisper_tune.pipeline.core.errors import CacheError

LOCK_NAME = ".lock"

_HELD_LOCK_FDS: set[int] = set()
_fork_hook_registered = False


def _close_lock_fds_in_child() -> None:
    """Forked workers must not keep the cache lock alive after the run that took it has died."""
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


def _hold(fd: int) -> None:
    """Remember a lock descriptor; the fork hook is registered with the first lock taken, not at import."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_close_lock_fds_in_child)
        _fork_hook_registered = True
    _HELD_LOCK_FDS.add(fd)


def _part_lock_holders(cache_dir: Path) -> list[str]:
    """Who holds the part locks right now (a lock we can take is not held)."""
    out = []
    for path in sorted(cache_dir.glob(f"{LOCK_NAME}.part-*")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            out.append(f"{text or 'a process'} ({path.name.removeprefix(LOCK_NAME + '.')})")
        finally:
            os.close(fd)
    return out


class CacheLock:
    def __init__(self, cache_dir: Path, name: str = LOCK_NAME, shared: bool = False) -> None:
        self.path = Path(cache_dir) / name
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> "CacheLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CacheError(f"cannot lock {self.path}: {err.strerror}") from None
            holders = self.holder() if self.shared else "; ".join(_part_lock_holders(self.path.parent)) or self.holder()
            raise CacheError(
                f"the feature cache {self.path.parent} is being written by {holders or 'another process'}; wait "
                f"for that run to finish (or stop it), then re-run `whisper-tune features --work "
                f"{self.path.parent.parent}`"
            ) from None
        if not self.shared:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        _hold(fd)
        return self

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD_LOCK_FDS.discard(self._fd)
        try:
            if not self.shared:
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "CacheLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def for_run(cache_dir: Path, part: tuple[int, int] | None) -> list["CacheLock"]:
        """The locks a features run takes, in order."""
        if part is None:
            return [CacheLock(cache_dir)]
        return [CacheLock(cache_dir, shared=True), CacheLock(cache_dir, f"{LOCK_NAME}.part-{part[0]}-of-{part[1]}")]
