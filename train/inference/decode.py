"""Decoding, with either back end, for `evaluate` (cached log-mel features) and `transcribe` (audio):

- transformers: a Whisper checkpoint (hub id, local folder, or an imported CTranslate2 folder, see
  whisper_tune.pipeline.models.resolve_model), decoded with `generate`;
- ctranslate2: a CTranslate2 / faster-whisper folder (model.bin + config.json + tokenizer.json). `--backend auto`
  takes it when ctranslate2 is installed: a CTranslate2 folder as it is, a transformers model converted once into
  a content-addressed cache (whisper_tune.pipeline.models.ct2_export.converted_folder).

    decoder = open_decoder("work/model", DecodeOptions.from_config(cfg), backend="auto")
    texts = decoder.decode(features)          # evaluate: float32 (batch, n_mels, 3000), one window per clip
    results = decoder.transcribe(clips)       # transcribe: mono 16 kHz clips of any length -> Decoded

Both back ends apply Whisper's guards when DecodeOptions asks for them (DecodeOptions.from_config: on, with
Whisper's defaults): a window whose text compresses too well (a repetition loop) or whose mean token
log-probability is too low is decoded again at the next temperature; a window the model calls non-speech (and
whose log-probability is low) gives no text. `DecodeOptions()` itself is plain greedy decoding.

`Decoder.transcribe` is the one decoding path for audio: texts and timed segments (words too, when asked) come
from the same call; train/inference/subtitles only formats them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from whisper_tune.pipeline.core.config import Config, temperatures
from whisper_tune.pipeline.core.constants import BUNDLED_MODEL, MAX_LABEL_TOKENS, N_FRAMES, N_SAMPLES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import ConfigError, ModelError, first_line
from whisper_tune.pipeline.core.system import usable_cores
from whisper_tune.pipeline.core.text import compression_ratio
from whisper_tune.pipeline.core.tokens import NO_TIMESTAMPS, SOT, TASK_TOKENS, language_code, language_token, language_tokens
from whisper_tune.pipeline.models import (bundled_model_dir, is_ct2_folder, is_multilingual, load_processor, resolve_model,
                                          tokenizer_from_file)

log = logging.getLogger(__name__)

RESET_TEMPERATURE = 0.5            # a window decoded above this resets the carried text, as Whisper's transcribe does
WINDOW_TOKENS = MAX_LABEL_TOKENS // 2   # new tokens per 30 s window at most: Whisper's sample_len (n_text_ctx // 2),
                                        # CTranslate2's and faster-whisper's default too

@dataclass(frozen=True)
class Word:
    start: float                   # seconds from the start of the recording
    end: float
    word: str                      # as decoded, with its leading space
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    start: float                   # seconds from the start of the recording
    end: float
    text: str                      # as decoded (with its leading space, if the model wrote one)
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Decoded:
    text: str                      # the whole text, stripped
    segments: tuple[Segment, ...] = ()
    carry: str = ""                # condition_on_previous_text: the prompt for what follows this clip (its prompt
                                   # and text since the last window decoded above RESET_TEMPERATURE; "" after one)


@dataclass(frozen=True)
class DecodeOptions:
    language: str = ""            # multilingual models only; "" = tokens.DEFAULT_LANGUAGE
    task: str = "transcribe"      # or "translate"
    device: str = "auto"          # auto (cuda when available), cpu, cuda (no command sets it: always auto there)
    max_new_tokens: int = WINDOW_TOKENS                 # per 30 s window, in both back ends
    beam_size: int = 1
    temperatures: tuple[float, ...] = (0.0,)             # more than one: fallback while a guard rejects the text
    compression_ratio_threshold: float | None = None     # None = that guard off
    logprob_threshold: float | None = None
    no_speech_threshold: float | None = None
    prompt: str = ""                                     # initial prompt before the first window
    condition_on_previous_text: bool = False             # long-form: each window sees the text before it
    word_timestamps: bool = False
    vad: bool = False                                    # transcribe: decode only what Silero VAD calls speech

    @classmethod
    def from_config(cls, cfg: Config, max_new_tokens: int | None = None) -> "DecodeOptions":
        """The commands' options: [model] language/task and [decode], guards as configured (on by default)."""
        d = cfg.decode
        guards = d.guards
        return cls(
            language=cfg.model.language, task=cfg.model.task,
            max_new_tokens=WINDOW_TOKENS if max_new_tokens is None else max_new_tokens,
            beam_size=d.beam_size,
            temperatures=temperatures(d.temperature) if guards else (0.0,),
            compression_ratio_threshold=d.compression_ratio_threshold or None if guards else None,
            logprob_threshold=d.logprob_threshold if guards else None,
            no_speech_threshold=d.no_speech_threshold if guards and d.no_speech_threshold < 1 else None,
            prompt=d.prompt, condition_on_previous_text=d.condition_on_previous_text,
            word_timestamps=d.word_timestamps, vad=d.vad,
        )

    @property
    def guarded(self) -> bool:
        return (len(self.temperatures) > 1 or self.compression_ratio_threshold is not None
                or self.logprob_threshold is not None or self.no_speech_threshold is not None)


