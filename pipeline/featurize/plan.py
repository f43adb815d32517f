"""Planning a features run: the fingerprint every stored item must have, and what each clip still needs.

A clip's fingerprints cover its audio content hash (file bytes; re-hashed only when path, size or mtime change),
the audio settings, the feature settings, the augmentation chain + seed + variant, and the tokenizer +
normalization + transcript. A window of a long recording is an item of its own (its manifest id): its features'
fingerprints cover the recording's content hash (hashed once per run however many windows it has) and the window's
range [start, end); its labels' fingerprint covers its cues' texts and times and its previous text (the prompt).
So editing one cue of a subtitle file changes the labels of its window (and the prompts of later windows) and,
when the cue's times move the window's range, that window's features alone. Train clips get every variant;
validation and test clips, which are only ever scored, get the clean variant 0 alone. An item whose fingerprint the index (or an orphan shard of a killed run)
already has is kept; the rest becomes a job (audio) or a label to compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from whisper_tune.pipeline.cache.index import CLIP_FLAGS
from whisper_tune.pipeline.cache import CacheIndex, ClipEntry, RowRef, ShardInfo, SkipEntry, SourceRecord, file_checksum
from whisper_tune.pipeline.cache.writer import Orphans
from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import ConfigError, ManifestError
from whisper_tune.pipeline.core.hashing import stable_hex, stable_int
from whisper_tune.pipeline.featurize.labels import WindowCues

AUDIO_CODE_VERSION = "audio-2"   # audio-2: cut-short WAVs and constant or near-silent clips are refused
WINDOW_CODE_VERSION = "window-1"  # a window's samples: [start, end) of the streamed recording, peak-normalized
WINDOW_COLUMNS = ("start", "end", "cue_starts", "cue_ends", "cue_texts", "previous_text")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "special_tokens_map.json", "normalizer.json", "config.json", "generation_config.json")
FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")


def parse_part(text: str | None) -> tuple[int, int] | None:
    """"i/N" (1-based) -> (i, N); None -> None (the whole manifest)."""
    if text is None or str(text).strip() == "":
        return None
    raw = str(text).strip()
    try:
        i_s, n_s = raw.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--part {raw!r}: expected i/N with whole numbers, e.g. --part 2/8") from None
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--part {raw!r}: expected 1 <= i <= N, e.g. --part 1/4 ... --part 4/4")
    return (i, n)


SLURM_ARRAY_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")


def slurm_part(environ: Mapping[str, str]) -> tuple[tuple[int, int], str] | None:
    """The part of a Slurm array task (`sbatch --array=0-7`): (TASK_ID - TASK_MIN + 1, TASK_COUNT) and a line
    saying so; None outside an array job. An array with steps or holes (`--array=0-15:2`) is refused."""
    task_id, count, low = (environ.get(k, "").strip() for k in SLURM_ARRAY_VARS)
    if not task_id or not count:
        return None
    try:
        i, n, m = int(task_id), int(count), int(low or 0)
    except ValueError:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task_id!r}, SLURM_ARRAY_TASK_COUNT={count!r}, "
                          f"SLURM_ARRAY_TASK_MIN={low!r}: expected whole numbers; or give --part i/N") from None
    if n < 1 or not 1 <= i - m + 1 <= n:
        raise ConfigError(f"Slurm array task {i} (SLURM_ARRAY_TASK_MIN {m}, SLURM_ARRAY_TASK_COUNT {n}) is not "
                          f"one of {n} consecutive tasks: submit with `sbatch --array={m}-{m + n - 1}` (no steps), "
                          "or give --part i/N")
    part = (i - m + 1, n)
    return part, (f"features: Slurm array task {i} of {n} (SLURM_ARRAY_TASK_MIN {m}): running part "
                  f"{part[0]}/{part[1]}")


def run_part(text: str | None, environ: Mapping[str, str]) -> tuple[tuple[int, int] | None, str]:
    """--part i/N when given, else the Slurm array task's part; -> (part or None, a line to show or "")."""
    part = parse_part(text)
    if part is not None:
        return part, ""
    return slurm_part(environ) or (None, "")


def part_of(clip_id: str, n_parts: int) -> int:
    """The 1-based part a clip belongs to; stable across machines (and across versions)."""
    return stable_int(clip_id, size=8) % n_parts + 1


def read_usable_manifest(work_dir: Path, part: tuple[int, int] | None):
    """The manifest's status == "ok" rows of this part's share (polars DataFrame, sorted by id), with the
    leakage flags (text_in_train, audio_in_train) and the audit mark (audit_ok) that the cache records per clip."""
    return part_share(_usable_rows(work_dir), part)


def part_share(usable, part: tuple[int, int] | None):
    """The rows of the usable manifest that belong to `part` (all of them for None): a clip by its id, a window of
    a long recording by its recording, so that all of a recording's windows are one part's (decoded once)."""
    if part is None:
        return usable
    return usable.filter([part_of(k, part[1]) == part[0] for k in part_keys(usable)])


