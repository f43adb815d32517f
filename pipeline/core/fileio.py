"""Atomic file writes: the one helper every stage uses, so a crash or a full disk never leaves half a file.

A write goes to a temporary name in the destination folder, is flushed and fsynced, then renamed over the
destination (`os.replace`, atomic on POSIX). On any failure the temporary file is removed and the destination is
left as it was. A full disk becomes a `DiskFullError` naming the folder (and the bytes needed when known).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from whisper_tune.pipeline.core.errors import DiskFullError

TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    """The temporary sibling a write of `path` uses (hidden, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


RERUN_ADVICE = "free some space (or point the folder elsewhere) and re-run: work already written is kept"


def disk_full(err: OSError, folder: Path, needed_bytes: int | None = None, advice: str = RERUN_ADVICE) -> DiskFullError:
    """A one-line DiskFullError for an ENOSPC/EDQUOT error in `folder`; `advice` says what is kept and how to go
    on where a plain re-run is not the way (e.g. train: --resume)."""
    free = ""
    try:
        free = f", {shutil.disk_usage(folder).free:,} bytes free"
    except OSError:
        pass
    need = f"; about {needed_bytes:,} bytes are needed" if needed_bytes else ""
    return DiskFullError(f"no space left on the disk of {folder}{free}{need}; {advice}")


# How libraries that do not raise OSError report a full disk: polars (ComputeError), safetensors (SafetensorError),
# torch.save (RuntimeError from its zip writer, which loses the errno: a short write shows as "unexpected pos").
_DISK_FULL_TEXTS = ("no space left on device", "os error 28", "errno 28", "disk quota exceeded",
                    "file write failed", "unexpected pos")


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when wrapped (__cause__/__context__) or reported as text by a library."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        known_errno = isinstance(current, OSError) and current.errno is not None
        if not known_errno and any(t in str(current).lower() for t in _DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def disk_full_as_error(folder: Path | str, needed_bytes: int | None = None,
                       advice: str = RERUN_ADVICE) -> Iterator[None]:
    """Turn a full disk inside the block (from any library) into one DiskFullError naming `folder`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if is_disk_full(err):
            raise disk_full(err, Path(folder), needed_bytes, advice) from None
        raise


@contextmanager
def atomic_path(path: Path | str, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; on success it replaces `path` atomically.

    The writer may open the temporary path itself (e.g. polars' write_parquet); it is fsynced before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with disk_full_as_error(path.parent, needed_bytes):
            yield tmp
            _fsync_file(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path, needed_bytes=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path | str, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """JSON as UTF-8 (non-ASCII kept); compact when indent is None."""
    separators = (",", ":") if indent is None else None
    text = json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys, separators=separators,
                      default=str)
    atomic_write_text(path, text + ("\n" if indent is not None else ""))


def replace_folder(tmp: Path | str, dest: Path | str) -> None:
    """Move the finished folder `tmp` to `dest`; an earlier `dest` is renamed aside first and deleted after, so
    `dest` is never a half-written folder (at worst, for a moment, absent)."""
    tmp, dest = Path(tmp), Path(dest)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def folder_tmp_name(dest: Path | str) -> Path:
    """The hidden sibling a whole folder is built in before replace_folder moves it to `dest` (per process)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def sweep_stale_folders(dest: Path | str) -> list[Path]:
    """Delete the `.NAME.tmp-<pid>` and `.NAME.old-<pid>` siblings of `dest` (folder_tmp_name, replace_folder)
    that a killed run left behind: only those whose process is gone; a running one's are left alone. Returns
    what was removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:tmp|old)-(\d+)$")
    removed = []
    for entry in sorted(dest.parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync_file(path: Path) -> None:
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
