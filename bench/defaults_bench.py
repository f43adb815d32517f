"""Benchmark: which training defaults win on both sides on the demo (domain test WER and everyday-sentence WER).

    .venv/bin/python bench/defaults_bench.py [--work work/defaults-bench] [--rows base,unpacked,...] [--keep]

Builds the demo's features cache ONCE (data/demo/, demo.toml's augmentation) and the everyday sentences' (clean
only), scores the base model, then trains each row's setting from that one cache, sequentially, and scores it
on the demo's test split and on the everyday sentences. Every row has demo.toml's learning rate, epochs, seed
and timestamp share; only the settings named in ROWS change:

    unpacked    one clip per window, 8 clips per step, decoder only
    packed      packed windows, 2 windows per step, decoder only (demo.toml before this measurement)
    clips       packed windows counted in clips (training.batch_unit = "clips"), 8 clips per step, decoder only
    full        the winner of the three, encoder trained too (freeze_encoder = false)
    specaug     the winner of the three (or of it and `full`), SpecAugment on (training.spec_augment)
    ns-S        demo.toml's settings (the `clips` row) with augment.no_speech_share = S (--shares 0,0.05,...)

Besides the WERs, each row records the train stage's own figures from its metrics.json (the picked epoch's
validation WER and words per held-out non-speech clip, and the last epoch's) and `evaluate`'s words per held-out
non-speech clip (the test scoring's non-speech check), and its non-speech windows per epoch.

The winner is the row no worse than every other on both WERs; when none is, the one whose everyday WER is no
worse than the base model's with the lowest domain WER (`pick`). Prints one table and writes WORK/results.json
(one entry per row: settings, WERs, optimizer steps, training seconds). --keep reuses the rows results.json
already holds with the same settings (a run cut short goes on where it stopped); the cache is reused whenever
its fingerprint still matches, as the features stage always does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data" / "demo"))

DECODER_ONLY = {"training.freeze_encoder": True}
BASE_ROWS: dict[str, dict[str, Any]] = {
    "unpacked": {"training.pack": False, "training.batch_size": 8, "training.batch_unit": "windows", **DECODER_ONLY},
    "packed": {"training.pack": True, "training.batch_size": 2, "training.batch_unit": "windows", **DECODER_ONLY},
    "clips": {"training.pack": True, "training.batch_size": 8, "training.batch_unit": "clips", **DECODER_ONLY},
}
ROW_ORDER = ("base", "unpacked", "packed", "clips", "full", "specaug")
SHARE = "augment.no_speech_share"
LABELS = {
    "base": "base tiny.en",
    "unpacked": "unpacked, 8 clips/step",
    "packed": "packed, 2 windows/step",
    "clips": "packed, 8 clips/step (batch_unit clips)",
}


def pick(rows: dict[str, dict[str, Any]], base_everyday: float) -> str:
    """The row best on both WERs (see the module doc). rows: name -> {"test_wer", "everyday_wer"}."""
    names = list(rows)
    for name in names:
        r = rows[name]
        if all(r["test_wer"] <= o["test_wer"] and r["everyday_wer"] <= o["everyday_wer"] for o in rows.values()):
            return name
    safe = [n for n in names if rows[n]["everyday_wer"] <= base_everyday]
    if safe:
        return min(safe, key=lambda n: rows[n]["test_wer"])
    return min(names, key=lambda n: rows[n]["everyday_wer"])


def build_caches(work: Path, cfg) -> tuple[Path, Path]:
    from run_demo import DEFAULT_DATA, DOMAIN_CSV, EVERYDAY_CSV, _validate_and_featurize

    domain, everyday = work / "domain", work / "everyday"
    start = time.perf_counter()
    _validate_and_featurize(DEFAULT_DATA / DOMAIN_CSV, domain, cfg)
    clean_only = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, variants=1))
    _validate_and_featurize(DEFAULT_DATA / EVERYDAY_CSV, everyday, clean_only)
    print(f"[caches ready: {time.perf_counter() - start:.0f} s]", flush=True)
    return domain, everyday


def score(model: str, domain: Path, everyday: Path, cfg) -> dict[str, Any]:
    from run_demo import _score

    test, every = _score(model, domain, cfg), _score(model, everyday, cfg)
    held = test.scores.hallucination
    return {"test_wer": round(test.scores.wer, 2), "test_cer": round(test.scores.cer, 2),
            "everyday_wer": round(every.scores.wer, 2),
            "evaluate_nonspeech_words_per_clip": round(held.words_per_clip, 3) if held else None}


def train_figures(out: Path) -> dict[str, Any]:
    """The train stage's own figures from OUTPUT_DIR/metrics.json: the picked (lowest validation WER) epoch's and
    the last epoch's validation WER and words per held-out non-speech clip."""
    doc = json.loads((out / "metrics.json").read_text())
    epochs = [e for e in doc.get("epochs", []) if e.get("wer") is not None]
    if not epochs:
        return {}
    best, last = min(epochs, key=lambda e: e["wer"]), epochs[-1]
    fig = lambda e, k: round(e[k], 3) if e.get(k) is not None else None  # noqa: E731
    return {"validation_wer": fig(best, "wer"), "nonspeech_words_per_clip": fig(best, "nonspeech_words_per_clip"),
            "last_validation_wer": fig(last, "wer"), "last_nonspeech_words_per_clip": fig(last, "nonspeech_words_per_clip"),
            "base_nonspeech_words_per_clip": fig(doc.get("base", {}), "base_nonspeech_words_per_clip")}


