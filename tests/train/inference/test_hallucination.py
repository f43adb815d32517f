"""evaluate's hallucination figures (train/inference/hallucination.py): words per held-out non-speech clip and
repetition loops, for the model and the baseline, in the table, the JSON and the report; absent without a pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.testing import write_pool, write_work
from whisper_tune.train.inference import evaluate as ev

REFS = ["the cat sat on the mat", "open the window"]


class Fake:
    backend, n_mels = "fake", 80

    def __init__(self, label, hyps):
        self.label, self.hyps = label, list(hyps)

    def decode(self, features):
        assert features.shape[1:] == (80, 3000)
        out, self.hyps = self.hyps[:len(features)], self.hyps[len(features):]
        return out


@pytest.fixture()
def pooled_work(tmp_path):
    rng = np.random.default_rng(0)
    clips = [(f"clip{i}", (0.1 * rng.standard_normal(16_000)).astype(np.float32), REFS[i], "test") for i in range(2)]
    work = write_work(tmp_path / "work", clips)
    write_pool(work / "cache", n_train=2, n_heldout=4)
    return work


def test_evaluate_prints_and_writes_the_hallucination_figures(pooled_work, monkeypatch, capsys):
    fakes = {"model": Fake("model", [*REFS, "", "", "", "you"]),
             "base": Fake("base", ["the cat sat on the mat the mat the mat", "open the window",
                                   "you", "thank you thank you thank you", "you", "so so so so so"])}
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: fakes[spec])
    out = pooled_work / "e.json"
    report = pooled_work / "e.md"
    result = ev.run_evaluate(ev.EvalSettings(model="model", baseline="base", work_dir=pooled_work, cfg=load_config(),
                                             json_path=out, report_path=report, batch_size=3, worst=5))
    data = json.loads(out.read_text())
    assert data["clips"] == 2 and len(data["per_clip"]) == 2       # the pool is no clip of the split
    assert data["nonspeech_clips"] == 4 and data["nonspeech_words_per_clip"] == 0.25
    assert data["nonspeech_clips_with_text"] == 1 and data["nonspeech_loop_share"] == 0.0 and data["loop_share"] == 0.0
    assert data["baseline_nonspeech_words_per_clip"] == pytest.approx((1 + 6 + 1 + 5) / 4)
    assert data["baseline_nonspeech_loop_share"] == 0.5 and data["baseline_loop_share"] == 0.5
    assert result.scores.hallucination.texts == ("", "", "", "you")
    printed = capsys.readouterr().out
    assert "non-speech check: 4 held-out clips" in printed
    assert "model: 0.25 words per non-speech clip (1 of 4 with text)" in printed
    assert "base (baseline): 3.25 words per non-speech clip (4 of 4 with text), loops 50% of non-speech" in printed
    assert "non-speech check" in report.read_text()


def test_a_cache_without_a_pool_has_no_figures(tmp_path, monkeypatch, capsys, caplog):
    rng = np.random.default_rng(0)
    work = write_work(tmp_path / "work", [("c0", (0.1 * rng.standard_normal(16_000)).astype(np.float32), REFS[0],
                                           "test")])
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: Fake(spec, [REFS[0]]))
    with caplog.at_level("INFO"):
        result = ev.run_evaluate(ev.EvalSettings(model="m", work_dir=work, cfg=load_config()))
    assert result.scores.hallucination is None and "nonspeech_words_per_clip" not in result.to_json()
    assert "no non-speech pool" in caplog.text and "non-speech check" not in capsys.readouterr().out


def test_tiny_model_prints_the_figures(tiny_model, pooled_work, capsys):
    cfg = load_config(None, {"decode.backend": "transformers"})
    result = ev.run_evaluate(ev.EvalSettings(model=str(tiny_model), work_dir=pooled_work, cfg=cfg, batch_size=2,
                                             max_new_tokens=4))
    h = result.scores.hallucination
    assert h.clips == 4 and h.words_per_clip >= 0 and len(h.texts) == 4
    assert f"{h.words_per_clip:.2f} words per non-speech clip" in capsys.readouterr().out
