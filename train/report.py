"""What the train stage writes beside the model: the run's result record, metrics.json and curves.png."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from whisper_tune.pipeline.core.fileio import atomic_path, atomic_write_json

EPOCH_LOSS_KEY = "epoch_train_loss"      # what the epoch callback logs: the epoch's mean train loss
METRICS_NAME = "metrics.json"
CURVES_NAME = "curves.png"


@dataclass(frozen=True)
class EpochRecord:
    epoch: float
    step: int
    train_loss: float | None
    eval_loss: float | None
    wer: float
    cer: float
    loop_share: float | None = None                  # share of the eval split's outputs stuck in a loop
    nonspeech_words_per_clip: float | None = None    # words emitted per held-out non-speech clip
    nonspeech_loop_share: float | None = None
    general_wer: float | None = None                 # WER on the general set (everyday sentences)
    general_cer: float | None = None


# log keys of the extra sets' figures (train/loop.py, score_extra_sets) -> EpochRecord fields
EXTRA_FIELDS = {"eval_nonspeech_words_per_clip": "nonspeech_words_per_clip",
                "eval_nonspeech_loop_share": "nonspeech_loop_share",
                "eval_general_wer": "general_wer", "eval_general_cer": "general_cer"}


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    best_checkpoint: str | None
    best_wer: float | None
    best_cer: float | None
    epochs: tuple[EpochRecord, ...]
    global_step: int
    precision: str
    train_clips: int
    eval_clips: int
    eval_split: str = "test"
    trainable_params: int = 0        # parameters the run trained (with LoRA: the adapters alone)
    total_params: int = 0            # every parameter of the trained model (with LoRA: the base plus the adapters)
    base: Mapping[str, float] = field(default_factory=dict)   # the base model's figures on the extra sets
    warnings: tuple[str, ...] = ()   # forgetting warnings, one per epoch that rose too far


def epoch_records(log_history: list[dict[str, Any]]) -> list[EpochRecord]:
    """One record per evaluation, with the epoch's mean train loss logged just before it and the extra sets'
    figures logged just after it."""
    records: list[EpochRecord] = []
    last_loss: float | None = None
    for entry in log_history:
        if EPOCH_LOSS_KEY in entry:
            last_loss = float(entry[EPOCH_LOSS_KEY])
        extra = {name: float(entry[key]) for key, name in EXTRA_FIELDS.items() if key in entry}
        if extra and records and "eval_wer" not in entry:
            records[-1] = replace(records[-1], **extra)
        if "eval_wer" in entry:
            records.append(EpochRecord(
                epoch=float(entry.get("epoch", 0.0)),
                step=int(entry.get("step", 0)),
                train_loss=last_loss,
                eval_loss=float(entry["eval_loss"]) if "eval_loss" in entry else None,
                wer=float(entry["eval_wer"]),
                cer=float(entry.get("eval_cer", float("nan"))),
                loop_share=float(entry["eval_loop_share"]) if "eval_loop_share" in entry else None,
                **extra,
            ))
            last_loss = None
    return records


def write_metrics(path: Path, result: TrainResult, log_history: list[dict[str, Any]], plan: Any) -> None:
    """metrics.json: the best epoch, every evaluation, the logged steps and the batch plan (a trainer.StepPlan)."""
    steps = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"],
              "learning_rate": e.get("learning_rate")} for e in log_history if "loss" in e]
    doc = {
        "best": {"wer": result.best_wer, "cer": result.best_cer, "checkpoint": result.best_checkpoint},
        "epochs": [asdict(r) for r in result.epochs],
        "steps": steps,
        "global_step": result.global_step,
        "precision": result.precision,
        "train_clips": result.train_clips,
        "eval_clips": result.eval_clips,
        "eval_split": result.eval_split,
        "effective_batch": plan.effective_batch,
        "micro_batch": plan.batch_size,
        "grad_accum": plan.grad_accum,
        "base": dict(result.base),
        "forgetting_warnings": list(result.warnings),
    }
    atomic_write_json(path, doc)


def draw_curves(path: Path, records: list[EpochRecord], base: Mapping[str, float] | None = None) -> None:
    """Train/eval loss and WER/CER per epoch, side by side, as a PNG; with a third panel for the general set's WER
    (and the base model's, dotted) and the words per non-speech clip when the run scored them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in records]
    checks = any(r.general_wer is not None or r.nonspeech_words_per_clip is not None for r in records)
    fig, axes = plt.subplots(1, 3 if checks else 2, figsize=(15 if checks else 10, 4))
    ax_loss, ax_err = axes[0], axes[1]
    if checks:
        _draw_checks(axes[2], records, dict(base or {}))
    ax_loss.plot(epochs, [np.nan if r.train_loss is None else r.train_loss for r in records], "o-", label="train loss")
    ax_loss.plot(epochs, [np.nan if r.eval_loss is None else r.eval_loss for r in records], "s--", label="eval loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_err.plot(epochs, [r.wer for r in records], "o-", label="WER %")
    ax_err.plot(epochs, [r.cer for r in records], "s--", label="CER %")
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("error rate (%)")
    ax_err.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _draw_checks(ax, records: list[EpochRecord], base: dict[str, float]) -> None:
    """General-set WER (left axis) and words per non-speech clip (right axis) per epoch."""
    epochs = [r.epoch for r in records]
    ax.plot(epochs, [np.nan if r.general_wer is None else r.general_wer for r in records], "o-", color="C2",
            label="general set WER %")
    if "base_general_wer" in base:
        ax.axhline(base["base_general_wer"], color="C2", linestyle=":", label="base model, general set")
    ax.set_xlabel("epoch")
    ax.set_ylabel("general set WER (%)")
    words = ax.twinx()
    words.plot(epochs, [np.nan if r.nonspeech_words_per_clip is None else r.nonspeech_words_per_clip
                        for r in records], "s--", color="C3", label="words per non-speech clip")
    words.set_ylabel("words per non-speech clip")
    lines = ax.get_legend_handles_labels()
    more = words.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
