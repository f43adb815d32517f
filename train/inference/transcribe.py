"""`whisper-tune transcribe`: text for new audio files with a (fine-tuned) model.

    whisper-tune transcribe --model work/model meeting.mp3 recordings/ -o out.csv

- Inputs are files or folders (searched recursively for the extensions in constants.AUDIO_EXTENSIONS).
- Every output path is checked before anything is decoded (train/inference/outputs).
- Audio is decoded, trimmed and peak-normalized like the training clips (config [audio]). A file longer than
  WHOLE_FILE_S is read block by block (pipeline.featurize.audio.stream) and decoded in pieces of about PIECE_S cut
  at a quiet moment, so memory stays bounded whatever its length (README has the figure for a 2-hour file).
- Decoding is decode.Decoder.transcribe, with the back end, guards, beams, prompt, VAD and word times of
  [decode] (decode.DecodeOptions.from_config).
- Output: "path<TAB>text" lines on stdout, or a file: .csv (path,text) or .jsonl / .json (JSON lines, with
  "words" under --word-timestamps), or subtitles: .srt / .vtt (one file per input, see subtitles.subtitle_paths;
  one cue per word under --word-timestamps).
- Results are written as each batch of inputs finishes: table rows are appended to a hidden `.OUT.partial` beside
  OUT, which becomes OUT (atomically) at the end; subtitle files are written one by one. A re-run skips the inputs
  whose results are already in OUT (or its partial file) and says how many; Ctrl-C keeps what is finished.
- A bad input (missing, empty or undecodable file, folder without audio) is reported on stderr and skipped;
  the others are still transcribed and written, and the command then exits non-zero.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from whisper_tune.pipeline.featurize.audio import load, prepare, probe, stream
from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.constants import AUDIO_EXTENSIONS, N_SAMPLES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import AudioError, ConfigError
from whisper_tune.pipeline.core.fileio import atomic_write_text

from whisper_tune.train.inference.decode import Decoded, DecodeOptions, Segment, open_decoder
from whisper_tune.train.inference.outputs import check_output_file

WHOLE_FILE_S = 120.0        # longer files are streamed and decoded piece by piece
PIECE_S = 120.0             # piece length before its cut ...
CUT_SEARCH_S = 10.0         # ... at the quietest CUT_FRAME_S of its last CUT_SEARCH_S
CUT_FRAME_S = 0.1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    path: str
    text: str
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


def output_format(output: Path | None) -> str:
    """'print', 'csv', 'jsonl', 'srt' or 'vtt' from the --output suffix (ConfigError for anything else)."""
    if output is None:
        return "print"
    suffix = output.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".srt", ".vtt"):
        return suffix[1:]
    raise ConfigError(f"--output {output}: unknown format {suffix or '(no suffix)'!r}; "
                      "use a .csv, .jsonl, .srt or .vtt file, or leave --output out to print")


def collect_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[Failure]]:
    """Audio files named directly or found (recursively) in folders, in order, without duplicates."""
    files: list[Path] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                failures.append(Failure(str(given), "folder has no audio files (looked for "
                                        + ", ".join(AUDIO_EXTENSIONS) + ")"))
        elif path.exists():
            found = [path]
        else:
            failures.append(Failure(str(given), "file not found"))
            found = []
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, failures


def load_clip(path: Path, cfg: Config) -> np.ndarray:
    """Mono float32 16 kHz, trimmed and peak-normalized like the training clips; silence gives an empty array."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    samples = load(path)
    if samples.size == 0 or not np.any(samples):
        return np.zeros(0, dtype=np.float32)
    return prepare(samples, top_db=cfg.audio.trim_top_db, normalize=cfg.audio.peak_normalize)


def duration_s(path: Path) -> float:
    """The header's length in seconds (AudioError for an empty or unreadable file)."""
    return probe(path).duration


