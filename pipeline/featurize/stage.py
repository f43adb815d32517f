"""The `features` stage: manifest -> WORK/cache (incremental, parallel, resumable, splittable into parts).

    result = run_features(work_dir=Path("work"), cfg=cfg, part=parse_part("2/8"))

1. Read the manifest once: its usable rows of this part's share and the usable clips per split (plan.read_usable).
2. Work out every item's fingerprint and what is already stored (plan.make_plan); the cache writer checks the
   stored shards first (a damaged one is deleted and its clips planned again) and offers orphan shards of a
   killed run for adoption.
   A `--part` run first checks that the other parts were built with the same settings.
3. Labels (cheap) are computed in a thread of this process; audio work runs in worker processes or on a Dask
   cluster (work.run_tasks, featurize/cluster.py). Each task writes its own shards and returns their index
   records, which the writer lists as they come, so a kill loses at most the tasks in flight.
4. The whole log-mel of each test recording (a manifest of windows) is stored once for long-form evaluation
   (featurize/recordings.py).
5. The writer finishes: clips no longer in the manifest and unreferenced shards are dropped.
6. The non-speech pool (WORK/cache/nonspeech.npz, featurize/nonspeech.py) is rebuilt when its sources changed.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from whisper_tune.pipeline.cache import CACHE_DIRNAME, CacheIndex, CacheWriter, IndexMeta, LabelRow, index_metas
from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.errors import ConfigError, ModelError, first_line
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.featurize.plan import (FEATURE_FILES, TOKENIZER_FILES, Fingerprints, Plan, audio_fingerprint, files_key, make_plan,
                   part_of, read_usable)
from whisper_tune.pipeline.featurize.labels import WindowCues
from whisper_tune.pipeline.featurize.recordings import RecordingsResult, store_recordings, test_recordings
from whisper_tune.pipeline.featurize.work import Progress, TaskResult, WorkerSettings, run_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesResult:
    clips_total: int                 # usable clips in this run's share of the manifest
    clips_cached: int                # clips that needed no audio work
    clips_decoded: int               # clips (and windows of recordings) whose audio was decoded this run
    variants_computed: int           # log-mel variants computed (alias variants not included)
    variants_aliased: int            # augmented variants in which no transform fired (stored as the clean one)
    variants_reused: int             # variants kept from the cache
    labels_computed: int
    shards_written: int
    shards_adopted: int              # complete shards of a killed run taken over
    shards_dropped: int              # shards missing or failing their checksum (their clips recomputed)
    clips_removed: int               # clips dropped from the index (no longer in the manifest)
    skipped: tuple[tuple[str, str], ...]   # (clip id, reason)
    seconds: float
    cache_dir: Path
    message: str = ""
    client_cpu_s: float = 0.0        # CPU time of this process (planning, labels, recording; local work with --jobs 1)
    work_cpu_s: float = 0.0          # ... of it while the tasks ran (labels, recording results, the Dask client)
    scheduler: str = ""              # the Dask scheduler the audio work ran on; "" = this machine
    skipped_where: tuple[str, ...] = ()   # per skipped clip: its file and CSV row, as the CSV has them
    recordings_decoded: int = 0      # decodes of long recordings for their windows (one per recording task)
    windows_total: int = 0           # of clips_total: windows of long recordings
    recordings: RecordingsResult = RecordingsResult(0, 0)   # test recordings stored whole (long-form evaluation)
    pool_note: str = ""              # what became of the non-speech pool (WORK/cache/nonspeech.npz)

    @property
    def no_audio_work(self) -> bool:
        return self.clips_decoded == 0


class Tools:
    """The heavy tools of a run (feature extractor, augmenter, tokenizer), each loaded on first need: a run with
    nothing to do never imports torch, transformers or audiomentations."""

    def __init__(self, cfg: Config, model_path: str) -> None:
        self.cfg, self.model_path = cfg, model_path
        self._logmel = self._augmenter = self._tokenizer = None
        self.mel_filters: np.ndarray | None = None

    def logmel(self):
        if self._logmel is None:
            from transformers import WhisperFeatureExtractor

            from whisper_tune.pipeline.featurize.logmel import LogMel

            try:
                fe = WhisperFeatureExtractor.from_pretrained(self.model_path)
            except (OSError, ValueError) as err:
                raise ModelError(f"cannot load the feature extractor of --model {self.cfg.model.name}: "
                                 f"{first_line(err)}") from None
            try:
                self._logmel = LogMel.from_feature_extractor(fe)
            except ValueError as err:
                raise ConfigError(f"--model {self.cfg.model.name}: {err}") from None
            self.mel_filters = np.asarray(fe.mel_filters)
        return self._logmel

    def augmenter(self):
        if self._augmenter is None:
            from whisper_tune.pipeline.featurize.augment import Augmenter

            self._augmenter = Augmenter(self.cfg.augment.transforms, self.cfg.augment.seed)  # ConfigError if bad
        return self._augmenter

    def tokenizer(self):
        if self._tokenizer is None:
            from whisper_tune.pipeline.models import load_processor

            m = self.cfg.model
            self._tokenizer = load_processor(self.model_path, m.language, m.task).tokenizer
        return self._tokenizer

    def tokenizer_fingerprint(self) -> str:
        from whisper_tune.pipeline.featurize.labels import tokenizer_fingerprint

        return tokenizer_fingerprint(self.tokenizer(), self.cfg.features.text_normalization)


def fingerprints(cfg: Config, part: tuple[int, int] | None, previous: IndexMeta,
                 tools: Tools) -> tuple[IndexMeta, Fingerprints]:
    """The new index's meta and the fingerprints of this run's settings; what the previous index proves
    unchanged (same model files) is taken from it instead of loading the tools."""
    from whisper_tune.pipeline.featurize.augment import augment_fingerprint
    from whisper_tune.pipeline.featurize.labels import LABEL_CODE_VERSION
    from whisper_tune.pipeline.featurize.logmel import FEATURE_CODE_VERSION

    m, norm = cfg.model, cfg.features.text_normalization
    tok_key = files_key(tools.model_path, TOKENIZER_FILES, LABEL_CODE_VERSION, m.language, m.task, norm)
    tok_fp = ""        # "" with a known tokenizer key: the label thread fills it in only if it must load it
    if tok_key and previous.tokenizer_key == tok_key and previous.tokenizer_fingerprint:
        tok_fp = previous.tokenizer_fingerprint
    elif not tok_key:
        tok_fp = tools.tokenizer_fingerprint()
    feat_key = files_key(tools.model_path, FEATURE_FILES, FEATURE_CODE_VERSION)
    if feat_key and previous.feature_key == feat_key and previous.feature_fingerprint and previous.n_mels:
        feat_fp, n_mels = previous.feature_fingerprint, previous.n_mels
    else:
        feat_fp, n_mels = tools.logmel().fingerprint, tools.logmel().n_mels
    aug_fp = augment_fingerprint(cfg.augment.transforms, cfg.augment.seed)
    if previous.augment_fingerprint != aug_fp:
        tools.augmenter()            # a changed chain is checked now, before any work
    fps = Fingerprints(audio=audio_fingerprint(cfg.audio.trim_top_db, cfg.audio.peak_normalize), features=feat_fp,
                       augment=aug_fp, labels=tok_key or tok_fp, n_variants=int(cfg.augment.variants))
    meta = IndexMeta(n_mels=n_mels, variants=fps.n_variants, model=m.name, tokenizer_fingerprint=tok_fp,
                     tokenizer_key=tok_key, feature_fingerprint=feat_fp, feature_key=feat_key,
                     augment_fingerprint=aug_fp, audio_fingerprint=fps.audio, text_normalization=norm,
                     part="" if part is None else f"{part[0]}/{part[1]}")
    return meta, fps


class LabelWork:
    """Tokenizing is cheap, loading a tokenizer is not: labels run in a thread beside the audio work."""

    def __init__(self, tools: Tools, todo: list[tuple[str, str | WindowCues]], fps: Fingerprints,
                 tok_fp: str) -> None:
        self.tools, self.todo, self.fps, self.tok_fp = tools, todo, fps, tok_fp
        self.rows: list[LabelRow] = []
        self.failures: list[tuple[str, str, str]] = []     # (clip id, reason, fingerprint)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labels")
        self._future: Future | None = None

    def start(self) -> None:
        self._future = self._thread.submit(self._run)

    def _run(self) -> str:
        from whisper_tune.pipeline.featurize.labels import LabelError, make_labels, make_window_labels

        fp = self.tok_fp or self.tools.tokenizer_fingerprint()
        norm = self.tools.cfg.features.text_normalization
        for cid, text in self.todo:
            try:
                if isinstance(text, WindowCues):
                    lab = make_window_labels(text, self.tools.tokenizer(), norm)
                else:
                    lab = make_labels(text, self.tools.tokenizer(), norm)
            except LabelError as err:
                self.failures.append((cid, str(err), self.fps.label(text)))
                continue
            cues = dict(cue_starts=np.asarray(text.starts, np.float32), cue_ends=np.asarray(text.ends, np.float32)) \
                if isinstance(text, WindowCues) else {}
            self.rows.append(LabelRow(cid, lab.ids, lab.text, self.fps.label(text), prompt=lab.prompt,
                                      cue_tokens=lab.cue_tokens, **cues))
        return fp

    def tokenizer_fingerprint(self) -> str:
        """Wait for the labels; -> the tokenizer's fingerprint."""
        if self._future is None:
            self.start()
        return self._future.result()  # type: ignore[union-attr]

    def close(self) -> None:
        self._thread.shutdown(wait=True)


