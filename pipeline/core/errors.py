"""User-facing errors. Each names the value received, what was expected, and the flag or file that fixes it.

Only the CLI turns these into a message and a non-zero exit; library code raises them.
"""


class WhisperTuneError(Exception):
    """Base class: anything the user can fix. The CLI prints str(err) on one line and exits 1."""

    exit_code = 1


class ConfigError(WhisperTuneError):
    """A config file or flag value is wrong."""


class CsvError(WhisperTuneError):
    """The CSV as a whole is unusable (missing, empty, unreadable, no audio/text column)."""


class ManifestError(WhisperTuneError):
    """The manifest is missing or was written by something else; re-run `whisper-tune validate`."""


class AudioError(WhisperTuneError):
    """One audio file cannot be used; the message says why. Stages report these per clip and go on."""


class LabelError(WhisperTuneError):
    """A transcript that cannot become a training label (empty after normalization, too long, special tokens).
    The features stage reports these per clip and goes on, like bad audio; it is not an audio problem."""


class CacheError(WhisperTuneError):
    """The feature cache is missing, corrupted, foreign or locked; the message says how to rebuild it."""


class ModelError(WhisperTuneError):
    """A --model value cannot be resolved or imported."""


class WorkerError(WhisperTuneError):
    """A worker cannot do the features stage's work (it cannot see WORK or an audio file, the Dask scheduler
    cannot be reached, a task failed on the cluster); the message names the worker or the address."""


class DiskFullError(WhisperTuneError):
    """The disk filled up during a write; the message names the folder. Work already written is kept."""


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def worker_message(text: str) -> str:
    """The error's own line when torch's DataLoader re-raised it from a worker with the worker's traceback."""
    if _WORKER_TRACEBACK not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    name, sep, message = last.partition(": ")
    return message if sep and "." in name and " " not in name else last


def without_worker_traceback(err: WhisperTuneError) -> WhisperTuneError:
    """The same error with a worker's traceback stripped from its message (the same object when there is none)."""
    text = worker_message(str(err))
    return err if text == str(err) else type(err)(text)


def first_line(err: BaseException, limit: int = 160) -> str:
    """An exception's first non-empty line, at most `limit` characters; its type name when the message is empty.
    Never raises (any exception, any message), so error paths can always use it."""
    try:
        text = str(err)
    except Exception:                      # a broken __str__ must not hide the original error
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]
