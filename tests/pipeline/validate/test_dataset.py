"""`validate --dataset`: a `datasets` folder, Parquet files or a hub id give the rows the same clips give as a CSV."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.validate.dataset import AUDIO_FOLDER, DatasetError, read_dataset
from whisper_tune.pipeline.validate.stage import run_validate
from whisper_tune.testing import tone, write_audio

datasets = pytest.importorskip("datasets")

TEXTS = ["the first clip says this", "a second clip with other words", "number three is here",
         "four clips are enough", "and a fifth one"]
SAME = ["id", "source", "text", "duration", "sample_rate", "channels", "split", "status", "reason", "csv_row",
        "speaker"]


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    lines = ["audios,transcription,speaker"]
    for i, text in enumerate(TEXTS):
        write_audio(tmp_path / f"c{i}.wav", tone(1.5 + 0.25 * i, freq=300 + 50 * i, amp=0.3))
        lines.append(f"c{i}.wav,{text},s{i % 2}")
    lines.append("c0.wav,a duplicate of the first,s0")
    (tmp_path / "clips.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def from_csv(folder: Path, work: Path) -> pl.DataFrame:
    run_validate(csv_path=folder / "clips.csv", work_dir=work, cfg=load_config(None, {"data.test_share": 0.4}),
                 use_model=False, echo=None)
    return pl.read_parquet(work / "manifest.parquet")


def from_dataset(source, work: Path, **over) -> pl.DataFrame:
    cfg = load_config(None, {"data.test_share": 0.4, **{f"data.{k}": v for k, v in over.items()}})
    run_validate(dataset=source, work_dir=work, cfg=cfg, use_model=False, echo=None)
    return pl.read_parquet(work / "manifest.parquet")


def saved(folder: Path, name: str = "saved", dict_split: str | None = None) -> Path:
    rows = pl.read_csv(folder / "clips.csv")
    ds = datasets.Dataset.from_dict({"audio": rows["audios"].to_list(), "transcription": rows["transcription"].to_list(),
                                     "speaker": rows["speaker"].to_list()})
    import os

    here = os.getcwd()
    os.chdir(folder)                                      # datasets records the audio's file name: c0.wav
    try:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
        ds = ds.map(lambda item: {"audio": {"bytes": Path(item["audio"]["path"]).read_bytes(),
                                            "path": item["audio"]["path"]}})
        (datasets.DatasetDict({dict_split: ds}) if dict_split else ds).save_to_disk(str(folder / name))
    finally:
        os.chdir(here)
    return folder / name


def test_a_datasets_folder_gives_the_csvs_rows(clips: Path) -> None:
    expected = from_csv(clips, clips / "w_csv")
    got = from_dataset(saved(clips), clips / "w_ds")
    assert got.select(SAME).equals(expected.select(SAME))
    assert set(got["split"]) == {"train", "test"}
    written = sorted((clips / "w_ds" / AUDIO_FOLDER).iterdir())
    assert len(written) == 5                              # bytes written once per distinct clip, inside WORK
    assert all(Path(p).parent == clips / "w_ds" / AUDIO_FOLDER for p in got["path"])
    again = from_dataset(saved(clips), clips / "w_ds")   # a re-run finds the same files
    assert again.select(SAME).equals(got.select(SAME))


def test_a_datasets_folder_gives_the_csvs_features(clips: Path, tiny_model: Path) -> None:
    from whisper_tune.testing import features_config, run, snapshot

    from_csv(clips, clips / "w_csv")
    from_dataset(saved(clips), clips / "w_ds")
    cfg = features_config(tiny_model)
    results = [run(clips / w, cfg) for w in ("w_csv", "w_ds")]
    assert [(r.clips_total, r.clips_decoded, r.skipped) for r in results] == [(5, 5, ())] * 2
    expected, got = snapshot(clips / "w_csv"), snapshot(clips / "w_ds")
    assert len(expected) > 5 and got == expected     # every clip and variant: same features, labels, text, split


def test_parquet_files_and_a_split_of_a_dataset_dict(clips: Path) -> None:
    expected = from_csv(clips, clips / "w_csv").select(SAME)
    folder = saved(clips, "dict", dict_split="validation")
    assert from_dataset(folder, clips / "w1", dataset_split="validation").select(SAME).equals(expected)
    ds = datasets.load_from_disk(str(folder))["validation"]
    ds.to_parquet(str(clips / "clips.parquet"))
    assert from_dataset(clips / "clips.parquet", clips / "w2").select(SAME).equals(expected)
    with pytest.raises(DatasetError) as err:
        read_dataset(folder, clips / "w3", split="test")
    assert str(err.value) == (f"--dataset {folder} has no split 'test'; its splits are validation (choose one "
                              "with --dataset-split)")


def test_missing_columns_and_paths_are_one_line(clips: Path) -> None:
    with pytest.raises(DatasetError) as err:
        read_dataset(saved(clips), clips / "w", text_column="words")
    assert str(err.value) == (f"--dataset {clips / 'saved'} has no column 'words' (given with --text-column); "
                              "columns found: 'audio', 'transcription', 'speaker'")
    (clips / "empty").mkdir()
    with pytest.raises(DatasetError, match="is neither a `datasets` folder"):
        read_dataset(clips / "empty", clips / "w")


def test_a_hub_id_offline_says_so(clips: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError) as err:
        read_dataset("someone/some-speech", clips / "w")
    assert str(err.value) == ("--dataset someone/some-speech is a hub id, and HF_HUB_OFFLINE=1 forbids the network; "
                              "run `save_to_disk` on a machine with network access and pass that folder, or pass "
                              "local .arrow / .parquet files")



def test_validate_takes_one_input(clips: Path) -> None:
    from whisper_tune.pipeline.core.errors import ConfigError

    for inputs in ({}, {"csv_path": clips / "clips.csv", "dataset": clips / "saved"}):
        with pytest.raises(ConfigError, match=r"^validate needs exactly one input: --csv FILE or --dataset PATH$"):
            run_validate(work_dir=clips / "w", cfg=load_config(None), use_model=False, echo=None, **inputs)


def test_without_the_datasets_package_it_is_one_line(clips: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)          # import datasets now raises ImportError
    with pytest.raises(DatasetError) as err:
        read_dataset(clips / "saved", clips / "w")
    assert str(err.value) == ('--dataset needs the `datasets` package: pip install "whisper-tune[datasets]" '
                              "(or validate a CSV with --csv)")