@dataclass
class Counts:
    decoded: int = 0
    computed: int = 0
    aliased: int = 0
    recordings: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, result: TaskResult) -> None:
        self.decoded += result.decoded
        self.recordings += result.recordings
        self.computed += result.computed
        self.aliased += result.aliased
        self.skipped += result.skipped


def shard_bytes_limit(cfg: Config) -> int:
    return max(1, int(cfg.features.shard_max_mb * 1024 * 1024))


def worker_settings(cfg: Config, tools: Tools, fps: Fingerprints, writer: CacheWriter) -> WorkerSettings:
    tools.logmel()
    tools.augmenter()
    return WorkerSettings(mel_filters=tools.mel_filters,  # type: ignore[arg-type]
                          transforms=tuple(cfg.augment.transforms), augment_seed=int(cfg.augment.seed),
                          trim_top_db=float(cfg.audio.trim_top_db), peak_normalize=bool(cfg.audio.peak_normalize),
                          key=stable_hex(fps.features, fps.augment, fps.audio),
                          cache_dir=os.path.abspath(writer.cache_dir), prefix=writer.prefix,
                          max_bytes=shard_bytes_limit(cfg))


def compute(writer: CacheWriter, plan: Plan, labels: LabelWork, settings: WorkerSettings | None,
            cfg: Config, scheduler: str = "") -> Counts:
    """Run the audio tasks and the labels; every result goes to the writer as it comes."""
    max_bytes = shard_bytes_limit(cfg)
    counts = Counts()
    bar = Progress(len(plan.jobs))
    try:
        for result in run_tasks(plan.jobs, settings, cfg.features.jobs, cfg.features.batch_clips, labels.start,
                                scheduler):
            counts.add(result)
            for cid, reason in result.skipped:
                writer.skip(cid, reason, plan.audio_skip_fps[cid])
            for shard in result.shards:
                writer.record_features(shard)
            writer.save()
            bar.update(result.decoded)
        writer.meta = replace(writer.meta, tokenizer_fingerprint=labels.tokenizer_fingerprint())
    finally:
        bar.close()
        labels.close()
    writer.add_label_rows(labels.rows, max_bytes)
    for cid, reason, fp in labels.failures:
        if cid in writer.clips:
            counts.skipped.append((cid, reason))
            writer.skip(cid, reason, fp)
    return counts


