"""Damaged and crafted caches, end to end through the commands: each gives one line naming the command that
rebuilds the cache, that command repairs it in one run, and nothing outside the cache folder is touched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import features_config, flip_bytes, make_work, run, snapshot
from whisper_tune.pipeline.cache import CacheError, load_index, open_cache
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
    index = json.loads((work / "cache" / "index.json").read_text())
    st = shard.stat()                                           # the index now "proves" the damaged file
    index["shards"][shard.name].update(ctime_ns=st.st_ctime_ns, inode=st.st_ino)
    (work / "cache" / "index.json").write_text(json.dumps(index))
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
    path = work / "cache" / "index.json"
    index = json.loads(path.read_text())
    some = next(iter(index["shards"].values()))
    index["shards"][name] = dict(some)
    path.write_text(json.dumps(index))
    want = (f"error: {path} is not a usable feature cache index (shard name {quote(name)} is not a plain "
            f"cache shard file name); {rebuild(work)}")
    for command in ("train", "evaluate"):
        code, lines = cli(command, "--work", str(work), "--model", str(tiny_model))
        assert code == 1 and lines == [want]
    code, lines = features(work, tiny_model)
    assert code == 0 and lines[0].startswith("features: ignoring the old index") and "no audio work" in lines[1]
    assert victim.read_text() == "precious"
    assert snapshot(work) == built[1]


BAD_INDEXES = {
    "shards-list": (lambda d: d.update(shards=[]), "index.shards must be an object, got []"),
    "no-clips": (lambda d: d.pop("clips"), "index lacks 'clips'"),
    "row-text": (lambda d: next(iter(d["clips"].values()))["labels"].update(row="0"),
                 "labels.row must be a whole number, got \"0\""),
    "version": (lambda d: d.update(version=99), "index version 99, this whisper-tune reads version 2"),
    "not-json": (None, "Expecting value"),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_wrong_shapes_give_one_line_and_features_rebuilds(built, work, tiny_model, case):
    change, what = BAD_INDEXES[case]
    path = work / "cache" / "index.json"
    if change is None:
        path.write_text("not json at all")
    else:
        index = json.loads(path.read_text())
        change(index)
        path.write_text(json.dumps(index))
    with pytest.raises(CacheError) as err:
        load_index(path)
    message = str(err.value)
    assert "\n" not in message and what in message and message.startswith(f"{path} is not a usable feature cache")
    assert message.endswith(rebuild(work))
    for command in ("train", "evaluate"):
        code, lines = cli(command, "--work", str(work), "--model", str(tiny_model))
        assert code == 1 and lines == [f"error: {message}"]
    code, lines = features(work, tiny_model)
    assert code == 0 and any("no audio work" in x for x in lines)
    assert snapshot(work) == built[1]


def test_a_crafted_part_index_is_refused_too(built, work, tiny_model):
    index = json.loads((work / "cache" / "index.json").read_text())
    index["shards"]["/etc/passwd"] = next(iter(index["shards"].values()))
    part = work / "cache" / "index.part-1-of-2.json"
    part.write_text(json.dumps(index))
    with pytest.raises(CacheError, match=r"index\.part-1-of-2\.json is not a usable feature cache index"):
        open_cache(work)
    code, _ = features(work, tiny_model)
    assert code == 0 and not part.exists() and snapshot(work) == built[1]
