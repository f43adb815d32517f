from pathlib import Path

import pytest

from whisper_tune.pipeline.core.config import Config, load_config, save_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.testing import REPO_ROOT


def test_defaults_are_the_guides_values():
    cfg = load_config(None)
    assert cfg.data.test_share == 0.1 and cfg.data.seed == 42
    assert cfg.data.min_text_chars == 5 and cfg.data.min_seconds == 1.0 and cfg.data.max_seconds == 30.0
    assert cfg.audio.trim_top_db == 30.0 and cfg.audio.peak_normalize
    noise, gain = cfg.augment.transforms
    assert noise == {"name": "AddGaussianNoise", "p": 0.2, "min_amplitude": 0.0005, "max_amplitude": 0.003}
    assert gain == {"name": "Gain", "p": 0.2, "min_gain_db": -2.0, "max_gain_db": 2.0}
    t = cfg.training
    assert (t.epochs, t.effective_batch, t.batch_size, t.grad_accum, t.learning_rate) == (5, 64, "auto", "auto", 1e-5)
    assert (t.warmup, t.lr_scheduler, t.weight_decay) == (0.05, "cosine", 0.01)
    assert (t.early_stopping_patience, t.generation_max_length) == (3, 128)
    assert cfg.model.name == "openai/whisper-small.en"


def test_settings_are_frozen():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.training.epochs = 3  # type: ignore[misc]


def test_file_then_flags(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text('[training]\nepochs = 2\nbatch_size = 8\n[[augment.transforms]]\nname = "Gain"\np = 1.0\n')
    cfg = load_config(f, {"training.epochs": 7, "training.batch_size": None})
    assert cfg.training.epochs == 7 and cfg.training.batch_size == 8
    assert cfg.augment.transforms == ({"name": "Gain", "p": 1.0},)


@pytest.mark.parametrize("text, needle", [
    ("[training]\nepoch = 2\n", "training.epoch"),
    ("[trainig]\nepochs = 2\n", "[trainig]"),
    ("[training]\nbatch_size = 'big'\n", "training.batch_size"),
    ("[data]\ntest_share = 1.5\n", "data.test_share"),
    ("[data]\ntest_share = 0.5\nvalidation_share = 0.5\n", "data.validation_share"),
    ("not toml = = =", "not valid TOML"),
])
def test_bad_files_name_key_and_file(tmp_path: Path, text: str, needle: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert needle in str(err.value) and str(f) in str(err.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_example_file_loads_and_save_round_trips(tmp_path: Path):
    example = REPO_ROOT / "whisper-tune.example.toml"
    cfg = load_config(example)
    assert cfg == Config()
    out = tmp_path / "resolved.toml"
    save_config(cfg, out)
    assert load_config(out) == cfg


def test_every_later_check_happens_at_load_naming_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"training.lr_scheduler = 'cosin' is not allowed; expected one of "
                                          r"linear, cosine, .*\(--lr-scheduler\)"):
        load_config(None, {"training.lr_scheduler": "cosin"})
    with pytest.raises(ConfigError, match=r"training.precision = 'fp8'.*auto, bf16, fp16, fp32"):
        load_config(None, {"training.precision": "fp8"})
    with pytest.raises(ConfigError, match=r"training.lora_targets = 'q_proj,w_proj'"):
        load_config(None, {"training.lora_targets": "q_proj,w_proj"})
    with pytest.raises(ConfigError, match=r"model.language = 'klingon'.*Whisper language"):
        load_config(None, {"model.language": "klingon"})
    assert load_config(None, {"model.language": "french"}).model.language == "french"


def test_the_scheduler_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    from whisper_tune.pipeline.core.constants import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_a_bad_setting_fails_before_torch_or_a_model_is_loaded(tmp_path):
    """`whisper-tune train --lr-scheduler cosin` is refused by load_config, which imports neither torch nor
    transformers (so it answers in well under a second, before any model or GPU probe)."""
    import subprocess
    import sys

    toml = tmp_path / "c.toml"
    toml.write_text('[training]\nlr_scheduler = "cosin"\n')
    code = ("import sys; from whisper_tune.pipeline.core.config import load_config\n"
            "try:\n    load_config(sys.argv[1])\nexcept Exception as err:\n    print(type(err).__name__, err)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(toml)], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith(f"ConfigError {toml}: training.lr_scheduler = 'cosin' is not allowed") and "[]" in out


@pytest.mark.parametrize("key,value,expected", [
    ("data.window_seconds", 45.0, "1 to 30 seconds (Whisper reads 30 s at most; --window-seconds)"),
    ("data.window_seconds", 0.5, "1 to 30 seconds (Whisper reads 30 s at most; --window-seconds)"),
    ("data.subtitles_column", " srt", "a CSV column name without surrounding spaces, or \"\" for the automatic choice"),
])
def test_window_and_subtitle_settings_are_checked(key: str, value, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {key: value})
    assert str(err.value) == f"defaults: {key} = {value!r} is not allowed; expected {expected}"
