"""Generate the demo dataset: clinical pharmacology dictation that Whisper tiny.en mis-hears.

    python data/demo/make_demo_data.py            # rewrites data/demo/ (needs espeak-ng, soundfile, soxr)
    python data/demo/make_demo_data.py --csv-only # rewrites the two CSVs alone (no espeak-ng; audio untouched)

Writes, next to this script:
  final_generated_dataset.csv   audios,transcription,split,speaker   (the guide's format plus split and speaker)
  audios/*.mp3                  mono 16 kHz, ~24 kbit/s
  everyday.csv + everyday/*.mp3 everyday sentences without jargon: the forgetting check

Three splits: 200 train clips, 20 validation clips (the trainer picks its best epoch on these) and 30 test clips
(scored before and after). The drugs and conditions come from one vocabulary (24 drugs), so the words the model must
learn occur in every split. What differs between the splits is everything else:
  - sentence shapes: training sentences join two clauses from a small grammar (domain subjects and predicates,
    whole clauses, and hundreds of plain everyday clauses); the test sentences come from six templates that the
    grammar never produces, so the test measures learning the words, not memorising sentences; the validation
    sentences come from four more templates of their own;
  - voices: the test clips are spoken by speaker variants (m4, m6, f3, f4) and the validation clips by variants
    (m5, m8, f5) that no training clip uses;
every clip also gets its own speed, pitch and loudness, and 0.3-1.0 s of near-silence on each side.
The split is written into the CSV (`split` column), which `whisper-tune validate` honours, and so is each clip's
speaker (`speaker`: the espeak-ng voice), which the demo passes as `--group-column speaker`.

The product never needs espeak-ng: this script ran once and its output is committed. It is deterministic
(fixed seed; espeak-ng and LAME are deterministic for fixed inputs).
"""

from __future__ import annotations

import csv
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20240611
SAMPLE_RATE_HZ = 16_000
N_TRAIN = 200
N_VALIDATION = 20
N_TEST = 30
MP3_COMPRESSION = 0.9            # soundfile/LAME: constant bitrate, ~24 kbit/s at 16 kHz mono

DRUGS = (
    "apixaban", "rivaroxaban", "dabigatran", "enoxaparin", "clopidogrel", "ticagrelor", "vancomycin",
    "piperacillin", "tazobactam", "ceftriaxone", "meropenem", "levetiracetam", "lamotrigine", "amiodarone",
    "spironolactone", "ondansetron", "pantoprazole", "esomeprazole", "empagliflozin", "dexmedetomidine",
    "midazolam", "methotrexate", "tacrolimus", "metoclopramide",
)
CONDITIONS = (
    "renal impairment", "hyperkalemia", "QT prolongation", "neutropenia", "thrombocytopenia", "hypoglycemia",
    "hepatic impairment", "angioedema", "bradycardia", "hyponatremia",
)
ROUTES = (
    "as an intravenous bolus", "by subcutaneous injection", "as a continuous infusion", "orally with food",
    "through the nasogastric tube",
)
TIMES = ("twice daily", "every morning", "at bedtime", "every eight hours", "once weekly", "as needed")

