"""audit: swapped transcripts found by the pure scorer, each rule, the `audit` column's ok, the command end to end."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from whisper_tune.cli import app
from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.train.inference import audit
from whisper_tune.train.inference.audit import MARKED_OK, OK, SUSPECT, score_rows
from whisper_tune.testing import write_work


def _mishear(word: str, rng) -> str:
    """A model's mistake on one word: one to three character edits."""
    chars = list(word)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, len(chars)))
        op = int(rng.integers(0, 3))
        if op == 0:
            chars[i] = chr(97 + int(rng.integers(0, 26)))
        elif op == 1:
            chars.insert(i, chr(97 + int(rng.integers(0, 26))))
        elif len(chars) > 1:
            del chars[i]
    return "".join(chars)


def swapped_set(seed: int, n: int = 100):
    """n rows of jargon-like sentences heard by a weak model (20-80 % of each row's words misheard), spoken at
    12-16 characters per second; a known 10 % of the rows carry another of those rows' transcript."""
    rng = np.random.default_rng(seed)
    vocab = ["".join(chr(97 + c) for c in rng.integers(0, 26, int(rng.integers(2, 10)))) for _ in range(300)]
    said = [" ".join(rng.choice(vocab, int(rng.integers(6, 15)))) for _ in range(n)]
    heard, seconds = [], []
    for sentence in said:
        p = rng.uniform(0.2, 0.8)
        heard.append(" ".join(_mishear(w, rng) if rng.random() < p else w for w in sentence.split()))
        seconds.append(len(sentence.replace(" ", "")) / rng.normal(14, 1.5))
    swapped = sorted(int(i) for i in rng.choice(n, n // 10, replace=False))
    labels = list(said)
    for k, i in enumerate(swapped):
        labels[i] = said[swapped[(k + 1) % len(swapped)]]
    return labels, heard, seconds, swapped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tenth_of_swapped_transcripts_is_found_with_few_false_alarms(seed):
    labels, heard, seconds, swapped = swapped_set(seed)
    rows, rules = score_rows([f"c{i}" for i in range(len(labels))], labels, heard, seconds)
    flagged = {i for i, r in enumerate(rows) if r.verdict == SUSPECT}
    clean = set(range(len(labels))) - set(swapped)
    assert len(flagged & set(swapped)) >= 8, (sorted(flagged), swapped, rules)
    assert len(flagged & clean) <= 0.05 * len(clean), (sorted(flagged & clean), rules)
    assert rules.cer_median > 10      # a weak model: a fixed CER limit of 10-20 % would flag most clean rows


def _rows(labels, heard, seconds=None, marked=()):
    seconds = seconds or [len(t.replace(" ", "")) / 14 for t in labels]
    return score_rows([f"c{i}" for i in range(len(labels))], labels, heard, seconds, marked_ok=marked)[0]


SENTENCES = ["hold the apixaban tonight", "restart tacrolimus tomorrow morning", "check the blood pressure twice",
             "the patient slept well overnight", "give two tablets after lunch", "call the pharmacy about refills",
             "repeat the potassium level today", "stop the infusion at noon"]


def test_a_perfect_model_flags_nothing_and_one_slip_is_no_outlier():
    heard = list(SENTENCES)
    heard[3] = "the patient slept well over night"
    rows = _rows(SENTENCES, heard)
    assert [r.verdict for r in rows] == [OK] * len(SENTENCES), [r.reason for r in rows]


def test_repetitive_labels_are_flagged():
    looped = "thank you thank you thank you thank you thank you thank you"
    assert audit.compression_ratio(looped) > 2.4 and audit.repeated_phrase(looped) == "thank you"
    assert audit.repeated_phrase("the the cat") == "" and audit.repeated_phrase("no no no") == "no"
    rows = _rows([*SENTENCES, looped], [*SENTENCES, "thank you"])
    assert rows[-1].verdict == SUSPECT
    assert "label compression ratio" in rows[-1].reason and "'thank you' 3+ times in a row" in rows[-1].reason
    assert all(r.verdict == OK for r in rows[:-1])


def test_cut_clips_are_flagged_both_ways():
    long_ = "give two tablets after lunch and one more before bed"
    labels = [*SENTENCES, "give two tablets after lunch", long_]
    heard = [*SENTENCES, long_, "give two tablets after lunch"]
    rows = _rows(labels, heard, seconds=[len(t.replace(" ", "")) / 14 for t in heard])
    assert "label cut?" in rows[-2].reason and rows[-2].verdict == SUSPECT
    assert "audio cut?" in rows[-1].reason and rows[-1].verdict == SUSPECT


def test_speaking_rate_far_outside_the_set_is_flagged():
    seconds = [len(t.replace(" ", "")) / 14 for t in SENTENCES]
    seconds[2] = 20.0                      # a 20 s clip labelled with one short sentence
    rows = _rows(SENTENCES, SENTENCES, seconds)
    assert rows[2].verdict == SUSPECT and rows[2].reason.startswith("speaking rate 1.3 chars/s")
    assert [r.verdict for i, r in enumerate(rows) if i != 2] == [OK] * (len(SENTENCES) - 1)


def test_rows_marked_ok_are_never_flagged():
    labels, heard, seconds, swapped = swapped_set(0)
    ids = [f"c{i}" for i in range(len(labels))]
    rows, _ = score_rows(ids, labels, heard, seconds, marked_ok={f"c{swapped[0]}"})
    assert rows[swapped[0]].verdict == MARKED_OK and rows[swapped[0]].reason      # the finding stays on record
    assert rows[swapped[1]].verdict == SUSPECT


# ------------------------------------------------------------------------------------------ the command


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def audit_work(tmp_path):
    clips = [(f"clip{i}", _speech_like(1.0 + 0.2 * i, i), SENTENCES[i % len(SENTENCES)],
              "train" if i < 6 else "validation" if i < 8 else "test") for i in range(10)]
    return write_work(tmp_path / "work", clips)


def test_audit_command_on_a_tiny_model_writes_the_table(tiny_model, audit_work, monkeypatch):
    real = audit.run_audit
    monkeypatch.setattr(audit, "run_audit", lambda **kw: real(**kw, max_new_tokens=4))    # random weights
    res = CliRunner().invoke(app, ["audit", "--work", str(audit_work), "--model", str(tiny_model),
                                   "--batch-size", "3", "--worst", "2"])
    assert res.exit_code == 0, res.output
    table = pl.read_parquet(audit_work / "audit.parquet")
    assert table.columns == list(audit.COLUMNS)
    assert table.height == 8 and set(table["split"]) == {"train", "validation"}      # test clips are not audited
    assert table["row"].to_list() == list(range(1, 9))                               # the CSV rows, from the manifest
    assert table["label"].to_list()[:2] == ["hold the apixaban tonight", "restart tacrolimus tomorrow morning"]
    cache = open_cache(audit_work)
    assert table["seconds"].to_list() == [cache.get(c, 0).features.shape[1] * 0.01 for c in table["clip_id"]]
    assert set(table["verdict"]) <= {OK, SUSPECT}
    assert "audit of 8 rows (6 train, 2 validation)" in res.output and "median + 2 x scaled MAD" in res.output
    assert f"wrote {audit_work / 'audit.parquet'}" in res.output


class ListDecoder:
    """Returns the given transcripts in call order (clips are decoded train first, then validation, by id)."""

    backend, n_mels, label = "fake", 80, "fake"

    def __init__(self, texts):
        self.texts = list(texts)

    def decode(self, features):
        out, self.texts = self.texts[:len(features)], self.texts[len(features):]
        return out


def test_audit_needs_the_cache_alone_and_honours_its_ok_marks(tmp_path, monkeypatch, capsys):
    from whisper_tune.pipeline.core.config import load_config

    clips = [(f"clip{i}", _speech_like(2.0, i), SENTENCES[i], "train" if i < 6 else "validation")
             for i in range(8)]
    work = write_work(tmp_path / "work", clips, audit_ok={"clip3"})
    (work / "manifest.parquet").unlink()                     # the GPU box may have cache/ alone
    heard = list(SENTENCES)
    heard[2] = heard[3] = "completely unrelated words about the weather in spring"
    asked = []
    monkeypatch.setattr("whisper_tune.train.inference.evaluate.open_decoder",
                        lambda spec, options, backend="auto": asked.append(options) or ListDecoder(heard))
    result = audit.run_audit(work_dir=work, model="fake", cfg=load_config(), batch_size=1)
    assert asked[0].max_new_tokens == 2 * 1 + 16         # twice the longest label (1 token here): loops cost no more
    verdicts = {r.clip_id: r.verdict for r in result.rows}
    assert verdicts["clip2"] == SUSPECT and verdicts["clip3"] == MARKED_OK
    assert [c for c, v in verdicts.items() if v == SUSPECT] == ["clip2"]
    assert all(r.row is None for r in result.rows)           # no manifest: no CSV row numbers
    out = capsys.readouterr().out
    assert "flagged: 1 of 8 rows (12.5 %); 1 more marked ok in the CSV's audit column" in out
    assert "label     : check the blood pressure twice" in out
    assert "transcript: completely unrelated words about the weather in spring" in out
    table = pl.read_parquet(work / "audit.parquet")
    assert table.filter(pl.col("verdict") == SUSPECT)["clip_id"].to_list() == ["clip2"]


def test_no_train_or_validation_clip_is_a_cache_error(tmp_path):
    from whisper_tune.pipeline.core.config import load_config

    work = write_work(tmp_path / "w", [("a", _speech_like(1.0, 0), "only a test clip", "test")])
    with pytest.raises(CacheError, match="no train or validation clip to audit"):
        audit.run_audit(work_dir=work, model="unused", cfg=load_config())
