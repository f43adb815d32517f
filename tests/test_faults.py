"""Faults and bad input end in one clear line (or in correct behaviour), nothing done is lost, and a training run
lets go of its workers: each defect of the hostile-user round reproduced deterministically."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from whisper_tune.testing import build_cache, tone, train_config, write_audio
from whisper_tune.pipeline.featurize import audio
from whisper_tune.cli import app
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import AudioError, CacheError, ConfigError, DiskFullError, ModelError
from whisper_tune.pipeline.validate.manifest import write_manifest
from whisper_tune.pipeline.models import bundled_model_dir, load_processor, resolve_model, tokenizer_from_file
from whisper_tune.pipeline.validate.checks import check_audio
from whisper_tune.train.checkpoints import COMPLETE_MARKER, checkpoint_folders, checkpoint_problem
from whisper_tune.train.trainer import run_train

OFFLINE_TAIL = ("download it once on a machine with network access, or use a model that needs no network: "
                "--model bundled:tiny.en, a local transformers folder, or a CTranslate2 / faster-whisper folder")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def train_cfg(model: Path, **training):
    """The trainer tests' settings: two epochs of two steps each on the 4-clip cache below."""
    return train_config(model, **{"epochs": 2, "learning_rate": 1e-3, "generation_max_length": 4, "save_total_limit": 3,
                          **training})


@pytest.fixture(scope="module")
def work(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("work")
    build_cache(folder, tiny_model, n_train=4, n_test=2, variants=1, frames=(50, 80))
    return folder


# ------------------------------------------------------------------ 1, 4: checkpoints, interrupted and disk-full saves

@pytest.mark.slow
def test_resume_skips_a_partial_checkpoint_and_continues_from_the_complete_one(work, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    first = run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model))      # 2 steps per epoch
    assert first.global_step == 4
    assert [p.name for p in checkpoint_folders(out)] == ["checkpoint-2", "checkpoint-4"]
    assert all((p / COMPLETE_MARKER).is_file() and checkpoint_problem(p) is None for p in checkpoint_folders(out))
    weights = out / "checkpoint-4" / "model.safetensors"          # a kill during the save of checkpoint-4
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    assert checkpoint_problem(out / "checkpoint-4") == f"model.safetensors is cut short ({size // 2:,} of {size:,} bytes)"
    capsys.readouterr()
    second = run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=3), resume=True)
    err = capsys.readouterr().err
    assert (f"train: skipping checkpoint-4: incomplete (model.safetensors is cut short ({size // 2:,} of {size:,} "
            "bytes); its save was interrupted); set aside as partial-checkpoint-4") in err
    assert "train: resuming from checkpoint-2" in err
    assert second.global_step == 6 and [r.epoch for r in second.epochs] == [1.0, 2.0, 3.0]
    assert (out / "partial-checkpoint-4" / "trainer_state.json").is_file()           # set aside, not deleted


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / "optimizer.pt").unlink(), "no optimizer.pt"),
    (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
    (lambda f: (f / "scheduler.pt").write_bytes((f / "scheduler.pt").read_bytes()[:100]), "scheduler.pt is cut short"),
    (lambda f: (f / "rng_state.pth").unlink(), "no rng_state.pth"),
])
def test_every_missing_or_cut_file_makes_a_checkpoint_incomplete(work, tiny_model, tmp_path, damage, problem):
    out = tmp_path / "out"
    run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=1))
    folder = out / "checkpoint-2"
    assert checkpoint_problem(folder) is None
    damage(folder)
    assert checkpoint_problem(folder) == problem
    # only an incomplete checkpoint: --resume says so, a plain re-run is not blocked by it
    with pytest.raises(ConfigError) as caught:
        run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=1), resume=True)
    assert str(caught.value) == (f"--resume: {out} holds no complete checkpoint (incomplete, set aside: "
                                 f"checkpoint-2 ({problem})) to continue from; run without --resume to start a "
                                 "new training")