# Training sentences join two clauses drawn from a small grammar, so the carrier words around the drug names keep
# changing and the decoder learns the names rather than a handful of memorised phrases. {a} {b}: drugs,
# {cond}: condition, {route} {time}: administration. A clause is a subject + predicate or a whole clause.
DOMAIN_SUBJECTS = (
    "the consultant", "the registrar", "the night team", "pharmacy", "the ward pharmacist", "the surgeon",
    "the GP", "the renal team", "the nurse in charge", "the anaesthetist", "the medical student",
    "the on-call doctor", "the cardiologist", "the discharge team", "the locum", "the outpatient clinic",
    "she", "he", "her daughter", "his GP", "our pharmacist",
)
DRUG_PREDICATES = (
    "started {a} {time}",
    "stopped the {a} yesterday",
    "increased the {a} slowly",
    "halved the dose of {a}",
    "restarted the {a} after the scan",
    "withdrew {a} because of {cond}",
    "prescribed {a} {route}",
    "wrote {a} on the drug chart",
    "wants the {a} reviewed on the ward round",
    "is worried about {a} with {b}",
    "swapped {a} for {b}",
    "prefers {b} to {a} in {cond}",
    "gave {a} {route}",
    "checked the {a} level this morning",
    "asked us to hold {a} before theatre",
    "changed {a} to {b} {time}",
    "added {a} to her regular medication",
    "suspects {cond} from the {a}",
    "will restart {a} when the bloods improve",
    "documented an allergy to {a}",
    "kept the {a} and dropped the {b}",
    "mentioned {a} in the handover",
    "switched the {a} to tablets",
    "continued {a} at the same dose",
    "found {a} among his own medicines",
    "recommended {a} for the infection",
    "tapered the {a} over a week",
    "confirmed that {a} was given {route}",
    "reduced the {a} in {cond}",
    "loaded the patient with {a}",
)
DRUG_CLAUSES = (
    "give {a} {route}",
    "start {a} {time}",
    "stop the {a} today",
    "hold the {a} until the bloods are back",
    "increase the {a} slowly",
    "prescribe {a} {time} for a week",
    "swap the {a} for {b}",
    "keep an eye on the {a} level",
    "{a} can cause {cond}",
    "the {a} is due {time}",
    "is the {a} still on the chart",
    "do not mix {a} with {b}",
    "the {a} infusion finished at midnight",
    "{a} and {b} should not be given together",
    "her {a} was held for {cond}",
    "his {a} was restarted on the ward round",
    "there is no {a} left in the cupboard",
    "the {a} prescription needs a second signature",
    "{a} interacts with {b}",
    "monitor for {cond} on {a}",
    "{a} is contraindicated in {cond}",
    "the discharge letter lists {a} and {b}",
    "pharmacy flagged {a} with {b}",
    "the nurse gave {a} {route}",
    "she takes {a} {time}",
    "he developed {cond} on {a}",
    "check the {a} level before the next dose",
    "replace {a} with {b} before the procedure",
)
# Ordinary speech: plain subject + plain predicate (hundreds of combinations) or a whole plain clause. Every other
# training sentence carries one, so the decoder keeps its everyday English (none is an everyday.csv sentence).
PLAIN_SUBJECTS = (
    "the patient", "his wife", "her son", "my neighbour", "the porter", "our receptionist", "the new student",
    "the visitor", "my colleague", "the cleaner", "her husband", "the taxi driver", "our manager",
    "the lady next door", "his brother", "the volunteer",
)
PLAIN_PREDICATES = (
    "slept well last night", "asked for a cup of tea", "went home yesterday afternoon",
    "is waiting in the corridor", "wants to speak to somebody", "felt dizzy after breakfast",
    "will come back tomorrow", "forgot the paperwork again", "moved to the side room", "is on holiday this week",
    "lost her glasses in the garden", "brought flowers for the nurses", "parked outside the main entrance",
    "walked to the shop and back", "finished the crossword before lunch", "watched the football on television",
    "called about the weekend rota", "needs a lift to the station", "enjoyed the soup at dinner",
    "fixed the broken window", "told a long story about his garden", "is learning to play the piano",
    "read the newspaper all morning", "complained about the noise at night", "asked when visiting hours start",
    "left a message at reception", "is feeling much brighter today", "spilled coffee on the keyboard",
    "found a wallet in the lift", "wants a quieter room", "has a birthday next week",
    "is worried about the cat at home", "went for a short walk outside", "phoned his daughter in Canada",
    "took the early bus", "likes the seat by the window",
)
PLAIN_CLAUSES = (
    "the patient slept well last night",
    "her family visited in the afternoon",
    "the blood pressure was stable all day",
    "he is eating and drinking normally",
    "we will review him again on Monday",
    "she feels much better today",
    "the bloods are due in the morning",
    "he walked to the bathroom without help",
    "the pain is well controlled",
    "please call the family with an update",
    "the car park was full this morning",
    "we ordered sandwiches for the meeting",
    "the printer on the second floor is broken again",
    "my brother plays football every Saturday",
    "the shop on the corner sells fresh flowers",
    "it started snowing just after lunch",
    "the bus stops right outside the hospital",
    "they painted the waiting room light green",
    "our team won the quiz last Friday",
    "the coffee machine needs new filters",
    "she is going on holiday to the coast next week",
    "the new timetable starts in September",
    "we need more chairs in the seminar room",
    "the lift is out of order until Tuesday",
    "somebody left a blue jacket at reception",
    "there is a fire drill this afternoon",
)
# Some sentences open with a time or a reason, so the sentence starts vary as much as the rest.
OPENERS = ("yesterday", "overnight", "this morning", "on Monday", "after the scan", "as discussed", "for now",
           "in clinic today", "at the weekend", "on reflection")