class Decoder(Protocol):
    label: str        # the --model value as given
    backend: str      # "transformers" or "ctranslate2"
    n_mels: int       # mel bins the model expects

    def decode(self, features: np.ndarray) -> list[str]:
        """Texts (special tokens removed, leading space stripped) for float32 features (batch, n_mels, frames)."""
        ...

    def transcribe(self, clips: Sequence[np.ndarray], timed: bool = False, prompt: str | None = None) -> list[Decoded]:
        """Text (and, when timed, segments) for mono 16 kHz clips of any length, in order; `prompt` replaces the
        options' initial prompt for these clips ("" = none), as a long file's next piece is given its carry."""
        ...


# ---------------------------------------------------------------------------------------------- choosing the back end

def ct2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None


def _ct2_source(spec: str) -> Path | None:
    """The CTranslate2 folder `spec` names (bundled:tiny.en included), else None."""
    if spec == BUNDLED_MODEL:
        return bundled_model_dir()
    path = Path(spec).expanduser()
    return path if path.is_dir() and is_ct2_folder(path) else None


def open_decoder(spec: str, options: DecodeOptions = DecodeOptions(), backend: str = "auto") -> Decoder:
    """The decoder for `spec` with `backend` (auto, transformers or ctranslate2); the choice is logged."""
    if backend not in ("auto", "transformers", "ctranslate2"):
        raise ConfigError(f"--backend {backend}: expected auto, transformers or ctranslate2")
    folder = _ct2_source(spec)
    if backend == "transformers":
        decoder: Decoder = TransformersDecoder(spec, options)
    elif backend == "ctranslate2" or (backend == "auto" and ct2_available()):
        if not ct2_available():
            raise ModelError("--backend ctranslate2 needs the ctranslate2 package: pip install 'whisper-tune[models]'")
        if folder is None:
            from whisper_tune.pipeline.models.ct2_export import converted_folder

            try:
                source = resolve_model(spec)
                folder = converted_folder(source, lambda: load_processor(source))
            except ModelError as err:
                if backend == "ctranslate2":
                    raise
                log.warning(f"warning: {err}; decoding with transformers instead")
                return _logged(TransformersDecoder(spec, options))
        decoder = CT2Decoder(spec, folder, options)
    else:
        decoder = TransformersDecoder(spec, options)
    return _logged(decoder)


def _logged(decoder: Decoder) -> Decoder:
    log.info(f"decoding {decoder.label} with the {decoder.backend} back end")
    return decoder


