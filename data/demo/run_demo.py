"""`make demo`: the whole job on the bundled data, showing that fine-tuning helps.

    python data/demo/run_demo.py --work work/demo

Runs the real stages, in order, on data/demo/ (clinical pharmacology dictation that Whisper tiny.en mis-hears):
import the bundled tiny.en, validate, featurize, score the base model on the held-out test split (voices and
sentence shapes never trained on), fine-tune on the CPU with a schedule sized for minutes (the best epoch is picked
on the validation split, never on the test split), score the fine-tuned model, and print both side by side with
example transcripts. A dozen everyday sentences (no jargon) are scored before and after too (and by training at
every epoch, as its general set), to show that the model did not forget ordinary English, and so are held-out
clips without speech (the words a model invents on silence and noise).

Its settings are data/demo/demo.toml, a config file like any other (load_config reads it); each flag overrides one
value of it. Outputs under WORK: domain/ (manifest, cache), domain/general/ (the everyday set's), model/ (the fine-tuned model), and
summary.json. It uses only the stages' public functions (the same ones the `whisper-tune` commands call), and runs
the code of the checkout it lies in.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

DEFAULT_DATA = Path(__file__).resolve().parent
REPO_ROOT = DEFAULT_DATA.parent.parent
if str(REPO_ROOT) not in sys.path:  # run this checkout's code, installed or not
    sys.path.insert(0, str(REPO_ROOT))

from whisper_tune.pipeline.core.config import Config, load_config  # noqa: E402
from whisper_tune.pipeline.core.errors import WhisperTuneError  # noqa: E402
from whisper_tune.pipeline.core.fileio import atomic_write_json  # noqa: E402
from whisper_tune.pipeline.core.general import general_work  # noqa: E402
from whisper_tune.pipeline.core.system import peak_rss_mb, reset_peak_rss  # noqa: E402

DEMO_CONFIG = DEFAULT_DATA / "demo.toml"
DOMAIN_CSV = "final_generated_dataset.csv"
EVERYDAY_CSV = "everyday.csv"
SUMMARY = "summary.json"
UNPACKED_BATCH = 8                  # --no-pack without --batch-size: 8 clips per step, as the packed default

# The flags: each sets these config keys (its type comes from the config field, its default from demo.toml).
FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "--model": (("model.name",), "base model (any --model form)"),
    "--epochs": (("training.epochs",), "training epochs"),
    "--max-steps": (("training.max_steps",), "> 0: stop after this many steps"),
    "--batch-size": (("training.batch_size",), f"clips per step (windows when packed with --batch-unit windows; "
                                               f"--no-pack: {UNPACKED_BATCH})"),
    "--learning-rate": (("training.learning_rate",), "peak learning rate"),
    "--variants": (("augment.variants",), "feature variants per clip, the clean one included"),
    "--eval-max-clips": (("training.eval_max_clips",), "validation clips decoded per evaluation (0 = all)"),
    "--freeze-encoder": (("training.freeze_encoder",), "train the decoder only"),
    "--lora-rank": (("training.lora_rank",), "> 0: train LoRA adapters of this rank instead of every weight "
                                             "(needs peft)"),
    "--seed": (("augment.seed", "training.seed"), "seed for augmentation, data order and initialisation"),
    "--text-normalization": (("features.text_normalization",), "how training transcripts are normalized: none or "
                                                               "basic (scores are always on normalized text)"),
    "--pack": (("training.pack",), "pack several clips into each 30 s training window"),
    "--batch-unit": (("training.batch_unit",), "what a packed --batch-size counts: windows or clips"),
    "--timestamp-prob": (("training.timestamp_prob",), "share of training windows labelled with timestamps"),
    "--no-speech-share": (("augment.no_speech_share",), "share of training examples without speech (empty transcript; clips when the batch counts clips)"),
}


@dataclass(frozen=True)
class Scores:
    wer: float
    cer: float
    clips: int
    seconds: float
    nonspeech_words_per_clip: float | None = None    # on the held-out non-speech clips of the cache's pool
    nonspeech_clips_with_text: int | None = None
    nonspeech_clips: int | None = None
    loop_share: float | None = None                  # outputs stuck in a repetition loop


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


def demo_config(overrides: Mapping[str, Any] | None = None, path: Path = DEMO_CONFIG) -> Config:
    """The stages' Config for the demo: demo.toml with `overrides` ({"training.epochs": 1, ...}) on top."""
    return load_config(path, overrides)


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


def _score(model: str, work_dir: Path, cfg: Config):
    """Scores on the test split, with the training run's evaluation batch and generation length."""
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    t = cfg.training
    return run_evaluate(EvalSettings(model=model, work_dir=work_dir, cfg=cfg, split="test",
                                     batch_size=int(t.eval_batch_size), worst=0,
                                     max_new_tokens=t.generation_max_length))


def _longform(domain_dir: Path, work_dir: Path, cfg, base: str, tuned: Path) -> dict[str, Any]:
    from whisper_tune.train.inference.longform import demo_longform

    from whisper_tune.pipeline.validate.manifest import read_manifest, usable

    rows = usable(read_manifest(domain_dir), "test").to_dicts()
    return demo_longform(rows, work_dir, cfg, {"base": base, "fine-tuned": str(tuned)})


def _scores(result) -> Scores:
    s = result.scores
    h = s.hallucination
    return Scores(wer=round(s.wer, 2), cer=round(s.cer, 2), clips=s.clips, seconds=round(s.seconds, 1),
                  nonspeech_words_per_clip=round(h.words_per_clip, 3) if h else None,
                  nonspeech_clips_with_text=h.clips_with_text if h else None, nonspeech_clips=h.clips if h else None,
                  loop_share=round(h.split_loop_share, 3) if h else None)


