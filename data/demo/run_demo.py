"""`make demo`: the whole job on the bundled data, showing that fine-tuning helps.

    python data/demo/run_demo.py --work work/demo

Runs the real stages, in order, on data/demo/ (clinical pharmacology dictation that Whisper tiny.en mis-hears):
import the bundled tiny.en, validate, featurize, score the base model on the held-out test split (voices and
sentence shapes never trained on), fine-tune on the CPU with a schedule sized for minutes (the best epoch is picked
on the validation split, never on the test split), score the fine-tuned model, and print both side by side with
example transcripts. A dozen everyday sentences (no jargon) are scored before and after too, to show that the
model did not forget ordinary English.

Outputs under WORK: domain/ (manifest, cache), everyday/ (same), model/ (the fine-tuned model), and summary.json.
It uses only the stages' public functions (the same ones the `whisper-tune` commands call), and runs the code of
the checkout it lies in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

DEFAULT_DATA = Path(__file__).resolve().parent
REPO_ROOT = DEFAULT_DATA.parent.parent
if str(REPO_ROOT) not in sys.path:  # run this checkout's code, installed or not
    sys.path.insert(0, str(REPO_ROOT))

from whisper_tune.pipeline.core.config import load_config  # noqa: E402
from whisper_tune.pipeline.core.constants import BUNDLED_MODEL  # noqa: E402
from whisper_tune.pipeline.core.errors import WhisperTuneError  # noqa: E402
from whisper_tune.pipeline.core.fileio import atomic_write_json  # noqa: E402
from whisper_tune.pipeline.core.system import peak_rss_mb, reset_peak_rss  # noqa: E402

DOMAIN_CSV = "final_generated_dataset.csv"
EVERYDAY_CSV = "everyday.csv"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class DemoSettings:
    """The demo's schedule: sized so the whole run takes minutes on two CPU cores."""

    model: str = BUNDLED_MODEL
    epochs: float = 2.0
    max_steps: int = -1                 # > 0 overrides epochs (the tests use 1-2)
    batch_size: int = 8
    learning_rate: float = 1e-4         # high for Whisper, right for a short decoder-only run on a small model
    warmup: float = 0.1
    lr_scheduler: str = "linear"
    weight_decay: float = 0.01
    freeze_encoder: bool = True         # the encoder is most of the CPU cost; the new words live in the decoder
    variants: int = 4                   # clean + three augmented variants per clip (each epoch picks one)
    eval_max_clips: int = 0             # validation clips decoded at each epoch's evaluation (0 = all 20)
    max_new_tokens: int = 64            # per clip when scoring (the base model's hallucinations stop here)
    eval_batch_size: int = 8
    examples: int = 4                   # test clips printed before/after
    seed: int = 42
    text_normalization: str = "none"    # train on the transcripts as written: Whisper's own cased, punctuated style
    lora_rank: int = 0                  # > 0: LoRA adapters of this rank instead of full fine-tuning (needs peft)
    pack: bool = True                   # several clips per 30 s window: 0.63x the CPU time, same goals met (README)
    packed_batch_size: int = 2          # windows per step when packed: about 10 clips, as 8 unpacked clips
    timestamp_prob: float = 0.2         # share of training windows labelled with timestamps


# Augmentation for the demo: the synthetic voices are few, so vary pitch and tempo too (cheap: features only).
DEMO_TRANSFORMS = (
    {"name": "PitchShift", "p": 0.5, "min_semitones": -2.0, "max_semitones": 2.0},
    {"name": "TimeStretch", "p": 0.5, "min_rate": 0.85, "max_rate": 1.15, "leave_length_unchanged": False},
    {"name": "AddGaussianNoise", "p": 0.3, "min_amplitude": 0.0005, "max_amplitude": 0.005},
    {"name": "Gain", "p": 0.3, "min_gain_db": -6.0, "max_gain_db": 6.0},
)


@dataclass(frozen=True)
class Scores:
    wer: float
    cer: float
    clips: int
    seconds: float