def test_a_partial_checkpoint_does_not_block_a_plain_rerun(work, tiny_model, tmp_path):
    out = tmp_path / "out"
    run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=1))
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    again = run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=1))
    assert again.global_step == 2 and checkpoint_problem(out / "checkpoint-2") is None
    with pytest.raises(ConfigError) as caught:             # a complete one does block it
        run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model, epochs=1))
    assert str(caught.value) == (f"{out} already holds checkpoints of an earlier run (newest complete: "
                                 "checkpoint-2); pass --resume to continue it, or choose another --output-dir "
                                 "(or delete its checkpoint-* folders) to start over")


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_save_is_one_line_and_keeps_the_previous_checkpoint(
        work, tiny_model, tmp_path, monkeypatch):
    import torch

    out = tmp_path / "out"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):                      # the disk fills up while checkpoint-4 is written
        if "checkpoint-4" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError) as caught:
        run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model))
    assert str(caught.value).startswith(f"no space left on the disk of {out}, ")
    assert str(caught.value).endswith("bytes free; free some space and re-run the same command with --resume: "
                                      "the complete checkpoint-* folders are kept")
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert checkpoint_problem(out / "checkpoint-4") == "no trainer_state.json"     # written last
    monkeypatch.setattr(torch, "save", real_save)
    resumed = run_train(work_dir=work, output_dir=out, cfg=train_cfg(tiny_model), resume=True)
    assert resumed.global_step == 4


def test_disk_full_at_the_final_lora_save_says_resume_saves_it_again(work, tiny_model, tmp_path, monkeypatch):
    from whisper_tune.train import lora

    out = tmp_path / "out"
    real_save = lora.save_model

    def full(trainer, output_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(output_dir / "model.safetensors"))

    monkeypatch.setattr(lora, "save_model", full)
    cfg = train_cfg(tiny_model, lora_rank=4, lora_dropout=0.0)
    with pytest.raises(DiskFullError) as caught:
        run_train(work_dir=work, output_dir=out, cfg=cfg)
    assert "work already written is kept" not in str(caught.value)
    assert str(caught.value).endswith("bytes free; training finished and its checkpoints are kept, but the model in "
                                      "the output folder is incomplete; free some space and re-run the same command "
                                      "with --resume: it saves the model again without training further")
    monkeypatch.setattr(lora, "save_model", real_save)
    again = run_train(work_dir=work, output_dir=out, cfg=cfg, resume=True)         # what the message says works
    assert again.global_step == 4 and (out / "model.safetensors").is_file() and (out / "adapter").is_dir()


def test_disk_full_in_validate_and_features_names_the_folder(tmp_path, tiny_model, monkeypatch):
    clip = write_audio(tmp_path / "data" / "a.wav", tone(2.0))
    (tmp_path / "data" / "clips.csv").write_text(f"audios,transcription\n{clip.name},hello there world\n")
    work = tmp_path / "work"

    def full(self, *args, **kwargs):                        # polars reports ENOSPC as a ComputeError
        raise pl.exceptions.ComputeError("failed to write: No space left on device (os error 28)")

    with monkeypatch.context() as m:
        m.setattr(pl.DataFrame, "write_parquet", full)
        result = cli("validate", "--csv", str(tmp_path / "data" / "clips.csv"), "--work", str(work))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: no space left on the disk of {work}, ")

    assert cli("validate", "--csv", str(tmp_path / "data" / "clips.csv"), "--work", str(work)).exit_code == 0

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    result = cli("features", "--work", str(work), "--model", str(tiny_model), "--jobs", "1")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: no space left on the disk of {work / 'cache'}, ")


# ------------------------------------------------------------------ 2, 9: truncated and silent audio

