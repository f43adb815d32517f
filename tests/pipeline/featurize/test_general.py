"""The general set's features (pipeline/featurize/general.py): a CSV featurized into WORK/general/, its record,
a re-run that only checks it, the default (the demo's everyday sentences) and `none`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.general import DEMO_GENERAL_CSV, built_from, general_csv, general_work
from whisper_tune.pipeline.featurize.general import featurize_general
from whisper_tune.testing import features_config, tone, write_audio


def _cfg(model, csv):
    cfg = features_config(model, **{"augment.variants": 3})
    return replace(cfg, training=replace(cfg.training, general_csv=str(csv)))


def test_a_general_csv_becomes_its_own_cache(tmp_path, tiny_model):
    for i in range(3):
        write_audio(tmp_path / "general" / f"g{i}.wav", tone(1.5, freq=300 + 50 * i, pad_silence=0.1, seed=i))
    csv = tmp_path / "general" / "everyday.csv"
    csv.write_text("audio,text\n" + "".join(f"g{i}.wav,Sentence number {i} is plain English.\n" for i in range(3)))
    work = tmp_path / "work"
    note = featurize_general(work, _cfg(tiny_model, csv))
    assert note == f"features: general set {csv}: 3 clips in {general_work(work) / 'cache'}"
    cache = open_cache(general_work(work))
    assert len(cache) == 3 and all(cache.variants(c) == [0] for c in cache.clip_ids())   # clean variant only
    assert built_from(work) == csv.resolve()
    assert not (general_work(work) / "cache" / "nonspeech.npz").exists()          # no pool of its own
    assert not (work / "cache").exists()                                            # the domain cache untouched
    again = featurize_general(work, _cfg(tiny_model, csv))
    assert again == note and len(open_cache(general_work(work))) == 3


def test_default_off_and_missing(tmp_path, tiny_model):
    assert general_csv("") == DEMO_GENERAL_CSV and DEMO_GENERAL_CSV.is_file()
    assert general_csv("none") is None and general_csv(" None ") is None
    assert featurize_general(tmp_path, _cfg(tiny_model, "none")) == ""
    with pytest.raises(ConfigError, match="--general-csv .*nothere.csv: no such file.*--general-csv none"):
        featurize_general(tmp_path, _cfg(tiny_model, tmp_path / "nothere.csv"))
