"""evaluate: scores equal jiwer by hand, worst clips / wrong words, JSON and report, reads the cache only.

Real weights on both backends (transformers tiny.en against its CTranslate2 export on one cache) are checked in
test_export.py, where the export is made anyway."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from whisper_tune.pipeline.cache import CachedExample, write_examples
from whisper_tune.cli import app
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.validate.manifest import write_manifest
from whisper_tune.pipeline.core.text import normalize_text
from whisper_tune.train.inference import evaluate as ev
from whisper_tune.testing import write_work

def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16_000))).astype(np.float32)


class FakeDecoder:
    """Returns fixed hypotheses per batch position, in call order."""

    backend = "fake"
    n_mels = 80

    def __init__(self, label: str, hyps: list[str]) -> None:
        self.label, self.hyps, self.calls = label, list(hyps), 0

    def decode(self, features: np.ndarray) -> list[str]:
        assert features.shape[1:] == (80, 3000) and features.dtype == np.float32
        out, self.hyps = self.hyps[:len(features)], self.hyps[len(features):]
        self.calls += 1
        return out


# ------------------------------------------------------------------------------------------------ pure scoring

REFS = ["Hello, World! This is a test.", "The cat sat on the mat.", "Ça va très bien, merci."]
HYPS = ["hello world this is the test", "The cat sat on mat", "ca va tres bien merci"]


def test_scores_equal_jiwer_by_hand():
    s = ev.score("m", "fake", REFS, HYPS, seconds=2.0)
    nr, nh = [normalize_text(r) for r in REFS], [normalize_text(h) for h in HYPS]
    assert s.wer == pytest.approx(100 * jiwer.wer(nr, nh))
    assert s.cer == pytest.approx(100 * jiwer.cer(nr, nh))
    assert s.orthographic_wer == pytest.approx(100 * jiwer.wer([r.strip() for r in REFS], HYPS))
    assert s.orthographic_wer > s.wer > 0
    assert s.clips == 3 and s.clips_per_second == pytest.approx(1.5)


def test_worst_clips_and_wrong_words():
    results = ev.clip_results(["a", "b", "c"], REFS, HYPS)
    assert [r.errors for r in results] == [1, 1, 2]   # "a"->"the"; "the" deleted; "ça", "très" unaccented
    assert results[1].wer == pytest.approx(100 / 6)
    worst = ev.worst_clips(results, 2)
    assert [w.clip_id for w in worst] == ["c", "a"]
    assert ev.worst_clips(ev.clip_results(["a"], ["same words"], ["Same words."]), 5) == ()
    words = dict(ev.wrong_words(REFS, HYPS))
    assert words == {"a": 1, "the": 1, "ça": 1, "très": 1}
    assert ev.wrong_words(["one two two"], ["one"]) == (("two", 2),)


# ------------------------------------------------------------------------------------------------ run_evaluate

@pytest.fixture()
def noise_work(tmp_path):
    clips = [(f"clip{i}", noise(1.0 + i, i), REFS[i], "test") for i in range(3)]
    clips.append(("trainclip", noise(1.0, 9), "not scored", "train"))
    return write_work(tmp_path / "work", clips)


def test_run_evaluate_numbers_json_and_report(noise_work, monkeypatch, capsys):
    fakes = {"model": FakeDecoder("model", HYPS), "base": FakeDecoder("base", ["", "The cat sat on the mat.", "x"])}
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: fakes[spec])
    out_json, out_md = noise_work / "eval.json", noise_work / "eval.md"
    result = ev.run_evaluate(ev.EvalSettings(model="model", work_dir=noise_work, cfg=load_config(), baseline="base", split="test",
                             json_path=out_json, report_path=out_md, batch_size=2, worst=2))
    assert fakes["model"].calls == 2 and fakes["base"].calls == 2        # 3 clips in batches of 2
    data = json.loads(out_json.read_text())
    nr = [normalize_text(r) for r in REFS]
    assert data["clips"] == 3
    assert data["wer"] == pytest.approx(100 * jiwer.wer(nr, [normalize_text(h) for h in HYPS]))
    assert data["cer"] == pytest.approx(100 * jiwer.cer(nr, [normalize_text(h) for h in HYPS]))
    base_h = [normalize_text(h) for h in ["", "The cat sat on the mat.", "x"]]
    assert data["baseline_wer"] == pytest.approx(100 * jiwer.wer(nr, base_h))
    assert data["baseline_cer"] == pytest.approx(100 * jiwer.cer(nr, base_h))
    assert data["wer_difference"] == pytest.approx(data["wer"] - data["baseline_wer"])
    assert [w["clip_id"] for w in data["worst"]] == ["clip2", "clip0"]
    assert data["worst"][0]["baseline_hypothesis"] == "x"
    assert result.wer == data["wer"]
    assert [(c["clip_id"], c["hypothesis"]) for c in data["per_clip"]] == list(zip(["clip0", "clip1", "clip2"], HYPS))
    printed = capsys.readouterr().out
    assert "clips/s" in printed and "difference (model - baseline)" in printed and "Ça va très bien" in printed
    report = out_md.read_text()
    assert report.startswith("# Evaluation: model") and "| WER % |" in report and "## Worst 2 clips" in report


def test_cli_flags_reach_the_stage(noise_work, monkeypatch):
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeDecoder(spec, ["not scored"]))
    res = CliRunner().invoke(app, ["evaluate", "--model", "m", "--work", str(noise_work), "--split", "train",
                                   "--json", str(noise_work / "t.json"), "--report", str(noise_work / "t.md"),
                                   "--batch-size", "1", "--worst", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads((noise_work / "t.json").read_text())
    assert data["split"] == "train" and data["clips"] == 1 and data["wer"] == 0.0 and "baseline_wer" not in data
    assert (noise_work / "t.md").is_file()


def test_orthographic_reference_comes_from_the_cache(noise_work, monkeypatch):
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeDecoder(spec, REFS))
    (noise_work / "manifest.parquet").unlink()        # evaluate reads the cache alone
    result = ev.run_evaluate(ev.EvalSettings(model="m", work_dir=noise_work, cfg=load_config(), json_path=None, report_path=None))
    assert result.references == tuple(REFS)
    assert result.scores.wer == 0 and result.scores.orthographic_wer == 0 and result.worst == ()


def _leaky_work(root: Path, model: Path) -> Path:
    """A real validate-like manifest (two test clips, one saying a train sentence) featurized into a cache."""
    from whisper_tune.testing import make_work, run, features_config

    work, rows = make_work(root, n=5)
    frame = pl.DataFrame(rows).with_columns(
        pl.Series("split", ["test", "test", "train", "train", "train"]),
        pl.Series("text", ["the cat sat on the mat", "something new", "the cat sat on the mat", "b c", "d e"]),
        pl.Series("text_in_train", [True, False, False, False, False]))
    write_manifest(frame, work)
    run(work, features_config(model, **{"augment.variants": 1}))
    return work


def test_copying_only_the_cache_gives_the_same_evaluate_json(tiny_model, tmp_path, monkeypatch):
    import shutil

    work = _leaky_work(tmp_path / "cpu", tiny_model)
    gpu = tmp_path / "gpu-box" / "work"
    shutil.copytree(work / "cache", gpu / "cache")      # README: copy cache/ alone to the GPU box
    from whisper_tune.pipeline.cache import open_cache

    assert open_cache(gpu).meta.usable == {"test": 2, "train": 3}   # the manifest's counts, for coverage advice
    hyps = ["the cat sat on the mat", "something old"]
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeDecoder(spec, hyps))
    outs = []
    for where in (work, gpu):
        ev.run_evaluate(ev.EvalSettings(model="m", work_dir=where, cfg=load_config(), json_path=where / "e.json"))
        data = json.loads((where / "e.json").read_text())
        for key in ("seconds", "clips_per_second", "real_time_factor"):
            data.pop(key)
        outs.append(data)
    assert outs[0] == outs[1]
    assert outs[1]["unseen_text_wer"] == pytest.approx(50.0)            # "something old" for "something new"
    assert outs[1]["unseen_text"]["clips"] == 1 and outs[1]["unseen_text"]["seen_clips"] == 1
    assert outs[1]["unseen_text"]["seen_wer"] == 0.0


def test_unseen_keys_are_always_written_and_the_empty_side_is_named(noise_work, monkeypatch, capsys):
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeDecoder(spec, REFS))
    data = ev.run_evaluate(ev.EvalSettings(model="m", work_dir=noise_work, cfg=load_config())).to_json()
    assert data["unseen_text_wer"] == 0.0 and data["unseen_text"]["seen_wer"] is None
    assert "no clip says a sentence that a train clip says" in capsys.readouterr().out
    from whisper_tune.train.inference.unseen import unseen_scores

    every = unseen_scores({"a": True, "b": True}, ["a", "b"], ["x", "y"], ["x", "y"])
    assert every.wer is None and every.seen_wer == 0.0
    assert every.note == "every one of the 2 clips says a sentence that a train clip says: no unseen-text WER"


def test_empty_split_and_missing_cache_are_clear_errors(noise_work, tmp_path):
    cfg = load_config()
    with pytest.raises(CacheError, match="no clip in the 'test' split"):
        write_work(tmp_path / "w2", [("only", noise(1.0, 1), "train only", "train")])
        ev.run_evaluate(ev.EvalSettings(model="m", work_dir=tmp_path / "w2", cfg=cfg))
    res = CliRunner().invoke(app, ["evaluate", "--model", "m", "--work", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "error:" in res.output and "Traceback" not in res.output


def test_random_model_both_mel_sizes(tiny_model, tiny_model_128, noise_work):
    """The real paths of both back ends on a tiny random model (auto converts it to CTranslate2); a 128-mel model
    refuses an 80-mel cache."""
    for backend, expected in (("transformers", "transformers"), ("auto", "ctranslate2")):
        cfg = load_config(None, {"decode.backend": backend})
        result = ev.run_evaluate(ev.EvalSettings(model=str(tiny_model), work_dir=noise_work, cfg=cfg, batch_size=2,
                                                 max_new_tokens=3))
        assert result.scores.backend == expected and len(result.scores.hypotheses) == 3
    with pytest.raises(CacheError, match="80-mel features but --model .* expects 128"):
        ev.run_evaluate(ev.EvalSettings(model=str(tiny_model_128), work_dir=noise_work, cfg=load_config(), max_new_tokens=3))


def test_evaluate_runs_without_audio_libraries(tiny_model, noise_work, tmp_path):
    """evaluate reads the cache only: it works in a process where librosa, audiomentations and the audio
    modules of pipeline/ cannot be imported."""
    from whisper_tune.testing import blocked_python, import_blocker

    blockers = import_blocker(tmp_path / "blockers")
    code = ("from pathlib import Path; from whisper_tune.pipeline.core.config import load_config; from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate; "
            f"r = run_evaluate(EvalSettings(model={str(tiny_model)!r}, work_dir=Path({str(noise_work)!r}), cfg=load_config(), "
            "max_new_tokens=2, worst=0)); print('clips', r.scores.clips)")
    proc = blocked_python(["-c", code], blockers)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "clips 3" in proc.stdout


def test_unseen_text_wer_is_printed_and_recorded(tmp_path, monkeypatch, capsys):
    clips = [(f"clip{i}", noise(1.0 + i, i), REFS[i], "test") for i in range(3)]
    clips.append(("trainclip", noise(1.0, 9), "the cat sat on the mat", "train"))   # REFS[1], normalized
    work = write_work(tmp_path / "work", clips)
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, **kw: FakeDecoder(spec, HYPS))
    result = ev.run_evaluate(ev.EvalSettings(model="m", work_dir=work, cfg=load_config(), json_path=work / "e.json"))
    unseen = [0, 2]                                   # clip1 says trainclip's sentence (flag recorded in the cache)
    expected = 100 * jiwer.wer([normalize_text(REFS[i]) for i in unseen], [normalize_text(HYPS[i]) for i in unseen])
    assert result.unseen.clips == 2 and result.unseen.seen_clips == 1
    assert result.unseen.wer == pytest.approx(expected) and result.unseen.seen_wer == pytest.approx(100 / 6)
    data = json.loads((work / "e.json").read_text())
    assert data["unseen_text_wer"] == pytest.approx(expected) and data["unseen_text"]["seen_clips"] == 1
    printed = capsys.readouterr().out
    assert f"{expected:.2f} % on the 2 whose transcript does not occur in train" in printed
    (work / "manifest.parquet").unlink()              # the flags live in the cache, not the manifest
    again = ev.run_evaluate(ev.EvalSettings(model="m", work_dir=work, cfg=load_config()))
    assert again.unseen == result.unseen


@pytest.mark.parametrize("flag,make,target,message", [
    ("--json", lambda t: (t / "taken").mkdir(), "taken", "--json {p} is a folder; give a file name"),
    ("--report", lambda t: (t / "file").write_text("x"), "file/r.md", "file is a file, not a folder"),
])
def test_bad_json_or_report_path_is_one_line_before_any_decoding(noise_work, tmp_path, monkeypatch, flag, make,
                                                                 target, message):
    def never(*a, **k):
        raise AssertionError("decoding started before the output paths were checked")

    monkeypatch.setattr(ev, "open_decoder", never)
    make(tmp_path)
    path = tmp_path / target
    res = CliRunner().invoke(app, ["evaluate", "--model", "m", "--work", str(noise_work), flag, str(path)])
    assert res.exit_code == 1 and message.format(p=path) in res.output and "Traceback" not in res.output