def test_a_truncated_wav_is_rejected_not_shortened(tmp_path):
    full = write_audio(tmp_path / "full.wav", tone(4.0), subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = full.read_bytes()
    cut.write_bytes(data[: 44 + 2 * 32_000])                 # header still says 4 s; 2 s of samples remain
    message = "truncated or corrupt file: the header says 4.00 s but only 2.00 s of audio data is present"
    assert check_audio(cut, min_seconds=1.0, max_seconds=30.0).problem.detail == f"not readable audio: {message}"
    with pytest.raises(AudioError) as caught:
        audio.load(cut)                                      # what features decodes: no shorter clip either
    assert str(caught.value) == message
    assert check_audio(full, min_seconds=1.0, max_seconds=30.0).problem is None
    assert audio.load(full).size == 64_000


@pytest.mark.parametrize("samples, swing", [
    (np.full(16_000, 0.3, dtype=np.float32), "0"),                                       # DC only
    (0.3 + 5e-5 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32), None),  # near silence
])
def test_constant_or_near_silent_audio_is_rejected_like_all_zero(samples, swing):
    with pytest.raises(AudioError) as caught:
        audio.prepare(samples, top_db=30.0, normalize=True)
    text = str(caught.value)
    assert text.startswith("silent or constant audio: the signal varies by only ")
    assert text.endswith(" peak to peak (less than 0.001, i.e. -60 dBFS); a clip needs audible speech")
    if swing is not None:
        assert f"only {swing} peak" in text
    quiet_speech = tone(1.0, amp=0.01)                        # -40 dBFS: still kept
    assert audio.prepare(quiet_speech, top_db=30.0, normalize=True).size > 0


# ------------------------------------------------------------------ 3: hub ids offline