def run_demo(*, work_dir: Path, data_dir: Path = DEFAULT_DATA, cfg: Config | None = None,
             examples: int = 4) -> DemoResult:
    """Run every stage on the demo data with `cfg` (default: demo.toml) and return (and print) the before/after
    numbers, with `examples` test transcripts."""
    from whisper_tune.pipeline.featurize.general import featurize_general
    from whisper_tune.pipeline.models import resolve_model
    from whisper_tune.train.trainer import run_train

    work_dir = Path(work_dir)
    domain_csv, everyday_csv = check_data(Path(data_dir))
    cfg = cfg or demo_config()
    model = cfg.model.name
    domain_dir, model_dir = work_dir / "domain", work_dir / "model"
    everyday_dir = general_work(domain_dir)      # the general set train scores each epoch (WORK/domain/general)
    general = str(everyday_csv) if everyday_csv is not None else "none"
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, general_csv=general))
    clock = Clock()
    total_start = time.perf_counter()

    base = clock.run(f"import {model}", lambda: resolve_model(model))
    print(f"base model: {base}")
    clock.run("validate + features (domain)", lambda: _validate_and_featurize(domain_csv, domain_dir, cfg))
    if everyday_csv is not None:     # clean variant only: it is only scored
        clock.run("validate + features (everyday)", lambda: print(featurize_general(domain_dir, cfg)))

    base_test = clock.run("base model on the test split", lambda: _score(model, domain_dir, cfg))
    base_every = None
    if everyday_csv is not None:
        base_every = clock.run("base model on everyday sentences", lambda: _score(model, everyday_dir, cfg))

    if model_dir.exists():  # a fresh fine-tune every run: the demo shows the effect of one schedule
        shutil.rmtree(model_dir)
    trained = clock.run("fine-tune (CPU)",
                        lambda: run_train(work_dir=domain_dir, output_dir=model_dir, cfg=cfg, resume=False))

    tuned_test = clock.run("fine-tuned model on the test split", lambda: _score(str(model_dir), domain_dir, cfg))
    tuned_every = None
    if everyday_csv is not None:
        tuned_every = clock.run("fine-tuned model on everyday sentences",
                                lambda: _score(str(model_dir), everyday_dir, cfg))
    longform = clock.run("long-form check (60-90 s recordings of test clips)",
                         lambda: _longform(domain_dir, work_dir, cfg, model, model_dir))
    clock.timings["total"] = round(time.perf_counter() - total_start, 1)
    clock.cpu["total"] = round(time.process_time(), 1)

    pairs = zip(base_test.references, base_test.scores.hypotheses, tuned_test.scores.hypotheses)
    result = DemoResult(
        base_test=_scores(base_test), tuned_test=_scores(tuned_test),
        base_everyday=_scores(base_every) if base_every is not None else None,
        tuned_everyday=_scores(tuned_every) if tuned_every is not None else None,
        examples=tuple(pairs)[:examples], timings=clock.timings, cpu_seconds=clock.cpu, model_dir=str(model_dir),
        peak_rss_mb=clock.peak_rss_mb, trainable=(trained.trainable_params, trained.total_params),
        longform=longform,
    )
    print(format_summary(result))
    atomic_write_json(work_dir / SUMMARY, result.to_json())
    print(f"\nwrote {work_dir / SUMMARY}; the fine-tuned model is in {model_dir}")
    return result


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
    b, t = result.base_test, result.tuned_test
    if b.nonspeech_words_per_clip is not None and t.nonspeech_words_per_clip is not None:
        lines.append(f"{'words per non-speech clip (' + str(b.nonspeech_clips) + ')':34}"
                     f"{b.nonspeech_words_per_clip:>12.2f}{t.nonspeech_words_per_clip:>14.2f}"
                     f"   clips with text: {b.nonspeech_clips_with_text} -> {t.nonspeech_clips_with_text}")
        lines.append(f"{'test outputs looping':34}{b.loop_share:>11.0%} {t.loop_share:>13.0%}")
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


@dataclass(frozen=True)
class DemoArgs:
    work: Path
    data: Path
    config: Path
    overrides: dict[str, Any]     # config keys the flags set ({"training.lora_rank": 8, ...})


def parse_args(argv: Sequence[str] | None) -> DemoArgs:
    from whisper_tune.cli.flags import config_field

    defaults = demo_config()
    p = argparse.ArgumentParser(prog="python data/demo/run_demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("work/demo"), help="work folder (default: work/demo)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with {DOMAIN_CSV} and {EVERYDAY_CSV}")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the demo's settings (default: data/demo/demo.toml)")
    for flag, (keys, text) in FLAGS.items():
        hint = config_field(keys[0])[0]
        section, _, name = keys[0].partition(".")
        shown = f"{text} (config {keys[0]}, demo default {getattr(getattr(defaults, section), name)!r})"
        if hint is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=shown)
        else:   # a union such as `int | str` ("auto" or a number) is read as text; load_config checks it
            p.add_argument(flag, type=hint if hint in (int, float, str) else str, default=None, help=shown)
    a = vars(p.parse_args(argv))
    overrides = {key: a[flag[2:].replace("-", "_")] for flag, (keys, _) in FLAGS.items() for key in keys}
    if a["pack"] is False and a["batch_size"] is None:
        overrides["training.batch_size"] = UNPACKED_BATCH
    return DemoArgs(work=a["work"], data=a["data"], config=a["config"],
                    overrides={k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args = parse_args(argv)
        run_demo(work_dir=args.work, data_dir=args.data, cfg=demo_config(args.overrides, args.config))
    except WhisperTuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