def quiet_cut(samples: np.ndarray, search: int, frame: int) -> int:
    """Index in `samples` to cut at: the middle of the quietest `frame` within its last `search` samples."""
    start = max(0, samples.size - search)
    tail = samples[start:]
    n = tail.size // frame
    if n < 2:
        return samples.size
    energy = np.square(tail[:n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    return start + int(np.argmin(energy)) * frame + frame // 2


def audio_pieces(path: Path, cfg: Config, piece_s: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(offset in seconds, samples) pieces of a long file, read block by block, each about piece_s long and cut at
    a quiet moment; scaled by the file's peak (found in a first streamed pass) as peak normalization does."""
    scale = 1.0
    if cfg.audio.peak_normalize:
        peak = max((float(np.max(np.abs(b))) for b in stream(path)), default=0.0)
        scale = 1.0 / peak if peak > 0 else 1.0
    piece = int((PIECE_S if piece_s is None else piece_s) * SAMPLE_RATE_HZ)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0
    for block in stream(path):
        buffer = np.concatenate([buffer, block * np.float32(scale)])
        while buffer.size >= piece + int(CUT_SEARCH_S * SAMPLE_RATE_HZ):
            cut = quiet_cut(buffer[:piece], int(CUT_SEARCH_S * SAMPLE_RATE_HZ), int(CUT_FRAME_S * SAMPLE_RATE_HZ))
            yield offset / SAMPLE_RATE_HZ, buffer[:cut].copy()
            offset += cut
            buffer = buffer[cut:].copy()
    if buffer.size:
        yield offset / SAMPLE_RATE_HZ, buffer


def shifted(segments: Sequence[Segment], seconds: float) -> tuple[Segment, ...]:
    """Segments (and their words) moved later by `seconds`."""
    return tuple(replace(s, start=s.start + seconds, end=s.end + seconds,
                         words=tuple(replace(w, start=w.start + seconds, end=w.end + seconds) for w in s.words))
                 for s in segments)


def transcribe_long(decoder, path: Path, cfg: Config, timed: bool) -> Decoded:
    """A long file piece by piece (audio_pieces); the segments keep times from the file's start. The initial
    prompt goes before the first piece only; under condition_on_previous_text each later piece is prompted with
    the text carried out of the one before (reset after a window decoded at a high temperature, as Whisper does)."""
    texts: list[str] = []
    segments: list[Segment] = []
    prompt: str | None = None                   # None: the options' initial prompt
    for offset, piece in audio_pieces(path, cfg):
        if not np.any(piece):
            continue
        result = decoder.transcribe([piece], timed=True, prompt=prompt)[0]
        prompt = result.carry if cfg.decode.condition_on_previous_text else ""
        texts.append(result.text)
        segments.extend(shifted(result.segments, offset))
    text = " ".join(t for t in texts if t)
    return Decoded(text, tuple(segments) if timed or segments else ())


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length; short (<= 30 s) and long clips never share a batch."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] > N_SAMPLES, lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and (lengths[groups[-1][0]] > N_SAMPLES) == (lengths[i] > N_SAMPLES):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def transcribe_clips(decoder, clips: Sequence[np.ndarray], batch_size: int, timed: bool = False) -> list[Decoded]:
    """Decoded text (and segments when timed) for mono 16 kHz clips, in order, batched by length."""
    out: list[Decoded] = [Decoded("")] * len(clips)
    for group in batches_by_length([c.size for c in clips], batch_size):
        for i, result in zip(group, decoder.transcribe([clips[i] for i in group], timed=timed)):
            out[i] = result
    return out


# ---------------------------------------------------------------------------------------------- output

CSV_HEADER = "path,text\n"


def csv_rows(transcripts: Sequence[Transcript]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([t.path, t.text] for t in transcripts)
    return buf.getvalue()


def _words_json(t: Transcript) -> list[dict]:
    return [{"start": round(w.start, 3), "end": round(w.end, 3), "word": w.word, "probability": w.probability}
            for s in t.segments for w in s.words]


def render(transcripts: Sequence[Transcript], fmt: str, words: bool = False) -> str:
    if fmt == "csv":
        return CSV_HEADER + csv_rows(transcripts)
    if fmt == "jsonl":
        def row(t: Transcript) -> dict:
            return {"path": t.path, "text": t.text, **({"words": _words_json(t)} if words else {})}

        return "".join(json.dumps(row(t), ensure_ascii=False) + "\n" for t in transcripts)
    return "".join(f"{t.path}\t{t.text}\n" for t in transcripts)



class TableSink:
    """CSV / JSONL rows appended to `.OUT.partial` as inputs finish; OUT replaced by it at the end."""

    def __init__(self, output: Path, fmt: str, words: bool) -> None:
        self.output, self.fmt, self.words = output, fmt, words
        self.partial = output.with_name(f".{output.name}.partial")
        self.rows: dict[str, str] = {}                  # path -> its line(s), as written
        for source in (output, self.partial):
            if source.is_file():
                self.rows.update(self._read(source))
        atomic_write_text(self.partial, self._header() + "".join(self.rows.values()))
        self.file = open(self.partial, "a", encoding="utf-8", newline="")

    def _header(self) -> str:
        return CSV_HEADER if self.fmt == "csv" else ""

    def _read(self, path: Path) -> dict[str, str]:
        """Rows of an earlier run; a line cut off by a kill (the last of a partial file) is dropped."""
        rows: dict[str, str] = {}
        text = path.read_text(encoding="utf-8", errors="replace")
        if self.fmt == "jsonl":
            for line in text.splitlines():
                try:
                    rows[str(json.loads(line)["path"])] = line + "\n"
                except (ValueError, KeyError, TypeError):
                    continue
            return rows
        complete = text if text.endswith("\n") else text[:text.rfind("\n") + 1]
        for record in list(csv.reader(io.StringIO(complete)))[1:]:
            if len(record) == 2:
                rows[record[0]] = csv_rows([Transcript(record[0], record[1])])
        return rows

    def done(self, path: Path) -> bool:
        return str(path) in self.rows

    def write(self, t: Transcript) -> None:
        line = csv_rows([t]) if self.fmt == "csv" else render([t], self.fmt, self.words)
        self.rows[t.path] = line
        self.file.write(line)
        self.file.flush()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def finish(self, order: Sequence[Path]) -> None:
        """OUT = every row, in input order (rows of inputs not given this time after them), written atomically."""
        self.close()
        rank = {str(p): i for i, p in enumerate(order)}
        paths = sorted(self.rows, key=lambda p: (p not in rank, rank.get(p, 0)))
        atomic_write_text(self.output, self._header() + "".join(self.rows[p] for p in paths))
        self.partial.unlink(missing_ok=True)
        print(f"wrote {len(paths)} transcripts to {self.output}", file=sys.stderr)

    def kept(self) -> str:
        return f"{len(self.rows)} finished results are kept in {self.partial}"


class SubtitleSink:
    """One .srt / .vtt per input, written as it finishes; an existing file means the input is done."""

    def __init__(self, output: Path, fmt: str, files: Sequence[Path], words: bool) -> None:
        from whisper_tune.train.inference.subtitles import subtitle_paths

        self.fmt, self.words = fmt, words
        self.paths = {str(f): p for f, p in zip(files, subtitle_paths(output, files))}
        self.written = 0

    def done(self, path: Path) -> bool:
        return self.paths[str(path)].is_file()

    def write(self, t: Transcript) -> None:
        from whisper_tune.train.inference.subtitles import render_subtitles, word_segments

        segments = word_segments(t.segments) if self.words else t.segments
        atomic_write_text(self.paths[t.path], render_subtitles(segments, self.fmt))
        self.written += 1
        print(f"wrote {len(segments)} subtitle cues to {self.paths[t.path]}", file=sys.stderr)

    def close(self) -> None:
        pass

    def finish(self, order: Sequence[Path]) -> None:
        pass

    def kept(self) -> str:
        return f"{self.written} subtitle files written in this run are kept"


class PrintSink:
    def __init__(self) -> None:
        self.printed = 0

    def done(self, path: Path) -> bool:
        return False

    def write(self, t: Transcript) -> None:
        sys.stdout.write(render([t], "print"))
        sys.stdout.flush()
        self.printed += 1

    def close(self) -> None:
        pass

    def finish(self, order: Sequence[Path]) -> None:
        pass

    def kept(self) -> str:
        return f"{self.printed} transcripts were printed"


# ---------------------------------------------------------------------------------------------- the command

def run_transcribe(*, model: str, inputs: Sequence[Path], cfg: Config, output: Path | None = None,
                   batch_size: int = 8, max_new_tokens: int | None = None) -> list[Transcript]:
    """Transcribe every input (see the module doc). max_new_tokens: per 30 s window (default: decode.WINDOW_TOKENS)."""
    fmt = output_format(output)
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected 1 or more")
    if not inputs:
        raise AudioError("no audio given; pass audio files or folders")
    check_output_file(output, "--output")     # before any decoding (subtitles: their folder too)
    options = DecodeOptions.from_config(cfg, max_new_tokens)
    timed = fmt in ("srt", "vtt") or options.word_timestamps
    if timed:   # times count from the file's start: keep its leading silence
        cfg = replace(cfg, audio=replace(cfg.audio, trim_top_db=0.0))
    files, failures = collect_inputs(inputs)
    attempted = len(files) + len(failures)
    try:
        sink = _sink(output, fmt, files, options.word_timestamps)
    except OSError as err:
        raise ConfigError(f"--output {output}: cannot write there ({err.strerror or err}); choose another --output") from None
    todo = [f for f in files if not sink.done(f)]
    if len(todo) < len(files):
        log.info(f"skipping {len(files) - len(todo)} of {len(files)} inputs already transcribed in {output} "
                 "(delete it to transcribe them again)")
    transcripts: list[Transcript] = []
    try:
        if todo:
            decoder = open_decoder(model, options, backend=cfg.decode.backend)
            for t in _decode_files(decoder, todo, cfg, batch_size, timed, failures):
                sink.write(t)
                transcripts.append(t)
        sink.finish(files)
    except KeyboardInterrupt:
        sink.close()
        log.warning(f"interrupted: {sink.kept()}; re-run the same command to transcribe the rest")
        raise
    except OSError as err:          # writing the results (a full disk is already a DiskFullError)
        raise ConfigError(f"--output {output}: cannot write the results ({err.strerror or err}); "
                          f"{sink.kept()}; free the path and re-run the same command") from None
    finally:
        sink.close()
    _raise_failures(failures, attempted)
    return transcripts


def _sink(output: Path | None, fmt: str, files: Sequence[Path], words: bool):
    if output is None:
        return PrintSink()
    if fmt in ("srt", "vtt"):
        return SubtitleSink(Path(output), fmt, files, words)
    return TableSink(Path(output), fmt, words)


def _decode_files(decoder, files: Sequence[Path], cfg: Config, batch_size: int, timed: bool,
                  failures: list[Failure]) -> Iterator[Transcript]:
    """Transcripts as they finish: short files batch_size at a time, long ones alone, piece by piece."""
    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[Transcript]:
        results = transcribe_clips(decoder, [c for _, c in batch], batch_size, timed=timed)
        for (path, _), result in zip(batch, results):
            yield Transcript(str(path), result.text, result.segments)
        batch.clear()

    for path in files:
        try:
            if Path(path).stat().st_size == 0:
                raise AudioError("empty file (0 bytes)")
            long = _is_long(path)
            if long:
                yield from flush()
                result = transcribe_long(decoder, path, cfg, timed)
                yield Transcript(str(path), result.text, result.segments)
                continue
            batch.append((path, load_clip(path, cfg)))
        except AudioError as err:
            failures.append(Failure(str(path), str(err)))
            continue
        except OSError as err:
            failures.append(Failure(str(path), f"cannot read file ({err.strerror or err})"))
            continue
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def _is_long(path: Path) -> bool:
    try:
        return duration_s(path) > WHOLE_FILE_S
    except AudioError:
        return False          # load_clip names what is wrong with it


def _raise_failures(failures: list[Failure], attempted: int) -> None:
    if len(failures) == 1:
        raise AudioError(_one_line(failures[0]))
    if failures:
        for f in failures:
            log.error(f"error: {_one_line(f)}")
        raise AudioError(f"{len(failures)} of {attempted} inputs could not be transcribed (listed above)")


def _one_line(f: Failure) -> str:
    return f"{f.path}: {f.reason}"
