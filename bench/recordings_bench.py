"""The demo recordings (data/demo/recordings: four ward handovers with SRT files) through every stage with the
demo settings, trained as windows and, for comparison, as cut clips (one clip per cue, through a CSV of clips
written from the SRTs); both models and the base model scored on the same cache: per-window WER (the test
recording's windows) and long-form WER with the boundary shares (the test recording decoded whole from the cache).

    python bench/recordings_bench.py --work /tmp/recordings-bench       # prints the table, writes summary.json

Decoding as the demo's table decodes (transformers, plain greedy), with each window's whole token budget (a 30 s
window of dense speech needs more than the demo's 64 tokens per clip).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.testing import REPO_ROOT

DEMO = REPO_ROOT / "data" / "demo"


def cut_clips(recordings_csv: Path, out: Path) -> Path:
    """One WAV per cue of every recording (its exact times), and a CSV of clips with the recording's speaker and
    split: the same audio and transcripts as the windows, as a team with cut clips would have them."""
    import soundfile as sf

    from whisper_tune.pipeline.featurize import audio
    from whisper_tune.pipeline.validate.subtitles import read_cues

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(recordings_csv, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            samples = audio.load(recordings_csv.parent / rec["audios"])
            stem = Path(rec["audios"]).stem
            for i, cue in enumerate(read_cues(recordings_csv.parent / rec["subtitles"])):
                name = f"{stem}_{i:02d}.wav"
                sf.write(str(out / name), samples[int(cue.start * 16_000):int(cue.end * 16_000)], 16_000)
                rows.append({"audios": name, "transcription": cue.text.strip(), "speaker": rec["speaker"],
                             "split": rec["split"]})
    path = out / "clips.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["audios", "transcription", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepare(csv_path: Path, work: Path, cfg) -> None:
    from whisper_tune.pipeline.featurize.stage import run_features
    from whisper_tune.pipeline.validate.stage import run_validate

    run_validate(csv_path=csv_path, work_dir=work, cfg=cfg, use_model=True, echo=None)
    run_features(work_dir=work, cfg=cfg, echo=None)


def score(model: str, work: Path, cfg) -> dict:
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    res = run_evaluate(EvalSettings(model=model, work_dir=work, cfg=cfg, split="test",
                                    batch_size=int(cfg.training.eval_batch_size), worst=0))
    lf = res.longform
    return {"window_wer": round(res.scores.wer, 2), "windows": res.scores.clips, "longform_wer": lf.wer,
            "segments": lf.boundaries.segments, "start_share": lf.boundaries.start_share,
            "end_share": lf.boundaries.end_share, "hypothesis": lf.per_recording[0].hypothesis}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    from whisper_tune.train.trainer import run_train

    cfg = load_config(DEMO / "demo.toml")
    work = args.work
    timings: dict[str, float] = {}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}: {timings[name]} s]", flush=True)
        return out

    rec_work, clip_work = work / "recordings", work / "clips-work"
    timed("validate + features (recordings)", lambda: prepare(DEMO / "recordings.csv", rec_work, cfg))
    clips_csv = timed("cut one clip per cue", lambda: cut_clips(DEMO / "recordings.csv", work / "clips"))
    timed("validate + features (clips)", lambda: prepare(clips_csv, clip_work, cfg))
    out: dict = {"base": timed("score base", lambda: score(cfg.model.name, rec_work, cfg))}
    for label, train_work in (("windows", rec_work), ("clips", clip_work)):
        model_dir = work / f"model-{label}"
        shutil.rmtree(model_dir, ignore_errors=True)
        timed(f"train on {label}", lambda: run_train(work_dir=train_work, output_dir=model_dir, cfg=cfg,
                                                     resume=False))
        out[label] = timed(f"score trained on {label}", lambda: score(str(model_dir), rec_work, cfg))
    out["timings"] = timings
    (work / "summary.json").write_text(json.dumps(out, indent=2))
    print(f"\n{'':28}{'per-window WER':>16}{'long-form WER':>15}{'starts':>8}{'ends':>8}")
    for label, name in (("base", "base tiny.en"), ("windows", "trained on windows"), ("clips", "trained on clips")):
        r = out[label]
        print(f"{name:28}{r['window_wer']:>14.1f} %{r['longform_wer']:>13.1f} %{r['start_share'] or 0:>7.0f}%"
              f"{r['end_share'] or 0:>7.0f}%")


if __name__ == "__main__":
    main()
