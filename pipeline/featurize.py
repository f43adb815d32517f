"""The `features` stage: manifest -> WORK/cache (incremental, parallel, resumable, splittable into parts).

    result = run_features(work_dir=Path("work"), cfg=cfg, part=parse_part("2/8"))

What a run does:
1. Reads the manifest's usable rows (status "ok"), keeps this part's share (`--part i/N`, by a hash of the id).
2. Works out, per clip, the fingerprint every stored item must have: audio content hash (file bytes; re-hashed
   only when path, size or mtime changed), audio settings, feature settings, augmentation chain + seed +
   variant, tokenizer + normalization + transcript. Train clips get every variant; validation and test clips,
   which are only ever scored, get the clean variant 0 alone. Items whose fingerprint the index already has are kept;
   shards that are missing or fail their checksum are dropped (their clips recomputed); complete shards left
   by a killed run are adopted when their rows' fingerprints are the wanted ones.
3. Labels (cheap) are computed in this process; audio work (decode, trim, normalize, augment, log-mel) runs in
   joblib worker processes, in tasks of `features.batch_clips` clips. Each finished task becomes one or more
   shards (atomic) and the index is rewritten atomically, so a kill loses at most the tasks in flight.
4. Clips no longer in the manifest (this part's share) are dropped from the index; unreferenced shards removed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .cache import (CACHE_DIRNAME, FEATURE_KIND, LABEL_KIND, PART_INDEX_GLOB, SHARD_SUFFIX,
                    TMP_SUFFIX, CacheIndex, CacheLock, FeatureRow, LabelRow, ShardInfo, file_checksum,
                    load_merged_index, part_index_name, read_shard_table, split_rows, write_shard)
from .config import Config
from .constants import SAMPLE_RATE_HZ
from .errors import AudioError, CacheError, ConfigError, ManifestError

AUDIO_CODE_VERSION = "audio-1"
INDEX_SAVE_INTERVAL_S = 1.0


# --------------------------------------------------------------------------------------------------------------
# Parts


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


def part_of(clip_id: str, n_parts: int) -> int:
    """The 1-based part a clip belongs to; stable across machines."""
    h = hashlib.blake2b(clip_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % n_parts + 1


def shard_prefix(part: tuple[int, int] | None) -> str:
    return "all" if part is None else f"p{part[0]}of{part[1]}"


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FeaturesResult:
    clips_total: int                 # usable clips in this run's share of the manifest
    clips_cached: int                # clips that needed no audio work
    clips_decoded: int               # clips whose audio was decoded this run
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

    @property
    def no_audio_work(self) -> bool:
        return self.clips_decoded == 0


# --------------------------------------------------------------------------------------------------------------
# Worker side


@dataclass(frozen=True)
class WorkerSettings:
    mel_filters: np.ndarray = field(repr=False)
    transforms: tuple[dict[str, Any], ...]
    augment_seed: int
    trim_top_db: float
    peak_normalize: bool
    key: str                         # fingerprint of all of the above (per-process cache key)


@dataclass(frozen=True)
class ClipJob:
    clip_id: str
    path: str
    variants: tuple[tuple[int, str], ...]   # (variant, wanted fingerprint)


@dataclass(frozen=True)
class TaskResult:
    rows: list[FeatureRow]
    skipped: list[tuple[str, str]]          # (clip id, reason)
    decoded: int
    computed: int
    aliased: int


_WORKER_STATE: dict[str, Any] = {}


def _worker_tools(settings: WorkerSettings):
    """LogMel and Augmenter, built once per process."""
    tools = _WORKER_STATE.get(settings.key)
    if tools is None:
        from .augment import Augmenter
        from .features import LogMel

        tools = (LogMel(settings.mel_filters), Augmenter(settings.transforms, settings.augment_seed))
        _WORKER_STATE.clear()
        _WORKER_STATE[settings.key] = tools
    return tools


def featurize_clip(job: ClipJob, settings: WorkerSettings) -> tuple[list[FeatureRow], str | None, int, int]:
    """Pure per-clip work: -> (rows, skip reason or None, variants computed, variants aliased)."""
    from . import audio

    logmel, augmenter = _worker_tools(settings)
    try:
        clean = audio.prepare(audio.load(job.path), top_db=settings.trim_top_db, normalize=settings.peak_normalize)
    except AudioError as err:
        return [], str(err), 0, 0
    rows: list[FeatureRow] = []
    computed = aliased = 0
    for variant, fp in job.variants:
        if variant == 0:
            samples = clean
        else:
            try:
                aug = augmenter(clean, job.clip_id, variant)
            except AudioError as err:
                return [], str(err), 0, 0
            if not aug.fired:
                rows.append(FeatureRow(job.clip_id, variant, fp, None, 0.0, alias_of=0))
                aliased += 1
                continue
            samples = aug.samples
        mel = logmel(samples)
        rows.append(FeatureRow(job.clip_id, variant, fp, mel.features.astype(np.float16), mel.floor))
        computed += 1
    return rows, None, computed, aliased


def featurize_task(jobs: Sequence[ClipJob], settings: WorkerSettings) -> TaskResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one core per worker; also makes results independent of the machine's core count
    try:
        rows: list[FeatureRow] = []
        skipped: list[tuple[str, str]] = []
        computed = aliased = 0
        for job in jobs:
            clip_rows, reason, c, a = featurize_clip(job, settings)
            if reason is not None:
                skipped.append((job.clip_id, reason))
                continue
            rows.extend(clip_rows)
            computed += c
            aliased += a
        return TaskResult(rows=rows, skipped=skipped, decoded=len(jobs), computed=computed, aliased=aliased)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------
# Main side


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def read_usable_manifest(work_dir: Path):
    """The manifest's status == "ok" rows (polars DataFrame)."""
    import polars as pl

    from .manifest import read_manifest

    df = read_manifest(work_dir)
    for col in ("id", "path", "text", "split", "status"):
        if col not in df.columns:
            raise ManifestError(f"{work_dir / 'manifest.parquet'} has no {col!r} column; re-run `whisper-tune validate`")
    return df.filter(pl.col("status") == "ok").sort("id")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "special_tokens_map.json", "normalizer.json", "config.json", "generation_config.json")


FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")


def _files_key(model_path: str, names: Sequence[str], *extra: str) -> str:
    """Hash of some files of a model folder (plus the transformers version); "" when the model is not a folder."""
    from importlib.metadata import version

    folder = Path(model_path)
    if not folder.is_dir():
        return ""
    h = hashlib.blake2b(digest_size=12)
    h.update("|".join((version("transformers"), *extra)).encode())
    for name in names:
        f = folder / name
        h.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"-") + b"\0")
    return h.hexdigest()


def _tokenizer_files_key(model_path: str, cfg: Config) -> str:
    """A cheap key for "same tokenizer as last time": the tokenizer files' bytes + language, task, normalization.
    "" for hub ids (the tokenizer is then loaded and fingerprinted every run)."""
    from .labels import LABEL_CODE_VERSION

    return _files_key(model_path, TOKENIZER_FILES, LABEL_CODE_VERSION, cfg.model.language, cfg.model.task,
                      cfg.features.text_normalization)


def _load_feature_extractor(model_path: str, spec: str):
    from transformers import WhisperFeatureExtractor

    from .errors import ModelError

    try:
        return WhisperFeatureExtractor.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the feature extractor of --model {spec}: {str(err).splitlines()[0]}") from None


class _Progress:
    def __init__(self, total: int) -> None:
        self.bar = None
        if total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="clip", desc="features", dynamic_ncols=True, file=sys.stderr,
                            smoothing=0.1, mininterval=0.5)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_features(*, work_dir: Path, cfg: Config, part: tuple[int, int] | None = None,
                 echo: bool = True) -> FeaturesResult:
    """Bring WORK/cache up to date with the manifest and config (see the module doc)."""
    from .labels import LabelError, make_labels, tokenizer_fingerprint
    from .augment import Augmenter, augment_fingerprint
    from .features import FEATURE_CODE_VERSION, LogMel
    from .models import load_processor, resolve_model

    started = time.perf_counter()
    work_dir = Path(work_dir)
    say = print if echo else (lambda *a, **k: None)
    df = read_usable_manifest(work_dir)
    if part is not None:
        df = df.filter([part_of(c, part[1]) == part[0] for c in df["id"].to_list()])

    # Settings and fingerprints (everything a stored item depends on). Heavy tools (torch, transformers,
    # audiomentations) load only when needed: a run with nothing to do never imports them.
    model_path = resolve_model(cfg.model.name)
    aug_fp = augment_fingerprint(cfg.augment.transforms, cfg.augment.seed)
    feat_key = _files_key(model_path, FEATURE_FILES, FEATURE_CODE_VERSION)
    tok_key = _tokenizer_files_key(model_path, cfg)
    tools: dict[str, Any] = {}

    def get_logmel():
        if "logmel" not in tools:
            fe = _load_feature_extractor(model_path, cfg.model.name)
            try:
                tools["logmel"] = LogMel.from_feature_extractor(fe)
            except ValueError as err:
                raise ConfigError(f"--model {cfg.model.name}: {err}") from None
            tools["mel_filters"] = np.asarray(fe.mel_filters)
        return tools["logmel"]

    def get_augmenter():
        if "augmenter" not in tools:
            tools["augmenter"] = Augmenter(cfg.augment.transforms, cfg.augment.seed)   # ConfigError for bad names
        return tools["augmenter"]

    def get_tokenizer():
        """The model's tokenizer (prefix set); loaded only when labels or its fingerprint are needed."""
        if "tokenizer" not in tools:
            tools["tokenizer"] = load_processor(model_path, cfg.model.language, cfg.model.task).tokenizer
        return tools["tokenizer"]

    audio_fp = _digest(AUDIO_CODE_VERSION, SAMPLE_RATE_HZ, float(cfg.audio.trim_top_db), bool(cfg.audio.peak_normalize))
    n_variants = int(cfg.augment.variants)

    cache_dir = work_dir / CACHE_DIRNAME
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = shard_prefix(part)
    with ExitStack() as locks:
        for lock in CacheLock.for_run(cache_dir, part):
            locks.enter_context(lock)
        _remove_tmp_files(cache_dir, prefix, part)
        try:
            previous = load_merged_index(cache_dir) or CacheIndex()
        except CacheError as err:
            say(f"features: ignoring the old index ({err}); rebuilding")
            previous = CacheIndex()
        # Label identity: the tokenizer files' key when the model is a folder (no need to load the tokenizer to
        # know nothing changed), else the loaded tokenizer's fingerprint.
        tok_fp = ""
        if tok_key and previous.meta.get("tokenizer_key") == tok_key and previous.meta.get("tokenizer_fingerprint"):
            tok_fp = str(previous.meta["tokenizer_fingerprint"])   # same tokenizer files, language, task, mode
        elif not tok_key:
            tok_fp = tokenizer_fingerprint(get_tokenizer(), cfg.features.text_normalization)
        tok_ident = tok_key or tok_fp
        pm = previous.meta
        if feat_key and pm.get("feature_key") == feat_key and pm.get("feature_fingerprint") and pm.get("n_mels"):
            feat_fp, n_mels = str(pm["feature_fingerprint"]), int(pm["n_mels"])   # same feature settings files
        else:
            feat_fp, n_mels = get_logmel().fingerprint, get_logmel().n_mels
        if pm.get("augment_fingerprint") != aug_fp:
            get_augmenter()            # a changed chain is checked now, before any work
        good_shards, dropped = _check_shards(cache_dir, previous)
        orphans = _adoptable_rows(cache_dir, previous, prefix, part)

        index = CacheIndex(meta={
            "n_mels": n_mels, "variants": n_variants, "model": cfg.model.name,
            "tokenizer_fingerprint": tok_fp, "tokenizer_key": tok_key, "feature_fingerprint": feat_fp,
            "feature_key": feat_key, "augment_fingerprint": aug_fp, "audio_fingerprint": audio_fp,
            "text_normalization": cfg.features.text_normalization,
            "part": None if part is None else f"{part[0]}/{part[1]}",
        })
        index.shards = dict(good_shards)
        adopted: set[str] = set()

        def ref_ok(ref: dict[str, Any] | None, fp: str) -> bool:
            return bool(ref) and ref.get("fp") == fp and ref.get("shard") in index.shards

        def adopt(key: tuple[str, int | None], fp: str) -> dict[str, Any] | None:
            hit = orphans.get(key)
            if hit is None or hit[0]["fp"] != fp:
                return None
            ref, info = hit
            index.shards[info.name] = info
            adopted.add(info.name)
            return dict(ref)

        def _audio_skip_fp(clip_fp: str) -> str:
            return _digest("skip", clip_fp, feat_fp, aug_fp, n_variants)

        # Plan: what each clip needs.
        jobs: list[ClipJob] = []
        label_todo: list[tuple[str, str]] = []
        skipped: list[tuple[str, str]] = []
        reused = 0
        ids = df["id"].to_list()
        paths = df["path"].to_list()
        texts = df["text"].to_list()
        splits = df["split"].to_list()
        for cid, path, text, split in zip(ids, paths, texts, splits):
            old = previous.clips.get(cid, {})
            try:
                source = _source_record(path, old.get("source") or previous.skipped.get(cid, {}).get("source"))
            except OSError as err:
                skipped.append((cid, f"cannot read audio file ({err.strerror or err})"))
                continue
            clip_fp = _digest(source["hash"], audio_fp)
            lab_fp = _digest("labels", tok_ident, text)
            old_skip = previous.skipped.get(cid)
            if old_skip and old_skip.get("fp") in (_audio_skip_fp(clip_fp), lab_fp):   # known bad, unchanged
                index.skipped[cid] = dict(old_skip, source=source)
                skipped.append((cid, old_skip["reason"]))
                continue
            entry: dict[str, Any] = {"split": split, "text": text, "source": source, "variants": {}}
            lab_ref = old.get("labels")
            if ref_ok(lab_ref, lab_fp):
                entry["labels"] = lab_ref
            elif (hit := adopt((cid, None), lab_fp)) is not None:
                entry["labels"] = hit
            else:
                label_todo.append((cid, text))
            need: list[tuple[int, str]] = []
            for v in range(n_variants if split == "train" else 1):   # held-out clips are only scored: clean only
                fp = _digest("features", clip_fp, feat_fp, v, aug_fp if v else "clean")
                ref = old.get("variants", {}).get(str(v))
                if ref_ok(ref, fp):
                    entry["variants"][str(v)] = ref
                    reused += 1
                elif (hit := adopt((cid, v), fp)) is not None:
                    entry["variants"][str(v)] = hit
                    reused += 1
                else:
                    need.append((v, fp))
            index.clips[cid] = entry
            if need:
                jobs.append(ClipJob(cid, path, tuple(need)))

        # Labels (tokenizing is cheap; loading a tokenizer is not) run in a thread beside the audio work.
        max_bytes = max(1, int(cfg.features.shard_max_mb * 1024 * 1024))
        lab_rows: list[LabelRow] = []
        label_failures: list[tuple[str, str, str]] = []

        def compute_labels() -> str:
            fp = tok_fp or tokenizer_fingerprint(get_tokenizer(), cfg.features.text_normalization)
            for cid, text in label_todo:
                try:
                    lab = make_labels(text, get_tokenizer(), cfg.features.text_normalization)
                except LabelError as err:
                    label_failures.append((cid, str(err), _digest("labels", tok_ident, text)))
                    continue
                lab_rows.append(LabelRow(cid, lab.ids, lab.text, _digest("labels", tok_ident, text)))
            return fp

        shards_written = 0
        # Audio: parallel tasks; each finished task becomes shards + an index update.
        stats = {"decoded": 0, "computed": 0, "aliased": 0}
        last_save = [0.0]
        index_path = cache_dir / part_index_name(part)

        save_cost = [0.0]

        def save_index(force: bool = False) -> None:
            """Rewrite the index (atomically) at most every second, and never spend over ~10 % of the time on it
            (large indexes); shards written since the last save are adopted by the next run after a kill."""
            now = time.perf_counter()
            if force or now - last_save[0] >= max(INDEX_SAVE_INTERVAL_S, 10 * save_cost[0]):
                _prune_incomplete(index, keep_partial=True).save(index_path)
                last_save[0] = time.perf_counter()
                save_cost[0] = last_save[0] - now

        save_index(force=True)
        settings = None
        if jobs:
            get_logmel()
            settings = WorkerSettings(
                mel_filters=tools["mel_filters"], transforms=tuple(cfg.augment.transforms),
                augment_seed=int(cfg.augment.seed), trim_top_db=float(cfg.audio.trim_top_db),
                peak_normalize=bool(cfg.audio.peak_normalize), key=_digest(feat_fp, aug_fp, audio_fp),
            )
            get_augmenter()
        bar = _Progress(len(jobs))
        labels_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labels")
        labels_future: list[Future] = []
        try:
            for result in _run_tasks(jobs, settings, cfg,
                                     on_start=lambda: labels_future.append(labels_thread.submit(compute_labels))):
                stats["decoded"] += result.decoded
                stats["computed"] += result.computed
                stats["aliased"] += result.aliased
                for cid, reason in result.skipped:
                    clip = index.clips.pop(cid, None) or {}
                    skipped.append((cid, reason))
                    src = clip.get("source") or {}
                    index.skipped[cid] = {"reason": reason, "source": src,
                                          "fp": _audio_skip_fp(_digest(src.get("hash", ""), audio_fp))}
                for group in split_rows(result.rows, max_bytes):
                    info = write_shard(cache_dir, prefix, FEATURE_KIND, group)
                    index.shards[info.name] = info
                    shards_written += 1
                    for row, r in enumerate(group):
                        ref: dict[str, Any] = {"shard": info.name, "row": row, "fp": r.fingerprint}
                        if r.alias_of >= 0:
                            ref["alias"] = int(r.alias_of)
                        clip = index.clips.get(r.clip_id)
                        if clip is not None:
                            clip["variants"][str(r.variant)] = ref
                save_index()
                bar.update(result.decoded)
            if not labels_future:
                labels_future.append(labels_thread.submit(compute_labels))
            index.meta["tokenizer_fingerprint"] = labels_future[0].result()
        finally:
            bar.close()
            labels_thread.shutdown(wait=True)
        for group in split_rows(lab_rows, max_bytes):
            info = write_shard(cache_dir, prefix, LABEL_KIND, group)
            index.shards[info.name] = info
            shards_written += 1
            for row, r in enumerate(group):
                if r.clip_id in index.clips:
                    index.clips[r.clip_id]["labels"] = {"shard": info.name, "row": row, "fp": r.fingerprint}
        for cid, reason, fp in label_failures:
            clip = index.clips.pop(cid, None)
            if clip is not None:
                skipped.append((cid, reason))
                index.skipped[cid] = {"reason": reason, "source": clip.get("source", {}), "fp": fp}

        # Finish: forget removed clips and unreferenced shards, write the index, clean up.
        _prune_incomplete(index, keep_partial=False)
        index.prune_shards()
        index.save(index_path)
        previous_own = {c for c in previous.clips if part is None or part_of(c, part[1]) == part[0]}
        removed = len(previous_own - set(ids))
        if part is None:
            for p in cache_dir.glob(PART_INDEX_GLOB):
                p.unlink(missing_ok=True)
        _remove_unreferenced_shards(cache_dir, prefix, part)

    seconds = time.perf_counter() - started
    clips_total = len(ids)
    decoded = stats["decoded"]
    job_ids = {j.clip_id for j in jobs}
    cached = sum(1 for c in index.clips if c not in job_ids)
    if decoded == 0:
        msg = (f"features: no audio work needed: {len(index.clips)} clips, "
               f"{sum(len(e['variants']) for e in index.clips.values())} clip-variants cached"
               + (f"; {len(lab_rows)} labels re-tokenized" if lab_rows else "") + f" ({seconds:.1f} s)")
    else:
        msg = (f"features: {decoded} clips decoded, {stats['computed']} variants computed "
               f"({stats['aliased']} unchanged by augmentation, stored once), {reused} reused, "
               f"{len(lab_rows)} labels; {len(index.clips)} clips in {cache_dir} ({seconds:.1f} s, "
               f"{decoded / max(seconds, 1e-9):.1f} clips/s)")
    say(msg)
    if skipped:
        say(f"features: skipped {len(skipped)} clips:")
        for cid, reason in skipped:
            say(f"  {cid}: {reason}")
    return FeaturesResult(
        clips_total=clips_total, clips_cached=max(0, cached), clips_decoded=decoded,
        variants_computed=stats["computed"], variants_aliased=stats["aliased"], variants_reused=reused,
        labels_computed=len(lab_rows), shards_written=shards_written, shards_adopted=len(adopted),
        shards_dropped=dropped, clips_removed=max(0, removed), skipped=tuple(skipped), seconds=seconds,
        cache_dir=cache_dir, message=msg,
    )