def _check_features(features: np.ndarray, n_mels: int, label: str) -> np.ndarray:
    if features.ndim != 3 or features.shape[1] != n_mels:
        raise ModelError(
            f"--model {label} expects {n_mels} mel bins but the features have shape {tuple(features.shape)}; "
            f"rebuild the cache for this model with `whisper-tune features --model {label}`"
        )
    return np.ascontiguousarray(features, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- transformers

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
        self.temperatures: list[float] = []
        if options.condition_on_previous_text:
            self._record_temperatures()
        if options.word_timestamps and not getattr(self.model.generation_config, "alignment_heads", None):
            raise ModelError(f"--word-timestamps: {spec} has no alignment_heads in its generation config, which "
                             "word times need with the transformers back end; use --backend ctranslate2")

    def _record_temperatures(self) -> None:
        """Note the temperature of every window decoded (transformers' segments do not carry it): generate's
        fallback loop asks the model's _need_fallback about each decoded window, the temperature last; with one
        clip, the last one noted is its last window's."""
        ask = self.model._need_fallback

        def noted(*args, **kwargs):
            temperature = kwargs.get("temperature", args[-1] if args else None)
            self.temperatures.append(0.0 if temperature is None else float(temperature))
            return ask(*args, **kwargs)

        self.model._need_fallback = noted

    def decode(self, features: np.ndarray) -> list[str]:
        """One 30 s window per clip (features padded to 3000 frames), no timestamps."""
        return [d.text for d in self.generate(_check_features(features, self.n_mels, self.label))]

    def transcribe(self, clips: Sequence[np.ndarray], timed: bool = False, prompt: str | None = None) -> list[Decoded]:
        """Clips up to 30 s as one window each, longer ones through long-form decoding (sequential windows
        driven by timestamp tokens, batched with an attention mask); silent (empty) clips give no text."""
        out = [Decoded("")] * len(clips)
        maps = [None] * len(clips)
        if self.options.vad:
            clips, maps = zip(*(speech_only(c) for c in clips))
        todo = [i for i, c in enumerate(clips) if c.size]
        if not todo:
            return out
        feats, mask = audio_features(self.processor.feature_extractor, [clips[i] for i in todo])
        vad_times = any(m is not None for m in maps)          # segments are needed to map the times back
        given = self.options.prompt if prompt is None else prompt
        self.temperatures.clear()
        results = self.generate(feats, mask, timed=timed or vad_times, prompt=prompt)
        high = len(todo) == 1 and bool(self.temperatures) and self.temperatures[-1] > RESET_TEMPERATURE
        for i, result in zip(todo, results):
            result = result if maps[i] is None else _remapped(result, maps[i])
            carry = "" if high else " ".join(t for t in (given.strip(), result.text) if t)
            out[i] = replace(result, carry=carry if self.options.condition_on_previous_text else "")
        return out

    def generate(self, features: np.ndarray, attention_mask: np.ndarray | None = None,
                 timed: bool = False, prompt: str | None = None) -> list[Decoded]:
        """The one call into `generate`. Features over 3000 frames (or timed=True) decode with timestamps and come
        back as segments; `attention_mask` (batch, frames) marks real frames of long-form input."""
        import torch

        long_form = features.shape[-1] > N_FRAMES
        kwargs = dict(self.generate_kwargs)
        if prompt is not None:
            kwargs.pop("prompt_ids", None)
            kwargs.update(prompt_kwargs(self.model, self.processor.tokenizer, prompt, self.options.max_new_tokens))
        segmented = long_form or timed or self.options.word_timestamps
        if segmented:
            kwargs.update(return_timestamps=True, return_segments=True)
        if self.options.word_timestamps:
            kwargs["return_token_timestamps"] = True
        torch.manual_seed(0)               # temperature fallback samples: the same input gives the same text
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device, self.dtype)
            if attention_mask is not None and long_form:
                kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask)).to(self.device)
            out = self.model.generate(input_features=inputs, **kwargs)
        tok = self.processor.tokenizer
        if segmented and isinstance(out, dict) and "segments" in out:
            return [self._decoded(segs) for segs in out["segments"]]
        ids = out if isinstance(out, torch.Tensor) else out["sequences"]
        ids = torch.as_tensor(ids).long()       # a batch with a skipped (no-speech) window comes back as floats
        return [Decoded(t.strip()) for t in tok.batch_decode(ids, skip_special_tokens=True)]

    def _decoded(self, segs: list[dict]) -> Decoded:
        decode = self.processor.tokenizer.decode
        segments = []
        for s in segs:
            words = _words(self.processor.tokenizer, s) if self.options.word_timestamps else ()
            segments.append(Segment(float(s["start"]), float(s["end"]), decode(s["tokens"], skip_special_tokens=True),
                                    words))
        return Decoded("".join(s.text for s in segments).strip(), tuple(segments))


