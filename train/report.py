"""What the train stage writes beside the model: the run's result record, metrics.json and curves.png."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def epoch_records(log_history: list[dict[str, Any]]) -> list[EpochRecord]:
    """One record per evaluation, with the epoch's mean train loss logged just before it."""
    records: list[EpochRecord] = []
    last_loss: float | None = None
    for entry in log_history:
        if EPOCH_LOSS_KEY in entry:
            last_loss = float(entry[EPOCH_LOSS_KEY])
        if "eval_wer" in entry:
            records.append(EpochRecord(
                epoch=float(entry.get("epoch", 0.0)),
                step=int(entry.get("step", 0)),
                train_loss=last_loss,
                eval_loss=float(entry["eval_loss"]) if "eval_loss" in entry else None,
                wer=float(entry["eval_wer"]),
                cer=float(entry.get("eval_cer", float("nan"))),
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
    }
    atomic_write_json(path, doc)


def draw_curves(path: Path, records: list[EpochRecord]) -> None:
    """Train/eval loss and WER/CER per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in records]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
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
