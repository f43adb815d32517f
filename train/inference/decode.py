"""Greedy decoding of log-mel features, batched, with either backend:

- a transformers Whisper (hub id, local folder, or bundled:tiny.en through whisper_tune.pipeline.models.resolve_model),,
- a CTranslate2 / faster-whisper folder (model.bin + config.json + tokenizer.json), run by ctranslate2 directly,

so that a fine-tuned model and its export can be scored on exactly the same (cached) features.

    decoder = open_decoder("work/model", DecodeOptions(language="", task="transcribe"))
    texts = decoder.decode(features)      # features: float32 (batch, n_mels, 3000)

No audio library is imported here: evaluation reads the feature cache only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from whisper_tune.pipeline.core.constants import MAX_LABEL_TOKENS, N_FRAMES
from whisper_tune.pipeline.core.errors import ModelError, first_line
from whisper_tune.pipeline.models import is_ct2_folder, is_multilingual, load_processor, resolve_model, tokenizer_from_file
from whisper_tune.pipeline.core.system import usable_cores
from whisper_tune.pipeline.core.tokens import NO_TIMESTAMPS, SOT, TASK_TOKENS, language_code, language_token, language_tokens


class Decoder(Protocol):
    label: str        # the --model value as given
    backend: str      # "transformers" or "ctranslate2"
    n_mels: int       # mel bins the model expects

    def decode(self, features: np.ndarray) -> list[str]:
        """Texts (special tokens removed, leading space stripped) for float32 features (batch, n_mels, frames)."""
        ...


@dataclass(frozen=True)
class DecodeOptions:
    language: str = ""            # multilingual models only; "" = tokens.DEFAULT_LANGUAGE
    task: str = "transcribe"      # or "translate"
    device: str = "auto"          # auto (cuda when available), cpu, cuda (no command sets it: always auto there)
    max_new_tokens: int = MAX_LABEL_TOKENS - 4


def open_decoder(spec: str, options: DecodeOptions = DecodeOptions()) -> Decoder:
    """A CTranslate2 folder decodes with ctranslate2; anything else is resolved to a transformers model."""
    path = Path(spec).expanduser()
    if path.is_dir() and is_ct2_folder(path):
        return CT2Decoder(spec, path, options)
    return TransformersDecoder(spec, options)


def _check_features(features: np.ndarray, n_mels: int, label: str) -> np.ndarray:
    if features.ndim != 3 or features.shape[1] != n_mels:
        raise ModelError(
            f"--model {label} expects {n_mels} mel bins but the features have shape {tuple(features.shape)}; "
            f"rebuild the cache for this model with `whisper-tune features --model {label}`"
        )
    return np.ascontiguousarray(features, dtype=np.float32)


class TransformersDecoder:
    backend = "transformers"

    def __init__(self, spec: str, options: DecodeOptions) -> None:
        from transformers import WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()      # generate()'s deprecation chatter is not for the user
        hf_logging.disable_progress_bar()
        self.label = spec
        self.options = options
        self.source = resolve_model(spec)
        self.processor = load_processor(self.source, options.language, options.task)
        self.device, self.dtype = torch_device(options.device)
        try:
            model = WhisperForConditionalGeneration.from_pretrained(self.source, dtype=self.dtype)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load a Whisper model from {spec}: {first_line(err)}") from None
        self.model = model.to(self.device).eval()
        self.n_mels = int(model.config.num_mel_bins)
        self.generate_kwargs = generation_kwargs(self.model, self.processor.tokenizer, options)

    def decode(self, features: np.ndarray) -> list[str]:
        """One 30 s window per clip (features padded to 3000 frames), no timestamps."""
        return self.generate_texts(_check_features(features, self.n_mels, self.label))

    def generate_texts(self, features: np.ndarray, attention_mask: np.ndarray | None = None) -> list[str]:
        """Greedy texts. Features longer than 3000 frames go through transformers' long-form decoding
        (sequential 30 s windows driven by timestamp tokens); `attention_mask` (batch, frames) marks real frames."""
        import torch

        long_form = features.shape[-1] > N_FRAMES
        kwargs = dict(self.generate_kwargs)
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device, self.dtype)
            if long_form:
                kwargs["return_timestamps"] = True
                kwargs["condition_on_prev_tokens"] = False
                if attention_mask is not None:
                    kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask)).to(self.device)
            ids = self.model.generate(input_features=inputs, **kwargs)
        if not isinstance(ids, torch.Tensor):  # long-form may return a dict with "sequences"
            ids = ids["sequences"]
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]


def torch_device(device: str):
    """(device, dtype): CUDA with bf16 (or fp16 where bf16 is missing) when available, else CPU float32."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), torch.float32
    if not torch.cuda.is_available():
        raise ModelError("decoding on device 'cuda' was asked for (DecodeOptions.device) but no CUDA GPU is "
                         "visible; use device 'auto' or 'cpu'")
    return torch.device("cuda"), (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def generation_kwargs(model, tokenizer, options: DecodeOptions) -> dict:
    """Greedy, no timestamps; language and task for multilingual models (set on the generation config)."""
    gen = model.generation_config
    kwargs: dict = {"num_beams": 1, "do_sample": False, "return_timestamps": False,
                    "max_new_tokens": options.max_new_tokens}
    if is_multilingual(tokenizer):
        if not getattr(gen, "lang_to_id", None) or not getattr(gen, "task_to_id", None):
            _add_language_tables(gen, tokenizer)
        gen.is_multilingual = True
        kwargs["language"] = language_code(options.language)
        kwargs["task"] = options.task
    return kwargs


def _add_language_tables(gen, tokenizer) -> None:
    """Older or imported checkpoints may lack lang_to_id/task_to_id: rebuild them from the tokenizer."""
    vocab = tokenizer.get_vocab()
    gen.lang_to_id = language_tokens(vocab)
    gen.task_to_id = {task: vocab[token] for task, token in TASK_TOKENS.items() if token in vocab}


class CT2Decoder:
    backend = "ctranslate2"

    def __init__(self, spec: str, folder: Path, options: DecodeOptions) -> None:
        import logging

        import ctranslate2

        ctranslate2.set_log_level(logging.ERROR)   # the compute type is reported by the caller instead
        self.label = spec
        self.folder = folder
        self.tokenizer = tokenizer_from_file(folder / "tokenizer.json")
        device = "cuda" if options.device in ("auto", "cuda") and ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if options.device == "cuda" and device != "cuda":
            raise ModelError("decoding on device 'cuda' was asked for (DecodeOptions.device) but CTranslate2 sees "
                             "no CUDA GPU; use device 'auto' or 'cpu'")
        try:
            self.model = ctranslate2.models.Whisper(str(folder), device=device, compute_type="default",
                                                    intra_threads=usable_cores() if device == "cpu" else 0)
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"cannot load the CTranslate2 model in {folder}: {err}") from None
        self.compute_type = self.model.compute_type
        self.n_mels = int(self.model.n_mels)
        self.prompt = ct2_prompt(self.model.is_multilingual, options)
        self.max_length = MAX_LABEL_TOKENS
        self.max_new_tokens = options.max_new_tokens

    def decode(self, features: np.ndarray) -> list[str]:
        import ctranslate2

        feats = _check_features(features, self.n_mels, self.label)
        if feats.shape[2] != N_FRAMES:
            raise ModelError(f"CTranslate2 decodes one {N_FRAMES}-frame window at a time, got {feats.shape[2]} frames")
        results = self.model.generate(
            ctranslate2.StorageView.from_array(feats), [self.prompt] * feats.shape[0],
            beam_size=1, max_length=self.max_length,
            suppress_blank=True, suppress_tokens=[-1],
        )
        ids = [r.sequences_ids[0] for r in results]
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def ct2_prompt(multilingual: bool, options: DecodeOptions) -> list[str]:
    """The decoder prompt: start token, then language and task for multilingual models, then no-timestamps."""
    if not multilingual:
        return [SOT, NO_TIMESTAMPS]
    return [SOT, language_token(language_code(options.language)), TASK_TOKENS[options.task], NO_TIMESTAMPS]