def part_keys(usable) -> list[str]:
    """What decides a row's part: its id, or for a window its recording's path."""
    ids = usable["id"].to_list()
    if "window_index" not in usable.columns:
        return ids
    return [path if w is not None else cid
            for cid, path, w in zip(ids, usable["path"].to_list(), usable["window_index"].to_list())]


def usable_counts(usable) -> dict[str, int]:
    """Usable clips per split of the whole usable manifest (what a complete cache holds; the index records it)."""
    counts = usable["split"].value_counts()
    return {str(s): int(n) for s, n in zip(counts["split"].to_list(), counts["count"].to_list())}


def read_usable(work_dir: Path, part: tuple[int, int] | None):
    """The manifest read once: (this part's usable rows, usable clips per split of the whole manifest, the ids
    of every usable row)."""
    usable = _usable_rows(work_dir)
    return part_share(usable, part), usable_counts(usable), set(usable["id"].to_list())


def _usable_rows(work_dir: Path, df=None):
    import polars as pl

    from whisper_tune.pipeline.validate.leakage import text_in_train
    from whisper_tune.pipeline.validate.manifest import has_windows, read_manifest

    df = read_manifest(work_dir)
    needed = ("id", "path", "text", "split", "status") + (WINDOW_COLUMNS if has_windows(df) else ())
    for col in needed:
        if col not in df.columns:
            raise ManifestError(f"{work_dir / 'manifest.parquet'} has no {col!r} column; "
                                "re-run `whisper-tune validate`")
    if "text_in_train" not in df.columns:    # a manifest older than the leakage report
        kept = [s == "ok" for s in df["status"].to_list()]
        flags = text_in_train(df["text"].cast(str).to_list(), df["split"].cast(str).to_list(), kept)
        df = df.with_columns(pl.Series("text_in_train", flags, pl.Boolean))
    for col in CLIP_FLAGS:                   # leakage flags and the audit mark (absent in older manifests)
        df = df.with_columns(pl.col(col).fill_null(False)) if col in df.columns else \
            df.with_columns(pl.lit(False).alias(col))
    return df.filter(pl.col("status") == "ok").sort("id")


def files_key(model_path: str, names: Sequence[str], *extra: str) -> str:
    """Hash of some files of a model folder (plus the transformers version); "" when the model is not a folder."""
    from importlib.metadata import version

    folder = Path(model_path)
    if not folder.is_dir():
        return ""
    parts: list[str | bytes] = ["|".join((version("transformers"), *extra))]
    for name in names:
        f = folder / name
        parts += [name, f.read_bytes() if f.is_file() else b"-"]
    return stable_hex(*parts)


def audio_fingerprint(trim_top_db: float, peak_normalize: bool) -> str:
    return stable_hex(AUDIO_CODE_VERSION, SAMPLE_RATE_HZ, float(trim_top_db), bool(peak_normalize))


@dataclass(frozen=True)
class Fingerprints:
    """Everything a stored item depends on, per kind of item."""

    audio: str
    features: str
    augment: str
    labels: str           # tokenizer identity: its files' key, or the loaded tokenizer's fingerprint
    n_variants: int

    def clip(self, source_hash: str) -> str:
        return stable_hex(source_hash, self.audio)

    def variant(self, clip_fp: str, variant: int) -> str:
        return stable_hex("features", clip_fp, self.features, variant, self.augment if variant else "clean")

    def window(self, source_hash: str, start: float, end: float) -> str:
        """A window's audio: the recording's content and the window's range (ms)."""
        return stable_hex(source_hash, self.audio, WINDOW_CODE_VERSION, round(start * 1000), round(end * 1000))

    def label(self, text: str | WindowCues) -> str:
        if isinstance(text, WindowCues):
            return stable_hex("labels", self.labels, "window", text.key())
        return stable_hex("labels", self.labels, text)

    def audio_skip(self, clip_fp: str) -> str:
        return stable_hex("skip", clip_fp, self.features, self.augment, self.n_variants)


@dataclass(frozen=True)
class ClipJob:
    clip_id: str
    path: str
    variants: tuple[tuple[int, str], ...]   # (variant, wanted fingerprint)
    span: tuple[float, float] | None = None  # a window: [start, end) seconds of the recording at `path`

    @property
    def is_window(self) -> bool:
        return self.span is not None


@dataclass
class Plan:
    clips: dict[str, ClipEntry] = field(default_factory=dict)         # the new index's entries, reuse filled in
    skip_entries: dict[str, SkipEntry] = field(default_factory=dict)  # known-bad clips, unchanged
    jobs: list[ClipJob] = field(default_factory=list)
    audio_skip_fps: dict[str, str] = field(default_factory=dict)      # per job: its fingerprint if it turns bad
    labels_todo: list[tuple[str, str | WindowCues]] = field(default_factory=list)  # (id, transcript or cues)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (clip id, reason)
    adopted: dict[str, ShardInfo] = field(default_factory=dict)       # orphan shards taken over
    reused: int = 0


