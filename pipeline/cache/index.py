"""The cache index: typed, versioned, and checked field by field wherever it is read.

    WORK/cache/index.<stamp>.<prefix>.arrow   the index today: append-only Arrow segments (segments.py)
    WORK/cache/index.json                     a cache written before segments: a whole run's JSON index
    WORK/cache/index.part-I-of-N.json         ... and `--part I/N` runs' (read, then converted by `features`)

The dataclasses below are the index's contract, whatever stores it. An old JSON index file is JSON: {"format": "whisper-tune-cache", "version": 2, "meta": {...}, "shards": {name: {...}},
"clips": {id: {...}}, "skipped": {id: {...}}} (the dataclasses below, field for field), and, when `features` stored
the whole log-mel of long test recordings, "recordings": {id: {...}} (optional: an index without it has none).
Anything else -- a wrong
shape, an unknown version, a shard name that is not a plain file name of the writer's own pattern, a reference to
a shard the index does not list -- is one CacheError naming the file and the command that rebuilds it. So a
shard name that reaches the reader or the writer is always a file inside the cache folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from whisper_tune.pipeline.core.errors import CacheError, first_line
from whisper_tune.pipeline.core.fileio import atomic_write_json
from whisper_tune.pipeline.cache.shard import ShardInfo, is_shard_name, rebuild_hint, shard_kind

INDEX_NAME = "index.json"
PART_INDEX_GLOB = "index.part-*-of-*.json"
PART_INDEX_RE = re.compile(r"^index\.part-[0-9]+-of-[0-9]+\.json$")
INDEX_FORMAT = "whisper-tune-cache"
INDEX_VERSION = 2
META_MUST_AGREE = ("n_mels", "feature_fingerprint", "tokenizer_fingerprint")
LEAK_FLAGS = ("text_in_train", "audio_in_train")   # optional in a clip record (absent = False)
CLIP_FLAGS = (*LEAK_FLAGS, "audit_ok")               # every optional per-clip flag, written only when True


@dataclass(frozen=True)
class RowRef:
    """Where one stored item lives: a row of a shard, with the fingerprint it must carry."""

    shard: str
    row: int
    fp: str
    alias: int | None = None     # feature rows only: "no transform fired", read variant `alias` instead


@dataclass(frozen=True)
class SourceRecord:
    """The audio file as last hashed (re-hashed only when path, size or mtime change)."""

    path: str
    size: int
    mtime_ns: int
    hash: str


@dataclass(frozen=True)
class ClipEntry:
    split: str
    text: str = ""                          # the transcript as the CSV has it (before normalization)
    source: SourceRecord | None = None
    labels: RowRef | None = None
    variants: Mapping[int, RowRef] = field(default_factory=dict)
    text_in_train: bool = False             # held-out clip whose normalized transcript a train clip says (validate)
    audio_in_train: bool = False            # held-out clip whose audio a train clip has (validate)
    audit_ok: bool = False                  # the CSV's `audit` column says ok: the audit never flags it

    @property
    def complete(self) -> bool:
        """Readable: labels and the clean variant 0 are stored."""
        return self.labels is not None and 0 in self.variants

    def refs(self) -> list[RowRef]:
        return ([self.labels] if self.labels else []) + list(self.variants.values())


@dataclass(frozen=True)
class SkipEntry:
    reason: str
    fp: str                                 # what made it bad; unchanged -> still skipped without decoding
    source: SourceRecord | None = None
    split: str = ""                         # the clip's split ("" in records written before it was kept)


@dataclass(frozen=True)
class ReferenceCue:
    """One subtitle cue of a recording, as the reference of long-form evaluation."""

    start: float                            # seconds from the start of the recording
    end: float
    text: str


@dataclass(frozen=True)
class RecordingEntry:
    """A long test recording whose whole log-mel is stored (long-form evaluation from the cache)."""

    split: str
    seconds: float                          # the recording's length
    source: SourceRecord | None = None
    features: RowRef | None = None          # a row of a recording shard
    cues: tuple[ReferenceCue, ...] = ()     # the cues its windows keep, in order

    def refs(self) -> list[RowRef]:
        return [self.features] if self.features else []


@dataclass(frozen=True)
class IndexMeta:
    n_mels: int = 0
    variants: int = 0
    model: str = ""
    tokenizer_fingerprint: str = ""         # "" while a run has not loaded the tokenizer yet
    tokenizer_key: str = ""
    feature_fingerprint: str = ""
    feature_key: str = ""
    augment_fingerprint: str = ""
    audio_fingerprint: str = ""
    text_normalization: str = ""
    part: str = ""                          # "i/N" for a part index, "" for a whole one
    # usable clips per split of the WHOLE manifest (every part records the same): what a complete cache holds,
    # so train and evaluate can tell an interrupted `features` run without the manifest. Empty = not recorded.
    usable: Mapping[str, int] = field(default_factory=dict)

    def merged(self, later: "IndexMeta") -> "IndexMeta":
        """This meta with every non-empty value of `later` over it."""
        return replace(self, **{f.name: getattr(later, f.name) for f in fields(later) if getattr(later, f.name)})


@dataclass(frozen=True)
class CacheIndex:
    meta: IndexMeta = field(default_factory=IndexMeta)
    shards: Mapping[str, ShardInfo] = field(default_factory=dict)
    clips: Mapping[str, ClipEntry] = field(default_factory=dict)
    skipped: Mapping[str, SkipEntry] = field(default_factory=dict)
    recordings: Mapping[str, RecordingEntry] = field(default_factory=dict)   # optional (long-form evaluation)

    def referenced_shards(self) -> set[str]:
        entries = [*self.clips.values(), *self.recordings.values()]
        return {ref.shard for entry in entries for ref in entry.refs()}

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "meta": _plain(self.meta),
            "shards": {n: {k: v for k, v in _plain(s).items() if k != "name"} for n, s in sorted(self.shards.items())},
            "clips": {c: _clip_json(e) for c, e in sorted(self.clips.items())},
            "skipped": {c: _plain(s) for c, s in sorted(self.skipped.items())},
        }
        if self.recordings:
            out["recordings"] = {r: _recording_json(e) for r, e in sorted(self.recordings.items())}
        return out


def _plain(obj: Any) -> Any:
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _clip_json(entry: ClipEntry) -> dict[str, Any]:
    def ref(r: RowRef) -> dict[str, Any]:
        out = {"shard": r.shard, "row": r.row, "fp": r.fp}
        return out if r.alias is None else {**out, "alias": r.alias}

    out = {"split": entry.split, "text": entry.text, "source": _plain(entry.source),
           "labels": ref(entry.labels) if entry.labels else None,
           "variants": {str(v): ref(r) for v, r in sorted(entry.variants.items())}}
    for flag in CLIP_FLAGS:
        if getattr(entry, flag):
            out[flag] = True
    return out


def _recording_json(entry: RecordingEntry) -> dict[str, Any]:
    ref = entry.features
    return {"split": entry.split, "seconds": entry.seconds, "source": _plain(entry.source),
            "features": None if ref is None else {"shard": ref.shard, "row": ref.row, "fp": ref.fp},
            "cues": [[c.start, c.end, c.text] for c in entry.cues]}


def part_index_name(part: tuple[int, int] | None) -> str:
    return INDEX_NAME if part is None else f"index.part-{part[0]}-of-{part[1]}.json"


def save_index(path: Path, index: CacheIndex) -> None:
    atomic_write_json(path, index.to_json(), indent=None, sort_keys=True)


# --------------------------------------------------------------------------------------------------------------
# The one validating load


class _Bad(Exception):
    """What is wrong with an index file, in a few words (becomes one CacheError line)."""


def quote(value: Any) -> str:
    """A value as JSON, cut to 60 characters (error messages stay one short line)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND_NAMES = {dict: "an object", str: "a string", int: "a whole number", (dict, type(None)): "an object or null"}


