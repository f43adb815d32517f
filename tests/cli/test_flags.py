"""CLI flags come from the config dataclasses: every table line names a real field, and a flag sets that field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from whisper_tune.cli import app

from whisper_tune.cli import evaluate

from whisper_tune.cli import features

from whisper_tune.cli import train

from whisper_tune.cli import validate
from whisper_tune.cli.flags import MODEL, Flag, config_field, with_config
from whisper_tune.pipeline.core.config import Config, TrainingConfig


def seen_app(*flags: Flag):
    """A one-command app whose command records the Config it was given."""
    seen: list[Config] = []
    probe = typer.Typer()

    @probe.command()
    @with_config(*flags)
    def run(extra: Annotated[int, typer.Option()] = 0, *, cfg: Config) -> None:
        seen.append(cfg)

    return probe, seen


@pytest.mark.parametrize("module", [validate, features, train])
def test_every_flag_names_a_config_field_once(module):
    flags = module.FLAGS
    assert len({f.flag for f in flags}) == len(flags)
    for flag in flags:
        hint, default = config_field(flag.key)     # raises KeyError for a name that is not a field
        section, _, name = flag.key.partition(".")
        assert getattr(getattr(Config(), section), name) == default


def test_train_flags_cover_the_training_section():
    """Every TrainingConfig field of today has a flag (a new field is one Flag line away)."""
    flagged = {f.key for f in train.FLAGS}
    assert {f"training.{f.name}" for f in dataclasses.fields(TrainingConfig)} <= flagged


def test_a_flag_overrides_the_file_and_an_unset_flag_does_not(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text("[training]\nepochs = 7\nlearning_rate = 0.5\n", encoding="utf-8")
    probe, seen = seen_app(*train.FLAGS)
    result = CliRunner().invoke(probe, ["--config", str(toml), "--epochs", "3", "--no-freeze-encoder",
                                        "--batch-size", "2", "--language", "french", "--extra", "5"])
    assert result.exit_code == 0, result.output
    t = seen[0].training
    assert (t.epochs, t.learning_rate, t.freeze_encoder, t.batch_size) == (3.0, 0.5, False, 2)
    assert seen[0].model.language == "french"
    result = CliRunner().invoke(probe, ["--freeze-encoder"])
    assert result.exit_code == 0 and seen[1].training.freeze_encoder is True
    assert seen[1].training.epochs == TrainingConfig().epochs


def test_help_shows_the_config_key_and_its_default():
    probe, _ = seen_app(MODEL, Flag("training.warmup", "Warmup."))
    out = CliRunner().invoke(probe, ["--help"], env={"COLUMNS": "300"}).output
    assert "--warmup" in out and "config training.warmup, default 0.05" in out
    assert "--model" in out


def test_a_table_line_for_a_missing_field_fails_at_import_time():
    with pytest.raises(KeyError, match="training.no_such_field"):
        seen_app(Flag("training.no_such_field", "?"))


def test_a_bad_flag_value_is_one_error_line_and_nothing_runs(tmp_path: Path):
    result = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--precision", "fp8"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --precision: training.precision = 'fp8' is not allowed; expected auto, bf16, fp16, fp32 (--precision)"]
    assert "Traceback" not in result.output


def test_a_flag_error_names_the_flag_and_a_config_file_error_the_file(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text("[training]\nepochs = 2\n")
    result = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--config", str(toml), "--max-steps", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --max-steps: training.max_steps = 0 is not allowed; expected -1 (train for --epochs) or a positive "
        "step count (--max-steps)"]
    toml.write_text("[training]\nmax_steps = 0\n")
    result = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--config", str(toml)])
    assert result.output.strip().startswith(f"error: {toml}: training.max_steps = 0 is not allowed")
    result = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--batch-size", "many"])
    assert result.output.strip().startswith("error: --batch-size: training.batch_size")


def test_a_config_folder_is_named_as_a_folder(tmp_path: Path):
    result = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--config", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: config file {tmp_path} is a folder; pass --config with a TOML file (such as "
        f"{tmp_path / 'whisper-tune.toml'}; see whisper-tune.example.toml)"]


def test_evaluate_keeps_its_own_batch_size_beside_the_config():
    out = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "300"}).output
    assert "Clips per decoding batch." in out and "[default: 16]" in out
    assert evaluate.evaluate.__doc__ and "--model" in out


def test_a_negative_flag_sets_its_value_for_a_text_field():
    probe, seen = seen_app(Flag("training.precision", "auto, bf16, fp16 or fp32.", negative="fp32"))
    for args, expected in ((["--no-precision"], "fp32"), (["--precision", "bf16"], "bf16"), ([], "auto")):
        result = CliRunner().invoke(probe, args)
        assert result.exit_code == 0, result.output
        assert seen[-1].training.precision == expected