def run_features(*, work_dir: Path, cfg: Config, part: tuple[int, int] | None = None,
                 echo: Callable[[str], None] | None = print, pool: bool = True) -> FeaturesResult:
    """Bring WORK/cache up to date with the manifest and config (see the module doc); pool: also the
    non-speech pool (not for the general set)."""
    from whisper_tune.pipeline.featurize.cluster import scheduler_address
    from whisper_tune.pipeline.models import resolve_model

    started, cpu_started = time.perf_counter(), time.process_time()
    work_dir = Path(work_dir)
    scheduler = scheduler_address(cfg)
    rows, usable, usable_ids = read_usable(work_dir, part)
    tools = Tools(cfg, resolve_model(cfg.model.name))
    writer = CacheWriter(work_dir / CACHE_DIRNAME, part)
    with writer.locked():
        previous, note = writer.read_previous()
        if note:
            log.info(f"features: {note}")
        meta, fps = fingerprints(cfg, part, previous.meta, tools)
        meta = replace(meta, usable=usable)
        if part is not None:
            check_parts_agree(meta, index_metas(writer.cache_dir), writer.prefix)
        shards, dropped = writer.trusted_shards(previous)
        plan = make_plan(rows, previous, fps, shards, writer.orphan_rows(previous))
        share = set(rows["id"].to_list())  # clips gone from the manifest count for the part their id falls in
        owns = None if part is None else \
            (lambda c: c in share or (c not in usable_ids and part_of(c, part[1]) == part[0]))  # type: ignore[index]
        writer.start(meta, {**shards, **plan.adopted}, plan.clips, plan.skip_entries, owns=owns)
        recordings = store_recordings(writer, test_recordings(rows), previous, tools, cfg)
        labels = LabelWork(tools, plan.labels_todo, fps, meta.tokenizer_fingerprint)
        settings = worker_settings(cfg, tools, fps, writer) if plan.jobs else None
        if scheduler and plan.jobs:
            log.info(f"features: audio work on the Dask cluster at {scheduler}")
        work_cpu = time.process_time()
        counts = compute(writer, plan, labels, settings, cfg, scheduler)
        work_cpu = time.process_time() - work_cpu
        final = writer.finish()
        pool_note = ""
        if pool and (part is None or part[0] == 1):      # one run builds the pool: the whole one, or part 1
            from whisper_tune.pipeline.featurize.nonspeech import refresh_pool

            pool_note = refresh_pool(writer.cache_dir, rows, final, feature_fp=meta.feature_fingerprint,
                                     audio_fp=fps.audio, logmel=tools.logmel, top_db=float(cfg.audio.trim_top_db),
                                     normalize=bool(cfg.audio.peak_normalize))
    own_before = {c for c in previous.clips if owns is None or owns(c)}
    result = FeaturesResult(
        clips_total=rows.height, clips_cached=sum(1 for c in final.clips if c not in plan.audio_skip_fps),
        clips_decoded=counts.decoded, variants_computed=counts.computed, variants_aliased=counts.aliased,
        variants_reused=plan.reused, labels_computed=len(labels.rows), shards_written=writer.shards_written,
        shards_adopted=len(plan.adopted), shards_dropped=dropped,
        clips_removed=len(own_before - set(rows["id"].to_list())), skipped=tuple(plan.skipped + counts.skipped),
        seconds=time.perf_counter() - started, cache_dir=writer.cache_dir,
        client_cpu_s=time.process_time() - cpu_started, work_cpu_s=work_cpu, scheduler=scheduler if plan.jobs else "",
        recordings_decoded=counts.recordings, windows_total=windows_in(rows), recordings=recordings)
    result = replace(result, skipped_where=skipped_names(rows, [cid for cid, _ in result.skipped]))
    result = replace(result, message=summary(result, final), pool_note=pool_note)
    if echo is not None:
        echo(format_report(result))
    return result