def test_hub_id_with_hub_offline_fails_at_once_without_touching_the_network(monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as caught:
        resolve_model("openai/whisper-small.en")
    assert str(caught.value) == ("--model openai/whisper-small.en is a hub id that is not in the local Hugging "
                                 f"Face cache, and HF_HUB_OFFLINE=1 forbids the network; {OFFLINE_TAIL}")
    assert calls == []


def test_hub_id_with_an_unreachable_hub_fails_after_one_connection_attempt(monkeypatch):
    calls = []
    real = socket.create_connection

    def counting(address, *args, **kwargs):
        calls.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")          # loopback discard port: refused at once
    monkeypatch.setattr(socket, "create_connection", counting)
    result = cli("validate", "--csv", "missing.csv", "--model", "openai/whisper-small.en")
    assert calls == []                                                  # the CSV is checked first
    with pytest.raises(ModelError) as caught:
        resolve_model("openai/whisper-small.en")
    assert str(caught.value) == ("--model openai/whisper-small.en is a hub id that is not in the local Hugging "
                                 "Face cache, and the hub (http://127.0.0.1:9) cannot be reached over the network: "
                                 f"Connection refused; {OFFLINE_TAIL}")
    assert calls == [("127.0.0.1", 9)]                                 # one attempt, no retries
    assert result.exit_code == 1


def test_a_hub_model_in_the_local_cache_works_offline(tiny_model, tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--acme--tiny-whisper" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model("acme/tiny-whisper")
    assert Path(resolved) == snapshot
    assert load_processor(resolved).tokenizer.eos_token == "<|endoftext|>"


# ------------------------------------------------------------------ 5: errors inside DataLoader workers

def test_a_cache_error_in_a_dataloader_worker_is_one_line(work, tiny_model, tmp_path, monkeypatch):
    from whisper_tune.train.data import TrainDataset

    message = "shard feat-0001.arrow fails its checksum; run `whisper-tune features` to rebuild it"

    def corrupt(self, index):
        raise CacheError(message)

    monkeypatch.setattr(TrainDataset, "__getitem__", corrupt)         # inherited by the forked worker
    with pytest.raises(CacheError) as caught:
        run_train(work_dir=work, output_dir=tmp_path / "out", cfg=train_cfg(tiny_model, dataloader_workers=1))
    assert str(caught.value) == message


# ------------------------------------------------------------------ 6, 7: unchecked and nonsense values

@pytest.mark.parametrize("key, value, expected", [
    ("training.warmup", -1, "0 or more: a share of the steps below 1, else a step count (--warmup)"),
    ("training.dataloader_workers", -1, "0 (load in the training process) or more worker processes "
                                        "(--dataloader-workers)"),
    ("training.epochs", 0, "a positive number of epochs, e.g. 5 (--epochs)"),
    ("training.epochs", -1, "a positive number of epochs, e.g. 5 (--epochs)"),
    ("features.jobs", -5, "0 (all cores) or a positive number of workers (--jobs)"),
    ("features.shard_max_mb", -5, "a positive size in MB, e.g. 64"),
    ("features.batch_clips", 0, "1 or more clips per worker task"),
    ("training.max_steps", -5, "-1 (train for --epochs) or a positive step count (--max-steps)"),
    ("training.logging_steps", 0, "1 or more steps (--logging-steps)"),
    ("training.save_total_limit", 0, "1 or more checkpoints kept (--save-total-limit)"),
    ("training.generation_max_length", 449, "1 to 448 tokens (--generation-max-length)"),
    ("training.weight_decay", -0.1, "0 or more, e.g. 0.01 (--weight-decay)"),
    ("training.early_stopping_patience", -1, "0 (off) or more evaluations (--early-stopping-patience)"),
    ("training.eval_max_clips", -1, "0 (all) or more clips (--eval-max-clips)"),
    ("training.seed", -1, "a whole number from 0 to 4294967295 (--seed)"),
    ("data.seed", -1, "a whole number from 0 to 4294967295"),
    ("data.min_text_chars", -1, "0 or more"),
    ("audio.trim_top_db", -3, "0 (no trim) or a positive dB value, e.g. 30"),
    ("augment.seed", 2**32, "a whole number from 0 to 4294967295"),
    ("training.learning_rate", "nan", "a finite number"),
])
def test_nonsense_values_are_refused_in_the_config_layer(tmp_path, key, value, expected):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as caught:
        load_config(None, {key: value})
    shown = load_config(None).to_dict()[section][name].__class__(value)
    assert str(caught.value) == f"defaults: {key} = {shown!r} is not allowed; expected {expected}"
    toml = tmp_path / "c.toml"                                          # the TOML file is checked alike
    toml.write_text(f"[{section}]\n{name} = {value}\n")                # TOML spells nan as nan
    with pytest.raises(ConfigError) as caught:
        load_config(toml)
    assert str(caught.value) == f"{toml}: {key} = {shown!r} is not allowed; expected {expected}"


def test_flags_get_the_same_one_line_check():
    result = cli("train", "--warmup", "-1")
    assert result.exit_code == 1
    assert result.output == ("error: --warmup: training.warmup = -1.0 is not allowed; expected 0 or more: a share "
                             "of the steps below 1, else a step count (--warmup)\n")


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, work, tiny_model):
    existing = tmp_path / "taken"
    existing.write_text("x")
    result = cli("validate", "--csv", str(existing), "--work", str(existing))
    assert result.exit_code == 1
    assert result.output == (f"error: --work {existing} is an existing file; expected a folder (a new one or an "
                             "existing one): choose another --work\n")
    with pytest.raises(ConfigError) as caught:
        run_train(work_dir=work, output_dir=existing, cfg=train_cfg(tiny_model))
    assert str(caught.value) == (f"--output-dir {existing} is an existing file; expected a folder (a new one or an "
                                 "existing one): choose another --output-dir")


def test_train_refuses_to_write_over_its_base_model(tmp_path, work, tiny_model):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    result = cli("train", "--work", str(work), "--model", str(base), "--output-dir", str(base))
    assert result.exit_code == 1
    assert result.output == (f"error: --output-dir {base} is the folder of --model {base}: training would overwrite "
                             "the base model; choose another --output-dir\n")
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before
    inside = tmp_path / "out" / "checkpoint-2"
    shutil.copytree(tiny_model, inside)
    with pytest.raises(ConfigError, match="is a checkpoint inside --output-dir"):
        run_train(work_dir=work, output_dir=tmp_path / "out", cfg=train_cfg(inside))


def test_a_ct2_tokenizer_json_of_braces_is_a_model_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError) as caught:
        tokenizer_from_file(tmp_path / "tokenizer.json")
    assert str(caught.value) == (f"{tmp_path / 'tokenizer.json'} is not a usable Whisper tokenizer (Model missing. "
                                 "at line 1 column 2); copy the tokenizer.json that came with the model next to "
                                 "model.bin")
    assert bundled_model_dir().is_dir()


