"""`whisper-tune train` runs from the cache alone, in a process where the audio libraries cannot be imported.

The child process gets a sitecustomize (first on PYTHONPATH) that makes librosa, audiomentations, soundfile and
soxr look uninstalled (importlib.util.find_spec says None, as libraries probing for them see it) and makes
importing them, or the audio modules of pipeline/, raise ModuleNotFoundError and log the attempt. A train run
that needed any of them fails or leaves a log line."""

import os
import subprocess
import sys
import textwrap

from train_cache import build_cache

BLOCKED_PACKAGES = ("librosa", "audiomentations", "soundfile", "soxr")
BLOCKED_MODULES = ("pipeline.audio", "pipeline.augment", "pipeline.logmel", "pipeline.featurize")

SITECUSTOMIZE = textwrap.dedent("""
    import importlib.abc, importlib.util, os, sys

    PACKAGES = {packages!r}
    MODULES = {modules!r}

    def _blocked(name):
        return name.split(".")[0] in PACKAGES or name in MODULES

    _find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        full = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        return None if _blocked(full) else _find_spec(name, package)

    importlib.util.find_spec = find_spec

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if _blocked(name):
                with open(os.environ["LEAN_LOG"], "a") as f:
                    f.write(name + "\\n")
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: the train stage must not need it)",
                                          name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


def _blocking_path(folder):
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(packages=BLOCKED_PACKAGES, modules=BLOCKED_MODULES))
    return folder


def _run(args, blockers, log, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LEAN_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(blockers), os.getcwd()])}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def test_blockers_work(tmp_path):
    blockers = _blocking_path(tmp_path / "blockers")
    log = tmp_path / "lean.log"
    proc = _run(["-c", "import librosa"], blockers, log, tmp_path)
    assert proc.returncode != 0 and "blocked" in proc.stderr
    proc = _run(["-c", "import pipeline.audio"], blockers, log, tmp_path)
    assert proc.returncode != 0 and "blocked" in proc.stderr
    proc = _run(["-c", "import importlib.util as u; assert u.find_spec('audiomentations') is None"],
                blockers, log, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split() == ["librosa", "pipeline.audio"]


def test_train_runs_without_audio_libraries(tiny_model, tmp_path):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=4, n_test=1, variants=2)
    blockers = _blocking_path(tmp_path / "blockers")
    log = tmp_path / "lean.log"
    out = tmp_path / "out"
    proc = _run(["-m", "pipeline.cli", "train", "--work", str(work), "--model", str(tiny_model),
                 "--output-dir", str(out), "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
                 "--eval-batch-size", "1", "--early-stopping-patience", "0", "--no-gradient-checkpointing"],
                blockers, log, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert not log.exists() or log.read_text() == "", f"train tried to import: {log.read_text()}"