CONNECTORS = (", then ", " and ", ". Also, ", ", but ", ", so ", ". ", " because ", " while ")
TEST_TEMPLATES = (
    "Pharmacy recommends {a} instead of {b} for this patient.",
    "Hold the {a} tonight and restart {b} tomorrow.",
    "Because of {cond}, the {a} was withdrawn and {b} was started.",
    "Please confirm whether {a} or {b} is on the chart.",
    "After the ward round we added {a} and kept the {b}.",
    "Her regular medicines are {a}, {b} and {c}.",
)
# The validation split (model selection during training) has shapes and voices of its own, like the test split.
VALIDATION_TEMPLATES = (
    "Can we give {a} with {b} after dinner?",
    "Tomorrow morning the team will review {a} and {b}.",
    "Since she has {cond}, {a} is safer than {b}.",
    "His usual tablets include {a} and {b}.",
)
EVERYDAY = (
    "Could you pick up the children from school on Thursday afternoon?",
    "The weather should be sunny for most of the weekend.",
    "I left my keys on the kitchen table next to the bread.",
    "We are meeting at the cafe near the station at noon.",
    "Please turn off the lights when you leave the room.",
    "My sister is moving to a new flat at the end of the month.",
    "The train was late again because of the heavy rain.",
    "Do you want to watch a film or go for a walk tonight?",
    "He bought fresh vegetables and a loaf of bread at the market.",
    "Remember to call your grandmother on her birthday.",
    "The library closes early on Sundays during the summer.",
    "Our neighbours have a small dog that barks at the postman.",
)


@dataclass(frozen=True)
class Voice:
    name: str          # espeak-ng voice, e.g. "en-gb-scotland+f3"


# Disjoint voice sets: the test speakers (espeak-ng variants) never occur in training; the accents are shared.
TRAIN_VOICES = tuple(Voice(f"{accent}+{variant}") for accent in ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
                     for variant in ("m1", "m2", "m3", "f1", "f2", "m7"))
TEST_VOICES = tuple(Voice(f"{accent}+{variant}") for accent in ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
                    for variant in ("m4", "f3", "m6", "f4"))
VALIDATION_VOICES = tuple(Voice(f"{accent}+{variant}") for accent in ("en-us", "en-gb", "en-gb-x-rp", "en-029")
                          for variant in ("m5", "f5", "m8"))
EVERYDAY_VOICES = TRAIN_VOICES[::5] + TEST_VOICES[::4]


def pick(drugs: list[str], n: int) -> list[str]:
    """n distinct drugs from a cycling queue, so every drug recurs evenly."""
    picked: list[str] = []
    while len(picked) < n:
        d = drugs.pop(0)
        drugs.append(d)
        if d not in picked:
            picked.append(d)
    return picked


def fill(template: str, rng: random.Random, drugs: list[str]) -> str:
    """Take from the queue only as many drugs as the template names, so the queue's rotation covers every drug."""
    used = [slot for slot in ("{a}", "{b}", "{c}") if slot in template]
    a, b, c = (pick(drugs, len(used)) + ["", "", ""])[:3]
    time, time2 = rng.sample(TIMES, 2)
    return template.format(a=a, b=b, c=c, cond=rng.choice(CONDITIONS), route=rng.choice(ROUTES), time=time,
                           time2=time2)


def capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def drug_clause(rng: random.Random, drugs: list[str]) -> str:
    if rng.random() < 0.6:
        return f"{rng.choice(DOMAIN_SUBJECTS)} {fill(rng.choice(DRUG_PREDICATES), rng, drugs)}"
    return fill(rng.choice(DRUG_CLAUSES), rng, drugs)