def train_row(name: str, overrides: dict[str, Any], work: Path, domain: Path, everyday: Path) -> dict[str, Any]:
    import shutil

    from run_demo import demo_config
    from whisper_tune.train.trainer import run_train

    cfg = demo_config(overrides)
    out = work / "models" / name
    if out.exists():
        shutil.rmtree(out)
    print(f"\n=== {name}: {overrides} ===", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    result = run_train(work_dir=domain, output_dir=out, cfg=cfg, resume=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    row = {"settings": overrides, "steps": result.global_step, "train_seconds": round(seconds, 1),
           "train_cpu_seconds": round(cpu, 1), "train_examples": result.train_clips,
           "non_speech_windows": non_speech_windows(domain, cfg),
           **train_figures(out), **score(str(out), domain, everyday, cfg)}
    print(f"[{name}: test WER {row['test_wer']:.1f} %, everyday WER {row['everyday_wer']:.1f} %, "
          f"{row.get('nonspeech_words_per_clip')} words per non-speech clip, {row['steps']} steps, "
          f"{seconds:.0f} s]", flush=True)
    return row


def non_speech_windows(domain: Path, cfg) -> int:
    """Non-speech windows per epoch that `train` gives this config on this cache (its log says so too)."""
    import re

    from whisper_tune.pipeline.cache import open_cache
    from whisper_tune.pipeline.cache.nonspeech import read_pool
    from whisper_tune.pipeline.models import load_processor, resolve_model
    from whisper_tune.train.data import training_dataset
    from whisper_tune.train.nonspeech import empty_labels, share_unit, with_non_speech
    from whisper_tune.train.packing import planned_epochs

    t = cfg.training
    tok = load_processor(resolve_model(cfg.model.name), cfg.model.language, cfg.model.task).tokenizer
    speech = training_dataset(open_cache(domain), tok, seed=t.seed, pack=t.pack, timestamp_prob=0.0,
                              planned_epochs=planned_epochs(t.epochs, t.max_steps))
    _, note = with_non_speech(speech, read_pool(domain / "cache"), share=cfg.augment.no_speech_share,
                              labels=empty_labels(tok), seed=t.seed, unit=share_unit(t.pack, t.batch_unit))
    found = re.search(r"(\d+) per epoch", note)
    return int(found.group(1)) if found else 0


def share_row(name: str) -> float | None:
    """S of a row named ns-S, else None."""
    if not name.startswith("ns-"):
        return None
    try:
        return float(name[3:])
    except ValueError:
        raise SystemExit(f"row {name}: ns- takes a share, e.g. ns-0.05") from None


def settings_of(name: str, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The overrides of row `name`; `full` and `specaug` start from the winner so far (`clips`, demo.toml's
    settings, when no row of the three has been trained)."""
    if name in BASE_ROWS:
        return dict(BASE_ROWS[name])
    share = share_row(name)
    if share is not None:
        return {**BASE_ROWS["clips"], SHARE: share}
    base_everyday = done["base"]["everyday_wer"]
    trained = {n: done[n] for n in BASE_ROWS if n in done}
    winner = pick(trained, base_everyday) if trained else "clips"
    if name == "full":
        return {**BASE_ROWS[winner], "training.freeze_encoder": False}
    if "full" in done:
        both = {winner: done[winner], "full": done["full"]}
        winner = pick(both, base_everyday)
        return {**done[winner]["settings"], "training.spec_augment": True}
    return {**BASE_ROWS[winner], "training.spec_augment": True}


def label(name: str, row: dict[str, Any]) -> str:
    if name in LABELS:
        return LABELS[name] + (", decoder only" if name != "base" else "")
    s = row["settings"]
    kind = next((LABELS[n] for n, v in BASE_ROWS.items()
                 if all(s.get(k) == x for k, x in v.items() if k != "training.freeze_encoder")), "?")
    what = "full fine-tuning" if not s.get("training.freeze_encoder", True) else "decoder only"
    share = f", no_speech_share {s[SHARE]:g}" if SHARE in s else ""
    return f"{kind}, {what}" + (", SpecAugment" if s.get("training.spec_augment") else "") + share


def order(done: dict[str, dict[str, Any]]) -> list[str]:
    return [n for n in ROW_ORDER if n in done] + sorted((n for n in done if share_row(n) is not None), key=share_row)


def table(done: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'setting':84}{'test WER':>10}{'everyday':>10}{'val WER':>9}{'ns words':>9}{'ns win':>7}"
             f"{'steps':>7}{'train s':>9}"]
    num = lambda r, k, f: f.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
    base_words = next((r["base_nonspeech_words_per_clip"] for r in done.values()
                       if r.get("base_nonspeech_words_per_clip") is not None), None)
    for name in order(done):
        r = done[name]
        words = base_words if name == "base" else r.get("nonspeech_words_per_clip")
        lines.append(f"{label(name, r):84}{r['test_wer']:>9.1f}%{r['everyday_wer']:>9.1f}%"
                     f"{num(r, 'validation_wer', '{:.1f}%'):>9}{'-' if words is None else f'{words:.3f}':>9}"
                     f"{num(r, 'non_speech_windows', '{}'):>7}{num(r, 'steps', '{}'):>7}"
                     f"{num(r, 'train_seconds', '{:.0f}'):>9}")
    lines.append("(val WER and ns words: the picked epoch's validation WER and words per held-out non-speech clip in "
                 "train's metrics.json; ns win: non-speech windows per epoch)")
    trained = {n: done[n] for n in order(done) if n != "base"}
    if trained and "base" in done:
        lines.append(f"best on both (rule in bench/defaults_bench.py): {pick(trained, done['base']['everyday_wer'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("work/defaults-bench"))
    p.add_argument("--rows", default=None, help=f"comma-separated rows, of {', '.join(ROW_ORDER)} and ns-S "
                   "(default: all of the first, or only base with --shares)")
    p.add_argument("--keep", action="store_true", help="reuse rows results.json holds with the same settings")
    p.add_argument("--shares", default="", help="non-speech shares to train demo.toml's settings with, as rows "
                   "ns-S (e.g. 0,0.05,0.2); alone, only these rows run")
    a = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from run_demo import demo_config
    from whisper_tune.pipeline.core.fileio import atomic_write_json
    from whisper_tune.pipeline.models import resolve_model

    hf_logging.set_verbosity_error()
    given = a.rows if a.rows is not None else ("base" if a.shares else ",".join(ROW_ORDER))
    rows = [r.strip() for r in given.split(",") if r.strip()]
    rows += [f"ns-{float(x):g}" for x in a.shares.split(",") if x.strip()] if a.shares else []
    unknown = [r for r in rows if r not in ROW_ORDER and share_row(r) is None]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; choose from {', '.join(ROW_ORDER)}")
    a.work.mkdir(parents=True, exist_ok=True)
    results = a.work / "results.json"
    done: dict[str, dict[str, Any]] = json.loads(results.read_text()) if a.keep and results.is_file() else {}
    cfg = demo_config()
    resolve_model(cfg.model.name)
    domain, everyday = build_caches(a.work, cfg)
    if "base" not in done:
        done["base"] = score(cfg.model.name, domain, everyday, cfg)
        atomic_write_json(results, done)
    for name in rows:
        if name == "base":
            continue
        settings = settings_of(name, done)
        if name in done and done[name].get("settings") == settings:
            print(f"[{name}: kept from {results}]", flush=True)
            continue
        done[name] = train_row(name, settings, a.work, domain, everyday)
        atomic_write_json(results, done)
    print()
    print(table(done))
    print(f"\nwrote {results} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
