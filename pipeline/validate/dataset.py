"""`validate --dataset PATH`: a Hugging Face `datasets` folder, Arrow / Parquet files, or a hub id, as clips.

    table, locations = read_dataset("data/my_set", Path("work"), split="train")

PATH may be a folder written by `save_to_disk` (a Dataset, or a DatasetDict: --dataset-split picks one, default its
only split or "train"), one .arrow / .parquet file or a folder of them, or a hub id (owner/name) where the network
does (the same offline rule and message as models: pipeline/models/hub.py). The audio column (audio, audios, path or
file unless --audio-column) and the text column (as for CSVs) are found by name.

Audio is read with `Audio(decode=False)`: `datasets` never decodes it (its decoder needs torchcodec, which this
project does not); each clip's bytes are written once to WORK/dataset-audio/<hash>.<ext> (atomically; a re-run
finds them), so our own decoder (pipeline/featurize/audio.py) checks them and every later stage reads a path like
any other clip. A row whose audio is a path with no bytes reads that file (relative to the dataset folder).
A clip's identity (its id and split) is the audio's own file name as the dataset recorded it (`datasets` keeps the
base name), so a dataset built from a folder of clips gives the same manifest rows as that folder's CSV (the
`path` column then names the file in WORK). The other scalar columns become text extras.
"""

from __future__ import annotations

import os
from pathlib import Path

from whisper_tune.pipeline.core.constants import AUDIO_EXTENSIONS
from whisper_tune.pipeline.core.errors import CsvError, first_line
from whisper_tune.pipeline.core.fileio import atomic_write_bytes
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.validate.csvfile import AUDIO_COLUMNS, TEXT_COLUMNS, CsvTable, pick_column
from whisper_tune.pipeline.validate.checks import NO_PATH, Location, Problem

AUDIO_FOLDER = "dataset-audio"
TABLE_SUFFIXES = {".arrow": "arrow", ".parquet": "parquet"}
# The first bytes of the formats our decoder reads, for audio stored without a file name.
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"\xff\xf3", ".mp3"), (b"FORM", ".aiff"), (b".snd", ".au"))


class DatasetError(CsvError):
    """A --dataset that cannot be used as a whole."""


def read_dataset(source: str | Path, work_dir: Path, *, split: str = "", audio_column: str = "",
                 text_column: str = "") -> tuple[CsvTable, list[Location]]:
    """The dataset's rows as a table (its audio cell: the audio's recorded file name) and where each clip's audio
    now lies (see the module docstring). DatasetError when it cannot be used as a whole."""
    try:
        from datasets import Audio
    except ImportError:
        raise DatasetError("--dataset needs the `datasets` package: pip install \"whisper-tune[datasets]\" "
                           "(or validate a CSV with --csv)") from None

    ds, where = _load(str(source), split)
    columns = list(ds.column_names)
    audio = _pick(where, columns, audio_column, AUDIO_COLUMNS, "audio", "--audio-column")
    text = _pick(where, columns, text_column, TEXT_COLUMNS, "text", "--text-column")
    ds = ds.cast_column(audio, Audio(decode=False))          # audio features and columns of paths alike
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    extras = [c for c in columns if c not in (audio, text) and _is_scalar(ds.features[c])]
    sources, locations = [], []
    out_dir = Path(work_dir) / AUDIO_FOLDER
    for item in ds.select_columns([audio]):                # atomic_write_bytes says a full disk in words
        name, location = _place(item[audio], folder, out_dir)
        sources.append(name)
        locations.append(location)
    texts = ["" if t is None else str(t) for t in ds[text]]
    cells = {c: tuple("" if v is None else str(v) for v in ds[c]) for c in extras}
    table = CsvTable(path=Path(where), audio_column=audio, text_column=text, rows=tuple(range(1, len(ds) + 1)),
                     sources=tuple(sources), texts=tuple(texts), extras=cells)
    return table, locations


def _load(source: str, split: str):
    """(Dataset, what to call it in messages)."""
    import datasets

    p = Path(source)
    try:
        if p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
            return _one_split(datasets.load_from_disk(str(p)), split, source), source
        files = _table_files(p)
        if files:
            kind = TABLE_SUFFIXES[files[0].suffix.lower()]
            return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train"), source
        if p.exists():
            raise DatasetError(f"--dataset {source} is neither a `datasets` folder (save_to_disk) nor .arrow / "
                               ".parquet files; pass one of those, or a CSV with --csv")
        if source.count("/") != 1 or source.startswith((".", "/")):
            raise DatasetError(f"--dataset {source} does not exist (nor is it a hub id like owner/name)")
        _check_hub(source)
        return _one_split(datasets.load_dataset(source), split, source), source
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError, FileNotFoundError) as err:
        raise DatasetError(f"cannot read --dataset {source}: {first_line(err)[:200]}") from None


def _table_files(p: Path) -> list[Path]:
    if p.is_file():
        return [p] if p.suffix.lower() in TABLE_SUFFIXES else []
    if not p.is_dir():
        return []
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES)
    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise DatasetError(f"--dataset {p} holds both .arrow and .parquet files; point it at one kind")
    return files


def _one_split(ds, split: str, source: str):
    import datasets

    if not isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split and split != "train":
            raise DatasetError(f"--dataset {source} has one split only; leave out --dataset-split {split}")
        return ds
    names = list(ds)
    chosen = split or (names[0] if len(names) == 1 else "train")
    if chosen not in ds:
        raise DatasetError(f"--dataset {source} has no split '{chosen}'; its splits are {', '.join(names)} "
                           "(choose one with --dataset-split)")
    return ds[chosen]


def _check_hub(repo_id: str) -> None:
    """A hub id needs the network: the same rule and message as a hub model (pipeline/models/hub.py)."""
    from whisper_tune.pipeline.models.hub import hub_endpoint, offline_by_setting, reach

    setting = offline_by_setting()
    why = f"{setting} forbids the network" if setting else None
    if why is None:
        problem = reach(hub_endpoint())
        if problem is None:
            return
        why = f"the hub ({hub_endpoint()}) cannot be reached over the network: {problem}"
    raise DatasetError(f"--dataset {repo_id} is a hub id, and {why}; run `save_to_disk` on a machine with network "
                       "access and pass that folder, or pass local .arrow / .parquet files")


def _pick(where: str, columns: list[str], wanted: str, candidates: tuple[str, ...], kind: str, flag: str) -> str:
    return pick_column(columns, wanted, candidates, what=f"--dataset {where}", kind=kind, flag=flag,
                       error=DatasetError)


def _is_scalar(feature) -> bool:
    from datasets import ClassLabel, Value

    return isinstance(feature, (Value, ClassLabel))


def _place(cell, folder: Path, out_dir: Path) -> tuple[str, Location]:
    """(the audio's recorded name, where its audio lies: its bytes written into WORK, or its own file)."""
    cell = cell or {}
    data, name = cell.get("bytes"), (cell.get("path") or "").replace("\\", "/")
    if data:
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), suffix or ".bin")
        target = out_dir / f"{stable_hex(data, size=16)}{suffix}"
        if not target.is_file() or target.stat().st_size != len(data):
            atomic_write_bytes(target, data)
        return name or target.stem, Location(name or f"{AUDIO_FOLDER}/{target.name}", target.resolve(), None)
    if not name:
        return "", Location("", None, Problem(NO_PATH, "no audio path: the dataset row has neither audio bytes "
                                                       "nor a file name"))
    path = Path(name) if os.path.isabs(name) else folder / name
    return name, Location(name, path.resolve(), None)
