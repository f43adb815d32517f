"""LoRA fine-tuning (training.lora_rank > 0): adapters train on a frozen base, checkpoints resume, OUTPUT_DIR holds
the merged model that evaluate and export read unchanged, OUTPUT_DIR/adapter loads with peft."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from whisper_tune.cli import app
from whisper_tune.pipeline.core.config import LORA_MODULES, load_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.train import lora
from whisper_tune.train.checkpoints import recorded_trains, write_marker
from whisper_tune.train.model import load_model
from whisper_tune.train.trainer import run_train
from whisper_tune.testing import load_script

import peft  # noqa: E402,F401  (the lora extra; make install brings it)


def _cfg(model, **training):
    base = {"batch_size": 2, "eval_batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3, "warmup": 0.0,
            "lr_scheduler": "constant", "epochs": 3, "logging_steps": 1, "generation_max_length": 8,
            "early_stopping_patience": 0, "dataloader_workers": 0, "gradient_checkpointing": False,
            "save_total_limit": 2, "lora_rank": 4, "lora_dropout": 0.0}
    base.update(training)
    return load_config(None, {"model.name": str(model), **{f"training.{k}": v for k, v in base.items()}})


def _logits(model, n_mels=80, seed=1):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(1, n_mels, 3000, generator=gen)
    decoder_ids = torch.tensor([[50257, 50362, 440, 3797]])
    model.eval()
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=decoder_ids).logits


@pytest.fixture(scope="module")
def trained(work, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-out")
    # gradient checkpointing on: the gradients must still reach the adapters through the frozen layers
    result = run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, gradient_checkpointing=True))
    return out, result


def test_defaults_and_bad_values():
    t = load_config(None).training
    assert t.lora_rank == 0 and lora.lora_settings(t) is None
    assert set(t.lora_targets.split(",")) == set(LORA_MODULES)
    on = lora.lora_settings(load_config(None, {"training.lora_rank": 8}).training)
    assert on.alpha == 16 and on.scale == 2.0 and on.targets == LORA_MODULES and not on.decoder_only
    for key, value, message in [("lora_rank", -1, "--lora-rank"), ("lora_dropout", 1.0, "--lora-dropout"),
                                ("lora_alpha", -2, "--lora-alpha"), ("lora_targets", "q_proj,lm_head", "--lora-targets"),
                                ("lora_targets", " , ", "--lora-targets")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, {f"training.{key}": value})


@pytest.mark.parametrize("decoder_only", [False, True])
def test_adapters_wrap_the_chosen_projections_only(tiny_model, decoder_only):
    settings = lora.LoraSettings(rank=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj", "fc1"),
                                 decoder_only=decoder_only)
    model = lora.add_adapters(load_model(str(tiny_model), gradient_checkpointing=False,
                                         freeze_encoder=decoder_only), settings)
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_modules() if name.endswith(".lora_A")}
    # tiny model: 1 encoder layer (self-attention), 1 decoder layer (self- and cross-attention)
    expected = {"model.decoder.layers.0.self_attn.q_proj", "model.decoder.layers.0.self_attn.v_proj",
                "model.decoder.layers.0.encoder_attn.q_proj", "model.decoder.layers.0.encoder_attn.v_proj",
                "model.decoder.layers.0.fc1"}
    if not decoder_only:
        expected |= {"model.encoder.layers.0.self_attn.q_proj", "model.encoder.layers.0.self_attn.v_proj",
                     "model.encoder.layers.0.fc1"}
    assert {name.replace("base_model.model.", "", 1) for name in wrapped} == expected
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    share, total = lora.count_parameters(model)
    assert 0 < share < 0.1 * total
    assert "trainable" in lora.describe_trainable(model, settings)


def test_lora_run_trains_and_writes_merged_model_and_adapter(trained, tiny_model):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    out, result = trained
    losses = [r.train_loss for r in result.epochs]
    assert len(losses) == 3 and losses[0] > losses[-1], losses
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()                  # OUTPUT_DIR is a plain Whisper folder
    adapter = out / lora.ADAPTER_DIR
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.2 * (out / "model.safetensors").stat().st_size
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4

    base = WhisperForConditionalGeneration.from_pretrained(tiny_model)
    merged = WhisperForConditionalGeneration.from_pretrained(out)
    with_adapter = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(tiny_model), adapter)
    assert not torch.allclose(_logits(base), _logits(merged), atol=1e-3)   # training changed the model
    assert torch.allclose(_logits(with_adapter), _logits(merged), atol=1e-4)
    # only the wrapped projections moved; embeddings and convolutions are the base's
    b, m = base.state_dict(), merged.state_dict()
    assert torch.equal(b["model.encoder.conv1.weight"], m["model.encoder.conv1.weight"])
    assert torch.equal(b["model.decoder.embed_tokens.weight"], m["model.decoder.embed_tokens.weight"])
    assert not torch.equal(b["model.decoder.layers.0.fc1.weight"], m["model.decoder.layers.0.fc1.weight"])
    assert load_config(out / "whisper-tune.toml").training.lora_rank == 4


def test_merged_model_evaluates_and_exports(trained, work, tmp_path):
    from whisper_tune.train.inference.evaluate import run_evaluate
    from whisper_tune.train.inference.export import run_export

    out, result = trained
    scores = run_evaluate(model=str(out), work_dir=work, cfg=load_config(None), split="test", batch_size=2,
                          worst=0, max_new_tokens=8).scores
    assert scores.clips == 2 and scores.wer >= 0
    exported = run_export(model=str(out), out_dir=tmp_path / "ct2", to="ct2", quantization="float32", verify=True)
    assert exported.verification is not None and (tmp_path / "ct2" / "model.bin").is_file()


def test_adapter_checkpoints_resume(work, tiny_model, tmp_path):
    out = tmp_path / "out"
    first = run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, max_steps=2, batch_size=4, epochs=3))
    assert first.global_step == 2
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all((c / "adapter_model.safetensors").is_file() for c in checkpoints)
    assert not any((c / "model.safetensors").exists() for c in checkpoints)          # adapters only
    with pytest.raises(ConfigError, match="--lora-rank 4"):
        run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, epochs=3, batch_size=4, lora_rank=8), resume=True)
    with pytest.raises(ConfigError, match="LoRA adapter checkpoint"):
        run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, epochs=3, batch_size=4, lora_rank=0), resume=True)
    last = sorted(out.glob("checkpoint-*"))[-1]
    for changed, message in [
        ({"lora_targets": "q_proj,v_proj"}, f"--resume: {last} was trained with --lora-targets "
         "q_proj,k_proj,v_proj,out_proj,fc1,fc2 but this run has --lora-targets q_proj,v_proj, which trains other "
         "parameters than the saved optimizer state holds; pass --lora-targets q_proj,k_proj,v_proj,out_proj,fc1,fc2, "
         "or start the new setting in another --output-dir"),
        ({"freeze_encoder": True}, f"--resume: {last} was trained with --no-freeze-encoder but this run has "
         "--freeze-encoder, which trains other parameters"),
        ({"lora_alpha": 3.0}, f"--resume: {last} was trained with --lora-alpha 8 but this run has --lora-alpha 3"),
        ({"lora_dropout": 0.1}, f"--resume: {last} was trained with --lora-dropout 0 but this run has "
         "--lora-dropout 0.1"),
    ]:
        with pytest.raises(ConfigError) as caught:
            run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, epochs=3, batch_size=4, **changed),
                      resume=True)
        assert str(caught.value).startswith(message)
    second = run_train(work_dir=work, output_dir=out, cfg=_cfg(tiny_model, epochs=3, batch_size=4), resume=True)
    assert second.global_step == 3 and [r.epoch for r in second.epochs] == [1.0, 2.0, 3.0]
    assert (out / lora.ADAPTER_DIR / "adapter_model.safetensors").is_file()

    # the resumed run continued from the saved adapter and optimizer: its step-3 adapter is the one an
    # uninterrupted run reaches
    straight = tmp_path / "straight"
    run_train(work_dir=work, output_dir=straight, cfg=_cfg(tiny_model, epochs=3, batch_size=4))
    resumed, whole = (load_file(d / "checkpoint-3" / "adapter_model.safetensors") for d in (out, straight))
    assert resumed.keys() == whole.keys()
    assert all(torch.allclose(resumed[k], whole[k], atol=1e-6) for k in whole)
    fresh = load_file(checkpoints[0] / "adapter_model.safetensors")
    assert not all(torch.allclose(fresh[k], whole[k], atol=1e-6) for k in whole)


def test_full_checkpoint_records_freeze_encoder_and_refuses_a_change(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    write_marker(tmp_path, 3, lora.trains_record(None, freeze_encoder=True))
    assert recorded_trains(tmp_path) == {"lora-rank": 0, "freeze-encoder": True}
    lora.check_checkpoint(tmp_path, None, freeze_encoder=True)
    with pytest.raises(ConfigError) as caught:
        lora.check_checkpoint(tmp_path, None, freeze_encoder=False)
    assert str(caught.value) == (f"--resume: {tmp_path} was trained with --freeze-encoder but this run has "
                                 "--no-freeze-encoder, which trains other parameters than the saved optimizer state "
                                 "holds; pass --freeze-encoder, or start the new setting in another --output-dir")


def test_an_adapter_checkpoint_without_the_record_is_checked_from_peft_config(tmp_path):
    settings = lora.LoraSettings(4, 8.0, 0.0, ("q_proj", "v_proj"), True)
    (tmp_path / lora.ADAPTER_CONFIG).write_text(json.dumps({
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": lora.target_pattern(("q_proj", "v_proj"), True)}))
    lora.check_checkpoint(tmp_path, settings, freeze_encoder=True)
    with pytest.raises(ConfigError, match="was trained with --lora-targets q_proj,v_proj but this run has "
                                          "--lora-targets q_proj,k_proj"):
        lora.check_checkpoint(tmp_path, lora.LoraSettings(4, 8.0, 0.0, ("q_proj", "k_proj"), True), True)
    with pytest.raises(ConfigError, match="was trained with --freeze-encoder but this run has --no-freeze-encoder"):
        lora.check_checkpoint(tmp_path, lora.LoraSettings(4, 8.0, 0.0, ("q_proj", "v_proj"), False), False)


def test_full_checkpoint_is_not_resumed_as_lora(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="full model weights"):
        lora.check_checkpoint(tmp_path, lora.LoraSettings(4, 8, 0.0, ("q_proj",), False))
    lora.check_checkpoint(tmp_path, None)


def test_missing_peft_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)               # import peft now raises ImportError
    with pytest.raises(ConfigError, match=r"needs the peft package.*whisper-tune\[lora\]"):
        lora.require_peft(16)
    res = CliRunner().invoke(app, ["train", "--work", str(tmp_path), "--lora-rank", "-3"])
    assert res.exit_code == 1 and "training.lora_rank = -3" in res.output and "Traceback" not in res.output


def test_bench_rows_full_against_lora(monkeypatch):
    bench = load_script("bench/lora_bench.py")
    format_rows, lora_rows = bench.format_rows, bench.lora_rows

    full, adapted = lora_rows(("test-128",), lora_rank=4, micro_batch=1, steps=1, label_tokens=8, device="cpu")
    assert (full.arm, adapted.arm) == ("full", "LoRA r=4") and full.micro_batch == adapted.micro_batch == 1
    assert 0 < adapted.trainable < 0.05 * full.trainable and adapted.total > full.total
    assert full.clips_per_s > 0 and adapted.clips_per_s > 0
    assert "LoRA r=4" in format_rows([full, adapted])


def test_demo_passes_its_lora_rank_on(tmp_path):
    demo = load_script("data/demo/run_demo.py")
    args = demo.parse_args(["--work", str(tmp_path), "--lora-rank", "8"])
    assert args.overrides == {"training.lora_rank": 8} and demo.demo_config(args.overrides).training.lora_rank == 8
