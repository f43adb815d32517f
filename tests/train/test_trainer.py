import contextlib
import io
import json

import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import CacheError, ConfigError
from whisper_tune.train.data import TRACE_ENV
from whisper_tune.train.model import choose_precision
from whisper_tune.train.trainer import StepPlan, run_train
from whisper_tune.testing import build_cache, train_config


@pytest.fixture(scope="module")
def trained(work, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        result = run_train(work_dir=work, output_dir=out,
                           cfg=train_config(tiny_model, gradient_checkpointing=True, batch_size=1, grad_accum=2))
    return out, result, err.getvalue()


def test_training_loss_falls(trained):
    _, result, _ = trained
    losses = [r.train_loss for r in result.epochs]
    assert len(result.epochs) == 3 and result.global_step == 6
    assert all(loss is not None for loss in losses)
    assert losses[0] > losses[1] > losses[2] and losses[2] < losses[0] - 1.0, losses
    # a per-token mean, about ln(51864) = 10.9 at random init: not multiplied by the accumulation steps
    assert losses[0] < 12.0


def test_every_artefact_is_written(trained):
    out, result, _ = trained
    from transformers import WhisperProcessor

    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "whisper-tune.toml", "metrics.json", "curves.png"):
        assert (out / name).is_file(), name
    assert WhisperProcessor.from_pretrained(out).feature_extractor.feature_size == 80
    assert list(out.glob("runs/*/events.out.tfevents*")), "no TensorBoard log"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in doc["epochs"]] == [1.0, 2.0, 3.0]
    for e in doc["epochs"]:
        assert set(e) >= {"train_loss", "eval_loss", "wer", "cer"}
    assert doc["best"]["wer"] == min(e["wer"] for e in doc["epochs"]) == result.best_wer
    assert doc["steps"] and doc["precision"] == result.precision
    assert doc["eval_split"] == "test" and doc["eval_clips"] == 2       # no validation split: the guide's way
    assert load_config(out / "whisper-tune.toml").training.learning_rate == 5e-3
    assert load_config(None).augment.variants == 4
    assert load_config(out / "whisper-tune.toml").augment.variants == 2           # what the cache was built with


def test_the_result_counts_the_trained_parameters(trained):
    from transformers import WhisperForConditionalGeneration

    from whisper_tune.train.lora import count_parameters

    out, result, log = trained
    total = count_parameters(WhisperForConditionalGeneration.from_pretrained(out))[1]
    assert result.trainable_params == result.total_params == total > 0       # full fine-tuning trains every weight
    assert f"{result.trainable_params / 1e6:.2f} M of {result.total_params / 1e6:.2f} M parameters trainable" in log


def test_a_validation_split_is_evaluated_instead_of_test(tiny_model, tmp_path, monkeypatch):
    from whisper_tune.train import trainer

    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=4, n_validation=3, n_test=2, variants=1)
    seen = []
    real = trainer.EvalDataset

    def spy(cache, split="test", max_clips=0):
        seen.append(split)
        return real(cache, split=split, max_clips=max_clips)

    monkeypatch.setattr(trainer, "EvalDataset", spy)
    out = tmp_path / "out"
    result = run_train(work_dir=work, output_dir=out, cfg=train_config(tiny_model, epochs=1))
    assert seen == ["validation"] and result.eval_split == "validation" and result.eval_clips == 3
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["eval_split"] == "validation" and len(doc["epochs"]) == 1


def test_saved_model_is_set_up_for_inference(trained):
    from transformers import GenerationConfig, WhisperConfig

    out, _, _ = trained
    gen = GenerationConfig.from_pretrained(out)
    assert gen.suppress_tokens == [] and getattr(gen, "forced_decoder_ids", None) is None
    assert WhisperConfig.from_pretrained(out).use_cache is True


