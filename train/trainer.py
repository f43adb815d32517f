"""The `train` stage: fine-tune Whisper from WORK/cache alone with Seq2SeqTrainer.

    result = run_train(work_dir=Path("work"), output_dir=Path("work/model"), cfg=load_config(None), resume=False)

Reads the feature cache (features, labels, split) and nothing else (with data.skip_suspect also WORK/audit.parquet,
see train/suspects.py): no audio file, no audio library. Runs on a
CPU, one GPU, or several under `torchrun --nproc_per_node N` / `accelerate launch` (DDP: accelerate shards the
epoch's shuffled batches so every rank reads distinct clips).

Each epoch is evaluated on the validation split when the cache has one (`data.validation_share` or the CSV's split
column), else on the test split as the guide does; the evaluated split also picks the best checkpoint.

Writes to OUTPUT_DIR: the best model (by WER) with its generation config, the processor, the resolved config
(whisper-tune.toml), metrics.json (per-epoch train loss, eval loss, WER, CER, and the extra sets' figures:
words per held-out non-speech clip, repetition loops, the general set's WER beside the base model's),
curves.png, TensorBoard logs
(runs/), and the Trainer's checkpoint-* folders that --resume continues from.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from whisper_tune.pipeline.cache import CACHE_DIRNAME
from whisper_tune.pipeline.core.config import Config, check_output_folder, save_config
from whisper_tune.pipeline.cache.coverage import uncached_note
from whisper_tune.pipeline.core.errors import CacheError, ConfigError
from whisper_tune.pipeline.core.fileio import disk_full_as_error
from whisper_tune.pipeline.models import load_processor, optional_token_id, resolve_model, token_id
from whisper_tune.pipeline.core.tokens import SOT, START_OF_PREV

from whisper_tune.train import lora
from whisper_tune.train.batching import (BatchChoice, BatchRequest, ClipCount, choose_batch, count_in_clips,
                                        fast_path_args, plan_batch, world_size)
from whisper_tune.pipeline.cache.nonspeech import read_pool
from whisper_tune.train.checks import extra_eval_sets, forgetting_warning, forgetting_warnings
from whisper_tune.train.checkpoints import complete_marker_callback, plan_start
from whisper_tune.train.data import Collator, EvalDataset, training_dataset
from whisper_tune.train.loop import compute_metrics_fn, training_classes
from whisper_tune.train.model import Precision, SpecAugment, choose_precision, load_model
from whisper_tune.train.nonspeech import empty_labels, share_unit, with_non_speech
from whisper_tune.train.packing import planned_epochs
from whisper_tune.train.release import FINAL_SAVE_ADVICE, training_session
from whisper_tune.train.suspects import skip_suspects
from whisper_tune.train.report import CURVES_NAME, METRICS_NAME, TrainResult, draw_curves, epoch_records, write_metrics

log = logging.getLogger(__name__)

FEW_STEPS = 30                   # fewer optimizer steps than this and warmup + schedule barely happen
CONFIG_NAME = "whisper-tune.toml"


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run makes, from the dataset size and the batch settings."""

    train_clips: int
    batch_size: int
    grad_accum: int
    world_size: int
    epochs: float
    max_steps: int
    derived: bool = False        # micro-batch and accumulation derived from training.effective_batch

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        batches = math.ceil(self.train_clips / (self.batch_size * self.world_size))
        return max(1, math.ceil(batches / self.grad_accum))

    @property
    def total_steps(self) -> int:
        if self.max_steps > 0:
            return self.max_steps
        return math.ceil(self.epochs * self.steps_per_epoch)

    def warning(self) -> str | None:
        """A message when the run is too short for the schedule to mean anything, else None."""
        if self.total_steps >= FEW_STEPS:
            return None
        how = (f"--max-steps {self.max_steps}" if self.max_steps > 0 else
               f"{self.train_clips} train clips / effective batch {self.effective_batch} "
               f"(batch {self.batch_size} x grad-accum {self.grad_accum} x {self.world_size} device(s)) = "
               f"{self.steps_per_epoch} step(s) per epoch x {self.epochs:g} epoch(s)")
        fix = ("raise --max-steps" if self.max_steps > 0 else
               f"lower --effective-batch (now {self.effective_batch}), or raise --epochs, or add clips" if self.derived
               else f"lower --grad-accum (now {self.grad_accum}) or --batch-size, or raise --epochs, or add clips")
        return (f"warning: this run makes only {self.total_steps} optimizer step(s) ({how}); warmup and the "
                f"learning-rate schedule need at least {FEW_STEPS} to mean much. To get more: {fix}.")


