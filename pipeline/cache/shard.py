"""Shard format: one Arrow IPC file per shard, one record batch, written whole and atomically.

    <prefix>-feat-<20 hex>.arrow   feature rows: one per (clip, variant), float16 (n_mels, T) bytes
    <prefix>-lab-<20 hex>.arrow    label rows: one per clip, int32 token ids + normalized text; for a window of
                                   a recording also its prompt ids and each cue's token count and times
    <prefix>-rec-<20 hex>.arrow    recording rows: the whole log-mel of one long test recording, float16 (n_mels, T)

The prefix says which run wrote the shard ("all" for a whole run, "p<i>of<N>" for `--part i/N`, "mem" for
`write_examples`). Every name the cache holds matches SHARD_NAME_RE; any other name (a path, "..", an absolute
name) is refused before it is joined to the cache folder (`shard_path`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.core.fileio import atomic_path
from whisper_tune.pipeline.core.hashing import file_digest, stable_hex

SHARD_SUFFIX = ".arrow"
FORMAT_VERSION = 1
LABEL_FORMAT_VERSION = 2        # 2: prompt ids and cue columns (empty for plain clips)
FEATURE_KIND = "feat"
LABEL_KIND = "lab"
RECORDING_KIND = "rec"
SHARD_NAME_RE = re.compile(r"^(?P<prefix>[a-z0-9]{1,24})-(?P<kind>feat|lab|rec)-[0-9a-f]{20}\.arrow$")

FEATURE_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("variant", pa.int16()),
        ("alias_of", pa.int16()),       # -1: real row; 0: "no transform fired", same as the clean variant
        ("n_mels", pa.int16()),
        ("n_frames", pa.int32()),       # T, frames stored (the ones the audio reaches)
        ("floor", pa.float32()),        # value of every frame past T
        ("features", pa.large_binary()),  # float16 C-order (n_mels, T)
        ("fingerprint", pa.string()),
    ],
    metadata={"whisper_tune": f"{FEATURE_KIND}-v{FORMAT_VERSION}"},
)
LABEL_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("fingerprint", pa.string()),
        ("prompt", pa.list_(pa.int32())),        # <|startofprev|> text ids (no special tokens); [] = none
        ("cue_tokens", pa.list_(pa.int32())),    # a window's text ids per cue, in order; [] = a plain clip
        ("cue_starts", pa.list_(pa.float32())),  # each cue's start and end, seconds from the window's start
        ("cue_ends", pa.list_(pa.float32())),
    ],
    metadata={"whisper_tune": f"{LABEL_KIND}-v{LABEL_FORMAT_VERSION}"},
)
RECORDING_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),       # the recording's id (its path relative to the CSV)
        ("n_mels", pa.int16()),
        ("n_frames", pa.int32()),       # T = samples // 160: the whole recording, as WhisperFeatureExtractor
        ("floor", pa.float32()),        # the value of a frame of silence (what pads a window past the end)
        ("features", pa.large_binary()),  # float16 C-order (n_mels, T)
        ("fingerprint", pa.string()),
    ],
    metadata={"whisper_tune": f"{RECORDING_KIND}-v{FORMAT_VERSION}"},
)
SCHEMAS = {FEATURE_KIND: FEATURE_SCHEMA, LABEL_KIND: LABEL_SCHEMA, RECORDING_KIND: RECORDING_SCHEMA}


def rebuild_hint(cache_dir: Path) -> str:
    """The command that rebuilds a cache folder (WORK/cache)."""
    return f"re-run `whisper-tune features --work {Path(cache_dir).parent}` to rebuild it"


def is_shard_name(name: object) -> bool:
    """A plain file name of the writer's own pattern (no folder part, no "..")."""
    return isinstance(name, str) and SHARD_NAME_RE.fullmatch(name) is not None


def shard_kind(name: str) -> str:
    match = SHARD_NAME_RE.fullmatch(name)
    if match is None:
        raise ValueError(f"not a shard name: {name!r}")
    return match["kind"]


def shard_path(cache_dir: Path, name: str) -> Path:
    """cache_dir / name, for a valid shard name only: the one way a shard name becomes a path."""
    if not is_shard_name(name):
        raise CacheError(f"{name!r} is not a cache shard name; {rebuild_hint(cache_dir)}")
    return Path(cache_dir) / name


