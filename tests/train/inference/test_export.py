"""export: a CTranslate2 folder faster-whisper loads, equal transcripts to the source model, clean refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import espeak_available, speak
from whisper_tune.cli import app
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.train.inference import export as ex

SENTENCES = (
    "Please call Stella and ask her to bring these things from the store.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
)


def test_random_model_export_has_what_faster_whisper_needs(tiny_model, tmp_path):
    out = tmp_path / "ct2"
    result = ex.run_export(model=str(tiny_model), out_dir=out, to="ct2", quantization="float32", verify=True)
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    config = json.loads((out / "config.json").read_text())
    assert config["suppress_ids"] and config["suppress_ids_begin"]
    assert result.verification is not None and result.verification.n_mels == 80
    assert result.size_bytes > (out / "model.bin").stat().st_size
    assert not list(tmp_path.glob(".ct2*"))                         # no temporary folder left behind

    # A re-export replaces the earlier one; a folder holding anything else is refused.
    again = ex.run_export(model=str(tiny_model), out_dir=out, to="ct2", quantization="int8", verify=False)
    assert again.size_bytes < result.size_bytes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="which an export does not write"):
        ex.run_export(model=str(tiny_model), out_dir=foreign, quantization="int8", verify=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_export_never_deletes_what_is_not_its_own(tiny_model, tmp_path):
    deploy = tmp_path / "deploy"
    ex.run_export(model=str(tiny_model), out_dir=deploy, quantization="int8", verify=False)
    (deploy / "NOTES.txt").write_text("mine")
    shutil.copytree(tiny_model, deploy / "v2")
    with pytest.raises(ConfigError) as caught:            # the source model lies inside the target
        ex.run_export(model=str(deploy / "v2"), out_dir=deploy, quantization="int8", verify=False)
    assert str(caught.value) == (f"export folder {deploy} holds the source model {deploy / 'v2'} (an export replaces "
                                 "the whole folder); move the model out of it, or pass another folder as OUT")
    with pytest.raises(ConfigError) as caught:            # a file an export does not write
        ex.run_export(model=str(tiny_model), out_dir=deploy, quantization="int8", verify=False)
    assert str(caught.value) == (f"export folder {deploy} holds NOTES.txt, v2/, which an export does not write (an "
                                 "export replaces the whole folder); move them out, or pass a new or empty folder "
                                 "as OUT")
    assert (deploy / "NOTES.txt").read_text() == "mine" and (deploy / "v2" / "config.json").is_file()
    res = CliRunner().invoke(app, ["export", str(deploy), "--model", str(deploy / "v2"), "--quantization", "int8"])
    assert res.exit_code == 1 and "holds the source model" in res.output and "Traceback" not in res.output


def test_an_export_sweeps_the_temporaries_of_killed_runs_only(tiny_model, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "ct2"
    stale, live = tmp_path / f".ct2.tmp-{dead.pid}", tmp_path / f".ct2.tmp-{os.getppid()}"
    old = tmp_path / f".ct2.old-{dead.pid}"
    for folder in (stale, live, old):
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"\0" * 1000)
    ex.run_export(model=str(tiny_model), out_dir=out, quantization="int8", verify=False)
    assert not stale.exists() and not old.exists()
    assert (live / "model.bin").is_file()                 # a running export's folder is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ct2", live.name])


def test_sigterm_during_export_is_an_interruption_that_cleans_up(tiny_model, tmp_path, monkeypatch):
    real_convert = ex.convert

    def convert_then_term(source, folder, quantization):
        real_convert(source, folder, quantization)        # the temporary folder now holds a whole model
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)                                    # the signal interrupts this at once
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(ex, "convert", convert_then_term)
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--model", str(tiny_model), "--no-verify"])
    assert res.exit_code == 143, res.output
    assert res.stderr.strip().splitlines()[-1] == (
        "error: interrupted (SIGTERM); nothing was written (the temporary folder was removed, OUT is as it was); "
        "re-run the same command to export again from the start")
    assert sorted(p.name for p in tmp_path.iterdir()) == []          # no .out.tmp-<pid>, no out
    assert signal.getsignal(signal.SIGTERM) == before                # the handler is the command's alone


def test_128_mel_export_keeps_its_mel_bins(tiny_model_128, tmp_path):
    result = ex.run_export(model=str(tiny_model_128), out_dir=tmp_path / "ct2", quantization="int8", verify=True)
    assert result.verification.n_mels == 128
    assert json.loads((tmp_path / "ct2" / "preprocessor_config.json").read_text())["feature_size"] == 128


@pytest.mark.parametrize("args, message", [
    (["--to", "onnx"], "--to onnx: unknown target"),
    (["--quantization", "int4"], "--quantization int4: expected one of"),
    (["--model", "/no/such/model"], "no such folder"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, message):
    res = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--model", "bundled:tiny.en", *args])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_tiny_en_round_trip_float32_and_int8(tmp_path):
    """evaluate on one cache: the float32 export (CTranslate2, as faster-whisper runs it) decodes every clip
    exactly as transformers does on the source model; faster-whisper loads the export and, from the audio
    (its own log-mel), agrees closely; int8 stays within a few WER points of float32."""
    from faster_whisper import WhisperModel

    from whisper_tune.pipeline.featurize.audio import load
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.testing import write_work
    from whisper_tune.train.inference.decode import open_decoder
    from whisper_tune.train.inference.evaluate import EvalSettings, feature_batches, run_evaluate
    from whisper_tune.train.metrics import word_error_rate

    audio = [load(speak(tmp_path / f"s{i}.wav", text)) for i, text in enumerate(SENTENCES)]
    work = write_work(tmp_path / "work", [(f"s{i}", a, t, "test") for i, (a, t) in enumerate(zip(audio, SENTENCES))])
    for quantization in ("float32", "int8"):
        ex.run_export(model="bundled:tiny.en", out_dir=tmp_path / quantization, quantization=quantization,
                      verify=quantization == "float32")

    def greedy(backend: str):          # plain decoding in a chosen back end, as the export's parity needs
        return load_config(None, {"decode.backend": backend, "decode.guards": False})

    result = run_evaluate(EvalSettings(model="bundled:tiny.en", work_dir=work, cfg=greedy("transformers"),
                                       batch_size=3))
    exported = run_evaluate(EvalSettings(model=str(tmp_path / "float32"), work_dir=work, cfg=greedy("ctranslate2"),
                                         json_path=work / "e.json", batch_size=3))
    assert (result.scores.backend, exported.scores.backend) == ("transformers", "ctranslate2")
    assert result.scores.hypotheses == exported.scores.hypotheses
    assert json.loads((work / "e.json").read_text())["clips_per_second"] > 0

    from whisper_tune.pipeline.cache import open_cache

    cache = open_cache(work)
    feats = next(feature_batches(cache, sorted(cache.clip_ids("test")), 3))
    int8 = open_decoder(str(tmp_path / "int8")).decode(feats)

    fw = WhisperModel(str(tmp_path / "float32"), device="cpu", compute_type="default")
    from_audio = []
    for clip in audio:
        segments, _info = fw.transcribe(clip, beam_size=1, temperature=0.0, without_timestamps=True,
                                        vad_filter=False, condition_on_previous_text=False)
        from_audio.append(" ".join(s.text.strip() for s in segments))
    assert word_error_rate(list(result.scores.hypotheses), from_audio) <= 10.0

    wer32, wer8 = exported.scores.wer, word_error_rate(list(SENTENCES), int8)
    print(f"\ntiny.en, {len(SENTENCES)} clips: WER transformers {result.scores.wer:.2f}% = export float32 "
          f"{wer32:.2f}%, int8 {wer8:.2f}% (same features); faster-whisper from audio, float32: "
          f"{word_error_rate(list(SENTENCES), from_audio):.2f}%")
    assert abs(wer8 - wer32) <= 15.0