def audio_features(fe, audio: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Log-mel features of mono 16 kHz clips as Whisper's own transcribe (and faster-whisper) feeds the model: each
    clip's frames, then zeros (of the normalized log-mel) up to the 30 s window; for clips over 30 s, every frame
    and the attention mask of the real ones (generate's long-form loop pads its last window the same way).
    A short clip padded as audio instead (the feature extractor's default, what the cache holds) makes tiny.en say
    "you" on mains hum with a log-probability above the no-speech rule's threshold."""
    enc = fe(list(audio), sampling_rate=SAMPLE_RATE_HZ, return_tensors="np", truncation=False, padding="longest",
             return_attention_mask=True)
    feats, mask = enc.input_features, np.asarray(enc.attention_mask)
    if feats.shape[-1] > N_FRAMES:
        return feats, mask
    window = np.zeros((*feats.shape[:2], N_FRAMES), dtype=np.float32)
    window[..., :feats.shape[-1]] = feats * mask[:, None, :feats.shape[-1]]
    return window, None


def speech_only(clip: np.ndarray):
    """(the speech of `clip` joined, a map from its times back to the clip's) by faster-whisper's Silero VAD."""
    try:
        from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps
    except ImportError:
        raise ModelError("--vad needs faster-whisper: pip install 'whisper-tune[models]'") from None
    chunks = get_speech_timestamps(np.ascontiguousarray(clip, dtype=np.float32), VadOptions()) if clip.size else []
    if not chunks:
        return np.zeros(0, dtype=np.float32), None
    speech = np.concatenate([clip[c["start"]:c["end"]] for c in chunks])
    return speech, SpeechTimestampsMap(chunks, SAMPLE_RATE_HZ)


def _remapped(result: Decoded, times) -> Decoded:
    """Segments (and words) decoded from speech_only()'s audio, timed on the original clip."""
    def t(x: float, end: bool = False) -> float:
        return float(times.get_original_time(x, is_end=end))

    return Decoded(result.text, tuple(
        Segment(t(s.start), t(s.end, True), s.text, tuple(Word(t(w.start), t(w.end, True), w.word, w.probability)
                                                         for w in s.words))
        for s in result.segments))


def _words(tokenizer, segment: dict) -> tuple[Word, ...]:
    """Words of one transformers segment from its token timestamps: a word starts at a token whose text begins
    with a space; it lasts until the next word starts (the segment's end for the last)."""
    times = segment.get("token_timestamps")
    if times is None:
        return ()
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    pieces: list[tuple[str, float]] = []
    for token, t in zip(segment["tokens"].tolist(), times.tolist()):
        if token >= eot:
            continue
        text = tokenizer.decode([token])
        if pieces and not text.startswith(" "):
            pieces[-1] = (pieces[-1][0] + text, pieces[-1][1])
        else:
            pieces.append((text, float(t)))
    end = float(segment["end"])
    return tuple(Word(start, max(start, pieces[i + 1][1] if i + 1 < len(pieces) else end), text)
                 for i, (text, start) in enumerate(pieces) if text.strip())


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
    """No timestamps, beams and Whisper's guards as the options say; language and task for multilingual models."""
    gen = model.generation_config
    kwargs: dict = {"num_beams": options.beam_size, "do_sample": False, "return_timestamps": False,
                    "max_new_tokens": options.max_new_tokens}
    if options.guarded:
        kwargs["temperature"] = options.temperatures if len(options.temperatures) > 1 else options.temperatures[0]
        kwargs["compression_ratio_threshold"] = options.compression_ratio_threshold
        kwargs["logprob_threshold"] = options.logprob_threshold
        # transformers' no-speech rule reads the log-probability too (as Whisper's): without one, it is off
        kwargs["no_speech_threshold"] = options.no_speech_threshold if options.logprob_threshold is not None else None
    kwargs["condition_on_prev_tokens"] = options.condition_on_previous_text
    kwargs.update(prompt_kwargs(model, tokenizer, options.prompt, options.max_new_tokens))
    if is_multilingual(tokenizer):
        if not getattr(gen, "lang_to_id", None) or not getattr(gen, "task_to_id", None):
            _add_language_tables(gen, tokenizer)
        gen.is_multilingual = True
        kwargs["language"] = language_code(options.language)
        kwargs["task"] = options.task
    return kwargs


def prompt_kwargs(model, tokenizer, prompt: str, max_new_tokens: int) -> dict:
    """generate's prompt_ids for `prompt` ({} for none): <|startofprev|> and at most the prompt's last
    MAX_LABEL_TOKENS // 2 - 1 tokens, as Whisper keeps; the new tokens stop where the context ends."""
    if not prompt.strip():
        return {}
    import torch

    ids = np.asarray(tokenizer.get_prompt_ids(prompt.strip(), return_tensors="np"))
    ids = np.concatenate([ids[:1], ids[1:][-(MAX_LABEL_TOKENS // 2 - 1):]])
    return {"prompt_ids": torch.from_numpy(ids).to(model.device),
            "max_new_tokens": min(max_new_tokens, MAX_LABEL_TOKENS - len(ids) - 4)}


def _add_language_tables(gen, tokenizer) -> None:
    """Older or imported checkpoints may lack lang_to_id/task_to_id: rebuild them from the tokenizer."""
    vocab = tokenizer.get_vocab()
    gen.lang_to_id = language_tokens(vocab)
    gen.task_to_id = {task: vocab[token] for task, token in TASK_TOKENS.items() if token in vocab}


# ---------------------------------------------------------------------------------------------- CTranslate2

SAMPLING_SEED = 0                  # CTranslate2's sampler (temperature fallback) is seeded per call


class CT2Decoder:
    backend = "ctranslate2"

    def __init__(self, spec: str, folder: Path, options: DecodeOptions) -> None:
        import ctranslate2

        ctranslate2.set_log_level(logging.ERROR)   # the compute type is reported by the caller instead
        self.label = spec
        self.folder = Path(folder)
        self.options = options
        self.tokenizer = tokenizer_from_file(self.folder / "tokenizer.json")
        device = "cuda" if options.device in ("auto", "cuda") and ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if options.device == "cuda" and device != "cuda":
            raise ModelError("decoding on device 'cuda' was asked for (DecodeOptions.device) but CTranslate2 sees "
                             "no CUDA GPU; use device 'auto' or 'cpu'")
        self.device = device
        try:
            self.model = ctranslate2.models.Whisper(str(self.folder), device=device, compute_type="default",
                                                    intra_threads=usable_cores() if device == "cpu" else 0)
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"cannot load the CTranslate2 model in {self.folder}: {err}") from None
        self.compute_type = self.model.compute_type
        self.n_mels = int(self.model.n_mels)
        self.prompt = ct2_prompt(self.model.is_multilingual, options)
        self.max_new_tokens = options.max_new_tokens
        self._whisper = None

    def decode(self, features: np.ndarray) -> list[str]:
        """One window per clip, batched; Whisper's guards per clip (fallback re-decodes only the clips that need it)."""
        import ctranslate2

        ctranslate2.set_random_seed(SAMPLING_SEED)   # a fallback's sampling gives the same text on every run
        feats = _check_features(features, self.n_mels, self.label)
        if feats.shape[2] != N_FRAMES:
            raise ModelError(f"CTranslate2 decodes one {N_FRAMES}-frame window at a time, got {feats.shape[2]} frames")
        o = self.options
        prompt = self._prompt_ids()
        max_length = ct2_max_length(len(prompt), self.max_new_tokens)
        texts = [""] * feats.shape[0]
        tried: dict[int, list[tuple[bool, float, str]]] = {}
        pending = list(range(feats.shape[0]))
        encoded = None
        if len(o.temperatures) > 1 and self.device == "cpu":   # encode once; a fallback re-decodes from it
            encoded = np.array(self.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
        for n, temperature in enumerate(o.temperatures):
            sampling = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature} if temperature > 0 \
                else {"beam_size": o.beam_size}
            source = feats if encoded is None else encoded
            results = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(source[pending])),
                                          [prompt] * len(pending), max_length=max_length, suppress_blank=True,
                                          suppress_tokens=[-1], return_scores=True, return_no_speech_prob=True,
                                          **sampling)
            last = n == len(o.temperatures) - 1
            still = []
            for i, r in zip(pending, results):
                ids = r.sequences_ids[0]
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                avg_logprob = r.scores[0] * len(ids) / (len(ids) + 1)    # as faster-whisper recovers it
                low = o.logprob_threshold is not None and avg_logprob < o.logprob_threshold
                if o.no_speech_threshold is not None and low and r.no_speech_prob > o.no_speech_threshold:
                    continue                                          # non-speech: no text
                repetitive = (o.compression_ratio_threshold is not None
                              and compression_ratio(text) > o.compression_ratio_threshold)
                tried.setdefault(i, []).append((repetitive, avg_logprob, text))
                if (repetitive or low) and not last:
                    still.append(i)
                elif repetitive or low:               # every temperature failed: the most probable unrepeated text
                    texts[i] = max([t for t in tried[i] if not t[0]] or tried[i], key=lambda t: t[1])[2]
                else:
                    texts[i] = text
            pending = still
            if not pending:
                break
        return texts

    def _prompt_ids(self) -> list[int]:
        """The decoder prompt as ids, after <|startofprev|> and the initial prompt when there is one."""
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in self.prompt]
        if not self.options.prompt:
            return ids
        text = self.tokenizer.encode(" " + self.options.prompt.strip(), add_special_tokens=False)
        prev = self.tokenizer.convert_tokens_to_ids("<|startofprev|>")
        return [prev, *text[-(MAX_LABEL_TOKENS // 2 - 1):], *ids]

    @property
    def whisper(self):
        """faster-whisper's WhisperModel on the same CTranslate2 model (its long-form loop, VAD and word times)."""
        if self._whisper is None:
            from faster_whisper import WhisperModel

            try:
                whisper = WhisperModel(str(self.folder), device=self.device, compute_type="default",
                                       cpu_threads=usable_cores() if self.device == "cpu" else 0)
            except (RuntimeError, ValueError, OSError) as err:
                raise ModelError(f"faster-whisper cannot load {self.folder}: {err}") from None
            self.model = whisper.model              # one copy of the weights
            whisper.model = NewTokenLimit(whisper.model, self.max_new_tokens)
            self._whisper = whisper
        return self._whisper

    def transcribe(self, clips: Sequence[np.ndarray], timed: bool = False, prompt: str | None = None) -> list[Decoded]:
        """Each clip through faster-whisper's transcribe (long-form, guards, prompt, VAD, word times)."""
        import ctranslate2

        ctranslate2.set_random_seed(SAMPLING_SEED)   # the same fallback samples on every run
        o = self.options
        given = (o.prompt if prompt is None else prompt).strip()
        out = []
        for clip in clips:
            if not clip.size:
                out.append(Decoded(""))
                continue
            segments, _info = self.whisper.transcribe(
                np.ascontiguousarray(clip, dtype=np.float32),
                language=language_code(o.language) if self.model.is_multilingual else None, task=o.task,
                beam_size=o.beam_size, best_of=5, temperature=list(o.temperatures),
                compression_ratio_threshold=o.compression_ratio_threshold, log_prob_threshold=o.logprob_threshold,
                no_speech_threshold=o.no_speech_threshold, condition_on_previous_text=o.condition_on_previous_text,
                initial_prompt=given or None, word_timestamps=o.word_timestamps, vad_filter=o.vad,
                without_timestamps=not timed and clip.size <= N_SAMPLES, suppress_blank=True, suppress_tokens=[-1],
            )
            segments = list(segments)
            segs = tuple(
                Segment(float(s.start), float(s.end), s.text,
                        tuple(Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in s.words or ()))
                for s in segments)
            out.append(Decoded("".join(s.text for s in segs).strip(), segs,
                               ct2_carry(given, segments) if o.condition_on_previous_text else ""))
        return out


def ct2_carry(prompt: str, segments) -> str:
    """The prompt and faster-whisper segments' text since the last one decoded above RESET_TEMPERATURE."""
    head, text = prompt, ""
    for s in segments:
        head, text = ("", "") if s.temperature > RESET_TEMPERATURE else (head, text + s.text)
    return " ".join(t for t in (head, text.strip()) if t)


def ct2_max_length(prompt_tokens: int, new_tokens: int) -> int:
    """CTranslate2's Whisper `max_length` for `new_tokens` new tokens after a prompt of `prompt_tokens`: its
    generate decodes max_length // 2 new tokens (Whisper's sample_len rule applied to the value given), so the
    value is twice the new tokens wanted, which stop where the decoder context (prompt included) ends."""
    return 2 * max(1, min(new_tokens, MAX_LABEL_TOKENS - prompt_tokens))


class NewTokenLimit:
    """faster-whisper's CTranslate2 model, generating `new_tokens` new tokens per window as the transformers back
    end does (faster-whisper passes max_length = prompt + max_new_tokens, which CTranslate2 halves)."""

    def __init__(self, model, new_tokens: int) -> None:
        self._model, self._new_tokens = model, new_tokens

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, features, prompts, **kwargs):
        kwargs["max_length"] = ct2_max_length(max(len(p) for p in prompts), self._new_tokens)
        return self._model.generate(features, prompts, **kwargs)


def ct2_prompt(multilingual: bool, options: DecodeOptions) -> list[str]:
    """The decoder prompt: start token, then language and task for multilingual models, then no-timestamps."""
    if not multilingual:
        return [SOT, NO_TIMESTAMPS]
    return [SOT, language_token(language_code(options.language)), TASK_TOKENS[options.task], NO_TIMESTAMPS]
