"""One record per manifest row, built once by the stage and passed to the splits, the leakage check and the frame.

    records = [Record(csv_row=2, source="a.wav", text="hello", relpath="a.wav", path="/data/a.wav")]
    plan = plan_splits(table, records, SplitSettings.of(cfg.data))     # sets record.split (and .group)
    leaks = find_leaks(records)

A record starts with what the CSV row says and where its file is; the checks add its audio info and problems,
plan_splits its split and group. `kept` is a record with no problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whisper_tune.pipeline.featurize.audio import AudioInfo
from whisper_tune.pipeline.validate.checks import Problem


@dataclass
class Record:
    csv_row: int                     # 1-based data row of the CSV
    source: str                      # the audio cell as written
    text: str                        # the transcript as written
    relpath: str                     # path relative to the CSV's folder: identity for the id and the split
    path: str = ""                   # absolute, resolved path ("" when there is nothing to look at)
    given: str = ""                  # the CSV's own split cell (manifest spelling), "" when blank
    audit_ok: bool = False           # the CSV's audit cell says ok
    info: AudioInfo | None = None
    problems: list[Problem] = field(default_factory=list)
    split: str = ""                  # set by plan_splits
    group: str = ""                  # the group key with a group column (set by plan_splits)
    by_hash: bool = False            # placed by the group hash, not by a pin (set by plan_splits)

    @property
    def kept(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SplitSettings:
    """How rows are split: data.group_column, data.seed, data.test_share, data.validation_share."""

    group_column: str
    seed: int
    test_share: float
    validation_share: float

    @classmethod
    def of(cls, data) -> "SplitSettings":
        """From a config's data section."""
        return cls(group_column=data.group_column, seed=data.seed, test_share=data.test_share,
                   validation_share=data.validation_share)

    @property
    def shares(self) -> dict[str, float]:
        return {"test_share": self.test_share, "validation_share": self.validation_share}