def plain_clause(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"{rng.choice(PLAIN_SUBJECTS)} {rng.choice(PLAIN_PREDICATES)}"
    return rng.choice(PLAIN_CLAUSES)


def train_sentence(i: int, rng: random.Random, drugs: list[str]) -> str:
    """One or two clauses. Of every six sentences: drug, drug + drug, drug + plain, plain + drug, drug,
    plain + plain: lengths vary, so the decoder learns to stop where the speech stops, and ordinary speech in the
    training mix limits forgetting."""
    kinds = (("drug",), ("drug", "drug"), ("drug", "plain"), ("plain", "drug"), ("drug",), ("plain", "plain"))[i % 6]
    clauses = [drug_clause(rng, drugs) if k == "drug" else plain_clause(rng) for k in kinds]
    if rng.random() < 0.2:
        clauses[0] = f"{rng.choice(OPENERS)}, {clauses[0]}"
    if len(clauses) == 1:
        return capitalize(clauses[0]) + "."
    first, second = clauses
    if first == second:
        second = plain_clause(rng)
    connector = rng.choice(CONNECTORS)
    if connector.rstrip().endswith("."):
        second = capitalize(second)
    return capitalize(first) + connector + second + "."


def test_sentence(i: int, rng: random.Random, drugs: list[str]) -> str:
    return capitalize(fill(TEST_TEMPLATES[i % len(TEST_TEMPLATES)], rng, drugs))


def validation_sentence(i: int, rng: random.Random, drugs: list[str]) -> str:
    return capitalize(fill(VALIDATION_TEMPLATES[i % len(VALIDATION_TEMPLATES)], rng, drugs))


def speak(text: str, voice: Voice, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng speech as float32 mono at 16 kHz."""
    import io

    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice.name, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), sr, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32)


@dataclass(frozen=True)
class Take:
    """How one clip is spoken: everything random about it, drawn before any audio is made."""

    name: str          # path relative to this folder
    text: str
    split: str
    voice: Voice
    speed: int
    pitch: int
    level: float
    lead: int          # samples of near-silence before the speech
    tail: int          # ... and after it
    noise_seed: int


def draw_take(name: str, text: str, split: str, voice: Voice, rng: random.Random) -> Take:
    speed, pitch, level = rng.randint(135, 185), rng.randint(25, 75), rng.uniform(0.4, 0.9)
    lead, tail = (int(rng.uniform(0.3, 1.0) * SAMPLE_RATE_HZ) for _ in range(2))
    return Take(name, text, split, voice, speed, pitch, level, lead, tail, rng.randrange(2**32))


def render(take: Take) -> np.ndarray:
    speech = speak(take.text, take.voice, speed=take.speed, pitch=take.pitch)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * take.level
    noise = np.random.default_rng(take.noise_seed).normal(0.0, 2e-4, take.lead + speech.size + take.tail)
    out = noise.astype(np.float32)
    out[take.lead:take.lead + speech.size] += speech
    return np.clip(out, -1.0, 1.0)


def write_mp3(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE_HZ, format="MP3", compression_level=MP3_COMPRESSION, bitrate_mode="CONSTANT")


def plan() -> tuple[list[Take], list[Take]]:
    """Every clip of the domain set and of the everyday set, in the order the seeded generator draws them."""
    rng = random.Random(SEED)
    drugs = list(DRUGS)
    rng.shuffle(drugs)
    domain: list[Take] = []
    makers = {"train": (train_sentence, TRAIN_VOICES), "validation": (validation_sentence, VALIDATION_VOICES),
              "test": (test_sentence, TEST_VOICES)}
    plan = ([("train", i) for i in range(N_TRAIN)] + [("validation", i) for i in range(N_VALIDATION)]
            + [("test", i) for i in range(N_TEST)])
    seen: set[str] = set()
    for split, i in plan:
        make, voices = makers[split]
        text = make(i, rng, drugs)
        while text in seen:          # every clip says something new
            text = make(i, rng, drugs)
        seen.add(text)
        voice = voices[rng.randrange(len(voices))]
        domain.append(draw_take(f"audios/{split}_{i:03d}.mp3", text, split, voice, rng))
    everyday = [draw_take(f"everyday/everyday_{i:02d}.mp3", text, "test", EVERYDAY_VOICES[i % len(EVERYDAY_VOICES)],
                          rng) for i, text in enumerate(EVERYDAY)]
    return domain, everyday


def write_csvs(out_dir: Path, domain: list[Take], everyday: list[Take]) -> None:
    """The CSVs: audio path, transcript, pinned split, and the speaker (the espeak-ng voice) of each clip."""
    for file, takes in (("final_generated_dataset.csv", domain), ("everyday.csv", everyday)):
        write_csv(out_dir / file, ("audios", "transcription", "split", "speaker"),
                  [(t.name, t.text, t.split, t.voice.name) for t in takes])


def build(out_dir: Path) -> None:
    domain, everyday = plan()
    for take in domain + everyday:
        write_mp3(out_dir / take.name, render(take))
    write_csvs(out_dir, domain, everyday)


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    if "--csv-only" in (sys.argv[1:] if argv is None else argv):       # the CSVs alone: no espeak-ng, audio untouched
        write_csvs(HERE, *plan())
        print(f"wrote the CSVs under {HERE}")
        return 0
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is needed to regenerate the demo data (apt install espeak-ng); the committed data needs nothing",
              file=sys.stderr)
        return 1
    for sub in ("audios", "everyday"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    build(HERE)
    print(f"wrote {N_TRAIN + N_VALIDATION + N_TEST} domain clips and {len(EVERYDAY)} everyday clips under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