def windows_in(rows) -> int:
    """Rows of the usable manifest that are windows of long recordings."""
    return int(rows["window_index"].is_not_null().sum()) if "window_index" in rows.columns else 0


def summary(res: FeaturesResult, index: CacheIndex) -> str:
    seconds, n_clips = res.seconds, len(index.clips)
    windows = ""
    if res.clips_decoded == 0:
        variants = sum(len(e.variants) for e in index.clips.values())
        labels = f"; {res.labels_computed} labels re-tokenized" if res.labels_computed else ""
        return (f"features: no audio work needed: {n_clips} clips, {variants} clip-variants cached{labels} "
                f"({seconds:.1f} s)")
    if res.windows_total:
        windows = (f" ({res.windows_total} of them windows of long recordings; {res.recordings_decoded} "
                   f"recording tasks decoded, each recording once per task)")
    return (f"features: {res.clips_decoded} clips decoded, {res.variants_computed} variants computed "
            f"({res.variants_aliased} unchanged by augmentation, stored once), {res.variants_reused} reused, "
            f"{res.labels_computed} labels; {n_clips} clips{windows} in {res.cache_dir} ({seconds:.1f} s, "
            f"{res.clips_decoded / max(seconds, 1e-9):.1f} clips/s)")


def format_report(res: FeaturesResult) -> str:
    """The stage's result as printed: the summary line, then every skipped clip with its reason."""
    lines = [res.message] + ([res.pool_note] if res.pool_note else [])
    if res.recordings.stored:
        lines.append(f"features: {res.recordings.stored} test recordings stored whole for long-form evaluation "
                     f"({res.recordings.computed} computed this run)")
    if res.skipped:
        lines.append(f"features: skipped {len(res.skipped)} clips:")
        names = res.skipped_where or tuple(cid for cid, _ in res.skipped)
        lines += [f"  {name}: {reason}" for name, (_, reason) in zip(names, res.skipped)]
    return "\n".join(lines)


