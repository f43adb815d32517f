"""Group splits: no group straddles two splits, adding rows moves no group, shares approach the targets with many
groups and are reported when few groups miss them; a hint when a column looks like a speaker id."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import tone, write_audio
from whisper_tune.cli import app
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.validate.csvfile import CsvTable
from whisper_tune.pipeline.core.errors import ConfigError, CsvError
from whisper_tune.pipeline.validate.checks import NO_TEXT, Problem
from whisper_tune.pipeline.validate.grouping import GroupHint, GroupReport, format_groups, format_hint, plan_splits
from whisper_tune.pipeline.validate.rows import Record, SplitSettings
from whisper_tune.pipeline.validate.manifest import assign_split, read_manifest
from whisper_tune.pipeline.validate.report import format_summary
from whisper_tune.pipeline.validate.stage import run_validate


def table(groups: list[str], *, column: str = "speaker", pins: list[str] | None = None) -> CsvTable:
    n = len(groups)
    extras = {column: tuple(groups)}
    if pins is not None:
        extras["split"] = tuple(pins)
    return CsvTable(path=Path("t.csv"), audio_column="audios", text_column="text", rows=tuple(range(1, n + 1)),
                    sources=tuple(f"clips/{i}.wav" for i in range(n)), texts=("words",) * n, extras=extras)


@dataclass(frozen=True)
class Planned:
    splits: list[str]                 # the records' splits, in row order
    report: GroupReport | None
    hint: GroupHint | None


def plan(t: CsvTable, *, given=None, kept=None, group_column="speaker", seed=42, test_share=0.1,
         validation_share=0.05) -> Planned:
    n = len(t)
    records = [Record(csv_row=row, source=source, text=text, relpath=source, given=pin,
                      problems=[] if ok else [Problem(NO_TEXT, "rejected")])
               for row, source, text, pin, ok in zip(t.rows, t.sources, t.texts, given or [""] * n, kept or [True] * n)]
    settings = SplitSettings(group_column=group_column, seed=seed, test_share=test_share,
                             validation_share=validation_share)
    result = plan_splits(t, records, settings)
    return Planned([r.split for r in records], result.report, result.hint)


def random_rows(rng: random.Random, n: int, groups: int) -> tuple[list[str], list[str]]:
    """Group cells (some empty) and pinned splits (mostly blank) for n rows."""
    values = [rng.choice([f"spk{rng.randrange(groups)}", f" spk{rng.randrange(groups)} ", ""]) for _ in range(n)]
    pins = [rng.choice(["train", "validation", "test"]) if rng.random() < 0.1 else "" for _ in range(n)]
    return values, pins


@pytest.mark.parametrize("seed", range(25))
def test_groups_never_straddle_splits(seed):
    rng = random.Random(seed)
    values, pins = random_rows(rng, rng.randrange(1, 300), rng.randrange(1, 40))
    t = table(values)
    splits = plan(t, given=pins, seed=seed, test_share=rng.uniform(0, 0.5), validation_share=rng.uniform(0, 0.4)).splits
    by_group: dict[str, set[str]] = defaultdict(set)
    pinned: dict[str, set[str]] = defaultdict(set)
    for v, p, s in zip(values, pins, splits):
        if p:
            assert s == p                                   # a pinned split wins for its row
            pinned[v.strip()].add(p)
        if v.strip():
            by_group[v.strip()].add(s)
    for group, where in by_group.items():
        if len(pinned[group]) <= 1:                         # pins that disagree are the user's to fix
            assert len(where) == 1, (group, where)


@pytest.mark.parametrize("seed", range(10))
def test_adding_rows_keeps_every_group_where_it_was(seed):
    rng = random.Random(100 + seed)
    values, _ = random_rows(rng, 120, 15)
    before = plan(table(values), seed=seed, test_share=0.2, validation_share=0.1).splits
    more, _ = random_rows(rng, 200, 40)                     # rows of old groups and of new ones
    order = list(range(len(values) + len(more)))
    rng.shuffle(order)
    all_values = values + more
    t = table([all_values[i] for i in order])
    t = CsvTable(**{**t.__dict__, "sources": tuple(f"clips/{i}.wav" for i in order)})   # same path per old row
    after = plan(t, seed=seed, test_share=0.2, validation_share=0.1).splits
    moved = [i for pos, i in enumerate(order) if i < len(values) and after[pos] != before[i]]
    assert moved == []


def test_shares_approach_the_targets_with_many_groups():
    rng = random.Random(7)
    values = [f"speaker-{g}" for g in range(3000) for _ in range(rng.randrange(1, 9))]
    result = plan(table(values), test_share=0.1, validation_share=0.05)
    r = result.report
    n = len(values)
    assert r.groups == 3000 and r.empty == 0
    assert abs(r.per_split["test"][1] / n - 0.1) < 0.02
    assert abs(r.per_split["validation"][1] / n - 0.05) < 0.02
    assert sum(g for g, _ in r.per_split.values()) == 3000
    assert r.far_off() == [] and r.better_seed is None
    assert not any("warning" in line for line in format_groups(r, n))


def test_few_groups_are_reported_with_a_closer_seed():
    values = [f"s{g}" for g, n in enumerate([10, 30, 30, 30]) for _ in range(n)]   # 4 groups, one of 10 %
    seed = next(s for s in range(100) if plan(table(values), test_share=0.1, validation_share=0.0,
                                              seed=s).report.per_split["test"][1] != 10)
    r = plan(table(values), test_share=0.1, validation_share=0.0, seed=seed).report
    assert r.far_off() == ["test"]
    lines = "\n".join(format_groups(r, len(values)))
    assert "warning: the group hash put" in lines and "4 groups are too few" in lines
    assert r.better_seed is not None and f"--seed {r.better_seed}" in lines
    again = plan(table(values), test_share=0.1, validation_share=0.0, seed=r.better_seed).report
    got = again.per_split["test"][1] / len(values)
    assert got == pytest.approx(r.better_shares["test"]) == pytest.approx(0.1)     # the small group alone


def test_empty_group_cells_are_groups_of_their_own_at_their_old_place():
    values = ["", "a", "", "a", " ", "b"]
    result = plan(table(values), test_share=0.5, validation_share=0.0)
    for i, v in enumerate(values):
        if not v.strip():
            assert result.splits[i] == assign_split(f"clips/{i}.wav", seed=42, test_share=0.5)
    assert result.report.empty == 3 and result.report.groups == 5
    assert "3 rows with an empty cell, each its own group" in format_groups(result.report, 6)[0]


def test_unpinned_rows_follow_their_groups_pins_and_conflicts_are_reported():
    values = ["a", "a", "a", "b", "b"]
    pins = ["test", "", "", "train", "test"]
    result = plan(table(values), given=pins, test_share=0.0, validation_share=0.0)
    assert result.splits[:3] == ["test"] * 3                  # the group went where its pinned row said
    assert result.splits[3:] == ["train", "test"]
    assert result.report.straddling == ("b",)
    assert any("different splits" in line for line in format_groups(result.report, 5))


def test_without_a_group_column_the_split_is_todays_and_a_hint_names_the_column():
    values = ["ann", "bob", "ann", "cy", "bob", "ann"] * 5
    result = plan(table(values, column="Speaker_ID"), group_column="", test_share=0.3)
    assert result.report is None
    assert result.splits == [assign_split(f"clips/{i}.wav", seed=42, test_share=0.3, validation_share=0.05)
                             for i in range(len(values))]
    h = result.hint
    assert h is not None and h.column == "Speaker_ID" and h.values == 3 and h.clips == 30
    train = {v for v, s in zip(values, result.splits) if s == "train"}
    assert h.shared["test"] == sum(1 for v, s in zip(values, result.splits) if s == "test" and v in train)
    assert "--group-column Speaker_ID" in format_hint(h)[0]
    unique = [f"clip{i}" for i in range(30)]                  # unique values: an id, not a group
    assert plan(table(unique, column="session"), group_column="").hint is None
    assert plan(table(values, column="colour"), group_column="").hint is None


def test_a_missing_group_column_and_a_bad_value_are_clear_errors():
    with pytest.raises(CsvError, match="no column 'spekaer'.*--group-column"):
        plan(table(["a"]), group_column="spekaer")
    assert plan(table(["a", "a"], column="Speaker"), group_column="SPEAKER").report.groups == 1
    for bad in ("split", " speaker"):
        with pytest.raises(ConfigError, match="data.group_column"):
            load_config(None, {"data.group_column": bad})


def test_validate_keeps_groups_together_in_the_manifest(tmp_path):
    rng = random.Random(0)
    lines = ["audios,transcription,client_id"]
    for i in range(40):
        write_audio(tmp_path / f"c{i}.wav", tone(1.2, sr=8000, seed=i), sr=8000)
        lines.append(f"c{i}.wav,sentence number {i},{rng.choice(['u1', 'u2', 'u3', 'u4', 'u5', 'u6', ''])}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["validate", "--csv", str(tmp_path / "d.csv"), "--work", str(tmp_path / "w"),
                                   "--group-column", "client_id", "--test-share", "0.3"])
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "w")
    for client in ["u1", "u2", "u3", "u4", "u5", "u6"]:
        assert m.filter(m["client_id"] == client)["split"].n_unique() <= 1
    assert "groups by 'client_id'" in res.output and "hint" not in res.output
    result = run_validate(csv_path=tmp_path / "d.csv", work_dir=tmp_path / "w2", cfg=load_config(None), use_model=False,
                          echo=None)
    assert result.groups is None and "--group-column client_id" in format_summary(result)


def test_one_group_cannot_be_split_and_no_seed_is_suggested():
    r = plan(table(["alice"] * 20), test_share=0.1, validation_share=0.0).report
    assert r.better_seed is None
    lines = format_groups(r, 20)
    assert ("  warning: 1 group placed by the group hash ('alice') cannot be split into train, test: a group's "
            "clips all go to one split, so no --seed fills every split; add groups, pin rows with a split column, "
            "or drop --group-column") in lines
    assert not any("--seed " in line and "draws closer" in line for line in lines)


def test_two_groups_with_a_validation_share_cannot_fill_three_splits():
    values = ["a"] * 10 + ["b"] * 10
    for seed in range(30):
        r = plan(table(values), test_share=0.1, validation_share=0.3, seed=seed).report
        assert r.better_seed is None
        assert any("2 groups placed by the group hash ('a', 'b') cannot be split into train, validation, test" in line
                   for line in format_groups(r, 20))


def test_a_suggested_seed_never_leaves_train_empty():
    values = [f"s{g}" for g, n in enumerate([50, 45, 5]) for _ in range(n)]   # train-empty draws come closest
    suggested = 0
    for seed in range(40):
        r = plan(table(values), test_share=0.5, validation_share=0.49, seed=seed).report
        if r.better_seed is not None:
            assert r.better_shares["train"] > 0
            again = plan(table(values), test_share=0.5, validation_share=0.49, seed=r.better_seed).report
            assert again.per_split["train"][1] > 0
            suggested += 1
    assert suggested


def test_group_values_are_unicode_normalized_and_case_twins_are_named():
    nfc, nfd = "Zo\u00eb", "Zoe\u0308"
    result = plan(table([nfc, nfd, "A", "a", "b"]), test_share=0.0, validation_share=0.0)
    r = result.report
    assert r.groups == 4                                   # Zoë typed two ways is one speaker
    assert r.case_twins == (("A", "a"),)
    assert ("  warning: 1 set(s) of 'speaker' values differ only in case ('A' and 'a'); they are separate groups: "
            "write them alike in the CSV if they are the same") in format_groups(r, 5)
