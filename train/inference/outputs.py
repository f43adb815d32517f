"""Output paths of `transcribe` and `evaluate`, checked before any decoding, so a bad path costs no work.

    check_output_file(Path("out/eval.json"), "--json")    # ConfigError in one line, or the folder is made

A path is refused when it is a folder, when a file stands where one of its folders should be, or when its folder
cannot be created or written (permissions, read-only disk): the message names the flag and the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from whisper_tune.pipeline.core.errors import ConfigError


def check_output_folder_writable(folder: Path, flag: str, shown: Path) -> None:
    """Create `folder` (and its parents) and prove a file can be written there."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {shown}: {parent} is a file, not a folder; choose another {flag}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{flag} {shown}: cannot write in {folder} ({err.strerror or err}); "
                          f"choose another {flag}") from None


def check_output_file(path: Path | str | None, flag: str) -> None:
    """A file the command will write: not a folder, and its folder creatable and writable."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name, e.g. {Path(path) / 'out'}{p.suffix or ''}")
    check_output_folder_writable(p.parent if str(p.parent) else Path("."), flag, Path(path))
