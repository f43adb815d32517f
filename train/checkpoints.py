"""Which checkpoint-N folders are complete, and where a training starts or resumes from.

    start = plan_start(output_dir, resume=True)   # Path of the newest complete checkpoint (or None), messages said

A save can be cut short (kill -9, a full disk, a crash): the Trainer writes checkpoint-N/ file by file, so a
folder may hold the weights but no optimizer state, or half a file. A checkpoint is complete when:
- it holds the Trainer's state (trainer_state.json, readable), the model weights (model.safetensors whose size
  matches its own header, or pytorch_model.bin, or a sharded index with every shard), the optimizer and the
  scheduler state, and the RNG state; every torch file is a whole zip archive (torch.save's format ends with
  its directory, which a cut-short file lacks); and
- when COMPLETE_MARKER is there (written last, by CompleteMarker after the Trainer's save), every file it lists
  still has the size it had when the save finished.
Incomplete folders are never resumed from: they are set aside as partial-checkpoint-N (nothing is deleted) with
a message saying why, so the Trainer neither loads nor counts them. The Trainer deletes older checkpoints only
after a new one is fully written, so a failed save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import logging
import json
import os
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.fileio import atomic_write_json

log = logging.getLogger(__name__)

COMPLETE_MARKER = "whisper-tune-complete.json"
PARTIAL_PREFIX = "partial-"
STATE_NAME = "trainer_state.json"
TORCH_FILES = ("optimizer.pt", "scheduler.pt")
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """checkpoint-N folders of output_dir, by step (checkpoint-10 after checkpoint-9)."""
    if not Path(output_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, in words, or None when it is complete."""
    state = folder / STATE_NAME
    if not state.is_file():
        return f"no {STATE_NAME}"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE_NAME} is unreadable"
    problem = _weights_problem(folder)
    if problem:
        return problem
    rng = sorted(folder.glob("rng_state*.pth"))
    for path in [folder / name for name in TORCH_FILES] + (rng or [folder / "rng_state.pth"]):
        if not path.is_file():
            return f"no {path.name}"
        if not zipfile.is_zipfile(path):
            return f"{path.name} is cut short"
    return _marker_problem(folder)


def _weights_problem(folder: Path) -> str | None:
    safetensors = folder / "model.safetensors"
    if safetensors.is_file():
        return _safetensors_problem(safetensors)
    adapter = folder / "adapter_model.safetensors"          # a LoRA run's checkpoint (train/lora.py)
    if adapter.is_file():
        return _safetensors_problem(adapter)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"{index.name} is unreadable"
        for shard in sorted(shards):
            problem = _safetensors_problem(folder / shard) if (folder / shard).is_file() else f"no {shard}"
            if problem:
                return problem
        return None
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return None if zipfile.is_zipfile(bin_file) else f"{bin_file.name} is cut short"
    return "no model weights (model.safetensors)"


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors the header places."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return f"{path.name} is unreadable"
    expected = 8 + header_len + end
    if size != expected:
        return f"{path.name} is cut short ({size:,} of {expected:,} bytes)"
    return None


def _marker_problem(folder: Path) -> str | None:
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return None                      # a checkpoint from before the marker: the checks above decide
    try:
        sizes = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{COMPLETE_MARKER} is unreadable"
    for name, size in sorted(sizes.items()):
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} changed since the save finished"
    return None


def write_marker(folder: Path, step: int, trains: dict[str, Any] | None = None) -> None:
    """Record every file of a finished save with its size, and the settings that decide what trains (`trains`,
    see train/lora.py trains_record: --resume compares them); written last, atomically."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != COMPLETE_MARKER}
    record: dict[str, Any] = {"step": step, "files": files}
    if trains is not None:
        record["trains"] = trains
    atomic_write_json(folder / COMPLETE_MARKER, record)


def recorded_trains(folder: Path) -> dict[str, Any] | None:
    """The `trains` settings the checkpoint's marker recorded, or None (a checkpoint from before the record)."""
    try:
        trains = json.loads((Path(folder) / COMPLETE_MARKER).read_text(encoding="utf-8")).get("trains")
    except (OSError, ValueError, AttributeError):
        return None
    return trains if isinstance(trains, dict) else None


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint-N to partial-checkpoint-N, replacing an older partial folder of that name.
    A file or a link of that name (never written by a run) is left alone: the next free partial-checkpoint-N.K
    is used instead, so nothing but an earlier partial checkpoint is ever deleted."""
    target = folder.with_name(PARTIAL_PREFIX + folder.name)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    n = 1
    while target.exists() or target.is_symlink():
        target = folder.with_name(f"{PARTIAL_PREFIX}{folder.name}.{n}")
        n += 1
    folder.rename(target)
    return target


def plan_start(output_dir: Path, *, resume: bool, echo: Callable[[str], None] | None = None) -> Path | None:
    """The checkpoint to resume from (None: start fresh), after setting incomplete ones aside and saying why.

    resume=True: the newest complete checkpoint; ConfigError when there is none. resume=False: ConfigError when a
    complete checkpoint exists (a new run would mix with it); incomplete ones never block a fresh start."""
    say = echo or log.info                        # messages: the train stage's log lines
    folders = checkpoint_folders(output_dir)
    complete: list[Path] = []
    skipped: list[str] = []
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            complete.append(folder)
            continue
        skipped.append(f"{folder.name} ({problem})")
        if _is_main_process():                       # one rank renames; the others only skip
            say(f"train: skipping {folder.name}: incomplete ({problem}; its save was interrupted); "
                f"set aside as {set_aside(folder).name}")
    if resume:
        if not complete:
            what = (f"no complete checkpoint (incomplete, set aside: {', '.join(skipped)})" if skipped
                    else "no checkpoint-* folder")
            raise ConfigError(f"--resume: {output_dir} holds {what} to continue from; "
                              "run without --resume to start a new training")
        say(f"train: resuming from {complete[-1].name}")
        return complete[-1]
    if complete:
        raise ConfigError(f"{output_dir} already holds checkpoints of an earlier run (newest complete: "
                          f"{complete[-1].name}); pass --resume to continue it, or choose another --output-dir "
                          "(or delete its checkpoint-* folders) to start over")
    return None


def _is_main_process() -> bool:
    return (os.environ.get("RANK") or "0").strip() == "0"   # torchrun / accelerate set RANK; unset or empty: rank 0


def complete_marker_callback(trains: dict[str, Any] | None = None):
    """A TrainerCallback that writes COMPLETE_MARKER (with `trains`) into each checkpoint once the Trainer has
    saved it."""
    from transformers import TrainerCallback

    class CompleteMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_marker(folder, state.global_step, trains)

    return CompleteMarker()
