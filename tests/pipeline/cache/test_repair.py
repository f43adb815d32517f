"""Damaged and crafted caches, end to end through the commands: each gives one line naming the command that
rebuilds the cache, that command repairs it in one run, and nothing outside the cache folder is touched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import (features_config, flip_bytes, make_work, only_segment, rewrite_segment, run,
                                  snapshot)
from whisper_tune.pipeline.cache import CacheError, open_cache
from whisper_tune.pipeline.cache.segments import read_segments
from whisper_tune.pipeline.cache.index import quote
from whisper_tune.cli import app


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """A work folder with a features-built cache, and what that cache returns."""
    work, _ = make_work(tmp_path_factory.mktemp("repair"), n=3)
    run(work, features_config(tiny_model))
    return work, snapshot(work)


@pytest.fixture
def work(built, tmp_path):
    """A fresh copy of the built work folder (manifest audio paths still point at the shared clips)."""
    import shutil

    source, _ = built
    copy = tmp_path / "work"
    shutil.copytree(source, copy)
    return copy


def cli(*args: str) -> tuple[int, list[str]]:
    """-> (exit code, output lines); a failing command's lines are its error lines only (progress lines dropped)."""
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    text = re.sub(r"\r?features: +\d+%\|[^]]*\]", "", result.output)                   # progress bars
    lines = [x for x in text.strip().splitlines() if x]
    return result.exit_code, lines if result.exit_code == 0 else [x for x in lines if x.startswith("error")]


def features(work: Path, model: Path) -> tuple[int, list[str]]:
    return cli("features", "--work", str(work), "--model", str(model), "--config", str(_config_file(work, model)))


def _config_file(work: Path, model: Path) -> Path:
    """The toml form of features_config(), so that the command rebuilds the same items."""
    path = work.parent / "features.toml"
    path.write_text('[training]\ngeneral_csv = "none"\n'
                    '[features]\njobs = 1\nbatch_clips = 2\n[augment]\nvariants = 3\ntransforms = [\n'
                    '  {name = "AddGaussianNoise", p = 0.5, min_amplitude = 0.001, max_amplitude = 0.01},\n'
                    '  {name = "Gain", p = 0.3},\n]\n')
    return path


def rebuild(work: Path) -> str:
    return f"re-run `whisper-tune features --work {work}` to rebuild it"


def test_bit_rot_is_named_by_evaluate_and_repaired_by_features_in_one_run(built, work, tiny_model):
    shard = sorted((work / "cache").glob("*-feat-*.arrow"))[0]
    flip_bytes(shard)                                           # 16 bytes, mtime restored (touch -r)
    code, lines = cli("evaluate", "--work", str(work), "--model", str(tiny_model))
    assert code == 1 and lines == [f"error: shard {shard} is corrupted (checksum mismatch); {rebuild(work)}"]
    code, lines = features(work, tiny_model)
    assert code == 0 and "clips decoded" in lines[0]            # that shard's clips computed again
    assert snapshot(work) == built[1]
    code, lines = features(work, tiny_model)
    assert code == 0 and lines[0].startswith("features: no audio work needed")


def test_rot_the_file_times_cannot_show_is_repaired_after_the_reader_found_it(built, work, tiny_model):
    """Damage that changes no size or time at all (the disk's own rot): the reader's finding makes the next
    `features` run re-check every checksum."""
    shard = sorted((work / "cache").glob("*-feat-*.arrow"))[0]
    flip_bytes(shard)
    st = shard.stat()                                           # the index now "proves" the damaged file
    rewrite_segment(only_segment(work),
                    doc=lambda d: d["shards"][shard.name].update(ctime_ns=st.st_ctime_ns, inode=st.st_ino))
    with pytest.raises(CacheError, match="corrupted"):
        open_cache(work).verify()
    assert (work / "cache" / ".verify").exists()
    code, lines = features(work, tiny_model)
    assert code == 0 and "clips decoded" in lines[0] and not (work / "cache" / ".verify").exists()
    assert snapshot(work) == built[1]