def _warn(message: str) -> None:
    log.warning(message)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _check_cache_fits(cache, model_cfg, tokenizer, model_name: str, cache_dir: Path) -> None:
    """The cache's features and labels must be what this model expects (mel bins, tokenizer and prefix)."""
    from whisper_tune.pipeline.featurize.labels import tokenizer_fingerprint

    meta = cache.meta
    if int(meta.n_mels) != int(model_cfg.num_mel_bins):
        raise CacheError(
            f"the cache in {cache_dir} holds {meta.n_mels}-mel features but {model_name} expects "
            f"{model_cfg.num_mel_bins}; re-run `whisper-tune features --model {model_name}`"
        )
    normalization = getattr(meta, "text_normalization", "") or "basic"
    if meta.tokenizer_fingerprint and tokenizer_fingerprint(tokenizer, normalization) != meta.tokenizer_fingerprint:
        raise CacheError(
            f"the labels in {cache_dir} were made for {meta.model or 'another model'} with another tokenizer, "
            f"language or task than {model_name} has here; re-run `whisper-tune features --model {model_name}` "
            f"(same --config), or train with the model the cache was built for"
        )


def training_arguments(cfg: Config, output_dir: Path, precision: Precision, batch: BatchChoice | None = None):
    """Seq2SeqTrainingArguments with the guide's settings, taken from cfg.training; batch sizes from `batch`
    (default: the choice without a device probe)."""
    from transformers import Seq2SeqTrainingArguments

    t = cfg.training             # every value was checked by load_config
    warmup: float | int = t.warmup if t.warmup < 1 else int(t.warmup)
    batch = batch or choose_batch(BatchRequest.of(t, 1))
    return Seq2SeqTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch.micro_batch,
        per_device_eval_batch_size=batch.eval_batch,
        gradient_accumulation_steps=batch.grad_accum,
        learning_rate=t.learning_rate,
        warmup_steps=warmup,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_steps=t.logging_steps,
        predict_with_generate=True,
        generation_max_length=t.generation_max_length,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="wer",
        greater_is_better=False,
        seed=t.seed,
        data_seed=t.seed,
        report_to=["tensorboard"] if _tensorboard_available() else [],
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=t.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_persistent_workers=t.dataloader_workers > 0,
        **fast_path_args(torch.cuda.is_available() and not precision.use_cpu, t.compile),
        **precision.training_args(),
    )


def run_train(*, work_dir: Path, output_dir: Path, cfg: Config, resume: bool = False) -> TrainResult:
    """Fine-tune cfg.model.name on WORK/cache and write the model and reports to output_dir."""
    from whisper_tune.pipeline.cache import open_cache

    t = cfg.training
    work_dir, output_dir = Path(work_dir), check_output_folder(output_dir, "--output-dir")
    _check_not_the_base(cfg.model.name, output_dir)
    cache = open_cache(work_dir)
    if cfg.data.skip_suspect:
        cache, note = skip_suspects(cache, work_dir)
        print(note, flush=True)
    eval_split, eval_set = _eval_data(cache, work_dir, t.eval_max_clips)
    start = plan_start(output_dir, resume=resume)      # the newest complete checkpoint; partial ones set aside
    resume_from = str(start) if start is not None else None
    if resume_from is not None:
        lora.check_checkpoint(resume_from, lora.lora_settings(t), t.freeze_encoder)

    resolved = resolve_model(cfg.model.name)
    processor = load_processor(resolved, cfg.model.language, cfg.model.task)
    tokenizer = processor.tokenizer
    model = load_model(resolved, language=cfg.model.language, task=cfg.model.task, tokenizer=tokenizer,
                       gradient_checkpointing=False, freeze_encoder=t.freeze_encoder,
                       spec_augment=SpecAugment.of(t))
    _check_cache_fits(cache, model.config, tokenizer, cfg.model.name, work_dir / CACHE_DIRNAME)
    train_set = training_dataset(cache, tokenizer, seed=t.seed, pack=t.pack, timestamp_prob=t.timestamp_prob,
                                 planned_epochs=planned_epochs(t.epochs, t.max_steps),
                                 vocab_size=model.config.vocab_size, prompt_prob=t.prompt_prob)
    pool = read_pool(work_dir / CACHE_DIRNAME)
    empty = empty_labels(tokenizer) if pool is not None else None
    train_set, non_speech_note = with_non_speech(train_set, pool, share=cfg.augment.no_speech_share, labels=empty,
                                                 seed=t.seed, unit=share_unit(t.pack, t.batch_unit))
    extra_sets, check_notes = extra_eval_sets(
        work_dir, cfg, pool, empty, lambda c, where: _check_cache_fits(c, model.config, tokenizer, cfg.model.name, where))
    model = lora.add_adapters(model, lora.lora_settings(t))      # unchanged when training.lora_rank = 0
    trainable_params, total_params = lora.count_parameters(model)
    precision = choose_precision(t.precision)
    batch_settings, clip_count = _batch_in_windows(t, train_set)
    batch = plan_batch(batch_settings, model, cache, train_set.clip_ids, precision)   # probes the GPU
    if clip_count is not None:       # the windows per step the device settled on, spread over the unpacked steps
        clip_count = replace(clip_count, windows_per_step=batch.effective_batch)
        train_set.spread_to(clip_count.windows_per_epoch)
    args = training_arguments(cfg, output_dir, precision, batch)
    plan = StepPlan(len(train_set), batch.micro_batch, batch.grad_accum, max(1, args.world_size), t.epochs,
                    t.max_steps, derived=t.batch_size == "auto")
    if args.process_index == 0:
        _print_plan(cfg, model, train_set, eval_set, eval_split, batch, precision, plan, clip_count)
        for note in (non_speech_note, *check_notes):
            log.info(note)

    trainer = _build_trainer(cfg, model, args, processor, train_set, eval_set)
    base: dict[str, float] = {}
    with training_session(trainer, output_dir):    # one-line errors; workers and GPU memory released on exit
        if extra_sets:
            trainer.extra_evals = extra_sets
            base = trainer.score_extra_sets("base")       # the base model, once, before the first step
            log.info("base model: " + format_checks(base, "base"))
            trainer.on_extra_metrics = _checks_callback(base, t.forgetting_warn)
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.model.config.use_cache = True      # the saved model is for inference
        with disk_full_as_error(output_dir, advice=FINAL_SAVE_ADVICE):
            lora.save_model(trainer, output_dir)   # after LoRA: merged model + OUTPUT_DIR/adapter
    records = epoch_records(trainer.state.log_history)
    best = min(records, key=lambda r: r.wer) if records else None
    result = TrainResult(
        output_dir=output_dir, best_checkpoint=trainer.state.best_model_checkpoint,
        best_wer=best.wer if best else None, best_cer=best.cer if best else None, epochs=tuple(records),
        global_step=trainer.state.global_step, precision=precision.name, train_clips=len(train_set),
        eval_clips=len(eval_set), eval_split=eval_split,
        trainable_params=trainable_params, total_params=total_params, base=base,
        warnings=tuple(forgetting_warnings(records, base.get("base_general_wer"), t.forgetting_warn)),
    )
    if trainer.is_world_process_zero():
        with disk_full_as_error(output_dir, advice=FINAL_SAVE_ADVICE):
            _write_outputs(as_built(cfg, cache.meta), processor, result, trainer.state.log_history, plan)
    return result