# ------------------------------------------------------------------ 8: advice after an interrupted features run

def _manifest(work: Path, splits: dict[str, int]) -> None:
    """What `features` records of the whole manifest before its first clip: the usable clips per split."""
    from whisper_tune.testing import only_segment, rewrite_segment

    rewrite_segment(only_segment(work), doc=lambda d: d["meta"].update(usable=splits))


def test_train_and_evaluate_count_the_uncached_clips_after_a_killed_features_run(tiny_model, tmp_path):
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=0, n_test=2, variants=1, frames=(50, 80))   # stopped before train
    _manifest(work, {"test": 2, "train": 5})
    with pytest.raises(CacheError) as caught:
        run_train(work_dir=work, output_dir=tmp_path / "out", cfg=train_cfg(tiny_model))
    advice = (f"holds 0 of the manifest's 5 usable train clips (5 not featurized yet: a features run was "
              f"interrupted?); re-run `whisper-tune features --work {work}` to finish it (it resumes where it "
              "stopped)")
    assert str(caught.value) == f"the cache in {work / 'cache'} {advice}"

    other = tmp_path / "other"
    build_cache(other, tiny_model, n_train=2, n_test=0, variants=1, frames=(50, 80))
    _manifest(other, {"train": 2, "test": 3})
    with pytest.raises(CacheError) as caught:
        run_evaluate(EvalSettings(model=str(tiny_model), work_dir=other, cfg=train_cfg(tiny_model)))
    assert str(caught.value) == (f"the cache in {other / 'cache'} holds 0 of the manifest's 3 usable test clips "
                                 f"(3 not featurized yet: a features run was interrupted?); re-run `whisper-tune "
                                 f"features --work {other}` to finish it (it resumes where it stopped)")


# ------------------------------------------------------------------ 10: workers and GPU memory released

def test_no_dataloader_worker_outlives_run_train(work, tiny_model, tmp_path):
    import psutil
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run_train(work_dir=work, output_dir=tmp_path / "out", cfg=train_cfg(tiny_model, dataloader_workers=2))
    assert result.global_step == 4
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def test_evaluate_split_dev_means_validation_as_in_the_csv(tmp_path, monkeypatch):
    from whisper_tune.testing import write_work
    from whisper_tune.train.inference import evaluate as ev

    class Echo:
        backend, n_mels, label = "fake", 80, "m"

        def decode(self, features):
            return ["held out words"] * len(features)

    clips = [("v1", tone(1.0), "held out words", "validation"), ("t1", tone(1.2), "test words", "test"),
             ("tr", tone(1.0, freq=300.0), "train words", "train")]
    work = write_work(tmp_path / "work", clips)
    monkeypatch.setattr(ev, "open_decoder", lambda spec, options, backend="auto": Echo())
    result = cli("evaluate", "--model", "m", "--work", str(work), "--split", "dev", "--json", str(tmp_path / "e.json"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["split"] == "validation" and data["clips"] == 1 and data["wer"] == 0.0
    bad = cli("evaluate", "--model", "m", "--work", str(work), "--split", "holdout")
    assert bad.exit_code == 1
    assert bad.output == ("error: --split holdout: expected train, validation, test (dev, val or valid mean "
                          "validation)\n")
