"""`whisper-tune train`: WORK/cache/ -> OUTPUT_DIR (whisper_tune.train.trainer.run_train, imported only when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, Flag, WorkOpt, with_config

FLAGS = (
    MODEL,
    Flag("training.epochs", "Training epochs."),
    Flag("training.batch_size", "Per-device micro-batch: auto (the largest that fits the GPU; 4 on the CPU) or a number."),
    Flag("training.eval_batch_size", "Per-device generation batch at evaluation: auto or a number."),
    Flag("training.grad_accum", "Gradient accumulation steps: auto (from --effective-batch) or a number "
                                "(with an explicit --batch-size)."),
    Flag("training.effective_batch", "Clips per optimizer step over all devices when --batch-size is auto."),
    Flag("training.learning_rate", "Peak learning rate."),
    Flag("training.warmup", "Warmup: share of steps (<1) or step count."),
    Flag("training.max_steps", "Stop after this many optimizer steps (overrides epochs)."),
    Flag("training.precision", "auto, bf16, fp16 or fp32."),
    Flag("training.seed", "Training seed (also picks each epoch's variants)."),
    Flag("training.freeze_encoder", "Train the decoder only."),
    Flag("training.gradient_checkpointing", "auto (off when the micro-batch fits the GPU without it), on or off.",
         negative="off"),
    Flag("training.compile", "torch.compile the model."),
    Flag("training.early_stopping_patience", "Evaluations without improvement before stopping (0 = off)."),
    Flag("training.lr_scheduler", "Learning-rate schedule: cosine, linear, constant, ..."),
    Flag("training.weight_decay", "AdamW weight decay."),
    Flag("training.generation_max_length", "Longest transcript (tokens) generated at evaluation."),
    Flag("training.logging_steps", "Log the train loss every this many optimizer steps."),
    Flag("training.save_total_limit", "Checkpoints kept in --output-dir (the best one is always kept)."),
    Flag("training.dataloader_workers", "DataLoader worker processes per device (0 = in the training process)."),
    Flag("training.eval_max_clips", "Evaluate on the first N test clips only (0 = all)."),
    Flag("training.pack", "Pack several clips into each 30 s training window (see --batch-unit)."),
    Flag("training.batch_unit", "Packed runs: clips (--batch-size and --effective-batch count clips: as many "
                                "optimizer steps per epoch as unpacked) or windows."),
    Flag("training.timestamp_prob", "Share of training windows labelled with timestamps (0-1)."),
    Flag("training.prompt_prob", "Share of windows of recordings given their previous text as a prompt (0-1)."),
    Flag("training.spec_augment", "SpecAugment: mask spans of the encoder input while training (never in evaluation)."),
    Flag("training.mask_time_prob", "With --spec-augment: share of frames masked, in spans of 10 frames."),
    Flag("training.mask_feature_prob", "With --spec-augment: share of mel bins masked, in spans of 10 bins."),
    Flag("augment.no_speech_share", "Share of training examples without speech (empty transcript), from the cache's "
                                     "pool; counted in clips when a packed batch counts clips."),
    Flag("training.general_csv", "Everyday sentences scored each epoch beside the domain (featurized by `features` "
                                 "into WORK/general/; \"\" = the demo's everyday.csv, none = off)."),
    Flag("training.forgetting_warn", "Warn when the general set's WER rises more than this many points over the base model's."),
    Flag("data.skip_suspect", "Leave out the train and validation rows `whisper-tune audit` flagged (WORK/audit.parquet)."),
    Flag("model.language", "Language for multilingual models, e.g. arabic, french (must match features)."),
    Flag("model.task", "transcribe or translate (must match features)."),
    Flag("training.lora_rank", "> 0: train LoRA adapters of this rank on a frozen base (needs peft); 0 = full fine-tuning."),
    Flag("training.lora_alpha", "LoRA scaling numerator (scale = alpha / rank); 0 = twice the rank."),
    Flag("training.lora_dropout", "Dropout on the LoRA path."),
    Flag("training.lora_targets", "Comma-separated projections given adapters: q_proj,k_proj,v_proj,out_proj,fc1,fc2."),
)


@with_config(*FLAGS)
def train(
    work: WorkOpt = Path("work"),
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the fine-tuned model and reports go.")] = Path("work/model"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --output-dir.")] = False,
    *,
    cfg: Config,
) -> None:
    """Fine-tune from the feature cache alone with Seq2SeqTrainer (CPU, one GPU, or torchrun/accelerate DDP)."""
    from whisper_tune.train.trainer import run_train

    run_train(work_dir=work, output_dir=output_dir, cfg=cfg, resume=resume)