def source_record(path: str, old: SourceRecord | None) -> SourceRecord:
    """The audio file's identity; its bytes are hashed again only when path, size or mtime changed."""
    import os

    st = os.stat(path)
    if old and (old.path, old.size, old.mtime_ns) == (path, st.st_size, st.st_mtime_ns):
        return old
    return SourceRecord(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, hash=file_checksum(Path(path)))


class _Planner:
    """Decides, clip by clip, what is reused, adopted, or still to compute."""

    def __init__(self, previous: CacheIndex, fps: Fingerprints, shards: Mapping[str, ShardInfo],
                 orphans: Orphans) -> None:
        self.previous, self.fps, self.shards, self.orphans = previous, fps, shards, orphans
        self.plan = Plan()
        self._sources: dict[str, SourceRecord] = {}    # a recording's record, once per run for all its windows

    def existing(self, ref: RowRef | None, fp: str, key: tuple[str, int | None]) -> RowRef | None:
        """The stored item with this fingerprint: the index's own, else an orphan shard's row; None if neither."""
        if ref is not None and ref.fp == fp and (ref.shard in self.shards or ref.shard in self.plan.adopted):
            return ref
        hit = self.orphans.get(key)
        if hit is None or hit[0].fp != fp:
            return None
        self.plan.adopted[hit[1].name] = hit[1]
        return hit[0]

    def source(self, path: str, old: SourceRecord | None) -> SourceRecord:
        known = self._sources.get(path)
        if known is None:
            known = self._sources[path] = source_record(path, old)
        return known

    def add(self, cid: str, path: str, text: str, split: str, leaks: Mapping[str, bool],
            window: tuple[float, float, WindowCues] | None = None) -> None:
        old = self.previous.clips.get(cid)
        old_skip = self.previous.skipped.get(cid)
        try:
            source = self.source(path, (old.source if old else None) or (old_skip.source if old_skip else None))
        except OSError as err:
            self.plan.skipped.append((cid, f"cannot read audio file ({err.strerror or err})"))
            return
        if window is None:
            clip_fp, lab_fp = self.fps.clip(source.hash), self.fps.label(text)
        else:
            clip_fp, lab_fp = self.fps.window(source.hash, window[0], window[1]), self.fps.label(window[2])
        if old_skip and old_skip.fp in (self.fps.audio_skip(clip_fp), lab_fp):   # known bad, unchanged
            self.plan.skip_entries[cid] = replace(old_skip, source=source, split=split)
            self.plan.skipped.append((cid, old_skip.reason))
            return
        labels = self.existing(old.labels if old else None, lab_fp, (cid, None))
        if labels is None:
            self.plan.labels_todo.append((cid, text if window is None else window[2]))
        variants: dict[int, RowRef] = {}
        need: list[tuple[int, str]] = []
        for v in range(self.fps.n_variants if split == "train" else 1):   # held-out clips: clean only
            fp = self.fps.variant(clip_fp, v)
            ref = self.existing(old.variants.get(v) if old else None, fp, (cid, v))
            if ref is None:
                need.append((v, fp))
            else:
                variants[v] = ref
                self.plan.reused += 1
        self.plan.clips[cid] = ClipEntry(split=split, text=text, source=source, labels=labels, variants=variants,
                                         **leaks)
        if need:
            self.plan.jobs.append(ClipJob(cid, path, tuple(need), None if window is None else window[:2]))
            self.plan.audio_skip_fps[cid] = self.fps.audio_skip(clip_fp)


def make_plan(rows: Any, previous: CacheIndex, fps: Fingerprints, shards: Mapping[str, ShardInfo],
              orphans: Orphans) -> Plan:
    """rows: the usable manifest (id, path, text, split; and the window columns for windows of recordings) -> what
    to keep, adopt and compute."""
    planner = _Planner(previous, fps, shards, orphans)
    flags = {c: rows[c].to_list() if c in rows.columns else [False] * rows.height for c in CLIP_FLAGS}
    windows = window_specs(rows)
    for i, (cid, path, text, split) in enumerate(zip(rows["id"].to_list(), rows["path"].to_list(),
                                                     rows["text"].to_list(), rows["split"].to_list())):
        planner.add(cid, path, text, split, {c: bool(flags[c][i]) for c in CLIP_FLAGS}, windows[i])
    return planner.plan


def window_specs(rows: Any) -> list[tuple[float, float, WindowCues] | None]:
    """Per manifest row: (start, end, cues) of a window of a recording, None for a plain clip."""
    if not all(c in rows.columns for c in WINDOW_COLUMNS) or "window_index" not in rows.columns:
        return [None] * rows.height
    out: list[tuple[float, float, WindowCues] | None] = []
    for r in rows.select("window_index", *WINDOW_COLUMNS).iter_rows(named=True):
        if r["window_index"] is None or r["start"] is None or r["end"] is None:
            out.append(None)
            continue
        cues = WindowCues(texts=tuple(r["cue_texts"] or ()), starts=tuple(r["cue_starts"] or ()),
                          ends=tuple(r["cue_ends"] or ()), previous_text=r["previous_text"] or "")
        out.append((float(r["start"]), float(r["end"]), cues))
    return out
