"""A training run lets go of everything it holds before run_train returns, and its errors stay one line.

    with training_session(trainer, output_dir):
        trainer.train(...)
        trainer.save_model(...)

On the way out, normal or not: the DataLoader workers are shut down (persistent workers and the pin-memory thread
otherwise outlive training; the CLI process then lingers holding GPU memory), accelerate drops its references to
the model, optimizer and loaders, the optimizer and scheduler are dropped, the model moves to the CPU, and the CUDA
cache is emptied. Errors: a WhisperTuneError that a DataLoader worker raised reaches the caller as its own one
line (torch re-raises it with the worker's traceback in the message); a full disk (torch, safetensors, polars or
plain OSError) becomes one DiskFullError naming the output folder and saying to re-run with --resume.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from whisper_tune.pipeline.core.errors import WhisperTuneError, without_worker_traceback
from whisper_tune.pipeline.core.fileio import disk_full_as_error

RESUME_ADVICE = ("free some space and re-run the same command with --resume: the complete checkpoint-* folders "
                 "are kept")
FINAL_SAVE_ADVICE = ("training finished and its checkpoints are kept, but the model in the output folder is "
                     "incomplete; free some space and re-run the same command with --resume: it saves the model "
                     "again without training further")


@contextmanager
def training_session(trainer: Any, output_dir: Path) -> Iterator[None]:
    try:
        with disk_full_as_error(output_dir, advice=RESUME_ADVICE):
            yield
    except WhisperTuneError as err:
        cleaned = without_worker_traceback(err)
        if cleaned is err:
            raise
        raise cleaned from None
    finally:
        release(trainer)


def data_loaders(trainer: Any) -> list[Any]:
    """Every DataLoader the trainer or accelerate still references (train and the cached eval loaders)."""
    found = list(getattr(getattr(trainer, "accelerator", None), "_dataloaders", None) or [])
    found += list((getattr(trainer, "_eval_dataloaders", None) or {}).values())
    loaders = []
    for loader in found:
        loaders.append(loader)
        base = getattr(loader, "base_dataloader", None)
        if base is not None:
            loaders.append(base)
    return loaders


def shut_down_workers(loader: Any) -> None:
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()          # joins the worker processes and the pin-memory thread
    if hasattr(loader, "_iterator"):
        loader._iterator = None


def release(trainer: Any) -> None:
    """Shut down DataLoader workers, drop optimizer/scheduler/accelerate references, free the GPU memory."""
    for loader in data_loaders(trainer):
        shut_down_workers(loader)
    if hasattr(trainer, "_eval_dataloaders"):
        trainer._eval_dataloaders = {}
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        accelerator.free_memory()
    trainer.optimizer = None
    trainer.lr_scheduler = None
    model = getattr(trainer, "model", None)
    if model is not None and torch.cuda.is_available():
        model.to("cpu")
    trainer.model_wrapped = model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
