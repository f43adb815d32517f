"""`whisper-tune audit`: find train and validation rows whose label disagrees with their audio.

    result = run_audit(work_dir=Path("work"), model="bundled:tiny.en", cfg=cfg)   # writes WORK/audit.parquet
    rows, rules = score_rows(ids, labels, transcripts, seconds)                    # the pure scorer

The clean variant (0) of every cached train and validation clip is decoded with the given model, in batches, as
`evaluate` decodes (open_decoder and its feature batching); the cache alone is read, so the stage runs where the
GPU is. Each row is then scored against its own set, never against fixed limits (a domain set makes the base
model wrong on every jargon word, so its CER is high everywhere):

- CER between label and transcript (normalized text) above median + 2 x scaled MAD of the set's CERs (the median
  absolute deviation x 1.4826, which is the standard deviation for normal data; counted as at least 5 points, so a
  near-perfect model does not flag every small slip). A row labelled with another clip's sentence stands out there.
- speaking rate (label characters, spaces excluded, per second of trimmed audio) more than 4 x scaled MAD of the
  set's log rates from their median (a factor of at least e^0.6 = 1.8 either way).
- the label's compression ratio (bytes over zlib-compressed bytes, Whisper's repetition measure) over 2.4, or a
  phrase of 1 to 4 words said 3 or more times in a row.
- cut clips: the label matches (CER at most 10 %) the start or end of a transcript with 10 or more characters more
  (the audio goes on past the label), or the transcript matches the start or end of a longer label (the audio
  stops before the label does).

A row the CSV's `audit` column marks `ok` (recorded per clip in the cache) is never flagged. WORK/audit.parquet
holds one row per clip (COLUMNS); `train --skip-suspect` leaves the flagged ones out (whisper_tune.train.suspects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.constants import HOP_LENGTH, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import CacheError, ConfigError
from whisper_tune.pipeline.core.fileio import atomic_path
from whisper_tune.pipeline.core.text import compression_ratio, normalize_text
from whisper_tune.train.metrics import error_counts

AUDIT_NAME = "audit.parquet"
AUDITED_SPLITS = ("train", "validation")
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE_HZ     # one mel frame: 0.01 s
MAD_SCALE = 1.4826                  # MAD x this = standard deviation, for normal data
CER_K = 2.0                         # CER limit: median + CER_K x scaled MAD ...
CER_MIN_SPREAD = 5.0                # ... with the scaled MAD counted as at least this many CER points
RATE_K = 4.0                        # speaking rate: |log rate - median| above RATE_K x scaled MAD of log rates ...
RATE_MIN_SPREAD = 0.15              # ... with that MAD counted as at least this (log units)
COMPRESSION_LIMIT = 2.4             # Whisper's own limit for repetitive text
REPEAT_TIMES = 3                    # a phrase said this many times in a row ...
REPEAT_MAX_WORDS = 4                # ... of 1 to this many words
CUT_MIN_CHARS = 10                  # cut clips: the longer side has at least this many characters more ...
CUT_MATCH_CER = 10.0                # ... and the shorter one matches its start or end within this CER (percent)
DECODE_FACTOR = 2                   # decoding stops at twice the longest label's tokens (+ DECODE_SLACK): a longer
DECODE_SLACK = 16                   # transcript is a loop, flagged by its CER already, and only costs time

SUSPECT, OK, MARKED_OK = "suspect", "ok", "marked ok"
COLUMNS = ("row", "clip_id", "split", "label", "transcript", "seconds", "cer", "chars_per_second",
           "compression_ratio", "verdict", "reason")


@dataclass(frozen=True)
class Rules:
    """The set's own limits, as the summary states them."""

    cer_median: float               # percent
    cer_limit: float                # percent: above it, flagged
    rate_median: float              # characters per second
    rate_low: float
    rate_high: float

    def describe(self) -> str:
        return (f"CER above median + {CER_K:g} x scaled MAD (MAD x {MAD_SCALE}, at least {CER_MIN_SPREAD:g} points): "
                f"median {self.cer_median:.1f} %, limit {self.cer_limit:.1f} %; speaking rate outside "
                f"{self.rate_low:.1f}-{self.rate_high:.1f} chars/s (median {self.rate_median:.1f}, "
                f"{RATE_K:g} x scaled MAD of log rates); label compression ratio over {COMPRESSION_LIMIT:g} or a "
                f"phrase of 1-{REPEAT_MAX_WORDS} words {REPEAT_TIMES}+ times in a row; label and transcript "
                f"matching at one end with {CUT_MIN_CHARS}+ characters more on one side (cut clip)")


