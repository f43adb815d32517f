"""Decoding as users run it: both back ends on the demo's test split, the non-speech check, and long-file memory.

    python bench/decode_bench.py --work work/decode-bench            # WER and speed per back end, non-speech words
    python bench/decode_bench.py --memory --hours 2                   # peak memory of transcribe on a 2 h file

1. The bundled tiny.en (the demo's base model) evaluated on the demo's test split with each back end, Whisper's
   guards on (the defaults) and off (greedy): WER, clips/s and real-time factor, measured in this one run.
2. Ten short non-speech clips (silence, room tone, hum, clicks, ...) transcribed with the guards off and on: the
   words each emits.
3. --memory: a generated HOURS-long 44.1 kHz stereo WAV transcribed by a child process (`whisper-tune transcribe`,
   tiny.en); its peak resident memory, read from /proc (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from whisper_tune.pipeline.featurize.nonspeech import non_speech_clips
from whisper_tune.testing import REPO_ROOT, load_script, write_audio

SR = 16_000


def demo_work(work: Path):
    demo = load_script(REPO_ROOT / "data" / "demo" / "run_demo.py")
    cfg = demo.demo_config()
    if not (work / "cache").is_dir():
        demo._validate_and_featurize(REPO_ROOT / "data" / "demo" / demo.DOMAIN_CSV, work, cfg)
    return cfg


def both_backends(work: Path, cfg, backends=("transformers", "ctranslate2"), guards: bool = True) -> dict:
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    out = {}
    for backend in backends:
        c = load_config(None, {"decode.backend": backend, "model.name": cfg.model.name, "decode.guards": guards})
        r = run_evaluate(EvalSettings(model="bundled:tiny.en", work_dir=work, cfg=c, worst=0, batch_size=8,
                                      max_new_tokens=64))   # as the demo scores
        s = r.scores
        out[backend] = {"wer": round(s.wer, 2), "clips": s.clips, "clips_per_second": round(s.clips_per_second, 2),
                        "real_time_factor": round(s.real_time_factor, 4), "seconds": round(s.seconds, 1)}
    if len(out) == 2:
        out["wer_difference"] = round(abs(out["transformers"]["wer"] - out["ctranslate2"]["wer"]), 2)
    return out


NON_SPEECH_TOKENS = 96      # per window: a looping hallucination is cut here (the count of words stays telling)


def non_speech_check(folder: Path, backends=("transformers", "ctranslate2")) -> dict:
    from whisper_tune.pipeline.core.config import load_config
    from whisper_tune.train.inference.transcribe import run_transcribe

    folder.mkdir(parents=True, exist_ok=True)
    files = [write_audio(folder / f"{i:02d}.wav", clip) for i, clip in enumerate(non_speech_clips().values())]
    out = {}
    for guards in (False, True):
        for backend in backends:
            cfg = load_config(None, {"decode.guards": guards, "decode.backend": backend})
            rows = run_transcribe(model="bundled:tiny.en", inputs=files, cfg=cfg, output=None,
                                  max_new_tokens=NON_SPEECH_TOKENS)
            words = sum(len(r.text.split()) for r in rows)
            out[f"{backend}, guards {'on' if guards else 'off'}"] = {
                "words": words, "clips_with_text": sum(bool(r.text) for r in rows),
                "texts": [r.text for r in rows]}
    return out


def write_long_wav(path: Path, hours: float) -> Path:
    """A 44.1 kHz stereo PCM-16 WAV of `hours`, written block by block: a 2 s tone burst each minute over near
    silence (what matters here is the length; decoding it costs little)."""
    import soundfile as sf

    sr, block = 44_100, 44_100 * 60
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for minute in range(int(hours * 60)):
            t = np.arange(block) / sr
            x = 0.0005 * rng.standard_normal(block)
            x[: sr * 2] += 0.3 * np.sin(2 * np.pi * (200 + minute % 7 * 50) * t[: sr * 2])
            f.write(np.stack([x, x * 0.8], axis=1).astype(np.float32))
    return path


def memory(hours: float, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / f"long-{hours:g}h-quiet.wav"
    if not wav.is_file():
        write_long_wav(wav, hours)
    code = (
        "import sys; from pathlib import Path; from whisper_tune.pipeline.core.config import load_config; "
        "from whisper_tune.pipeline.core.system import peak_rss_mb; "
        "from whisper_tune.train.inference.transcribe import run_transcribe; "
        f"run_transcribe(model='bundled:tiny.en', inputs=[Path({str(wav)!r})], cfg=load_config(), "
        f"output=Path({str(folder / 'long.jsonl')!r})); print('PEAK_MB', peak_rss_mb())"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    peak = float(proc.stdout.split("PEAK_MB")[-1])
    return {"hours": hours, "file_mb": round(wav.stat().st_size / 1e6), "peak_rss_mb": round(peak),
            "seconds": round(time.perf_counter() - start)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "work" / "decode-bench")
    ap.add_argument("--memory", action="store_true", help="only the long-file memory measurement")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--only", choices=("backends", "non-speech"), help="one part of 1 and 2")
    ap.add_argument("--no-guards", action="store_true", help="back ends: only plain greedy decoding")
    ap.add_argument("--backend", action="append", help="only this back end (repeatable)")
    args = ap.parse_args(argv)
    if args.memory:
        print(json.dumps(memory(args.hours, args.work / "long"), indent=2))
        return 0
    result = {}
    if args.only in (None, "backends"):
        work = args.work / "demo"
        cfg = demo_work(work)
        for guards in (False,) if args.no_guards else (True, False):
            key = f"backends, guards {'on' if guards else 'off'}"
            result[key] = both_backends(work, cfg, tuple(args.backend or ("transformers", "ctranslate2")), guards)
            print(key, json.dumps(result[key], indent=2), flush=True)
    if args.only in (None, "non-speech"):
        result["non_speech"] = non_speech_check(args.work / "noise", tuple(args.backend or ("transformers", "ctranslate2")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