def format_checks(metrics: dict[str, float], prefix: str) -> str:
    """The extra sets' figures in one line: words per non-speech clip, loops, general-set WER."""
    parts = []
    if f"{prefix}_nonspeech_words_per_clip" in metrics:
        parts.append(f"{metrics[f'{prefix}_nonspeech_words_per_clip']:.2f} words per non-speech clip "
                     f"({metrics.get(f'{prefix}_nonspeech_loop_share', 0.0):.0%} looping)")
    if f"{prefix}_general_wer" in metrics:
        parts.append(f"general set WER {metrics[f'{prefix}_general_wer']:.2f} %")
    return ", ".join(parts) or "no extra set scored"


def _checks_callback(base: dict[str, float], threshold: float):
    """What each evaluation calls with the extra sets' figures: a log line, and the forgetting warning."""
    def report(extra: dict[str, float], epoch: float | None) -> None:
        log.info(f"epoch {epoch or 0:g}: " + format_checks(extra, "eval"))
        if "eval_general_wer" in extra:
            message = forgetting_warning(extra["eval_general_wer"], base.get("base_general_wer"), threshold, epoch)
            if message:
                _warn(message)
    return report


def _batch_in_windows(t, train_set) -> tuple[Any, ClipCount | None]:
    """The batch settings the device plans with: as given, or, for a packed run counting clips
    (training.batch_unit = "clips"), translated into windows (train/batching.py count_in_clips). The clips
    counted include the non-speech windows (one clip each), as an unpacked run counts them."""
    if not (t.pack and t.batch_unit == "clips"):
        return t, None
    clips = getattr(train_set, "clips_per_epoch", len(train_set.clip_ids))
    return count_in_clips(t, clips, len(train_set), world_size())


def _check_not_the_base(model: str, output_dir: Path) -> None:
    """--output-dir must not be the --model folder (the saved model would overwrite the base), nor hold it as a
    checkpoint-N folder (the Trainer deletes old checkpoints)."""
    base = Path(model).expanduser()
    if not base.is_dir() or not output_dir.exists():
        return
    base, out = base.resolve(), output_dir.resolve()
    if base == out:
        raise ConfigError(f"--output-dir {output_dir} is the folder of --model {model}: training would overwrite "
                          "the base model; choose another --output-dir")
    if base.parent == out and base.name.startswith("checkpoint-"):
        raise ConfigError(f"--model {model} is a checkpoint inside --output-dir {output_dir}, which training "
                          "rotates away; copy it elsewhere first, or choose another --output-dir")