@dataclass(frozen=True)
class RowAudit:
    clip_id: str
    label: str                      # normalized, as scored
    transcript: str                 # normalized, as scored
    seconds: float                  # trimmed audio
    cer: float                      # percent
    chars_per_second: float
    compression_ratio: float
    verdict: str                    # SUSPECT, OK or MARKED_OK
    reason: str                     # what was found, in words ("" when nothing)
    split: str = ""
    row: int | None = None          # the CSV's data row, when the manifest is at hand


# ---------------------------------------------------------------- the pure scorer

def repeated_phrase(text: str) -> str:
    """The first phrase of 1..REPEAT_MAX_WORDS words said REPEAT_TIMES or more times in a row ("" when none)."""
    words = text.split()
    for n in range(1, REPEAT_MAX_WORDS + 1):
        for start in range(len(words) - n * REPEAT_TIMES + 1):
            phrase = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == phrase for k in range(1, REPEAT_TIMES)):
                return " ".join(phrase)
    return ""


def _cer(ref: str, hyp: str) -> float:
    return error_counts([ref], [hyp], "char", "none").percent


def cut_side(label: str, transcript: str) -> str:
    """Which side a cut clip lost, in words, or "": the shorter text matching one end of the longer one."""
    short, long_ = sorted((label, transcript), key=len)
    if len(long_) - len(short) < CUT_MIN_CHARS or len(short) < CUT_MIN_CHARS:
        return ""
    n = len(short)
    if min(_cer(short, long_[:n]), _cer(short, long_[-n:])) > CUT_MATCH_CER:
        return ""
    if len(label) < len(transcript):
        return "the label matches one end of a longer transcript: the audio says more than the label (label cut?)"
    return "the transcript matches one end of a longer label: the audio stops before the label does (audio cut?)"


def _median_and_spread(values: np.ndarray, floor: float) -> tuple[float, float]:
    median = float(np.median(values))
    return median, max(MAD_SCALE * float(np.median(np.abs(values - median))), floor)


def set_rules(cers: Sequence[float], rates: Sequence[float]) -> Rules:
    """Limits from the set's own CERs (percent) and speaking rates (characters per second, > 0)."""
    cer_median, cer_spread = _median_and_spread(np.asarray(cers, float), CER_MIN_SPREAD)
    positive = [r for r in rates if r > 0] or [1.0]
    log_median, log_spread = _median_and_spread(np.log(np.asarray(positive, float)), RATE_MIN_SPREAD)
    return Rules(cer_median=cer_median, cer_limit=cer_median + CER_K * cer_spread, rate_median=math.exp(log_median),
                 rate_low=math.exp(log_median - RATE_K * log_spread), rate_high=math.exp(log_median + RATE_K * log_spread))