@dataclass(frozen=True)
class DemoResult:
    base_test: Scores
    tuned_test: Scores
    base_everyday: Scores | None
    tuned_everyday: Scores | None
    examples: tuple[tuple[str, str, str], ...]        # (reference, base, fine-tuned)
    timings: dict[str, float] = field(default_factory=dict)      # wall seconds per stage
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # this process's CPU seconds per stage
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # this process's peak resident memory per stage
    trainable: tuple[int, int] = (0, 0)                          # (trainable, total) parameters of the fine-tune
    model_dir: str = ""
    longform: dict[str, Any] = field(default_factory=dict)    # train/inference/longform.demo_longform

    @property
    def test_ratio(self) -> float:
        return self.tuned_test.wer / self.base_test.wer if self.base_test.wer > 0 else float("nan")

    @property
    def everyday_change(self) -> float | None:
        if self.base_everyday is None or self.tuned_everyday is None:
            return None
        return self.tuned_everyday.wer - self.base_everyday.wer

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["examples"] = [{"reference": r, "base": b, "fine_tuned": t} for r, b, t in self.examples]
        out["test_wer_ratio"] = self.test_ratio
        out["everyday_wer_change"] = self.everyday_change
        return out


def demo_config(settings: DemoSettings):
    """The stages' Config for the demo (every other setting is the default)."""
    s = settings
    return load_config(None, {
        "model.name": s.model,
        "data.group_column": "speaker",    # the CSV's split column pins every row; grouping keeps any new ones apart
        "augment.variants": s.variants, "augment.seed": s.seed, "augment.transforms": DEMO_TRANSFORMS,
        "training.epochs": s.epochs, "training.max_steps": s.max_steps,
        "training.batch_size": s.packed_batch_size if s.pack else s.batch_size,
        "training.eval_batch_size": s.eval_batch_size, "training.grad_accum": 1,
        "training.learning_rate": s.learning_rate, "training.warmup": s.warmup,
        "training.lr_scheduler": s.lr_scheduler, "training.weight_decay": s.weight_decay,
        "training.precision": "fp32", "training.gradient_checkpointing": False,
        "training.freeze_encoder": s.freeze_encoder, "training.early_stopping_patience": 0,
        "training.logging_steps": 5, "training.save_total_limit": 1, "training.dataloader_workers": 0,
        "training.eval_max_clips": s.eval_max_clips, "training.generation_max_length": s.max_new_tokens,
        "training.seed": s.seed, "features.text_normalization": s.text_normalization,
        "training.lora_rank": s.lora_rank,
        "training.pack": s.pack, "training.timestamp_prob": s.timestamp_prob,
    })


