"""What each of train's evaluations scores beside the domain (train/checks.py, train/loop.py): the held-out
non-speech clips and the general set, in metrics.json and curves.png; the forgetting warning."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace

import pytest

from whisper_tune.pipeline.core.general import write_record
from whisper_tune.testing import build_cache, train_config, write_pool
from whisper_tune.train.checks import forgetting_warning, forgetting_warnings
from whisper_tune.train.report import epoch_records
from whisper_tune.train.trainer import run_train


@pytest.mark.slow
def test_a_run_scores_non_speech_and_the_general_set_every_epoch(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=4, n_test=2, variants=1)
    write_pool(work / "cache", n_train=2, n_heldout=3)
    build_cache(work / "general", tiny_model, n_train=0, n_test=3, variants=1, seed=5)
    csv = tmp_path / "everyday.csv"
    csv.write_text("audio,text\n")
    write_record(work, csv)
    cfg = train_config(tiny_model, epochs=2, general_csv=str(csv), forgetting_warn=0.0)
    cfg = replace(cfg, augment=replace(cfg.augment, no_speech_share=0.2))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        result = run_train(work_dir=work, output_dir=tmp_path / "out", cfg=cfg)
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(doc["base"]) == {"base_nonspeech_words_per_clip", "base_nonspeech_loop_share", "base_general_wer",
                                "base_general_cer", "base_general_loop_share"}
    assert len(doc["epochs"]) == 2 and doc["train_clips"] == 4 + 1        # one non-speech window per epoch
    for e in doc["epochs"]:
        assert e["nonspeech_words_per_clip"] is not None and e["nonspeech_words_per_clip"] >= 0
        assert 0 <= e["nonspeech_loop_share"] <= 1 and 0 <= e["loop_share"] <= 1
        assert e["general_wer"] is not None and e["general_cer"] is not None
    assert [r.general_wer for r in result.epochs] == [e["general_wer"] for e in doc["epochs"]]
    expected = forgetting_warnings(result.epochs, doc["base"]["base_general_wer"], 0.0)
    assert doc["forgetting_warnings"] == expected
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    log = err.getvalue()
    assert "non-speech windows: 1 per epoch" in log and "general set: 3 clips" in log
    assert "words per non-speech clip" in log


def test_forgetting_warning_fires_on_a_crafted_history():
    history = [
        {"epoch_train_loss": 2.0, "epoch": 1.0, "step": 5},
        {"eval_wer": 30.0, "eval_cer": 10.0, "eval_loss": 1.5, "eval_loop_share": 0.0, "epoch": 1.0, "step": 5},
        {"eval_nonspeech_words_per_clip": 0.4, "eval_nonspeech_loop_share": 0.0, "eval_general_wer": 12.5,
         "eval_general_cer": 5.0, "epoch": 1.0, "step": 5},
        {"eval_wer": 20.0, "eval_cer": 8.0, "eval_loss": 1.2, "epoch": 2.0, "step": 10},
        {"eval_nonspeech_words_per_clip": 0.1, "eval_general_wer": 14.5, "eval_general_cer": 6.0,
         "epoch": 2.0, "step": 10},
    ]
    records = epoch_records(history)
    assert [(r.wer, r.general_wer, r.nonspeech_words_per_clip) for r in records] == [(30.0, 12.5, 0.4),
                                                                                     (20.0, 14.5, 0.1)]
    warnings = forgetting_warnings(records, base_wer=10.0, threshold=2.0)
    assert len(warnings) == 2 and "epoch 2" in warnings[1] and "+4.50 points" in warnings[1]
    assert "+2.50 points over the base model's 10.00 %" in warnings[0]
    assert forgetting_warnings(records, base_wer=12.5, threshold=2.0) == []          # +0 and +2.0: not more than 2
    assert forgetting_warning(14.5, None, 2.0, 1.0) is None                          # no base score: no warning
    assert forgetting_warning(12.01, 10.0, 2.0, 3.0).startswith("warning: forgetting: at epoch 3")
