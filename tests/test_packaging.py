"""The wheel installs one import package, whisper_tune, and nothing with a generic top-level name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from whisper_tune.testing import REPO_ROOT

FOLDERS = {"whisper_tune": "whisper_tune", "pipeline": "whisper_tune.pipeline", "train": "whisper_tune.train"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_the_wheel_holds_only_whisper_tune(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "work", "__pycache__", "*.egg-info",
                                                                  "tests", "bench", "data", "build", "runs"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("whisper_tune-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"whisper_tune"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "whisper_tune/pipeline/core/whisper_english.json" in names and "whisper_tune/train/trainer.py" in names


def test_a_users_own_train_py_and_pipeline_py_do_not_shadow_ours(tmp_path):
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")
    (tmp_path / "pipeline.py").write_text("raise SystemExit('the user pipeline.py was imported')\n")
    for args in (["-m", "whisper_tune.cli", "--help"], ["-m", "whisper_tune.cli", "train", "--help"]):
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "user" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    script = str(Path(sys.executable).parent / "whisper-tune")         # the console script beside this Python
    proc = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage" in proc.stdout