def _run_tasks(jobs: list[ClipJob], settings: WorkerSettings | None, cfg: Config,
               on_start: Callable[[], None]) -> Iterable[TaskResult]:
    """Yield task results as they finish. Workers come from joblib's multiprocessing backend, which forks them:
    they inherit the libraries and the warmed-up log-mel/augmentation objects of this process instead of
    importing torch and audiomentations again (seconds per worker, more than a small run's whole work). Tasks go
    out in waves of one per worker, so a kill loses at most the tasks in flight; tasks shrink for small runs so
    that there are several waves (progress updates) and no worker idles for long."""
    if not jobs or settings is None:
        on_start()
        return
    n_jobs = max(1, int(cfg.features.jobs) or _usable_cores())
    # Tasks of batch_clips clips, smaller when there are few clips so that every worker gets several tasks.
    size = max(1, min(int(cfg.features.batch_clips), -(-len(jobs) // (4 * n_jobs))))
    tasks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    n_jobs = min(n_jobs, len(tasks))
    logmel, augmenter = _worker_tools(settings)   # built once here: forked workers inherit them, warmed up
    from . import audio  # noqa: F401
    warm = np.zeros(4_000, np.float32)
    warm[::50] = 0.5
    logmel(warm)
    if n_jobs == 1:
        on_start()
        for task in tasks:
            yield featurize_task(task, settings)
        return
    from joblib import Parallel, delayed

    import gc

    wave = n_jobs
    gc.freeze()   # fork-friendly (copy-on-write) and keeps joblib's gc.collect() at pool start cheap
    try:
        with Parallel(n_jobs=n_jobs, backend="multiprocessing", batch_size=1) as parallel:
            on_start()   # after the fork: threads started now are not copied into workers
            for start in range(0, len(tasks), wave):
                yield from parallel(delayed(featurize_task)(task, settings) for task in tasks[start:start + wave])
    finally:
        gc.unfreeze()


def _usable_cores() -> int:
    """Cores this process may run on (a container's or batch job's share, not the whole machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _source_record(path: str, old: dict[str, Any] | None) -> dict[str, Any]:
    st = os.stat(path)
    if old and old.get("path") == path and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
        return dict(old)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": file_checksum(path)}


def _prune_incomplete(index: CacheIndex, keep_partial: bool) -> CacheIndex:
    """Clips without labels or without a variant 0 are not readable; drop the whole entry at the end of a run.
    While running (keep_partial), the saved index holds what is done so far."""
    if not keep_partial:
        for cid in [c for c, e in index.clips.items() if not e.get("labels") or "0" not in e["variants"]]:
            del index.clips[cid]
    return index


def _check_shards(cache_dir: Path, index: CacheIndex) -> tuple[dict[str, ShardInfo], int]:
    """Shards that are present and intact. A shard whose size or mtime changed is re-checksummed."""
    good: dict[str, ShardInfo] = {}
    dropped = 0
    for name, info in index.shards.items():
        path = cache_dir / name
        try:
            st = path.stat()
        except FileNotFoundError:
            dropped += 1
            continue
        if st.st_size == info.size and st.st_mtime_ns == info.mtime_ns:
            good[name] = info
            continue
        if st.st_size == info.size and file_checksum(path) == info.checksum:
            good[name] = ShardInfo(name, info.kind, info.checksum, info.size, st.st_mtime_ns, info.rows)
            continue
        dropped += 1
        path.unlink(missing_ok=True)
    return good, dropped


def _adoptable_rows(cache_dir: Path, index: CacheIndex, prefix: str,
                    part: tuple[int, int] | None) -> dict[tuple[str, int | None], tuple[dict[str, Any], ShardInfo]]:
    """Rows of complete shards that no index lists (a run killed before its index caught up)."""
    out: dict[tuple[str, int | None], tuple[dict[str, Any], ShardInfo]] = {}
    for path in sorted(cache_dir.glob(f"*{SHARD_SUFFIX}")):
        if path.name in index.shards or (part is not None and not path.name.startswith(prefix + "-")):
            continue
        try:
            table = read_shard_table(path)
        except CacheError:
            path.unlink(missing_ok=True)
            continue
        st = path.stat()
        kind = FEATURE_KIND if f"-{FEATURE_KIND}-" in path.name else LABEL_KIND
        info = ShardInfo(path.name, kind, file_checksum(path), st.st_size, st.st_mtime_ns, table.num_rows)
        cols = table.to_pydict() if kind == LABEL_KIND else {
            k: table.column(k).to_pylist() for k in ("clip_id", "variant", "alias_of", "fingerprint")}
        for row in range(table.num_rows):
            ref: dict[str, Any] = {"shard": path.name, "row": row, "fp": cols["fingerprint"][row]}
            if kind == FEATURE_KIND:
                if cols["alias_of"][row] >= 0:
                    ref["alias"] = int(cols["alias_of"][row])
                out[(cols["clip_id"][row], int(cols["variant"][row]))] = (ref, info)
            else:
                out[(cols["clip_id"][row], None)] = (ref, info)
    return out


def _remove_tmp_files(cache_dir: Path, prefix: str, part: tuple[int, int] | None) -> None:
    """Leftovers of killed runs: never read, removed by the next run that owns them."""
    for path in cache_dir.glob(f"*{TMP_SUFFIX}"):
        if part is None or path.name.startswith(prefix + "-"):
            path.unlink(missing_ok=True)


def _remove_unreferenced_shards(cache_dir: Path, prefix: str, part: tuple[int, int] | None) -> None:
    merged = load_merged_index(cache_dir) or CacheIndex()
    used = merged.referenced_shards()
    for path in cache_dir.glob(f"*{SHARD_SUFFIX}"):
        if path.name in used:
            continue
        if part is None or path.name.startswith(prefix + "-"):
            path.unlink(missing_ok=True)
