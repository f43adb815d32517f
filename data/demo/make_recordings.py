"""Generate the demo's long recordings: ward handovers of 60-90 s, each with the SRT file of its sentences.

    python data/demo/make_recordings.py        # rewrites data/demo/recordings/ and recordings.csv (needs espeak-ng)

Writes, next to this script:
  recordings.csv            audios,subtitles,speaker,split   (a CSV of recordings: `whisper-tune validate --csv`)
  recordings/hand_*.mp3     mono 16 kHz, ~24 kbit/s, like the clips (make_demo_data.py's speech and MP3 settings)
  recordings/hand_*.srt     one cue per sentence, at the sample where its speech starts and ends

One recording per speaker voice: three voices of the clips' training set speak the train recordings and one test
voice the test recording, so the recording is also the speaker. The sentences are a handover's, from templates of
their own over the clips' drug vocabulary; none of them is a sentence of any clip set (checked when written).
Between sentences lie 0.2-1.8 s of near-silence, so windows have real gaps. Deterministic (fixed seed).
"""

from __future__ import annotations

import csv
import random
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_demo_data as clips  # noqa: E402  (the clips' generator: speech, voices, vocabulary, MP3 settings)

SEED = 20261202
FOLDER = "recordings"
CSV_NAME = "recordings.csv"
SECONDS = (60.0, 90.0)            # each recording's length, about
PLAN = (("train", clips.TRAIN_VOICES[0]), ("train", clips.TRAIN_VOICES[9]), ("train", clips.TRAIN_VOICES[20]),
        ("test", clips.TEST_VOICES[5]))

HANDOVER = (
    "Bed {n} is on {a} {time}, and the levels come back this afternoon.",
    "Please check the {a} chart before the evening round.",
    "The patient in bed {n} had {cond} overnight, so we held the {a}.",
    "Pharmacy asked us to switch {a} to {b} once the cultures are back.",
    "Bed {n} goes home tomorrow with {a} {time}.",
    "We gave {a} {route} at six and the pain settled.",
    "Watch for {cond} in bed {n} after the first dose of {a}.",
    "The family in bed {n} would like a word about the {a}.",
    "Bed {n} still needs a second signature for the {a}.",
    "Nobody has restarted the {a} since the fall on Tuesday.",
    "Bed {n} refused the {a} this morning, so please try again with food.",
    "The night team reduced {a} because of {cond}.",
)


def sentence(rng: random.Random, drugs: list[str]) -> str:
    template = rng.choice(HANDOVER)
    a, b = clips.pick(drugs, 2)
    return template.format(n=rng.randint(1, 24), a=a, b=b, time=rng.choice(clips.TIMES),
                           cond=rng.choice(clips.CONDITIONS), route=rng.choice(clips.ROUTES))


def recording(rng: random.Random, voice, drugs: list[str], taken: set[str]) -> tuple[np.ndarray, list]:
    """Sentences spoken one after another with gaps, until the target length: (audio, [(start, end, text)])."""
    target = rng.uniform(*SECONDS)
    sr = clips.SAMPLE_RATE_HZ
    pieces, cues, at = [], [], 0
    speed, pitch = rng.randint(140, 175), rng.randint(30, 70)
    while True:
        text = sentence(rng, drugs)
        if text in taken:
            continue
        speech = clips.speak(text, voice, speed=speed, pitch=pitch)
        speech = speech / max(float(np.abs(speech).max()), 1e-6) * rng.uniform(0.5, 0.9)
        gap = int(rng.uniform(0.2, 1.8) * sr)
        if (at + gap + speech.size) / sr > target and cues:
            break
        taken.add(text)
        pieces += [np.zeros(gap, np.float32), speech.astype(np.float32)]
        cues.append(((at + gap) / sr, (at + gap + speech.size) / sr, text))
        at += gap + speech.size
    pieces.append(np.zeros(int(0.8 * sr), np.float32))
    audio = np.concatenate(pieces)
    audio += np.random.default_rng(rng.randrange(2**32)).normal(0.0, 2e-4, audio.size).astype(np.float32)
    return np.clip(audio, -1.0, 1.0), cues


def write_srt(path: Path, cues: list) -> None:
    def clock(seconds: float) -> str:
        ms = round(seconds * 1000)
        s, ms = divmod(ms, 1000)
        m, s = divmod(s, 60)
        return f"{m // 60:02d}:{m % 60:02d}:{s:02d},{ms:03d}"

    blocks = [f"{i}\n{clock(a)} --> {clock(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1)]
    path.write_text("\n".join(blocks), encoding="utf-8")


def clip_sentences() -> set[str]:
    out: set[str] = set()
    for name in ("final_generated_dataset.csv", "everyday.csv"):
        with open(HERE / name, newline="", encoding="utf-8") as fh:
            out |= {row["transcription"] for row in csv.DictReader(fh)}
    return out


def main() -> int:
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is needed to regenerate the demo recordings (apt install espeak-ng); the committed data "
              "needs nothing", file=sys.stderr)
        return 1
    rng = random.Random(SEED)
    drugs = list(clips.DRUGS)
    rng.shuffle(drugs)
    taken = clip_sentences()
    (HERE / FOLDER).mkdir(exist_ok=True)
    rows = []
    for k, (split, voice) in enumerate(PLAN):
        audio, cues = recording(rng, voice, drugs, taken)
        name = f"{FOLDER}/hand_{k:02d}"
        clips.write_mp3(HERE / f"{name}.mp3", audio)
        write_srt(HERE / f"{name}.srt", cues)
        rows.append((f"{name}.mp3", f"{name}.srt", voice.name, split))
        print(f"{name}: {audio.size / clips.SAMPLE_RATE_HZ:.1f} s, {len(cues)} cues, {voice.name}, {split}")
    with open(HERE / CSV_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("audios", "subtitles", "speaker", "split"))
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