@pytest.mark.parametrize("name", ["../../victim.txt", "ABSOLUTE"])
def test_crafted_shard_names_are_refused_and_nothing_outside_is_touched(built, work, tiny_model, name):
    victim = work.parent / "victim.txt"
    victim.write_text("precious")
    name = str(victim) if name == "ABSOLUTE" else name
    path = only_segment(work)
    rewrite_segment(path, doc=lambda d: d["shards"].update({name: dict(next(iter(d["shards"].values())))}))
    want = (f"error: {path} is not a usable feature cache index segment (shard name {quote(name)} is not a plain "
            f"cache shard file name); {rebuild(work)}")
    for command in ("train", "evaluate"):
        code, lines = cli(command, "--work", str(work), "--model", str(tiny_model))
        assert code == 1 and lines == [want]
    code, lines = features(work, tiny_model)
    assert code == 0 and lines[0].startswith("features: ignoring the old index") and "no audio work" in lines[1]
    assert victim.read_text() == "precious"
    assert snapshot(work) == built[1]


def _drop_column(t):
    return t.drop_columns(["lab_fp"])


def _shard_number(t):
    import pyarrow as pa

    i = t.schema.get_field_index("lab_shard")
    return t.set_column(i, "lab_shard", pa.array([99] * t.num_rows, pa.int32()))


BAD_INDEXES = {
    "shards-list": (lambda d: d.update(shards=[]), None, "shards must be an object, got []"),
    "columns": (None, _drop_column, "its columns are not those of a cache index segment"),
    "shard-number": (None, _shard_number, "a clip's labels refer to shard number 99"),
    "shard-names": (lambda d: d["shard_names"].append("../x.arrow"), None,
                    'shard_names has "../x.arrow", not a plain cache shard file name'),
    "version": (lambda d: d.update(version=99), None, "segment version 99, this whisper-tune reads version 3"),
    "not-arrow": (None, None, "File is too small"),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_wrong_shapes_give_one_line_and_features_rebuilds(built, work, tiny_model, case):
    doc, table, what = BAD_INDEXES[case]
    path = only_segment(work)
    if doc is None and table is None:
        path.write_text("not arrow at all")
    else:
        rewrite_segment(path, doc=doc, table=table)
    with pytest.raises(CacheError) as err:
        read_segments(work / "cache")
    message = str(err.value)
    assert "\n" not in message and what in message
    assert message.startswith(f"{path} is not a usable feature cache index segment")
    assert message.endswith(rebuild(work))
    for command in ("train", "evaluate"):
        code, lines = cli(command, "--work", str(work), "--model", str(tiny_model))
        assert code == 1 and lines == [f"error: {message}"]
    code, lines = features(work, tiny_model)
    assert code == 0 and any("no audio work" in x for x in lines)
    assert snapshot(work) == built[1] and not path.exists()


def test_an_old_json_index_is_read_and_converted_once(built, work, tiny_model):
    from whisper_tune.pipeline.cache import load_merged_index, save_index

    cache = work / "cache"
    save_index(cache / "index.json", load_merged_index(cache))          # what a cache of an older version holds
    only_segment(work).unlink()
    assert snapshot(work) == built[1]                                    # readers read it as it is
    code, lines = features(work, tiny_model)
    assert code == 0 and any(x.startswith(f"features: converted the old JSON index of {cache}") for x in lines)
    assert not (cache / "index.json").exists() and snapshot(work) == built[1]
    code, lines = features(work, tiny_model)
    assert code == 0 and not any("converted" in x for x in lines) and lines[0].startswith("features: no audio work")


def test_a_crafted_part_index_is_refused_too(built, work, tiny_model):
    seg = only_segment(work)
    part = rewrite_segment(seg, doc=lambda d: d["shards"].update({"/etc/passwd": next(iter(d["shards"].values()))}),
                           name=seg.name.replace(".all.", ".p1of2."))
    with pytest.raises(CacheError, match=r"index\.[0-9]{20}\.p1of2\.arrow is not a usable feature cache index"):
        open_cache(work)
    code, _ = features(work, tiny_model)
    assert code == 0 and not part.exists() and snapshot(work) == built[1]
