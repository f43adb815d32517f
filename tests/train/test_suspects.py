"""train --skip-suspect: the rows WORK/audit.parquet flags are left out of train and validation, and said so."""

from __future__ import annotations

import pytest

from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.train.inference.audit import OK, SUSPECT, RowAudit, write_audit
from whisper_tune.train.suspects import leave_out, read_suspects, skip_suspects
from whisper_tune.testing import build_cache


def _audit(work, verdicts: dict[str, str], labels: dict[str, str] | None = None) -> None:
    cache = open_cache(work)
    rows = [RowAudit(cid, (labels or {}).get(cid, normalize_text(cache.get(cid, 0).text)), "heard", 1.0, 0.0, 14.0,
                     1.0, verdict, "CER 90 %" if verdict == SUSPECT else "", cache.split_of(cid))
            for cid, verdict in verdicts.items()]
    write_audit(work / "audit.parquet", rows)


@pytest.fixture
def audited(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=5, n_validation=2, n_test=2, variants=1)
    ids = open_cache(work).clip_ids()
    verdicts = {cid: OK for cid in ids}
    verdicts.update({"clip0001.wav": SUSPECT, "clip0003.wav": SUSPECT, "clip0005.wav": SUSPECT})  # 2 train, 1 val
    _audit(work, verdicts)
    return work


def test_leave_out_keeps_the_order():
    assert leave_out(["a", "b", "c", "d"], {"b", "d", "x"}) == (["a", "c"], 2)


def test_train_skip_suspect_leaves_the_flagged_rows_out(tiny_model, audited, planned_train):
    plain = planned_train(audited, tiny_model)
    assert len(plain.train_ids) == 5 and len(plain.eval_ids) == 2
    skipped = planned_train(audited, tiny_model, "--skip-suspect")
    train_ids, eval_ids, printed = skipped.train_ids, skipped.eval_ids, skipped.output
    assert train_ids == ["clip0000.wav", "clip0002.wav", "clip0004.wav"] and eval_ids == ["clip0006.wav"]
    assert (f"--skip-suspect: left out 2 train and 1 validation clips that {audited / 'audit.parquet'} flags"
            in " ".join(printed.split()))
    assert "not featurized yet" not in printed           # left-out clips do not read as an interrupted features run


def test_a_fixed_label_or_an_ok_mark_lifts_the_flag(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=3, n_test=1, variants=1)
    _audit(work, {"clip0000.wav": SUSPECT, "clip0001.wav": SUSPECT},
           labels={"clip0001.wav": "the label as it was before the fix"})
    assert read_suspects(work, open_cache(work)) == {"clip0000.wav"}
    view, note = skip_suspects(open_cache(work), work)
    assert view.clip_ids("train") == ["clip0001.wav", "clip0002.wav"] and "left out 1 train and 0 validation" in note


def test_skip_suspect_without_an_audit_names_the_command(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=2, n_test=1, variants=1)
    with pytest.raises(ConfigError) as err:
        read_suspects(work, open_cache(work))
    assert str(err.value) == (f"--skip-suspect (data.skip_suspect) needs {work / 'audit.parquet'}, which does not "
                              f"exist; run `whisper-tune audit --work {work} --model MODEL` first, or train without it")
