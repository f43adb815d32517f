"""`whisper-tune evaluate`: WER / CER of a model (and optionally a baseline) on the cached clean clips.

Reads the feature cache only (variant 0 of each clip in the split) and the manifest for the original transcripts;
no audio library is imported. Both models decode exactly the same features, in batches, so a fine-tuned model,
its baseline and its CTranslate2 export compare like for like, speed included.

Scores, all in percent:
- wer, cer: on normalize_text'd reference and hypothesis (lowercase, no punctuation; every script kept),
- orthographic_wer: on the raw strings (case and punctuation count).

When the cache holds whole test recordings (`features` on a CSV of recordings), each is also decoded long-form
from its stored log-mel and scored against its joined cues: WER and the shares of segment starts / ends within
0.5 s of a cue's (train/inference/recordings.py), for the model and the baseline.
Beside them, on the cache's held-out non-speech clips (train/inference/hallucination.py): words emitted per clip,
and the share of outputs stuck in a repetition loop; the pool is no clip of a split, so no per-clip table shows it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.constants import HOP_LENGTH, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import CacheError, ConfigError
from whisper_tune.pipeline.core.fileio import atomic_write_json, atomic_write_text
from whisper_tune.pipeline.core.constants import SPLITS
from whisper_tune.pipeline.validate.manifest import split_name
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.pipeline.core.tokens import is_english
from whisper_tune.train.metrics import (char_error_rate, english_word_error_rate, orthographic_word_error_rate, word_error_rate,
                           error_counts)

from whisper_tune.train.inference.decode import Decoder, DecodeOptions, open_decoder
from whisper_tune.train.inference.hallucination import Hallucination, format_hallucination, hallucination
from whisper_tune.train.inference.outputs import check_output_file
from whisper_tune.train.inference.recordings import LongformScores, evaluate_recordings, format_longform
from whisper_tune.train.inference.unseen import UnseenScores, format_unseen, text_in_train_flags, unseen_scores

CLEAN_VARIANT = 0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelScores:
    model: str
    backend: str                 # transformers or ctranslate2
    clips: int
    wer: float                   # percent, normalized text
    cer: float                   # percent, normalized text
    orthographic_wer: float      # percent, raw text
    seconds: float               # decoding time (model loading excluded)
    clips_per_second: float
    real_time_factor: float = 0.0        # decoding seconds per second of audio (lower is faster)
    hypotheses: tuple[str, ...] = field(repr=False, default=())
    english_wer: float | None = None     # percent, Whisper's English normalizer (English models only)
    hallucination: Hallucination | None = None   # words on held-out non-speech clips, loops (None: no pool)


@dataclass(frozen=True)
class ClipResult:
    clip_id: str
    reference: str
    hypothesis: str
    wer: float                   # percent, normalized text
    errors: int                  # substitutions + deletions + insertions
    baseline_hypothesis: str | None = None


@dataclass(frozen=True)
class EvalResult:
    split: str
    clip_ids: tuple[str, ...]
    references: tuple[str, ...]
    scores: ModelScores
    baseline: ModelScores | None
    worst: tuple[ClipResult, ...]
    wrong_words: tuple[tuple[str, int], ...]     # reference words substituted or deleted, most frequent first
    per_clip: tuple[ClipResult, ...] = ()        # every clip, in clip id order
    unseen: UnseenScores | None = None           # WER apart on clips whose transcript is (not) in train
    longform: LongformScores | None = None       # whole test recordings decoded long-form from the cache
    baseline_longform: LongformScores | None = None

    @property
    def wer(self) -> float:
        return self.scores.wer

    @property
    def cer(self) -> float:
        return self.scores.cer

    def to_json(self) -> dict:
        s = self.scores
        out: dict = {
            "model": s.model, "backend": s.backend, "split": self.split, "clips": s.clips,
            "wer": s.wer, "cer": s.cer, "orthographic_wer": s.orthographic_wer,
            "seconds": s.seconds, "clips_per_second": s.clips_per_second, "real_time_factor": s.real_time_factor,
        }
        if s.english_wer is not None:
            out["english_wer"] = s.english_wer
            out["baseline_english_wer"] = self.baseline.english_wer if self.baseline is not None else None
        if self.baseline is not None:
            b = self.baseline
            out.update({
                "baseline": b.model, "baseline_backend": b.backend,
                "baseline_wer": b.wer, "baseline_cer": b.cer, "baseline_orthographic_wer": b.orthographic_wer,
                "baseline_seconds": b.seconds, "baseline_clips_per_second": b.clips_per_second,
                "baseline_real_time_factor": b.real_time_factor,
                "wer_difference": s.wer - b.wer, "cer_difference": s.cer - b.cer,
            })
        if s.hallucination is not None:
            out.update(s.hallucination.to_json())
        if self.baseline is not None and self.baseline.hallucination is not None:
            out.update(self.baseline.hallucination.to_json("baseline_"))
        out["unseen_text_wer"] = self.unseen.wer if self.unseen is not None else None
        out["unseen_text"] = asdict(self.unseen) if self.unseen is not None else None
        out["worst"] = [asdict(c) for c in self.worst]
        out["wrong_words"] = [{"word": w, "count": n} for w, n in self.wrong_words]
        out["per_clip"] = [asdict(c) for c in self.per_clip]
        out["longform"] = self.longform.to_json() if self.longform is not None else None
        out["baseline_longform"] = self.baseline_longform.to_json() if self.baseline_longform is not None else None
        return out


# ---------------------------------------------------------------- metrics (pure functions on strings)

def normalized(texts: Iterable[str]) -> list[str]:
    return [normalize_text(t, "basic") for t in texts]


def clip_results(ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str],
                 baseline_hyps: Sequence[str] | None = None) -> list[ClipResult]:
    """Per-clip normalized WER and word error count."""
    out = []
    for i, (cid, ref, hyp) in enumerate(zip(ids, refs, hyps)):
        count = error_counts([ref], [hyp], "word")
        out.append(ClipResult(cid, ref, hyp, count.percent, count.errors,
                              None if baseline_hyps is None else baseline_hyps[i]))
    return out


def worst_clips(results: Sequence[ClipResult], n: int) -> tuple[ClipResult, ...]:
    """The n clips with the highest WER (then most errors, then id); clips without errors are never listed."""
    bad = [r for r in results if r.errors > 0]
    bad.sort(key=lambda r: (-r.wer, -r.errors, r.clip_id))
    return tuple(bad[:max(0, n)])


def wrong_words(refs: Sequence[str], hyps: Sequence[str], top: int = 20) -> tuple[tuple[str, int], ...]:
    """Reference words most often substituted or deleted (normalized text), with their counts."""
    import jiwer

    counts: Counter[str] = Counter()
    for ref, hyp in zip(normalized(refs), normalized(hyps)):
        if not ref:
            continue
        o = jiwer.process_words(ref, hyp)
        words = o.references[0]
        for chunk in o.alignments[0]:
            if chunk.type in ("substitute", "delete"):
                counts.update(words[chunk.ref_start_idx:chunk.ref_end_idx])
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def score(label: str, backend: str, refs: Sequence[str], hyps: Sequence[str], seconds: float,
          audio_seconds: float = 0.0) -> ModelScores:
    """Corpus-level WER/CER on normalized text and orthographic WER on the raw strings (whisper_tune.train.metrics)."""
    clips = len(hyps)
    return ModelScores(
        model=label, backend=backend, clips=clips,
        wer=word_error_rate(refs, hyps), cer=char_error_rate(refs, hyps),
        orthographic_wer=orthographic_word_error_rate(refs, hyps),
        seconds=seconds, clips_per_second=clips / seconds if seconds > 0 else 0.0,
        real_time_factor=seconds / audio_seconds if audio_seconds > 0 else 0.0,
        hypotheses=tuple(hyps),
    )


def with_english_wer(scores: ModelScores, refs: Sequence[str]) -> ModelScores:
    return replace(scores, english_wer=english_word_error_rate(refs, scores.hypotheses))


# ---------------------------------------------------------------- decoding the cache

def feature_batches(cache, clip_ids: Sequence[str], batch_size: int,
                    frames: list[int] | None = None) -> Iterator[np.ndarray]:
    """Stacked float32 (batch, n_mels, 3000) features of the clean variant, batch by batch; the audio's own
    frame count (10 ms each, before padding) is added to frames[0] when given."""
    for start in range(0, len(clip_ids), batch_size):
        examples = [cache.get(cid, CLEAN_VARIANT) for cid in clip_ids[start:start + batch_size]]
        if frames is not None:
            frames[0] += sum(int(e.features.shape[1]) for e in examples)
        yield np.stack([e.padded() for e in examples]).astype(np.float32, copy=False)


def decode_all(decoder: Decoder, batches: Iterable[np.ndarray], *, progress: bool = True,
               total: int = 0) -> tuple[list[str], float]:
    """Hypotheses for every batch and the seconds spent in the model (feature reading excluded)."""
    hyps: list[str] = []
    seconds = 0.0
    for batch in batches:
        start = time.perf_counter()
        hyps.extend(decoder.decode(batch))
        seconds += time.perf_counter() - start
        if progress and total:
            print(f"\r  {decoder.label}: {len(hyps)}/{total} clips", end="", file=sys.stderr, flush=True)
    if progress and total:
        print(file=sys.stderr)
    return hyps, seconds


def references(cache, clip_ids: Sequence[str]) -> list[str]:
    """Raw transcripts, as the CSV has them (for orthographic WER), recorded in the cache index; the cached
    normalized text for clips of an index that predates it."""
    return [cache.transcript(cid) or normalized_transcript(cache, cid) for cid in clip_ids]


def normalized_transcript(cache, clip_id: str) -> str:
    """The transcript the labels were made from (normalized), stored with the clean variant."""
    return cache.get(clip_id, CLEAN_VARIANT).text


def evaluate_model(spec: str, cache, clip_ids: Sequence[str], refs: Sequence[str], *, options: DecodeOptions,
                   batch_size: int, backend: str = "auto", non_speech: Sequence = ()) -> ModelScores:
    """Scores on the clips; with non_speech (held-out pool clips) also the hallucination figures."""
    decoder = open_decoder(spec, options, backend=backend)
    n_mels = int(cache.meta.n_mels)
    if decoder.n_mels != n_mels:
        raise CacheError(
            f"the cache holds {n_mels}-mel features but --model {spec} expects {decoder.n_mels}; "
            f"rebuild it with `whisper-tune features --model {spec}` (or evaluate a model of the same family)"
        )
    frames = [0]
    hyps, seconds = decode_all(decoder, feature_batches(cache, clip_ids, batch_size, frames), total=len(clip_ids))
    scores = score(spec, decoder.backend, refs, hyps, seconds, audio_seconds=frames[0] * HOP_LENGTH / SAMPLE_RATE_HZ)
    if non_speech:
        scores = replace(scores, hallucination=hallucination(decoder, list(non_speech), batch_size=batch_size,
                                                             outputs=hyps))
    return scores


@dataclass(frozen=True)
class EvalSettings:
    """What one `evaluate` run does (the command's flags; [decode] and [model] come from cfg)."""
    model: str
    work_dir: Path = Path("work")
    cfg: Config = field(default_factory=Config)
    baseline: str | None = None
    split: str = "test"
    json_path: Path | None = None        # write the numbers as JSON here
    report_path: Path | None = None      # write a Markdown report here
    batch_size: int = 16
    worst: int = 10                      # worst clips listed
    max_new_tokens: int | None = None    # per clip (default: the decoder's whole context)


def run_evaluate(settings: EvalSettings) -> EvalResult:
    """Score the model (and the baseline) on the clean variant of every cached clip of the split; print the table,
    write the JSON / report when asked (both paths are checked before any decoding)."""
    from whisper_tune.pipeline.cache import CACHE_DIRNAME, open_cache
    from whisper_tune.pipeline.cache.coverage import uncached_note

    model, work_dir, cfg, baseline, split = (settings.model, Path(settings.work_dir), settings.cfg, settings.baseline,
                                             settings.split)
    json_path, report_path, batch_size, worst = (settings.json_path, settings.report_path, settings.batch_size,
                                                 settings.worst)
    check_output_file(json_path, "--json")
    check_output_file(report_path, "--report")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected 1 or more")
    given, split = split, split_name(split)            # as the CSV's split column: dev means validation
    if split not in SPLITS:
        raise ConfigError(f"--split {given}: expected {', '.join(SPLITS)} (dev, val or valid mean validation)")
    cache = open_cache(Path(work_dir))
    clip_ids = sorted(cache.clip_ids(split))
    uncached = uncached_note(work_dir, cache, split)      # an interrupted features run
    if uncached and not clip_ids:
        raise CacheError(uncached)
    if uncached:
        log.warning(f"warning: {uncached}")
    if not clip_ids:
        others = [s for s in SPLITS if s != split and cache.clip_ids(s)]
        share = "data.validation_share" if split == "validation" else "data.test_share"
        raise CacheError(
            f"the cache in {Path(work_dir) / CACHE_DIRNAME} has no clip in the {split!r} split; "
            + (f"pass --split {others[0]}, or " if others else "")
            + f"change {share} (or the CSV's split column) and re-run validate and features"
        )
    refs = references(cache, clip_ids)
    options = DecodeOptions.from_config(cfg, settings.max_new_tokens)
    backend = cfg.decode.backend
    non_speech = held_out_non_speech(Path(work_dir) / CACHE_DIRNAME)
    log.info(f"evaluating {len(clip_ids)} clips of the {split} split (clean variant)"
             + (f" and {len(non_speech)} held-out non-speech clips" if non_speech else ""))
    main = evaluate_model(model, cache, clip_ids, refs, options=options, batch_size=batch_size, backend=backend,
                          non_speech=non_speech)
    base = None
    if baseline:
        base = evaluate_model(baseline, cache, clip_ids, refs, options=options, batch_size=batch_size,
                              backend=backend, non_speech=non_speech)
    if is_english(cfg.model.language):   # Whisper's English normalizer too, as published numbers use
        main, base = with_english_wer(main, refs), with_english_wer(base, refs) if base else None
    per_clip = clip_results(clip_ids, refs, main.hypotheses, base.hypotheses if base else None)
    result = EvalResult(
        split=split, clip_ids=tuple(clip_ids), references=tuple(refs), scores=main, baseline=base,
        worst=worst_clips(per_clip, worst), wrong_words=wrong_words(refs, main.hypotheses), per_clip=tuple(per_clip),
        unseen=unseen_scores(text_in_train_flags(cache, clip_ids), clip_ids, refs, main.hypotheses,
                             base.hypotheses if base else None),
    )
    recording_ids = cache.recording_ids(split)
    if recording_ids:
        log.info(f"decoding {len(recording_ids)} {split} recordings whole (long-form, from the cache)")
        result = replace(result, longform=evaluate_recordings(model, cache, recording_ids, options=options),
                         baseline_longform=evaluate_recordings(baseline, cache, recording_ids, options=options)
                         if baseline else None)
    print(format_table(result))
    for flag, path, write in (("--json", json_path, lambda p: atomic_write_json(p, result.to_json())),
                              ("--report", report_path, lambda p: atomic_write_text(p, markdown_report(result)))):
        if path is None:
            continue
        try:
            write(Path(path))
        except OSError as err:       # a full disk is already a DiskFullError
            raise ConfigError(f"{flag} {path}: cannot write it ({err.strerror or err}); choose another {flag}") from None
        print(f"wrote {path}")
    return result


def held_out_non_speech(cache_dir: Path) -> list:
    """The held-out part of the cache's non-speech pool; [] (and a line saying so) for a cache without one."""
    from whisper_tune.pipeline.cache.nonspeech import HELDOUT, read_pool

    pool = read_pool(cache_dir)
    if pool is None or not pool.part(HELDOUT):
        log.info(f"no non-speech pool in {cache_dir}: no hallucination figures (a domain cache built before the "
                 f"pool existed gets one from `whisper-tune features --work {cache_dir.parent}`)")
        return []
    return pool.part(HELDOUT)


# ---------------------------------------------------------------- output

def _rows(result: EvalResult) -> list[tuple[str, ...]]:
    def row(s: ModelScores, name: str) -> tuple[str, ...]:
        return (name, s.backend, f"{s.wer:.2f}", f"{s.cer:.2f}", f"{s.orthographic_wer:.2f}",
                f"{s.clips_per_second:.2f}", f"{s.real_time_factor:.3f}")

    rows = [row(result.scores, result.scores.model)]
    if result.baseline is not None:
        b = result.baseline
        rows.append(row(b, f"{b.model} (baseline)"))
        s = result.scores
        rows.append(("difference (model - baseline)", "", f"{s.wer - b.wer:+.2f}", f"{s.cer - b.cer:+.2f}",
                     f"{s.orthographic_wer - b.orthographic_wer:+.2f}", "", ""))
    return rows


HEADER = ("model", "backend", "WER %", "CER %", "orth. WER %", "clips/s", "RTF")


def format_table(result: EvalResult) -> str:
    rows = [HEADER, *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [f"\n{result.scores.clips} clips, split {result.split!r}; WER/CER on normalized text, "
           "orthographic WER on raw text", *lines]
    if result.scores.english_wer is not None:
        base = result.baseline.english_wer if result.baseline is not None else None
        out.append(f"WER with Whisper's English normalizer: {result.scores.english_wer:.2f} %"
                   + (f" (baseline {base:.2f} %)" if base is not None else ""))
    if result.unseen is not None:
        out.append(format_unseen(result.unseen, result.split, result.scores.wer))
    if result.longform is not None:
        out.append(format_longform(result.longform, result.baseline_longform))
    if result.scores.hallucination is not None:
        base = result.baseline
        out.append(format_hallucination(result.scores.hallucination, base.hallucination if base else None,
                                        result.scores.model, base.model if base else ""))
    if result.worst:
        out.append(f"\nworst {len(result.worst)} clips (normalized WER):")
        for c in result.worst:
            out.append(f"  {c.wer:6.1f}%  {c.clip_id}")
            out.append(f"           ref: {c.reference}")
            out.append(f"           hyp: {c.hypothesis}")
            if c.baseline_hypothesis is not None:
                out.append(f"      baseline: {c.baseline_hypothesis}")
    if result.wrong_words:
        out.append("\nwords most often wrong (substituted or deleted): "
                   + ", ".join(f"{w} ({n})" for w, n in result.wrong_words[:15]))
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_report(result: EvalResult) -> str:
    s = result.scores
    lines = [f"# Evaluation: {_md(s.model)}", "",
             f"{s.clips} clips of the `{result.split}` split (clean variant of the feature cache). "
             "WER and CER on normalized text (lowercase, punctuation removed); orthographic WER on the raw text.",
             "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in _rows(result)]
    if result.unseen is not None:
        lines += ["", format_unseen(result.unseen, result.split, s.wer) + "."]
    if result.longform is not None:
        lines += ["", "## Long-form: whole test recordings", "", "```",
                  format_longform(result.longform, result.baseline_longform).strip(), "```"]
    if s.hallucination is not None:
        base = result.baseline
        lines += ["", format_hallucination(s.hallucination, base.hallucination if base else None, s.model,
                                           base.model if base else "").strip()]
    if result.worst:
        has_base = result.baseline is not None
        lines += ["", f"## Worst {len(result.worst)} clips", "",
                  "| clip | WER % | reference | hypothesis |" + (" baseline |" if has_base else ""),
                  "|---|---|---|---|" + ("---|" if has_base else "")]
        for c in result.worst:
            cells = [c.clip_id, f"{c.wer:.1f}", c.reference, c.hypothesis]
            if has_base:
                cells.append(c.baseline_hypothesis or "")
            lines.append("| " + " | ".join(_md(x) for x in cells) + " |")
    if result.wrong_words:
        lines += ["", "## Words most often wrong", "", "Reference words substituted or deleted, with counts.", "",
                  "| word | count |", "|---|---|"]
        lines += [f"| {_md(w)} | {n} |" for w, n in result.wrong_words]
    return "\n".join(lines) + "\n"
