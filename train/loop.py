"""The Seq2SeqTrainer subclass and callbacks the train stage runs: the per-epoch sampler, dense features built on
the training device, the epoch's mean train loss, and WER/CER as evaluation metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from whisper_tune.pipeline.core.text import has_loop, word_count
from whisper_tune.train.data import EpochSampler, dense_features
from whisper_tune.train.metrics import char_error_rate, word_error_rate
from whisper_tune.train.report import EPOCH_LOSS_KEY


def training_classes():
    """Seq2SeqTrainer subclass and callbacks, built lazily so importing this module stays light."""
    from transformers import Seq2SeqTrainer, TrainerCallback

    class CacheTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer whose train sampler is the per-epoch EpochSampler, which expands compact feature
        batches on the device, records the epoch loss, and scores the extra sets at each evaluation."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.epoch_sampler: EpochSampler | None = None
            self._loss_sum: torch.Tensor | None = None
            self._epoch_first_step = 0
            # the extra sets each evaluation also scores ({"nonspeech": ..., "general": ...}; train/checks.py),
            # and what is called with their metrics (the forgetting warning)
            self.extra_evals: dict[str, Any] = {}
            self.on_extra_metrics: Any = None

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            self.epoch_sampler = EpochSampler(len(dataset), seed=self.args.seed)
            return self.epoch_sampler

        def _prepare_inputs(self, inputs):
            # compact batches from the Collator become Whisper's dense input on the device, for training and
            # evaluation alike (both go through here)
            return dense_features(super()._prepare_inputs(inputs))

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            return loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if eval_dataset is None and metric_key_prefix == "eval" and self.extra_evals:
                extra = self.score_extra_sets("eval")
                self.log(extra)
                metrics.update(extra)
                if self.on_extra_metrics is not None and self.is_world_process_zero():
                    self.on_extra_metrics(extra, self.state.epoch)
            return metrics

        def score_extra_sets(self, prefix: str) -> dict[str, float]:
            """The extra sets' figures (EXTRA_METRICS of each), keys `{prefix}_{set}_{figure}`."""
            out: dict[str, float] = {}
            for name, dataset in self.extra_evals.items():
                metrics = self.predict(dataset, metric_key_prefix=f"{prefix}_{name}").metrics
                for figure in EXTRA_METRICS[name]:
                    key = f"{prefix}_{name}_{figure}"
                    if key in metrics:
                        out[key] = float(metrics[key])
            return out

        def begin_epoch(self, epoch: int) -> None:
            if self.epoch_sampler is not None:
                self.epoch_sampler.set_epoch(epoch)
            self._loss_sum = None
            self._epoch_first_step = self.state.global_step

        def end_epoch_loss(self) -> float | None:
            """Mean loss per optimizer step over this epoch, averaged over ranks (a collective call)."""
            total = self._loss_sum if self._loss_sum is not None else torch.zeros((), device=self.args.device)
            steps = torch.tensor(float(self.state.global_step - self._epoch_first_step), device=total.device)
            both = torch.stack([total.detach().float().reshape(()), steps])
            if self.args.world_size > 1:
                both = self.accelerator.reduce(both, reduction="sum")
            total_sum, step_sum = both.tolist()
            self._loss_sum = None
            return total_sum / step_sum if step_sum > 0 else None

    class EpochCallback(TrainerCallback):
        """Tells the sampler the epoch before it is drawn, and logs the epoch's mean train loss at its end."""

        def __init__(self) -> None:
            self.trainer: CacheTrainer | None = None

        def on_epoch_begin(self, args, state, control, **kwargs):
            if self.trainer is not None:
                self.trainer.begin_epoch(int(math.floor((state.epoch or 0.0) + 1e-9)))

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.trainer is not None:
                loss = self.trainer.end_epoch_loss()
                if loss is not None:
                    self.trainer.log({EPOCH_LOSS_KEY: loss})

    return CacheTrainer, EpochCallback


EXTRA_METRICS = {"nonspeech": ("words_per_clip", "loop_share"), "general": ("wer", "cer", "loop_share")}


def compute_metrics_fn(tokenizer):
    """compute_metrics for Seq2SeqTrainer: decode, normalize, WER and CER in percent; words per clip and the
    share of outputs stuck in a repetition loop (whisper_tune.pipeline.core.text.has_loop)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def compute(pred) -> dict[str, float]:
        preds = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        preds = np.where(preds < 0, pad, preds)
        labels = np.where(pred.label_ids < 0, pad, pred.label_ids)
        hyps = tokenizer.batch_decode(preds, skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"wer": word_error_rate(refs, hyps), "cer": char_error_rate(refs, hyps),
                "words_per_clip": float(np.mean([word_count(h) for h in hyps])) if hyps else 0.0,
                "loop_share": float(np.mean([has_loop(h) for h in hyps])) if hyps else 0.0}

    return compute