class Clock:
    """Wall time per stage, plus this process's CPU time (all its threads; worker processes not included)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        banner(name)
        reset_peak_rss()
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.cpu[name] = round(time.process_time() - cpu, 1)
        peak = peak_rss_mb()
        if peak is not None:
            self.peak_rss_mb[name] = round(peak, 1)
        print(f"[{name}: {self.timings[name]:.1f} s, CPU {self.cpu[name]:.1f} s]", flush=True)
        return out


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def check_data(data_dir: Path) -> tuple[Path, Path | None]:
    domain = data_dir / DOMAIN_CSV
    if not domain.is_file():
        raise WhisperTuneError(f"{domain} does not exist; pass --data with the folder that holds {DOMAIN_CSV} "
                               "(the repository ships it under data/demo/)")
    everyday = data_dir / EVERYDAY_CSV
    return domain, everyday if everyday.is_file() else None


def _validate_and_featurize(csv_path: Path, work_dir: Path, cfg) -> None:
    from whisper_tune.pipeline.featurize.stage import run_features
    from whisper_tune.pipeline.validate.stage import run_validate

    result = run_validate(csv_path=csv_path, work_dir=work_dir, cfg=cfg, use_model=True)
    if result.kept == 0:
        raise WhisperTuneError(f"no usable clip in {csv_path}; see {work_dir / 'manifest.parquet'}")
    run_features(work_dir=work_dir, cfg=cfg)


def _score(model: str, work_dir: Path, cfg, settings: DemoSettings):
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    return run_evaluate(EvalSettings(model=model, work_dir=work_dir, cfg=cfg, split="test", batch_size=settings.eval_batch_size,
                        worst=0, max_new_tokens=settings.max_new_tokens))


def _longform(domain_dir: Path, work_dir: Path, cfg, base: str, tuned: Path) -> dict[str, Any]:
    from whisper_tune.train.inference.longform import demo_longform

    from whisper_tune.pipeline.validate.manifest import read_manifest, usable

    rows = usable(read_manifest(domain_dir), "test").to_dicts()
    return demo_longform(rows, work_dir, cfg, {"base": base, "fine-tuned": str(tuned)})


def _scores(result) -> Scores:
    s = result.scores
    return Scores(wer=round(s.wer, 2), cer=round(s.cer, 2), clips=s.clips, seconds=round(s.seconds, 1))


def run_demo(*, work_dir: Path, data_dir: Path = DEFAULT_DATA, settings: DemoSettings = DemoSettings()) -> DemoResult:
    """Run every stage on the demo data and return (and print) the before/after numbers."""
    from whisper_tune.pipeline.models import resolve_model
    from whisper_tune.train.trainer import run_train

    work_dir = Path(work_dir)
    domain_csv, everyday_csv = check_data(Path(data_dir))
    domain_dir, everyday_dir, model_dir = work_dir / "domain", work_dir / "everyday", work_dir / "model"
    cfg = demo_config(settings)
    clock = Clock()
    total_start = time.perf_counter()

    base = clock.run(f"import {settings.model}", lambda: resolve_model(settings.model))
    print(f"base model: {base}")
    clock.run("validate + features (domain)", lambda: _validate_and_featurize(domain_csv, domain_dir, cfg))
    if everyday_csv is not None:
        clean_only = demo_config(replace(settings, variants=1))  # only scored: no augmented variants
        clock.run("validate + features (everyday)",
                  lambda: _validate_and_featurize(everyday_csv, everyday_dir, clean_only))

    base_test = clock.run("base model on the test split", lambda: _score(settings.model, domain_dir, cfg, settings))
    base_every = None
    if everyday_csv is not None:
        base_every = clock.run("base model on everyday sentences",
                               lambda: _score(settings.model, everyday_dir, cfg, settings))

    if model_dir.exists():  # a fresh fine-tune every run: the demo shows the effect of one schedule
        shutil.rmtree(model_dir)
    clock.run("fine-tune (CPU)", lambda: run_train(work_dir=domain_dir, output_dir=model_dir, cfg=cfg, resume=False))
    trainable = trainable_parameters(base, cfg)

    tuned_test = clock.run("fine-tuned model on the test split",
                           lambda: _score(str(model_dir), domain_dir, cfg, settings))
    tuned_every = None
    if everyday_csv is not None:
        tuned_every = clock.run("fine-tuned model on everyday sentences",
                                lambda: _score(str(model_dir), everyday_dir, cfg, settings))
    longform = clock.run("long-form check (60-90 s recordings of test clips)",
                         lambda: _longform(domain_dir, work_dir, cfg, settings.model, model_dir))
    clock.timings["total"] = round(time.perf_counter() - total_start, 1)
    clock.cpu["total"] = round(time.process_time(), 1)

    examples = tuple(
        (ref, b, t) for ref, b, t in zip(base_test.references, base_test.scores.hypotheses,
                                         tuned_test.scores.hypotheses)
    )[: settings.examples]
    result = DemoResult(
        base_test=_scores(base_test), tuned_test=_scores(tuned_test),
        base_everyday=_scores(base_every) if base_every is not None else None,
        tuned_everyday=_scores(tuned_every) if tuned_every is not None else None,
        examples=examples, timings=clock.timings, cpu_seconds=clock.cpu, model_dir=str(model_dir),
        peak_rss_mb=clock.peak_rss_mb, trainable=trainable,
        longform=longform,
    )
    print(format_summary(result))
    atomic_write_json(work_dir / SUMMARY, result.to_json())
    print(f"\nwrote {work_dir / SUMMARY}; the fine-tuned model is in {model_dir}")
    return result


def trainable_parameters(base: str, cfg) -> tuple[int, int]:
    """(trainable, total) parameters of the demo's fine-tune: the base model set up as run_train sets it up."""
    from whisper_tune.train.lora import add_adapters, count_parameters, lora_settings
    from whisper_tune.train.model import load_model

    t = cfg.training
    model = load_model(base, gradient_checkpointing=False, freeze_encoder=t.freeze_encoder)
    return count_parameters(add_adapters(model, lora_settings(t)))