def _get(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise _Bad(f"{where} must be an object, got {quote(d)}")
    if key not in d:
        raise _Bad(f"{where} lacks {key!r}")
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Bad(f"{where}.{key} must be {_KIND_NAMES[kind]}, got {quote(value)}")
    return value


def _count(d: Any, key: str, where: str) -> int:
    value = _get(d, key, int, where)
    if value < 0:
        raise _Bad(f"{where}.{key} must be >= 0, got {value}")
    return value


def _mapping(d: Any, key: str, where: str) -> dict[str, Any]:
    return _get(d, key, dict, where)


def _shard_info(name: str, d: Any) -> ShardInfo:
    where = f"shards[{quote(name)}]"
    if not is_shard_name(name):
        raise _Bad(f"shard name {quote(name)} is not a plain cache shard file name")
    kind = _get(d, "kind", str, where)
    if kind != shard_kind(name):
        raise _Bad(f"{where}.kind is {quote(kind)}, the name says {shard_kind(name)!r}")
    return ShardInfo(name=name, kind=kind, checksum=_get(d, "checksum", str, where), size=_count(d, "size", where),
                     mtime_ns=_count(d, "mtime_ns", where), rows=_count(d, "rows", where),
                     ctime_ns=_count(d, "ctime_ns", where), inode=_count(d, "inode", where))


def _row_ref(d: Any, where: str, shards: Mapping[str, ShardInfo]) -> RowRef:
    name = _get(d, "shard", str, where)
    if not is_shard_name(name):
        raise _Bad(f"{where}.shard {quote(name)} is not a plain cache shard file name")
    if name not in shards:
        raise _Bad(f"{where}.shard {name} is not in the shard list")
    alias = d.get("alias")
    if alias is not None and (not isinstance(alias, int) or isinstance(alias, bool) or alias < 0):
        raise _Bad(f"{where}.alias must be a variant number, got {quote(alias)}")
    return RowRef(shard=name, row=_count(d, "row", where), fp=_get(d, "fp", str, where), alias=alias)


def _source(d: Any, where: str) -> SourceRecord | None:
    value = _get(d, "source", (dict, type(None)), where)
    if value is None:
        return None
    w = f"{where}.source"
    return SourceRecord(path=_get(value, "path", str, w), size=_count(value, "size", w),
                        mtime_ns=_count(value, "mtime_ns", w), hash=_get(value, "hash", str, w))


def _clip(cid: str, d: Any, shards: Mapping[str, ShardInfo]) -> ClipEntry:
    where = f"clips[{quote(cid)}]"
    labels = _get(d, "labels", (dict, type(None)), where)
    variants = {}
    for key, ref in _mapping(d, "variants", where).items():
        if not key.isdigit():
            raise _Bad(f"{where}.variants has key {quote(key)}, expected a variant number")
        variants[int(key)] = _row_ref(ref, f"{where}.variants[{key}]", shards)
    flags = {}
    for flag in CLIP_FLAGS:
        if flag in d:
            if not isinstance(d[flag], bool):
                raise _Bad(f"{where}.{flag} must be true or false, got {quote(d[flag])}")
            flags[flag] = d[flag]
    return ClipEntry(split=_get(d, "split", str, where), text=_get(d, "text", str, where), source=_source(d, where),
                     labels=None if labels is None else _row_ref(labels, f"{where}.labels", shards),
                     variants=variants, **flags)


def _skip(cid: str, d: Any) -> SkipEntry:
    where = f"skipped[{quote(cid)}]"
    split = d.get("split", "") if isinstance(d, dict) else ""
    if not isinstance(split, str):
        raise _Bad(f"{where}.split must be a string, got {quote(split)}")
    return SkipEntry(reason=_get(d, "reason", str, where), fp=_get(d, "fp", str, where), source=_source(d, where),
                     split=split)


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _Bad(f"{where} must be a number of seconds >= 0, got {quote(value)}")
    return float(value)


def _recording(rid: str, d: Any, shards: Mapping[str, ShardInfo]) -> RecordingEntry:
    where = f"recordings[{quote(rid)}]"
    feats = _get(d, "features", (dict, type(None)), where)
    cues = d.get("cues", [])
    if not isinstance(cues, list):
        raise _Bad(f"{where}.cues must be a list, got {quote(cues)}")
    out = []
    for i, cue in enumerate(cues):
        w = f"{where}.cues[{i}]"
        if not isinstance(cue, list) or len(cue) != 3 or not isinstance(cue[2], str):
            raise _Bad(f"{w} must be [start, end, text], got {quote(cue)}")
        out.append(ReferenceCue(_seconds(cue[0], w), _seconds(cue[1], w), cue[2]))
    return RecordingEntry(split=_get(d, "split", str, where), seconds=_seconds(d.get("seconds"), f"{where}.seconds"),
                          source=_source(d, where), cues=tuple(out),
                          features=None if feats is None else _row_ref(feats, f"{where}.features", shards))


def _meta(d: Any) -> IndexMeta:
    values: dict[str, Any] = {}
    for f in fields(IndexMeta):
        if f.name == "usable":                # added later: optional, {split: count}
            usable = d.get("usable", {}) if isinstance(d, dict) else {}
            if not isinstance(usable, dict):
                raise _Bad(f"meta.usable must be an object, got {quote(usable)}")
            values["usable"] = {split: _count(usable, split, "meta.usable") for split in usable}
        else:
            values[f.name] = _count(d, f.name, "meta") if f.type == "int" else _get(d, f.name, str, "meta")
    return IndexMeta(**values)


def _parse(data: Any) -> CacheIndex:
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise _Bad("not a whisper-tune cache index")
    version = data.get("version")
    if version != INDEX_VERSION:
        raise _Bad(f"index version {quote(version)}, this whisper-tune reads version {INDEX_VERSION}")
    shards = {name: _shard_info(name, d) for name, d in _mapping(data, "shards", "index").items()}
    clips = {cid: _clip(cid, d, shards) for cid, d in _mapping(data, "clips", "index").items()}
    skipped = {cid: _skip(cid, d) for cid, d in _mapping(data, "skipped", "index").items()}
    recordings = {rid: _recording(rid, d, shards)
                  for rid, d in (_mapping(data, "recordings", "index") if "recordings" in data else {}).items()}
    return CacheIndex(meta=_meta(_mapping(data, "meta", "index")), shards=shards, clips=clips, skipped=skipped,
                      recordings=recordings)


def load_index(path: Path) -> CacheIndex:
    """Read and check one index file (whole or part); any defect -> one CacheError line naming the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _parse(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, _Bad) as err:
        what = first_line(err)
        raise CacheError(f"{path} is not a usable feature cache index ({what}); {rebuild_hint(path.parent)}") from None


def index_files(cache_dir: Path) -> list[Path]:
    """index.json first, then part index files oldest first (a later file overrides an earlier one)."""
    whole = cache_dir / INDEX_NAME
    parts = [p for p in cache_dir.glob(PART_INDEX_GLOB) if PART_INDEX_RE.fullmatch(p.name) and p.is_file()]
    parts.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return ([whole] if whole.is_file() else []) + parts


def legacy_index_metas(cache_dir: Path) -> dict[str, IndexMeta]:
    """The settings each usable old JSON index file of the cache was built with, by file name."""
    out = {}
    for path in index_files(Path(cache_dir)):
        try:
            out[path.name] = load_index(path).meta
        except CacheError:
            continue
    return out


def load_legacy_index(cache_dir: Path) -> CacheIndex | None:
    """The JSON index files of a cache written before index segments, merged (None when there is none)."""
    files = index_files(Path(cache_dir))
    if not files:
        return None
    meta, shards, clips, skipped, recordings = IndexMeta(), {}, {}, {}, {}
    for path in files:
        idx = load_index(path)
        for key in META_MUST_AGREE:   # an empty value is "not known yet" (a run in progress)
            ours, theirs = getattr(meta, key), getattr(idx.meta, key)
            if ours and theirs and ours != theirs:
                raise CacheError(f"{path.name} was built with different settings ({key}) than the rest of "
                                 f"{cache_dir}; {rebuild_hint(cache_dir)}")
        meta = meta.merged(idx.meta)
        shards.update(idx.shards)
        clips.update(idx.clips)
        skipped.update(idx.skipped)
        recordings.update(idx.recordings)
        for cid in idx.clips:
            skipped.pop(cid, None)
    return CacheIndex(meta=meta, shards=shards, clips=clips, skipped=skipped, recordings=recordings)