def as_built(cfg: Config, meta) -> Config:
    """cfg with the feature settings the cache was built with (its index's variants and text normalization), so
    OUTPUT_DIR/whisper-tune.toml records what the model was trained on, not this run's unused [augment] values."""
    augment = replace(cfg.augment, variants=int(meta.variants)) if int(meta.variants or 0) > 0 else cfg.augment
    normalization = getattr(meta, "text_normalization", "") or cfg.features.text_normalization
    return replace(cfg, augment=augment, features=replace(cfg.features, text_normalization=normalization))


def _eval_data(cache, work_dir: Path, eval_max_clips: int):
    """(split, dataset) to evaluate on: validation when the cache has it, else test. CacheError (with how many
    of the manifest's clips are cached) when the cache has no train clip or nothing to evaluate on."""
    cache_dir = work_dir / CACHE_DIRNAME
    eval_split = "validation" if cache.clip_ids("validation") else "test"
    eval_set = EvalDataset(cache, split=eval_split, max_clips=eval_max_clips)
    uncached = uncached_note(work_dir, cache, "train")
    if not cache.clip_ids("train"):
        raise CacheError(uncached or f"the cache in {cache_dir} has no train clip; check the manifest's split "
                         "column and re-run `whisper-tune validate` and `whisper-tune features`")
    if uncached:
        _warn(f"warning: {uncached}")
    if len(eval_set) == 0:
        raise CacheError(f"the cache in {cache_dir} has no test clip to evaluate on; re-run `whisper-tune "
                         "validate` with --test-share above 0 (e.g. 0.1), then `whisper-tune features`")
    return eval_split, eval_set


def _print_plan(cfg: Config, model, train_set, eval_set, eval_split: str, batch: BatchChoice,
                precision: Precision, plan: StepPlan, clip_count: ClipCount | None = None) -> None:
    """The run's plan, before the first step: batch choice, data, precision, steps, trainable share, windows."""
    t = cfg.training
    log.info(batch.describe())
    if clip_count is not None:
        log.info(clip_count.describe())
    if batch.note:
        _warn(batch.note)
    what = "windows" if t.pack else "clips"
    log.info(f"train: {len(train_set)} {what} per epoch, eval: {len(eval_set)} clean clips of the {eval_split} "
             f"split, precision {precision.reason}, {plan.total_steps} optimizer steps ({plan.steps_per_epoch} "
             f"per epoch, effective batch {plan.effective_batch} {what})")
    log.info(lora.describe_trainable(model, lora.lora_settings(t), t.freeze_encoder))
    log.info(train_set.describe())
    if t.spec_augment:
        log.info(SpecAugment.of(t).describe())
    message = plan.warning()
    if message:
        _warn(message)


def _build_trainer(cfg: Config, model, args, processor, train_set, eval_set):
    """The CacheTrainer with its callbacks (epoch loss, checkpoint completion marker, early stopping)."""
    from transformers import EarlyStoppingCallback

    CacheTrainer, EpochCallback = training_classes()
    epoch_callback = EpochCallback()
    trains = lora.trains_record(lora.lora_settings(cfg.training), cfg.training.freeze_encoder)
    callbacks: list[Any] = [epoch_callback, complete_marker_callback(trains)]
    if cfg.training.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
    tokenizer = processor.tokenizer
    trainer = CacheTrainer(
        model=model, args=args,
        data_collator=Collator(sot_id=token_id(tokenizer, SOT), prev_id=optional_token_id(tokenizer, START_OF_PREV)),
        train_dataset=train_set, eval_dataset=eval_set, processing_class=processor,
        compute_metrics=compute_metrics_fn(tokenizer), callbacks=callbacks,
    )
    epoch_callback.trainer = trainer
    return trainer


def _write_outputs(cfg: Config, processor, result: TrainResult, log_history: list[dict[str, Any]],
                   plan: StepPlan) -> None:
    """Beside the saved model: the processor, the resolved config, metrics.json and curves.png."""
    output_dir = result.output_dir
    processor.save_pretrained(str(output_dir))
    save_config(cfg, output_dir / CONFIG_NAME)
    write_metrics(output_dir / METRICS_NAME, result, log_history, plan)
    draw_curves(output_dir / CURVES_NAME, list(result.epochs), result.base)
    print(f"saved the best model (WER {result.best_wer:.2f} %, CER {result.best_cer:.2f} % on the "
          f"{result.eval_split} split) to {output_dir}" if result.best_wer is not None
          else f"saved the model to {output_dir}", flush=True)
