"""Splits by group: every clip of a speaker, session or client goes to the same split (`--group-column NAME`).

    plan = plan_splits(table, records, SplitSettings(group_column="speaker", seed=42, test_share=0.1,
                                                     validation_share=0.0))
    [r.split for r in records], plan.report, plan.hint      # records: rows.Record, one per table row

Where a row goes, first rule that applies:
1. its own `split` cell (the CSV's pinned split always wins for its row);
2. with a group column: the split its group's pinned rows name, when they all name the same one (the user has
   said where that group belongs, so its other rows follow);
3. with a group column: the group's position, a stable seeded hash of the group value alone
   (`stable_unit(seed, "group", value)`): test below test_share, validation below test_share + validation_share,
   else train. A row with an empty group cell is a group of its own and gets today's per-path position;
4. without a group column: the per-path position (manifest.assign_split), as always.

The trade-off: a group's split depends on its value and the seed only, never on the other groups or their sizes,
so adding rows or groups never moves an existing group. The price is that the clip shares meet the targets only
on average: with few groups, or a few very large ones, they can be far off. The summary then says so and names a
seed that draws closer (a new seed moves every group: choose it before training on the split, not after).
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Sequence

from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.core.errors import CsvError
from whisper_tune.pipeline.core.hashing import stable_unit
from whisper_tune.pipeline.validate.manifest import SPLITS, assign_split, split_at, split_position
from whisper_tune.pipeline.validate.rows import Record, SplitSettings

SEED_TRIALS = 200               # seeds tried when the shares are far off
SEED_SEARCH_MAX_GROUPS = 5000   # above this the search costs more than it is worth (and is rarely needed)
EXAMPLES = 3
# Words in a column name that suggest a speaker or session id (the name is split on _, -, space and case).
HINT_WORDS = frozenset({"speaker", "speakers", "spk", "client", "session", "sessions", "user", "participant",
                        "subject", "reader", "talker", "voice", "patient", "caller", "recording", "day", "device",
                        "microphone", "mic", "room", "group", "family", "household", "interview"})


@dataclass(frozen=True)
class GroupReport:
    """What grouping did to the usable clips (rejected rows are left out of every count)."""

    column: str
    groups: int                              # distinct groups (a row with an empty cell counts as one)
    empty: int                               # usable rows with an empty group cell: each its own group
    per_split: dict[str, tuple[int, int]]    # split -> (groups, clips)
    hashed: dict[str, int]                   # split -> clips placed by the group hash (not by a pin)
    targets: dict[str, float]                # split -> share asked for
    straddling: tuple[str, ...] = ()         # groups whose pinned rows name different splits
    better_seed: int | None = None           # a seed whose draw meets the targets more closely, when far off
    better_shares: dict[str, float] = field(default_factory=dict)
    placed: tuple[str, ...] = ()             # the groups the hash placed (not pinned), when too few to split
    case_twins: tuple[tuple[str, ...], ...] = ()   # values that differ only in case (separate groups)

    def wanted(self) -> list[str]:
        """The splits that should get clips from the hash: train and each held-out split with a share."""
        return [s for s in SPLITS if self.targets[s] > 0]

    def too_few(self) -> bool:
        """Fewer hashed groups than splits to fill: no seed can give every split clips."""
        return bool(self.placed)

    def hashed_share(self, split: str) -> float:
        total = sum(self.hashed.values())
        return self.hashed.get(split, 0) / total if total else 0.0

    def far_off(self) -> list[str]:
        """Held-out splits whose hashed share misses its target by more than a quarter (and 2 points)."""
        if not sum(self.hashed.values()):
            return []
        return [s for s in ("test", "validation")
                if abs(self.hashed_share(s) - self.targets[s]) > max(0.02, 0.25 * self.targets[s])]


@dataclass(frozen=True)
class GroupHint:
    """A CSV column that looks like a speaker or session id, when no group column was given."""

    column: str
    values: int                              # distinct values among usable rows
    clips: int                               # usable rows with a value
    shared: dict[str, int]                   # held-out split -> its clips whose value also occurs in train
    held_out: dict[str, int]                 # held-out split -> its usable clips


@dataclass(frozen=True)
class SplitPlan:
    """What plan_splits says besides the records' splits."""

    report: GroupReport | None = None
    hint: GroupHint | None = None


def group_position(value: str, seed: int) -> float:
    """Where a group falls in [0, 1): depends on its value and the seed only."""
    return stable_unit(seed, "group", value)


def _position(key: str, seed: int) -> float:
    """A group key's position: "\0" + path (an empty cell) takes the clip's own per-path position."""
    return split_position(key[1:], seed) if key.startswith("\0") else group_position(key, seed)



