from pathlib import Path

import polars as pl
import pytest

from whisper_tune.pipeline.core.errors import ManifestError
from whisper_tune.pipeline.validate.manifest import (COLUMNS, SCHEMA, assign_split, clip_id, manifest_path, read_manifest,
                               split_position, usable, write_manifest)


def _frame(n: int = 3) -> pl.DataFrame:
    rows = {
        "id": [clip_id(f"a/{i}.wav") for i in range(n)],
        "path": [f"/data/a/{i}.wav" for i in range(n)],
        "source": [f"a/{i}.wav" for i in range(n)],
        "text": ["héllo, مرحبا"] * n,
        "duration": [1.5] * n,
        "sample_rate": [16000] * n,
        "channels": [1] * n,
        "split": ["train"] * n,
        "status": ["ok"] * (n - 1) + ["rejected"],
        "reason": [""] * (n - 1) + ["file not found"],
        "csv_row": list(range(1, n + 1)),
    }
    return pl.DataFrame(rows, schema=SCHEMA).with_columns(speaker=pl.lit("x"))


def test_round_trip_keeps_text_and_extra_columns(tmp_path: Path):
    frame = _frame()
    out = write_manifest(frame, tmp_path / "work")
    assert out == manifest_path(tmp_path / "work")
    back = read_manifest(tmp_path / "work")
    assert back.equals(frame)
    assert list(back.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert usable(back).height == 2
    assert usable(back, "test").height == 0
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["manifest.parquet"]   # no temporary left


def test_missing_manifest_says_how_to_make_it(tmp_path: Path):
    with pytest.raises(ManifestError, match="whisper-tune validate"):
        read_manifest(tmp_path)


def test_unreadable_manifest(tmp_path: Path):
    manifest_path(tmp_path).write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="not a readable manifest"):
        read_manifest(tmp_path)


def test_foreign_parquet_is_refused(tmp_path: Path):
    pl.DataFrame({"audio": ["a.wav"], "text": ["hi"]}).write_parquet(manifest_path(tmp_path))
    with pytest.raises(ManifestError, match="lacks the columns id, path"):
        read_manifest(tmp_path)


def test_wrong_column_type_is_refused(tmp_path: Path):
    frame = _frame().with_columns(pl.col("duration").cast(pl.String))
    frame.write_parquet(manifest_path(tmp_path))
    with pytest.raises(ManifestError, match="duration"):
        read_manifest(tmp_path)


def test_write_refuses_incomplete_frame(tmp_path: Path):
    with pytest.raises(ManifestError, match="split"):
        write_manifest(_frame().drop("split"), tmp_path)


def test_clip_id_is_stable_and_distinct():
    assert clip_id("audios/1.mp3") == clip_id("audios/1.mp3")
    assert clip_id("audios/1.mp3") != clip_id("audios/2.mp3")
    assert len(clip_id("x")) == 16


def test_test_share_is_near_the_setting():
    paths = [f"audios/clip_{i:04d}.wav" for i in range(1000)]
    for share in (0.1, 0.25):
        test = sum(assign_split(p, seed=42, test_share=share) == "test" for p in paths)
        assert abs(test / len(paths) - share) < 0.03, (share, test)
    assert all(assign_split(p, seed=42, test_share=0.0) == "train" for p in paths)


def test_split_depends_only_on_path_and_seed():
    paths = [f"clips/{i}.flac" for i in range(300)]
    first = {p: assign_split(p, seed=7, test_share=0.1) for p in paths}
    more = paths + [f"new/{i}.flac" for i in range(300)]
    again = {p: assign_split(p, seed=7, test_share=0.1) for p in reversed(more)}
    assert all(first[p] == again[p] for p in paths)
    other_seed = {p: assign_split(p, seed=8, test_share=0.1) for p in paths}
    assert other_seed != first
    assert all(0.0 <= split_position(p, 7) < 1.0 for p in paths)


def test_validation_share_takes_clips_from_train_only():
    paths = [f"v/{i}.wav" for i in range(2000)]
    plain = {p: assign_split(p, seed=3, test_share=0.1) for p in paths}
    with_val = {p: assign_split(p, seed=3, test_share=0.1, validation_share=0.05) for p in paths}
    assert {p for p in paths if plain[p] == "test"} == {p for p in paths if with_val[p] == "test"}
    moved = [p for p in paths if plain[p] != with_val[p]]
    assert moved and all(plain[p] == "train" and with_val[p] == "validation" for p in moved)
    assert abs(len(moved) / len(paths) - 0.05) < 0.02


def test_raising_the_share_only_moves_clips_into_test():
    paths = [f"c/{i}.wav" for i in range(500)]
    small = {p for p in paths if assign_split(p, seed=1, test_share=0.1) == "test"}
    large = {p for p in paths if assign_split(p, seed=1, test_share=0.2) == "test"}
    assert small < large


def test_numbers_are_widened_not_refused(tmp_path: Path):
    frame = _frame().with_columns(pl.col("duration").cast(pl.Int32), pl.col("channels").cast(pl.Int8))
    write_manifest(frame, tmp_path)
    back = read_manifest(tmp_path)
    assert back.schema["duration"] == pl.Float64 and back.schema["channels"] == pl.Int64


def test_split_names_are_read_as_the_csv_reads_them():
    from whisper_tune.pipeline.validate.manifest import split_name

    assert [split_name(v) for v in ("dev", " Val ", "VALID", "Test", "train", "")] == [
        "validation", "validation", "validation", "test", "train", ""]
    assert split_name("holdout") == "holdout"