def skipped_names(rows, clip_ids: list[str]) -> tuple[str, ...]:
    """Each clip as a user finds it: the file as the CSV writes it, and its CSV row."""
    if not clip_ids:
        return ()
    cols = [c for c in ("id", "source", "path", "csv_row") if c in rows.columns]
    found = {r["id"]: r for r in rows.select(cols).filter(rows["id"].is_in(clip_ids)).iter_rows(named=True)}
    out = []
    for cid in clip_ids:
        r = found.get(cid, {})
        name = r.get("source") or r.get("path") or f"clip {cid}"
        out.append(f"{name} (CSV row {r['csv_row']})" if r.get("csv_row") is not None else name)
    return tuple(out)


AGREEING_SETTINGS = (   # (meta field, the setting a user changes to make it agree)
    ("variants", "augment.variants (--variants)"),
    ("augment_fingerprint", "the augmentation chain ([augment] transforms, seed)"),
    ("audio_fingerprint", "the audio settings ([audio] trim_top_db, peak_normalize)"),
    ("n_mels", "the feature settings (the model's mel bins)"),
    ("feature_fingerprint", "the feature settings (the model's feature extractor)"),
    ("text_normalization", "features.text_normalization"),
    ("tokenizer_key", "the labels' tokenizer (--model)"),
    ("tokenizer_fingerprint", "the labels' tokenizer (--model)"),
)


def check_parts_agree(meta: IndexMeta, others: dict[str, IndexMeta], own_prefix: str) -> None:
    """A part run whose settings differ from another part's (or a whole run's) index segments: refused in one
    line, as the parts would no longer equal one run. others: segment (or old index file) name -> its meta."""
    from whisper_tune.pipeline.cache.segments import is_segment_name, segment_prefix

    for name, other in sorted(others.items()):
        if is_segment_name(name) and segment_prefix(name) == own_prefix:
            continue
        for key, setting in AGREEING_SETTINGS:
            ours, theirs = getattr(meta, key), getattr(other, key)
            if ours and theirs and ours != theirs:
                what = f"{ours} here, {theirs} there" if key in ("variants", "n_mels", "text_normalization") \
                    else "it differs"
                built = f"part {other.part}" if other.part else "a whole run"
                raise ConfigError(
                    f"features --part {meta.part}: {setting} must agree across parts, but {built} in "
                    f"{name} was built with another value ({what}); run every part with the same settings, or "
                    f"run `whisper-tune features` without --part once to rebuild the cache with these")