@dataclass(frozen=True)
class FeatureRow:
    """One (clip, variant) as written to a feature shard. features is None for an alias row."""

    clip_id: str
    variant: int
    fingerprint: str
    features: np.ndarray | None = None   # float16 (n_mels, T)
    floor: float = 0.0
    alias_of: int = -1

    @property
    def nbytes(self) -> int:
        return 0 if self.features is None else int(self.features.nbytes)


_NO_IDS = np.zeros(0, np.int32)
_NO_TIMES = np.zeros(0, np.float32)


@dataclass(frozen=True)
class LabelRow:
    """A clip's labels (`prefix <|notimestamps|> text <|endoftext|>`). A window of a recording also has its
    previous-text prompt and its cues: cue_tokens[i] text ids of the labels belong to cue i, which runs from
    cue_starts[i] to cue_ends[i] (seconds from the window's start), so the trainer can lay them out timestamped."""

    clip_id: str
    labels: np.ndarray    # int32
    text: str
    fingerprint: str
    prompt: np.ndarray = field(default_factory=lambda: _NO_IDS)
    cue_tokens: np.ndarray = field(default_factory=lambda: _NO_IDS)
    cue_starts: np.ndarray = field(default_factory=lambda: _NO_TIMES)
    cue_ends: np.ndarray = field(default_factory=lambda: _NO_TIMES)

    @property
    def nbytes(self) -> int:
        return (int(np.asarray(self.labels).nbytes) + len(self.text.encode("utf-8"))
                + 4 * (len(self.prompt) + len(self.cue_tokens) + 2 * len(self.cue_starts)))


@dataclass(frozen=True)
class ShardInfo:
    """A shard as the index lists it. ctime_ns and inode prove a file unchanged since its checksum was taken
    (a rewrite with its mtime restored still changes them); 0 means "unknown", so the checksum is re-taken."""

    name: str
    kind: str            # "feat" or "lab"
    checksum: str        # blake2b-128 of the file bytes
    size: int            # bytes
    mtime_ns: int
    rows: int
    ctime_ns: int = 0
    inode: int = 0

    def with_stat(self, st: os.stat_result) -> "ShardInfo":
        return ShardInfo(self.name, self.kind, self.checksum, st.st_size, st.st_mtime_ns, self.rows,
                         st.st_ctime_ns, st.st_ino)

    def stat_matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
            self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(frozen=True)
class RecordingRow:
    """The whole log-mel of one long recording, as written to a recording shard."""

    clip_id: str                         # the recording's id
    fingerprint: str
    features: np.ndarray                 # float16 (n_mels, T)
    floor: float

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


def file_checksum(path: Path) -> str:
    return file_digest(path, size=16)


def _feature_batch(rows: Sequence[FeatureRow]) -> pa.RecordBatch:
    feats, n_mels, n_frames = [], [], []
    for r in rows:
        if r.features is None:
            feats.append(b"")
            n_mels.append(0)
            n_frames.append(0)
            continue
        a = np.ascontiguousarray(r.features, dtype=np.float16)
        if a.ndim != 2:
            raise ValueError(f"features for {r.clip_id} must be 2-D (n_mels, T), got shape {a.shape}")
        feats.append(a.tobytes())
        n_mels.append(a.shape[0])
        n_frames.append(a.shape[1])
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.clip_id for r in rows], pa.string()),
            pa.array([r.variant for r in rows], pa.int16()),
            pa.array([r.alias_of for r in rows], pa.int16()),
            pa.array(n_mels, pa.int16()),
            pa.array(n_frames, pa.int32()),
            pa.array([float(r.floor) for r in rows], pa.float32()),
            pa.array(feats, pa.large_binary()),
            pa.array([r.fingerprint for r in rows], pa.string()),
        ],
        schema=FEATURE_SCHEMA,
    )


