"""CTranslate2 -> transformers import: round trips through ctranslate2's own converter on tiny random Whispers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ctranslate2 = pytest.importorskip("ctranslate2")
torch = pytest.importorskip("torch")

from whisper_tune.testing import tiny_whisper  # noqa: E402
from whisper_tune.pipeline.models import ct2_import  # noqa: E402
from whisper_tune.pipeline.core.errors import ModelError  # noqa: E402
from whisper_tune.pipeline.models import bundled_model_dir, is_multilingual, resolve_model, tokenizer_from_file  # noqa: E402

N_TIMESTAMPS = 1501


def multilingual_tokenizer_json(dst: Path) -> Path:
    """tiny.en's tokenizer.json reshaped into the multilingual id layout: one more BPE entry before <|endoftext|>,
    so <|endoftext|> = 50257, <|startoftranscript|> = 50258, languages 50259.., <|notimestamps|> = 50363."""
    data = json.loads((bundled_model_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    first_special = data["added_tokens"][0]["id"]
    vocab = data["model"]["vocab"]
    for token, tid in list(vocab.items()):
        if tid >= first_special:
            vocab[token] = tid + 1
    vocab["Ġmultilingualfiller"] = first_special
    for added in data["added_tokens"]:
        added["id"] += 1
    for special in data["post_processor"]["special_tokens"].values():
        special["ids"] = [i + 1 for i in special["ids"]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data), encoding="utf-8")
    return dst


def make_hf_whisper(folder: Path, n_mels: int, multilingual: bool, seed: int = 0) -> Path:
    """A tiny random transformers Whisper (2+2 layers) with a complete Whisper tokenizer and generation config."""
    tok_json = bundled_model_dir() / "tokenizer.json"
    if multilingual:
        tok_json = multilingual_tokenizer_json(folder.parent / f"{folder.name}-tokenizer" / "tokenizer.json")
    tok = tokenizer_from_file(tok_json)
    ct2_import.add_timestamp_tokens(tok, len(tok) + N_TIMESTAMPS, folder)
    ids = tok.convert_tokens_to_ids
    config = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=96, decoder_ffn_dim=128, max_target_positions=64,
                  bos_token_id=ids("<|startoftranscript|>"))
    gen = dict(suppress_tokens=[1, 2, 7, 8, 9], begin_suppress_tokens=[220, tok.eos_token_id],
               alignment_heads=[[1, 0], [1, 3]])
    if multilingual:
        gen["lang_to_id"] = {t: ids(t) for t in ("<|en|>", "<|zh|>", "<|de|>", "<|fr|>", "<|ar|>")}
        gen["task_to_id"] = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    model = tiny_whisper(tok, n_mels=n_mels, seed=seed, multilingual=multilingual, config=config, generation=gen)
    with torch.no_grad():  # make every layer norm distinct, so nothing is trivially ones/zeros
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def to_ct2(hf_folder: Path, out: Path, quantization: str) -> Path:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_folder), copy_files=["tokenizer.json"]).convert(str(out), quantization=quantization)
    return out


@pytest.fixture(scope="module")
def hf_multi128(tmp_path_factory) -> Path:
    return make_hf_whisper(tmp_path_factory.mktemp("hf") / "multi128", n_mels=128, multilingual=True)


@pytest.fixture(scope="module")
def hf_en80(tmp_path_factory) -> Path:
    return make_hf_whisper(tmp_path_factory.mktemp("hf") / "en80", n_mels=80, multilingual=False, seed=1)


@pytest.fixture(scope="module")
def ct2_en80(hf_en80, tmp_path_factory) -> Path:
    """hf_en80 converted once by ctranslate2 (float32); tests that change it work on a copy (see `fresh`)."""
    return to_ct2(hf_en80, tmp_path_factory.mktemp("ct2") / "en80", "float32")


def fresh(ct2_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ct2_folder, tmp_path / "ct2"))


def logits(folder: Path, n_mels: int, decoder_ids: list[int]) -> np.ndarray:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, n_mels, 3000, generator=gen)
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=torch.tensor([decoder_ids])).logits.numpy()


def state(folder: Path) -> dict[str, np.ndarray]:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("which, n_mels, multilingual", [("hf_multi128", 128, True), ("hf_en80", 80, False)])
def test_float32_round_trip_is_exact(which, n_mels, multilingual, request, tmp_path):
    hf = request.getfixturevalue(which)
    ct2 = to_ct2(hf, tmp_path / "ct2", "float32")
    out = ct2_import.import_ct2(ct2, cache_dir=tmp_path / "cache")

    ref, got = state(hf), state(out)
    assert set(got) == set(ref)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-6, err_msg=key)

    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    cfg = WhisperConfig.from_pretrained(out)
    assert (cfg.num_mel_bins, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (n_mels, 64, 2, 2)
    assert (cfg.encoder_attention_heads, cfg.decoder_attention_heads) == (4, 4)
    assert (cfg.encoder_ffn_dim, cfg.decoder_ffn_dim, cfg.max_target_positions) == (96, 128, 64)
    assert cfg.tie_word_embeddings

    processor = WhisperProcessor.from_pretrained(out)
    tok = processor.tokenizer
    assert processor.feature_extractor.feature_size == n_mels
    assert len(tok) == cfg.vocab_size
    assert is_multilingual(tok) is multilingual

    ids = tok.convert_tokens_to_ids
    gen = GenerationConfig.from_pretrained(out)
    assert gen.decoder_start_token_id == ids("<|startoftranscript|>") == (50258 if multilingual else 50257)
    assert gen.eos_token_id == gen.pad_token_id == ids("<|endoftext|>")
    assert gen.no_timestamps_token_id == ids("<|notimestamps|>")
    assert gen.suppress_tokens == [1, 2, 7, 8, 9]
    assert gen.begin_suppress_tokens == [220, ids("<|endoftext|>")]
    assert gen.alignment_heads == [[1, 0], [1, 3]]
    assert gen.is_multilingual is multilingual
    if multilingual:
        assert gen.lang_to_id == {t: ids(t) for t in ("<|en|>", "<|zh|>", "<|de|>", "<|fr|>", "<|ar|>")}
        assert gen.task_to_id == {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    else:
        assert not getattr(gen, "lang_to_id", None)

    prefix = [ids("<|startoftranscript|>"), ids("<|notimestamps|>"), 440, 2068]
    np.testing.assert_allclose(logits(out, n_mels, prefix), logits(hf, n_mels, prefix), rtol=0, atol=1e-4)


@pytest.mark.parametrize("quantization, tol", [("float16", 2e-3), ("int8", None)])
def test_quantized_round_trip_dequantizes(quantization, tol, hf_en80, tmp_path):
    ct2 = to_ct2(hf_en80, tmp_path / "ct2", quantization)
    raw = ct2_import.read_model_bin(ct2 / "model.bin")
    expected_dtype = np.float16 if quantization == "float16" else np.int8
    assert raw.raw("decoder/layer_0/ffn/linear_0/weight").dtype == expected_dtype

    ref, got = state(hf_en80), state(ct2_import.import_ct2(ct2, cache_dir=tmp_path / "cache"))
    for key in ref:
        r, g = ref[key], got[key]
        if tol is not None:
            bound = tol * np.maximum(np.abs(r), 1e-2)
        elif r.ndim >= 2 and key.endswith("weight") and "embed_positions" not in key:
            # int8: each output row is rounded to a step of max|row| / 127
            step = np.abs(r.reshape(r.shape[0], -1)).max(axis=1) / 127.0
            bound = (step.reshape((-1,) + (1,) * (r.ndim - 1)) * 0.51 + 1e-6) * np.ones_like(r)
        else:
            bound = 1e-6 * np.ones_like(r)
        assert np.all(np.abs(g - r) <= bound), key


def test_cache_is_reused_and_keyed_by_content(ct2_en80, tmp_path):
    ct2 = fresh(ct2_en80, tmp_path)
    cache = tmp_path / "cache"
    first = ct2_import.import_ct2(ct2, cache_dir=cache)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ct2_import.import_ct2(ct2, cache_dir=cache) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    config = json.loads((ct2 / "config.json").read_text())
    config["suppress_ids"] = config["suppress_ids"][:2]
    (ct2 / "config.json").write_text(json.dumps(config))
    second = ct2_import.import_ct2(ct2, cache_dir=cache)
    assert second != first
    from transformers import GenerationConfig

    assert GenerationConfig.from_pretrained(second).suppress_tokens == [1, 2]


def test_incomplete_cache_entry_is_redone(ct2_en80, tmp_path):
    ct2 = fresh(ct2_en80, tmp_path)
    cache = tmp_path / "cache"
    stale = cache / ct2_import.content_hash(ct2)
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # no completion marker: an interrupted earlier run
    out = ct2_import.import_ct2(ct2, cache_dir=cache)
    assert out == stale and ct2_import.is_complete(out)


def test_resolve_model_imports_ct2_folders_via_env_cache(ct2_en80, tmp_path, monkeypatch):
    ct2 = fresh(ct2_en80, tmp_path)
    monkeypatch.setenv(ct2_import.CACHE_ENV, str(tmp_path / "envcache"))
    out = Path(resolve_model(str(ct2)))
    assert out.parent == tmp_path / "envcache" / "imported"
    assert (out / "model.safetensors").is_file()


def test_truncated_model_bin_is_a_model_error(ct2_en80, tmp_path):
    ct2 = fresh(ct2_en80, tmp_path)
    data = (ct2 / "model.bin").read_bytes()
    (ct2 / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="ends early"):
        ct2_import.import_ct2(ct2, cache_dir=tmp_path / "cache")


def test_garbage_model_bin_is_a_model_error(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="binary version"):
        ct2_import.read_model_bin(tmp_path / "model.bin")


def test_folder_without_tokenizer_is_a_model_error(ct2_en80, tmp_path):
    ct2 = fresh(ct2_en80, tmp_path)
    (ct2 / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json"):
        ct2_import.import_ct2(ct2, cache_dir=tmp_path / "cache")


def test_unwritable_cache_is_a_model_error(ct2_en80, tmp_path):
    ct2 = fresh(ct2_en80, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match=ct2_import.CACHE_ENV):
        ct2_import.import_ct2(ct2, cache_dir=blocker / "cache")


def test_reads_the_bundled_tiny_en_layout():
    model = ct2_import.read_model_bin(bundled_model_dir() / "model.bin")
    assert model.spec == "WhisperSpec"
    sd = ct2_import.state_dict_from_ct2(model)
    dims = ct2_import.dimensions(model, sd)
    assert (dims.n_mels, dims.vocab_size, dims.d_model) == (80, 51864, 384)
    assert (dims.encoder_layers, dims.decoder_layers, dims.encoder_heads, dims.decoder_heads) == (4, 4, 6, 6)
    assert dims.tied_output