def score_rows(clip_ids: Sequence[str], labels: Sequence[str], transcripts: Sequence[str],
               seconds: Sequence[float], marked_ok: Collection[str] = ()) -> tuple[list[RowAudit], Rules]:
    """Score every row against the set's own distribution (module doc); a pure function of its arguments.
    Labels and transcripts are normalized here (normalize_text "basic"), seconds are of trimmed audio."""
    if not len(clip_ids) == len(labels) == len(transcripts) == len(seconds):
        raise ValueError("clip_ids, labels, transcripts and seconds must pair up one to one")
    labels = [normalize_text(t) for t in labels]
    transcripts = [normalize_text(t) for t in transcripts]
    cers = [_cer(lab, hyp) for lab, hyp in zip(labels, transcripts)]
    rates = [len(lab.replace(" ", "")) / s if s > 0 else 0.0 for lab, s in zip(labels, seconds)]
    rules = set_rules(cers, rates)
    rows = []
    for cid, lab, hyp, sec, cer, rate in zip(clip_ids, labels, transcripts, seconds, cers, rates):
        ratio = compression_ratio(lab)
        reasons = _reasons(lab, hyp, cer, rate, ratio, rules)
        verdict = OK if not reasons else MARKED_OK if cid in marked_ok else SUSPECT
        rows.append(RowAudit(cid, lab, hyp, float(sec), cer, rate, ratio, verdict, "; ".join(reasons)))
    return rows, rules


def _reasons(label: str, transcript: str, cer: float, rate: float, ratio: float, rules: Rules) -> list[str]:
    out = []
    if cer > rules.cer_limit:
        out.append(f"CER {cer:.0f} % (the set's median {rules.cer_median:.0f} %, limit {rules.cer_limit:.0f} %)")
    if not rules.rate_low <= rate <= rules.rate_high:
        out.append(f"speaking rate {rate:.1f} chars/s (the set's {rules.rate_low:.1f}-{rules.rate_high:.1f})")
    if ratio > COMPRESSION_LIMIT:
        out.append(f"label compression ratio {ratio:.1f} (over {COMPRESSION_LIMIT:g}: repetitive)")
    phrase = repeated_phrase(label)
    if phrase:
        out.append(f"label says {phrase!r} {REPEAT_TIMES}+ times in a row")
    cut = cut_side(label, transcript)
    if cut:
        out.append(cut)
    return out


# ---------------------------------------------------------------- the stage

@dataclass(frozen=True)
class AuditResult:
    path: Path
    model: str
    rows: tuple[RowAudit, ...]
    rules: Rules

    @property
    def flagged(self) -> list[RowAudit]:
        return [r for r in self.rows if r.verdict == SUSPECT]


def audit_path(work_dir: Path | str) -> Path:
    return Path(work_dir) / AUDIT_NAME


def run_audit(*, work_dir: Path, model: str, cfg: Config, batch_size: int = 16, worst: int = 10,
              max_new_tokens: int | None = None) -> AuditResult:
    """Decode the clean variant of every cached train and validation clip with `model`, score the rows, write
    WORK/audit.parquet atomically and print the summary with the worst rows. max_new_tokens: per clip (default:
    twice the longest label, see DECODE_FACTOR)."""
    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.train.inference.decode import DecodeOptions
    from whisper_tune.train.inference.evaluate import evaluate_model, references

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected 1 or more")
    work_dir = Path(work_dir)
    cache = open_cache(work_dir)
    ids = [cid for split in AUDITED_SPLITS for cid in sorted(cache.clip_ids(split))]
    if not ids:
        raise CacheError(f"the cache in {work_dir / 'cache'} has no train or validation clip to audit; re-run "
                         "`whisper-tune validate` and `whisper-tune features`")
    labels = references(cache, ids)
    print(f"auditing {len(ids)} clips (train and validation, clean variant) with {model}", flush=True)
    options = DecodeOptions(language=cfg.model.language, task=cfg.model.task)
    longest = max(len(cache.get(cid, 0).labels) for cid in ids)
    options = replace(options, max_new_tokens=max_new_tokens if max_new_tokens is not None else
                      min(options.max_new_tokens, DECODE_FACTOR * longest + DECODE_SLACK))
    decoded = evaluate_model(model, cache, ids, labels, options=options, batch_size=batch_size)
    seconds = [cache.get(cid, 0).features.shape[1] * FRAME_SECONDS for cid in ids]
    rows, rules = score_rows(ids, labels, decoded.hypotheses, seconds,
                             marked_ok={cid for cid in ids if cache.audit_ok(cid)})
    csv_rows = _csv_rows(work_dir)
    rows = [replace(r, split=cache.split_of(r.clip_id), row=csv_rows.get(r.clip_id)) for r in rows]
    result = AuditResult(path=audit_path(work_dir), model=model, rows=tuple(rows), rules=rules)
    write_audit(result.path, result.rows)
    print(format_summary(result, worst))
    return result


