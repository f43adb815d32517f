"""`whisper-tune train` runs from the cache alone, in a process where the audio libraries cannot be imported.

The child process gets whisper_tune.testing.import_blocker's sitecustomize (first on PYTHONPATH): it makes librosa,
audiomentations, soundfile and soxr look uninstalled (importlib.util.find_spec says None, as libraries probing for them see it) and makes
importing them, or the audio modules of pipeline/, raise ModuleNotFoundError and log the attempt. A train run
that needed any of them fails or leaves a log line."""

import pytest

from whisper_tune.testing import blocked_python, build_cache, import_blocker


def _run(args, blockers, log, tmp_path):
    return blocked_python(args, blockers, log=log, cwd=tmp_path)


def test_blockers_work(tmp_path):
    blockers = import_blocker(tmp_path / "blockers")
    log = tmp_path / "lean.log"
    proc = _run(["-c", "import librosa"], blockers, log, tmp_path)
    assert proc.returncode != 0 and "blocked" in proc.stderr
    proc = _run(["-c", "import whisper_tune.pipeline.featurize.audio"], blockers, log, tmp_path)
    assert proc.returncode != 0 and "blocked" in proc.stderr
    proc = _run(["-c", "import importlib.util as u; assert u.find_spec('audiomentations') is None"],
                blockers, log, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split() == ["librosa", "whisper_tune.pipeline.featurize.audio"]


@pytest.mark.slow
def test_train_runs_without_audio_libraries(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=4, n_test=1, variants=2)
    blockers = import_blocker(tmp_path / "blockers")
    log = tmp_path / "lean.log"
    out = tmp_path / "out"
    proc = _run(["-m", "whisper_tune.cli", "train", "--work", str(work), "--model", str(tiny_model),
                 "--output-dir", str(out), "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
                 "--eval-batch-size", "1", "--early-stopping-patience", "0", "--no-gradient-checkpointing"],
                blockers, log, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert not log.exists() or log.read_text() == "", f"train tried to import: {log.read_text()}"