def group_values(table: CsvTable, column: str) -> tuple[str, tuple[str, ...]]:
    """The CSV's own name of `column` (any case) and its cells, stripped and in Unicode NFC (the same name typed
    on two systems is one group). CsvError when there is no such column."""
    cells = {table.audio_column: table.sources, table.text_column: table.texts, **table.extras}
    by_lower = {name.lower(): name for name in reversed(list(cells))}
    name = by_lower.get(column.strip().lower())
    if name is None:
        found = ", ".join(repr(c) for c in list(cells)[:12])
        raise CsvError(f"CSV {table.path} has no column '{column.strip()}' (given with --group-column / "
                       f"data.group_column); columns found: {found}")
    return name, tuple(unicodedata.normalize("NFC", v).strip() for v in cells[name])


def case_twins(values: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Sets of distinct values that are equal but for case ("Ann", "ann"): separate groups, likely one speaker."""
    by_fold: dict[str, set[str]] = defaultdict(set)
    for v in values:
        if v:
            by_fold[v.casefold()].add(v)
    return tuple(sorted(tuple(sorted(vs)) for vs in by_fold.values() if len(vs) > 1))


def plan_splits(table: CsvTable, records: Sequence[Record], settings: SplitSettings) -> SplitPlan:
    """Set each record's split (see the module docstring), with its group cell under a group column; a report of
    the groups or a hint to use them. `table` is the CSV the records were read from (one record per row)."""
    shares = settings.shares
    if not settings.group_column.strip():
        for r in records:
            r.split = r.given or assign_split(r.relpath, seed=settings.seed, **shares)
        return SplitPlan(hint=suggest_group_column(table, records))
    column, values = group_values(table, settings.group_column)
    for r, value in zip(records, values):
        r.group = value
    pinned: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.given:
            pinned[group_key(r)].add(r.given)
    positions = {key: _position(key, settings.seed) for key in {group_key(r) for r in records}}
    for r in records:
        key = group_key(r)
        follow = pinned.get(key, set())
        r.by_hash = not r.given and len(follow) != 1
        r.split = r.given or (next(iter(follow)) if len(follow) == 1 else split_at(positions[key], **shares))
    return SplitPlan(report=_report(column, records, pinned, settings))


def group_key(record: Record) -> str:
    """The record's group: its group cell, or "\0" + its path when the cell is empty (a group of its own)."""
    return record.group if record.group else f"\0{record.relpath}"


def _report(column: str, records: Sequence[Record], pinned: dict[str, set[str]],
            settings: SplitSettings) -> GroupReport:
    ok = [r for r in records if r.kept]
    groups_of: dict[str, set[str]] = defaultdict(set)
    clips: Counter[str] = Counter()
    hashed: Counter[str] = Counter()
    for r in ok:
        groups_of[r.split].add(group_key(r))
        clips[r.split] += 1
        hashed[r.split] += r.by_hash
    test_share, validation_share = settings.test_share, settings.validation_share
    targets = {"test": test_share, "validation": validation_share, "train": 1.0 - test_share - validation_share}
    report = GroupReport(
        column=column, groups=len({group_key(r) for r in ok}), empty=sum(1 for r in ok if not r.group),
        per_split={s: (len(groups_of[s]), clips[s]) for s in SPLITS}, hashed={s: hashed[s] for s in SPLITS},
        targets=targets, straddling=tuple(sorted(k for k, s in pinned.items() if len(s) > 1))[:EXAMPLES * 10],
        case_twins=case_twins([r.group for r in ok]),
    )
    sizes = Counter(group_key(r) for r in ok if r.by_hash)
    if len(sizes) < len(report.wanted()):
        return replace(report, placed=tuple(sorted(sizes)))       # no seed helps: say so instead
    if not report.far_off():
        return report
    found = better_seed(sizes, seed=settings.seed, **settings.shares)
    if found is None:
        return report
    return replace(report, better_seed=found[0], better_shares=found[1])


def hashed_shares(sizes: Counter[str], seed: int, *, test_share: float, validation_share: float) -> dict[str, float]:
    """Clip share of each split when the groups (key -> clips) are placed with `seed`."""
    total = sum(sizes.values()) or 1
    out: Counter[str] = Counter()
    for key, n in sizes.items():
        out[split_at(_position(key, seed), test_share=test_share, validation_share=validation_share)] += n
    return {s: out[s] / total for s in SPLITS}


def better_seed(sizes: Counter[str], *, seed: int, test_share: float,
                validation_share: float) -> tuple[int, dict[str, float]] | None:
    """The seed among the next SEED_TRIALS whose draw comes closest to the targets (an empty held-out split that
    should have clips counts as the furthest), if it beats `seed`'s. A draw that leaves train empty is never
    suggested."""
    if not sizes or len(sizes) > SEED_SEARCH_MAX_GROUPS:
        return None
    shares = {"test_share": test_share, "validation_share": validation_share}

    def miss(s: int) -> tuple[float, dict[str, float]]:
        got = hashed_shares(sizes, s, **shares)
        empty = sum(1.0 for split, share in (("test", test_share), ("validation", validation_share))
                    if share > 0 and got[split] == 0)          # a held-out split with nothing is worst of all
        return empty + abs(got["test"] - test_share) + abs(got["validation"] - validation_share), got

    best_miss, _ = miss(seed)
    best = None
    for candidate in range(seed + 1, seed + 1 + SEED_TRIALS):
        m, got = miss(candidate)
        if got["train"] > 0 and m < best_miss - 1e-12:
            best_miss, best = m, (candidate, got)
    return best


# ------------------------------------------------------------------------------------- no group column given

def _words(name: str) -> set[str]:
    spaced = "".join(f" {c}" if c.isupper() else c for c in name)     # speakerId -> speaker Id
    return set(spaced.lower().replace("_", " ").replace("-", " ").replace(".", " ").split())


def suggest_group_column(table: CsvTable, records: Sequence[Record]) -> GroupHint | None:
    """The first extra column whose name looks like a speaker / session id and whose values repeat (the table's
    rows are the records')."""
    ok = [i for i, r in enumerate(records) if r.kept]
    for name, cells in table.extras.items():
        if name.strip().lower() == "split" or not (_words(name) & HINT_WORDS):
            continue
        values = [cells[i].strip() for i in ok]
        present = [v for v in values if v]
        if not present or len(set(present)) == len(present):
            continue                                   # every value unique: a clip id, not a group
        in_train = {cells[i].strip() for i in ok if records[i].split == "train"} - {""}
        held = {s: [i for i in ok if records[i].split == s] for s in ("test", "validation")}
        return GroupHint(column=name, values=len(set(present)), clips=len(present),
                         shared={s: sum(1 for i in rows if cells[i].strip() in in_train) for s, rows in held.items()},
                         held_out={s: len(rows) for s, rows in held.items()})
    return None


# ------------------------------------------------------------------------------------------------ summary

def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def format_groups(report: GroupReport, kept: int) -> list[str]:
    r = report
    empty = f"; {r.empty} row{'s' if r.empty != 1 else ''} with an empty cell, each its own group" if r.empty else ""
    lines = [f"  groups by '{r.column}': {r.groups}{empty}"]
    for split in SPLITS:
        groups, clips = r.per_split[split]
        if split == "validation" and not clips and not r.targets["validation"]:
            continue
        share = clips / kept if kept else 0.0
        lines.append(f"    {split:10}: {groups} group{'s' if groups != 1 else ''}, {clips} clips ({_pct(share)})")
    if r.straddling:
        shown = ", ".join(repr(k.lstrip("\0")) for k in r.straddling[:EXAMPLES])
        lines.append(f"  warning: the split column puts rows of {len(r.straddling)} group(s) in different splits "
                     f"(e.g. {shown}); those groups are on both sides: fix their split cells")
    if r.case_twins:
        shown = "; ".join(" and ".join(repr(v) for v in twins) for twins in r.case_twins[:EXAMPLES])
        lines.append(f"  warning: {len(r.case_twins)} set(s) of '{r.column}' values differ only in case ({shown}); "
                     "they are separate groups: write them alike in the CSV if they are the same")
    if r.too_few():
        names = ", ".join(repr(k.lstrip("\0")) for k in r.placed[:EXAMPLES]) or "none"
        count = f"{len(r.placed)} group{'s' if len(r.placed) != 1 else ''}"
        lines.append(f"  warning: {count} placed by the group hash ({names}) cannot be split into "
                     f"{', '.join(r.wanted())}: a group's clips all go to one split, so no --seed fills every split; "
                     "add groups, pin rows with a split column, or drop --group-column")
        return lines
    for split in r.far_off():
        lines.append(f"  warning: the group hash put {_pct(r.hashed_share(split))} of the clips it placed in "
                     f"{split} (target {_pct(r.targets[split])}): {r.groups} groups are too few (or too unequal) "
                     "for whole groups to meet the share")
    if r.better_seed is not None:
        got = ", ".join(f"{s} {_pct(r.better_shares[s])}" for s in ("test", "validation") if r.targets[s])
        lines.append(f"    --seed {r.better_seed} (data.seed) draws closer ({got}); a new seed moves every group, "
                     "so choose it before training on this split, or pin groups with a split column")
    return lines


def format_hint(hint: GroupHint) -> list[str]:
    h = hint
    shared = "; ".join(f"{h.shared[s]} of {h.held_out[s]} {s} clips share theirs with train clips"
                       for s in ("test", "validation") if h.held_out[s])
    return [f"  hint: column '{h.column}' looks like a speaker or session id ({h.values} values for {h.clips} "
            f"clips){'; ' + shared if shared else ''}. Pass --group-column {h.column} (data.group_column) to keep "
            "each value in one split, so the test measures new speakers, not remembered ones"]