def format_summary(result: DemoResult) -> str:
    lines = ["", "=" * 72, "whisper-tune demo: clinical pharmacology dictation, Whisper tiny.en", "=" * 72,
             f"{'':34}{'base':>12}{'fine-tuned':>14}"]

    def row(label: str, base: Scores | None, tuned: Scores | None) -> None:
        if base is None or tuned is None:
            return
        lines.append(f"{label:34}{base.wer:>11.1f}%{tuned.wer:>13.1f}%")

    row(f"WER, test split ({result.base_test.clips} clips)", result.base_test, result.tuned_test)
    if result.base_everyday is not None:
        row(f"WER, everyday ({result.base_everyday.clips} clips)", result.base_everyday, result.tuned_everyday)
    lines.append(f"{'CER, test split':34}{result.base_test.cer:>11.1f}%{result.tuned_test.cer:>13.1f}%")
    lines.append("")
    lines.append(f"test WER after fine-tuning: {result.test_ratio:.2f} x the base model's")
    if result.everyday_change is not None:
        lines.append(f"everyday sentences (did the model forget ordinary English?): WER "
                     f"{result.everyday_change:+.1f} points")
    if result.longform:
        lf = result.longform
        lines.append(f"{'WER, long-form (' + str(lf['recordings']) + ' recordings)':34}{lf['base']['wer']:>11.1f}%"
                     f"{lf['fine-tuned']['wer']:>13.1f}%   glued words after: {len(lf['fine-tuned']['glued'])}")
    lines.append("")
    lines.append("examples from the test split (voices and sentence shapes never trained on):")
    for ref, base, tuned in result.examples:
        lines.append(f"  reference : {ref}")
        lines.append(f"  base      : {base.strip()}")
        lines.append(f"  fine-tuned: {tuned.strip()}")
        lines.append("")
    trainable, total = result.trainable
    if total:
        lines.append(f"trainable parameters: {trainable / 1e6:.2f} M of {total / 1e6:.2f} M "
                     f"({100 * trainable / total:.2f} %)")
    lines.append("time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items()))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[Path, Path, DemoSettings]:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="python data/demo/run_demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("work/demo"), help="work folder (default: work/demo)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with {DOMAIN_CSV} and {EVERYDAY_CSV}")
    p.add_argument("--model", default=d.model, help="base model (any --model form; default: bundled tiny.en)")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="> 0: stop after this many steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--variants", type=int, default=d.variants)
    p.add_argument("--eval-max-clips", type=int, default=d.eval_max_clips)
    p.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=d.freeze_encoder)
    p.add_argument("--lora-rank", type=int, default=d.lora_rank,
                   help="> 0: train LoRA adapters of this rank instead of every weight (needs peft)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for augmentation, data order and initialisation")
    p.add_argument("--text-normalization", choices=("none", "basic"), default=d.text_normalization,
                   help="how training transcripts are normalized (scores are always on normalized text)")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=d.pack,
                   help="pack several clips into each 30 s training window")
    p.add_argument("--timestamp-prob", type=float, default=d.timestamp_prob)
    a = p.parse_args(argv)
    settings = DemoSettings(model=a.model, epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size,
                            learning_rate=a.learning_rate, variants=a.variants, eval_max_clips=a.eval_max_clips,
                            freeze_encoder=a.freeze_encoder, text_normalization=a.text_normalization,
                            seed=a.seed, pack=a.pack, timestamp_prob=a.timestamp_prob,
                            lora_rank=a.lora_rank)
    return a.work, a.data, settings


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work, data, settings = parse_args(argv)
    try:
        run_demo(work_dir=work, data_dir=data, settings=settings)
    except WhisperTuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