@pytest.mark.slow
def test_early_stopping_then_resume(work, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    # a learning rate this small cannot change the greedy transcripts: WER never improves after epoch 1,
    # so patience 1 stops the 6-epoch run after epoch 2
    stalled = train_config(tiny_model, learning_rate=1e-12, epochs=6, early_stopping_patience=1, batch_size=4)
    first = run_train(work_dir=work, output_dir=out, cfg=stalled)
    assert len(first.epochs) == 2 and first.global_step == 2
    more = train_config(tiny_model, epochs=3, batch_size=4)
    with pytest.raises(ConfigError, match="--resume"):
        run_train(work_dir=work, output_dir=out, cfg=more)
    monkeypatch.setenv(TRACE_ENV, str(tmp_path))
    second = run_train(work_dir=work, output_dir=out, cfg=more, resume=True)
    assert second.global_step == 3
    assert [r.epoch for r in second.epochs] == [1.0, 2.0, 3.0]    # history of the first run kept
    draws = [line.split("\t") for line in (tmp_path / "draws-rank0.tsv").read_text().splitlines()]
    # only the third epoch (index 2) was trained again, with that epoch's variants
    assert {d[0] for d in draws} == {"2"} and len(draws) == 4
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_train(work_dir=work, output_dir=tmp_path / "empty", cfg=more, resume=True)


def test_cache_for_another_feature_size_is_refused(tiny_model_128, work, tmp_path):
    with pytest.raises(CacheError, match="80-mel"):
        run_train(work_dir=work, output_dir=tmp_path / "o", cfg=train_config(tiny_model_128))


def test_missing_cache_is_a_cache_error(tiny_model, tmp_path):
    with pytest.raises(CacheError, match="whisper-tune features"):
        run_train(work_dir=tmp_path, output_dir=tmp_path / "o", cfg=train_config(tiny_model))


def test_few_steps_warning():
    guide = StepPlan(train_clips=300, batch_size=4, grad_accum=16, world_size=1, epochs=5, max_steps=-1)
    assert guide.effective_batch == 64 and guide.steps_per_epoch == 5 and guide.total_steps == 25
    message = guide.warning()
    assert message and "25 optimizer step" in message and "--grad-accum" in message
    assert StepPlan(3000, 4, 16, 1, 5, -1).warning() is None
    assert "--max-steps" in StepPlan(3000, 4, 16, 1, 5, 10).warning()
    assert StepPlan(300, 4, 16, 2, 5, -1).steps_per_epoch == 3   # two ranks split the batches


def test_few_steps_warning_is_printed(trained):
    message = "warning: this run makes only 6 optimizer step(s) (4 train clips / effective batch 2 (batch 1 x grad-accum 2"
    assert message in trained[2]


def test_the_batch_choice_is_logged(trained):
    assert "batch: micro-batch 1 x grad-accum 2 x 1 device(s) = effective batch 2, gradient checkpointing on" in trained[2]
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    assert (metrics["micro_batch"], metrics["grad_accum"], metrics["effective_batch"]) == (1, 2, 2)


def test_precision_follows_the_hardware():
    assert choose_precision("auto", cuda=True, cuda_bf16=True).name == "bf16"
    assert choose_precision("auto", cuda=True, cuda_bf16=False).name == "fp16"
    cpu_bf16 = choose_precision("auto", cuda=False, cpu_bf16=True)
    assert cpu_bf16.name == "bf16" and cpu_bf16.training_args() == {"bf16": True, "fp16": False, "use_cpu": True}
    cpu_fp32 = choose_precision("auto", cuda=False, cpu_bf16=False, mps=False)
    assert cpu_fp32.name == "fp32" and cpu_fp32.use_cpu   # use_cpu: transformers' CPU DDP (gloo) needs it
    assert not choose_precision("auto", cuda=False, cpu_bf16=False, mps=True).use_cpu
    assert choose_precision("fp32", cuda=True, cuda_bf16=True).name == "fp32"
    assert choose_precision("bf16", cuda=False, cpu_bf16=False).use_cpu
    with pytest.raises(ConfigError, match="CUDA"):
        choose_precision("fp16", cuda=False)
    with pytest.raises(ConfigError, match="bf16"):
        choose_precision("bf16", cuda=True, cuda_bf16=False)


def test_a_packed_run_counting_clips_makes_the_unpacked_runs_optimizer_steps(tiny_model, tmp_path):
    build_cache(tmp_path, tiny_model, n_train=12, n_test=2, variants=1, frames=(150, 600))
    runs = {}
    for name, over in (("unpacked", {}), ("windows", {"pack": True, "batch_unit": "windows"}),
                       ("clips", {"pack": True, "batch_unit": "clips"})):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            result = run_train(work_dir=tmp_path, output_dir=tmp_path / name, cfg=train_config(
                tiny_model, epochs=1, batch_size=4, timestamp_prob=0.0, save_total_limit=1, **over))
        runs[name] = result, err.getvalue()
    assert runs["unpacked"][0].global_step == 3                      # 12 clips / 4 per step
    packed_windows = runs["windows"][0].train_clips
    assert packed_windows < 4 and runs["windows"][0].global_step == 1   # 4 windows per step: one step
    clips, log = runs["clips"]
    assert clips.global_step == 3 and clips.train_clips == 3            # one window per step, the fullest cut
    assert (f"batch counted in clips: 4 clips per step, so 3 steps per epoch of 12 clips (as unpacked); packed "
            f"{12 / packed_windows:.1f} clips per window on average: 1 window per step, 3 windows per epoch "
            f"(packing laid out {packed_windows})") in log
    assert "3 optimizer steps (3 per epoch, effective batch 1 windows)" in log