def _csv_rows(work_dir: Path) -> dict[str, int]:
    """clip id -> the CSV's data row, from the manifest when it is at hand (the cache alone does not say)."""
    from whisper_tune.pipeline.core.errors import ManifestError
    from whisper_tune.pipeline.validate.manifest import read_manifest

    try:
        frame = read_manifest(work_dir)
    except ManifestError:
        return {}
    return dict(zip(frame["id"].to_list(), frame["csv_row"].to_list()))


def write_audit(path: Path, rows: Sequence[RowAudit]) -> None:
    import polars as pl

    frame = pl.DataFrame({
        "row": [r.row for r in rows], "clip_id": [r.clip_id for r in rows], "split": [r.split for r in rows],
        "label": [r.label for r in rows], "transcript": [r.transcript for r in rows],
        "seconds": [r.seconds for r in rows], "cer": [r.cer for r in rows],
        "chars_per_second": [r.chars_per_second for r in rows],
        "compression_ratio": [r.compression_ratio for r in rows],
        "verdict": [r.verdict for r in rows], "reason": [r.reason for r in rows],
    }, schema={"row": pl.Int64, "clip_id": pl.String, "split": pl.String, "label": pl.String,
               "transcript": pl.String, "seconds": pl.Float64, "cer": pl.Float64, "chars_per_second": pl.Float64,
               "compression_ratio": pl.Float64, "verdict": pl.String, "reason": pl.String})
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def format_summary(result: AuditResult, worst: int = 10) -> str:
    rows = result.rows
    flagged = result.flagged
    marked = sum(1 for r in rows if r.verdict == MARKED_OK)
    by_split = {s: sum(1 for r in rows if r.split == s) for s in AUDITED_SPLITS}
    lines = [f"\naudit of {len(rows)} rows ({', '.join(f'{n} {s}' for s, n in by_split.items())}) against "
             f"{result.model}",
             f"rules: {result.rules.describe()}",
             f"flagged: {len(flagged)} of {len(rows)} rows ({_share(len(flagged), len(rows))})"
             + (f"; {marked} more marked ok in the CSV's audit column" if marked else "")]
    kinds = _kind_counts(flagged)
    if kinds:
        lines.append("  " + ", ".join(f"{k}: {n}" for k, n in kinds.items()))
    lines.append(f"wrote {result.path}")
    shown = sorted(flagged, key=lambda r: (-r.cer, r.clip_id))[:max(0, worst)]
    if shown:
        lines.append(f"\nworst {len(shown)} flagged rows (highest CER first):")
        for r in shown:
            where = f"row {r.row}" if r.row is not None else r.clip_id
            lines += [f"  {where} ({r.split}, clip {r.clip_id}): {r.reason}",
                      f"      label     : {r.label}",
                      f"      transcript: {r.transcript}"]
    if flagged:
        lines.append("\nFix the labels in the CSV, or write ok in an `audit` column for rows that are right (then "
                     "re-run validate and features); `whisper-tune train --skip-suspect` leaves the flagged rows out.")
    return "\n".join(lines)


def _share(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f} %" if total else "0 %"


def _kind_counts(rows: Sequence[RowAudit]) -> dict[str, int]:
    kinds = {"CER": "CER ", "speaking rate": "speaking rate", "repetitive label": "label compression",
             "repeated phrase": "label says", "cut clip": "cut?"}
    return {k: n for k, needle in kinds.items() if (n := sum(1 for r in rows if needle in r.reason))}
