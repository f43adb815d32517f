"""What `validate` reports: the result record, the printed summary and the durations plot."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import polars as pl

from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.core.fileio import atomic_path
from whisper_tune.pipeline.validate.grouping import GroupHint, GroupReport, format_groups, format_hint
from whisper_tune.pipeline.validate.leakage import LeakageReport, format_leakage
from whisper_tune.pipeline.validate.manifest import SPLITS, STATUS_OK
from whisper_tune.pipeline.validate.rows import Record
from whisper_tune.pipeline.core.text import flatten_and_cut

EXAMPLES_PER_PROBLEM = 3
PLOT_NAME = "durations.png"


@dataclass(frozen=True)
class Example:
    csv_row: int
    source: str
    detail: str


@dataclass(frozen=True)
class ValidateResult:
    csv_path: Path
    manifest_path: Path
    plot_path: Path
    rows: int
    kept: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)            # problem kind -> rows with it
    clips: dict[str, int] = field(default_factory=dict)              # split -> kept clips
    seconds: dict[str, float] = field(default_factory=dict)          # split -> kept audio, seconds
    examples: dict[str, tuple[Example, ...]] = field(default_factory=dict)   # kind -> first few rows
    audio_column: str = ""
    text_column: str = ""
    groups: GroupReport | None = None          # with --group-column
    group_hint: GroupHint | None = None        # without it, when a column looks like one
    leakage: LeakageReport | None = None
    unit: str = "clip"                         # what a manifest row is: "clip", or "window" of a long recording
    recordings: int = 0                        # long recordings read (their windows and rejected cues are rows)


def summarize(table: CsvTable, records: Sequence[Record], frame: pl.DataFrame, out: Path, plot: Path,
              kinds: Sequence[str]) -> ValidateResult:
    """The result record: `records` one per manifest row (the table's rows), `kinds` the order reasons are listed
    in."""
    reasons: Counter[str] = Counter()
    examples: dict[str, list[Example]] = {}
    for r in records:
        for p in r.problems:
            reasons[p.kind] += 1
            shown = examples.setdefault(p.kind, [])
            if len(shown) < EXAMPLES_PER_PROBLEM:
                shown.append(Example(r.csv_row, r.source, p.detail))
    ok = frame.filter(pl.col("status") == STATUS_OK)
    clips = {s: ok.filter(pl.col("split") == s).height for s in SPLITS}
    seconds = {s: float(ok.filter(pl.col("split") == s)["duration"].sum() or 0.0) for s in SPLITS}
    kept = ok.height
    return ValidateResult(
        csv_path=table.path, manifest_path=out, plot_path=plot, rows=len(records), kept=kept,
        rejected=len(records) - kept,
        reasons={k: reasons[k] for k in kinds if reasons[k]},
        clips=clips, seconds=seconds,
        examples={k: tuple(v) for k, v in examples.items()},
        audio_column=table.audio_column, text_column=table.text_column,
    )


# ---------------------------------------------------------------------------------------------- reporting

def format_summary(result: ValidateResult) -> str:
    r = result
    lines = [
        f"validated {r.csv_path} (audio column '{r.audio_column}', text column '{r.text_column}')",
        f"  rows: {r.rows}   kept: {r.kept}   rejected: {r.rejected}",
    ]
    if r.unit != "clip":
        lines.append(f"  recordings: {r.recordings}, cut into {r.kept} {r.unit}s of at most the window length "
                     "(rows are windows and rejected cues)")
    shown = [s for s in SPLITS if s != "validation" or r.clips.get(s)]   # validation is optional: shown when used
    width = max(map(len, shown))
    for split in shown:
        count = r.clips.get(split, 0)
        lines.append(f"  {split:{width}}: {count} {r.unit}{'s' if count != 1 else ''}, {format_duration(r.seconds.get(split, 0.0))}")
    empty = [split for split in ("train", "test") if r.kept and not r.clips.get(split)]
    if empty:
        lines.append(f"  note: no usable clip fell into the {empty[0]} split; add clips or change data.test_share "
                     "(--test-share) so that both splits have some")
    if r.reasons:
        lines.append("  rejected rows by reason" + (" (a row may have two)" if sum(r.reasons.values()) > r.rejected
                                                  else "") + ":")
        for kind, count in r.reasons.items():
            lines.append(f"    {kind}: {count}")
            for ex in r.examples.get(kind, ()):
                lines.append(f"      row {ex.csv_row}: {flatten_and_cut(ex.source, 60) or '(empty)'} - {flatten_and_cut(ex.detail, 160)}")
            if count > len(r.examples.get(kind, ())):
                lines.append(f"      ... and {count - len(r.examples.get(kind, ()))} more (see the reason column)")
    if r.groups is not None:
        lines.extend(format_groups(r.groups, r.kept))
    if r.group_hint is not None:
        lines.extend(format_hint(r.group_hint))
    if r.leakage is not None:
        lines.extend(format_leakage(r.leakage))
    lines.append(f"  manifest: {r.manifest_path}")
    lines.append(f"  durations: {r.plot_path}")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"



def write_duration_plot(frame: pl.DataFrame, path: Path) -> Path:
    """Histogram of kept-clip durations per split (matplotlib Agg, no display needed), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = frame.filter(pl.col("status") == STATUS_OK)
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    durations = {s: ok.filter(pl.col("split") == s)["duration"].drop_nulls().to_list() for s in SPLITS}
    everything = [x for values in durations.values() for x in values]
    if everything:
        lo, hi = min(everything), max(everything)
        bins = 30 if hi > lo else 1
        for split, values in durations.items():
            if values:
                ax.hist(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0), alpha=0.6,
                        label=f"{split} ({len(values)} clips, {format_duration(sum(values))})")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no usable clips", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("clips")
    ax.set_title("Durations of the usable clips")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