def _label_batch(rows: Sequence[LabelRow]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.clip_id for r in rows], pa.string()),
            pa.array([np.asarray(r.labels, dtype=np.int32) for r in rows], pa.list_(pa.int32())),
            pa.array([r.text for r in rows], pa.string()),
            pa.array([r.fingerprint for r in rows], pa.string()),
            pa.array([np.asarray(r.prompt, dtype=np.int32) for r in rows], pa.list_(pa.int32())),
            pa.array([np.asarray(r.cue_tokens, dtype=np.int32) for r in rows], pa.list_(pa.int32())),
            pa.array([np.asarray(r.cue_starts, dtype=np.float32) for r in rows], pa.list_(pa.float32())),
            pa.array([np.asarray(r.cue_ends, dtype=np.float32) for r in rows], pa.list_(pa.float32())),
        ],
        schema=LABEL_SCHEMA,
    )


def _recording_batch(rows: Sequence[RecordingRow]) -> pa.RecordBatch:
    feats = [np.ascontiguousarray(r.features, dtype=np.float16) for r in rows]
    for r, a in zip(rows, feats):
        if a.ndim != 2:
            raise ValueError(f"features for recording {r.clip_id} must be 2-D (n_mels, T), got shape {a.shape}")
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.clip_id for r in rows], pa.string()),
            pa.array([a.shape[0] for a in feats], pa.int16()),
            pa.array([a.shape[1] for a in feats], pa.int32()),
            pa.array([float(r.floor) for r in rows], pa.float32()),
            pa.array([a.tobytes() for a in feats], pa.large_binary()),
            pa.array([r.fingerprint for r in rows], pa.string()),
        ],
        schema=RECORDING_SCHEMA,
    )


BATCHES = {FEATURE_KIND: _feature_batch, LABEL_KIND: _label_batch, RECORDING_KIND: _recording_batch}


def shard_name(prefix: str, kind: str, rows: Sequence[FeatureRow | LabelRow | RecordingRow]) -> str:
    """Deterministic name from the rows' identities and fingerprints (same inputs -> same name)."""
    lines = [f"{r.clip_id}\0{getattr(r, 'variant', '')}\0{r.fingerprint}" for r in rows]
    digest = stable_hex(*lines, size=10, sep=b"\n")
    name = f"{prefix}-{kind}-{digest}{SHARD_SUFFIX}"
    if not is_shard_name(name):
        raise ValueError(f"shard prefix {prefix!r} must be 1-24 lowercase letters or digits")
    return name


def write_shard(cache_dir: Path, prefix: str, kind: str,
                rows: Sequence[FeatureRow | LabelRow | RecordingRow]) -> ShardInfo:
    """Write rows as one Arrow IPC file, atomically (tmp name, fsync, os.replace). Returns its index entry."""
    if not rows:
        raise ValueError("write_shard needs at least one row")
    batch = BATCHES[kind](rows)  # type: ignore[arg-type]
    final = shard_path(cache_dir, shard_name(prefix, kind, rows))
    checksum = ""
    with atomic_path(final, needed_bytes=batch.nbytes) as tmp:
        with open(tmp, "wb") as f:
            with ipc.new_file(f, batch.schema) as writer:
                writer.write_batch(batch)
        checksum = file_checksum(tmp)
    info = ShardInfo(final.name, kind, checksum, 0, 0, len(rows))
    return info.with_stat(final.stat())


def split_rows(rows: Sequence[Any], max_bytes: int) -> Iterator[list[Any]]:
    """Consecutive groups of rows whose payload stays under max_bytes (a single larger row gets its own group)."""
    group: list[Any] = []
    size = 0
    for r in rows:
        if group and size + r.nbytes > max_bytes:
            yield group
            group, size = [], 0
        group.append(r)
        size += r.nbytes
    if group:
        yield group


def read_shard_table(path: Path) -> pa.Table:
    """Read a whole shard (used to adopt it); raises CacheError if it is not a cache shard of this version."""
    try:
        with pa.memory_map(str(path), "r") as source:
            table = ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise CacheError(f"{path} is not a readable cache shard ({err}); {rebuild_hint(path.parent)}") from None
    want = SCHEMAS.get(shard_kind(path.name))
    if want is None or not table.schema.equals(want, check_metadata=True):
        raise CacheError(f"{path} is not a whisper-tune cache shard; {rebuild_hint(path.parent)}")
    return table
