"""`make demo` end to end on a few of the committed demo clips, with a tiny random model and a one-step schedule."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from whisper_tune.pipeline.core.errors import WhisperTuneError  # noqa: E402
from whisper_tune.testing import REPO_ROOT, load_script

DATA = REPO_ROOT / "data" / "demo"


demo = load_script("data/demo/run_demo.py")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def small_copy(dst: Path, train: int = 4, validation: int = 2, test: int = 2, everyday: int = 2) -> Path:
    """A demo data folder with only a few of the committed clips (same CSV format)."""
    rows = read_rows(DATA / demo.DOMAIN_CSV)
    picked = [r for split, n in (("train", train), ("validation", validation), ("test", test))
              for r in [r for r in rows if r["split"] == split][:n]]
    every = read_rows(DATA / demo.EVERYDAY_CSV)[:everyday]
    for name, chosen in ((demo.DOMAIN_CSV, picked), (demo.EVERYDAY_CSV, every)):
        for row in chosen:
            (dst / row["audios"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / row["audios"], dst / row["audios"])
        with open(dst / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["audios", "transcription", "split", "speaker"])
            writer.writeheader()
            writer.writerows(chosen)
    return dst


def test_committed_demo_data_is_complete_and_split_by_voice_and_template():
    rows = read_rows(DATA / demo.DOMAIN_CSV)
    assert 150 <= len(rows) <= 250
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert all((DATA / r["audios"]).is_file() for r in rows)
    every = read_rows(DATA / demo.EVERYDAY_CSV)
    assert len(every) >= 8 and all((DATA / r["audios"]).is_file() for r in every)
    size = sum((DATA / r["audios"]).stat().st_size for r in rows + every)
    assert size < 8_000_000

    maker = load_script("data/demo/make_demo_data.py")
    # each held-out split has its own sentence shapes, which no training sentence (nor any clause of one) has
    def shapes(templates):
        return [re.compile(re.sub(r"\\\{(a|b|c|cond)\\\}", ".+", re.escape(t.rstrip(".?").lower())))
                for t in templates]

    def text(split):
        return [r["transcription"].lower().rstrip(".?") for r in rows if r["split"] == split]

    test_shapes, validation_shapes = shapes(maker.TEST_TEMPLATES), shapes(maker.VALIDATION_TEMPLATES)
    train, validation, test = text("train"), text("validation"), text("test")
    assert all(any(p.fullmatch(t) for p in test_shapes) for t in test)
    assert all(any(p.fullmatch(t) for p in validation_shapes) for t in validation)
    assert not [t for t in train for p in test_shapes + validation_shapes if p.search(t)]
    assert not [t for t in validation for p in test_shapes if p.search(t)]
    assert len(set(train)) == len(train)
    voices = [set(maker.TRAIN_VOICES), set(maker.VALIDATION_VOICES), set(maker.TEST_VOICES)]
    assert not (voices[0] & voices[1] or voices[0] & voices[2] or voices[1] & voices[2])
    # the speaker column is the voice the generator drew for each clip, and no speaker is in two splits
    domain, everyday = maker.plan()
    assert [(t.name, t.text, t.split, t.voice.name) for t in domain] == [
        (r["audios"], r["transcription"], r["split"], r["speaker"]) for r in rows]
    assert [t.voice.name for t in everyday] == [r["speaker"] for r in every]
    assert all(len({r["split"] for r in rows if r["speaker"] == s}) == 1 for s in {r["speaker"] for r in rows})
    # every test sentence's jargon also occurs in training
    train_text = " ".join(r["transcription"].lower() for r in rows if r["split"] == "train")
    for r in rows:
        if r["split"] == "test":
            for drug in maker.DRUGS:
                if drug in r["transcription"].lower():
                    assert drug in train_text


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_few_clips(tiny_model, tmp_path, capsys):
    data = small_copy(tmp_path / "data")
    cfg = demo.demo_config({"model.name": str(tiny_model), "training.max_steps": 1, "augment.variants": 1,
                            "training.eval_max_clips": 2, "training.generation_max_length": 8,
                            "training.eval_batch_size": 4})
    result = demo.run_demo(work_dir=tmp_path / "work", data_dir=data, cfg=cfg, examples=2)

    assert result.base_test.clips == result.tuned_test.clips == 2
    assert result.base_everyday is not None and result.base_everyday.clips == 2
    assert len(result.examples) == 2
    assert (tmp_path / "work" / "model" / "config.json").is_file()
    metrics = json.loads((tmp_path / "work" / "model" / "metrics.json").read_text())
    assert metrics["eval_split"] == "validation" and metrics["eval_clips"] == 2   # never the test split
    summary = json.loads((tmp_path / "work" / demo.SUMMARY).read_text())
    assert {"base_test", "tuned_test", "base_everyday", "tuned_everyday", "timings", "test_wer_ratio"} <= set(summary)
    assert summary["timings"]["total"] > 0
    trainable, total = result.trainable                # from the train stage's result: the whole model trains
    assert 0 < trainable == total and summary["trainable"] == [trainable, total]
    out = capsys.readouterr().out
    assert f"trainable parameters: {trainable / 1e6:.2f} M of {total / 1e6:.2f} M" in out
    assert "fine-tuned" in out and "reference :" in out
    assert "target" not in out   # results for users, not the project's internal goals


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WhisperTuneError, match="--data"):
        demo.run_demo(work_dir=tmp_path / "work", data_dir=tmp_path / "nothing")
    assert demo.main(["--work", str(tmp_path / "w"), "--data", str(tmp_path / "nothing")]) != 0


def test_script_help_runs_from_anywhere(tmp_path):
    """`python data/demo/run_demo.py --help` works from any folder (the script finds its checkout's code)."""
    proc = subprocess.run([sys.executable, str(DATA / "run_demo.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--work" in proc.stdout and "--epochs" in proc.stdout
    assert "demo default 2.0" in " ".join(proc.stdout.split())    # defaults shown from demo.toml


def test_the_demo_settings_are_its_config_file_and_flags_override_them():
    cfg = demo.demo_config()
    assert cfg.training.pack and cfg.training.batch_size == 8 and cfg.training.batch_unit == "clips"
    assert cfg.augment.variants == 4
    assert [t["name"] for t in cfg.augment.transforms] == ["PitchShift", "TimeStretch", "AddGaussianNoise", "Gain"]
    args = demo.parse_args(["--seed", "7", "--epochs", "1", "--batch-size", "3"])
    assert args.overrides == {"augment.seed": 7, "training.seed": 7, "training.epochs": 1.0,
                              "training.batch_size": "3"}
    assert demo.demo_config(args.overrides).training.batch_size == 3
    unpacked = demo.demo_config(demo.parse_args(["--no-pack"]).overrides).training
    assert not unpacked.pack and unpacked.batch_size == demo.UNPACKED_BATCH
