"""Windows along the cues: known cue times in, windows out; every bad cue with its own reason."""

from __future__ import annotations

import random

import pytest

from whisper_tune.pipeline.validate.windows import (BAD_TIME, CUE_LONG_LABEL, CUE_NO_TEXT, LONG_CUE, OUT_OF_ORDER,
                                                    OVERLAP, PAST_END, TIME_STEP_S, Cue, check_cues, cut_windows,
                                                    on_grid, previous_texts)


def random_cues(seed: int, duration: float) -> list[Cue]:
    rng = random.Random(seed)
    cues, t, n = [], rng.uniform(0, 2), 1
    while True:
        length = rng.uniform(0.4, 9.0) if rng.random() > 0.05 else rng.uniform(20, 29.5)
        if t + length > duration:
            return cues
        cues.append(Cue(where=f"cue {n}", start=round(t, 3), end=round(t + length, 3), text=f"word{n} other{n}"))
        t += length + (rng.uniform(0, 3) if rng.random() > 0.3 else 0.0)
        n += 1


@pytest.mark.parametrize("seed,limit", [(0, 30.0), (1, 30.0), (2, 12.0), (3, 30.0)])
def test_windows_hold_whole_cues_within_the_limit(seed: int, limit: float) -> None:
    duration = 600.0
    cues = [c for c in random_cues(seed, duration) if c.end - c.start <= limit]
    windows = cut_windows(cues, duration=duration, window_seconds=limit)
    assert windows
    seen: list[str] = []
    for before, after in zip(windows, windows[1:]):
        assert before.end <= after.start + 1e-9                    # windows never overlap
    for w in windows:
        assert 0 < w.end - w.start <= limit + 1e-9
        for cue, (rel_start, rel_end) in zip(w.cues, w.cue_times()):
            assert w.start <= cue.start and cue.end <= w.end          # never cut inside a cue
            assert abs(rel_start - (cue.start - w.start)) <= TIME_STEP_S
            assert abs(rel_end - (cue.end - w.start)) <= TIME_STEP_S
            assert round(rel_start / TIME_STEP_S, 6).is_integer() and round(rel_end / TIME_STEP_S, 6).is_integer()
        seen += [c.where for c in w.cues]
    assert seen == [c.where for c in cues]                          # every cue in exactly one window, in order
    words = " ".join(w.text for w in windows).split()
    assert words == " ".join(c.text for c in cues).split()


def test_a_window_takes_silence_around_its_cues_but_no_other_cue() -> None:
    cues = [Cue("cue 1", 2.0, 4.0, "one"), Cue("cue 2", 5.0, 7.0, "two"), Cue("cue 3", 40.0, 42.0, "three")]
    first, second = cut_windows(cues, duration=50.0, window_seconds=30.0)
    assert (first.start, first.end) == (1.5, 7.5)
    assert first.cue_times() == ((0.5, 2.5), (3.5, 5.5))
    assert (second.start, second.end) == (39.5, 42.5)


def test_each_bad_cue_gives_its_reason_and_nothing_else_is_lost() -> None:
    cues = [
        Cue("cue 1", 1.0, 3.0, "kept one"),
        Cue("cue 2", None, None, "broken", time_problem="'00:00:0x' is not a time"),
        Cue("cue 3", 4.0, 3.5, "backwards"),
        Cue("cue 4", 4.0, 5.0, "  ...  "),
        Cue("cue 5", 6.0, 40.0, "far too long for one window"),
        Cue("cue 6", 6.0, 8.0, "kept two"),
        Cue("cue 7", 5.0, 5.5, "before the previous one"),
        Cue("cue 8", 7.0, 9.0, "overlaps kept two"),
        Cue("cue 9", 9.0, 10.0, " ".join(["word"] * 500)),
        Cue("cue 10", 10.0, 12.0, "kept three"),
        Cue("cue 11", 61.0, 62.0, "after the end"),
    ]
    checks = check_cues(cues, duration=60.0, window_seconds=30.0, label_tokens=lambda t: len(t.split()))
    kinds = {c.cue.where: c.problem.kind if c.problem else None for c in checks}
    assert kinds == {"cue 1": None, "cue 2": BAD_TIME, "cue 3": BAD_TIME, "cue 4": CUE_NO_TEXT, "cue 5": LONG_CUE,
                     "cue 6": None, "cue 7": OUT_OF_ORDER, "cue 8": OVERLAP, "cue 9": CUE_LONG_LABEL,
                     "cue 10": None, "cue 11": PAST_END}
    details = {c.cue.where: c.problem.detail for c in checks if c.problem}
    assert details["cue 8"] == ("overlapping cue: starts at 7.00 s, before the previous cue (cue 6) ends at 8.00 s; "
                                "fix the times or merge them")
    assert details["cue 11"] == ("cue past the end of the audio: 61.00-62.00 s, the audio is 60.00 s long "
                                 "(subtitles of another file?)")
    assert details["cue 5"] == ("cue too long: 34.00 s (a window holds at most 30 s, data.window_seconds); "
                                "split the cue")
    assert details["cue 9"].startswith("cue label too long: 506 tokens")
    kept = [c.cue for c in checks if c.problem is None]
    (window,) = cut_windows(kept, duration=60.0, window_seconds=30.0)
    assert window.text == "kept one kept two kept three"


def test_the_label_limit_starts_a_new_window() -> None:
    cues = [Cue(f"cue {i}", 2.0 * i, 2.0 * i + 1.5, " ".join(["w"] * 100)) for i in range(6)]
    windows = cut_windows(cues, duration=20.0, window_seconds=30.0, label_tokens=lambda t: len(t.split()))
    assert [len(w.cues) for w in windows] == [4, 2]                 # 4 + 4 x 102 = 412 tokens; a fifth: 514


def test_previous_text_is_the_recordings_earlier_windows() -> None:
    cues = [Cue(f"cue {i}", 10.0 * i, 10.0 * i + 9.0, f"sentence {i}") for i in range(7)]
    windows = cut_windows(cues, duration=80.0, window_seconds=30.0)
    previous = previous_texts(windows)
    assert previous[0] == ""
    assert previous[1] == windows[0].text
    assert previous[2] == f"{windows[0].text} {windows[1].text}"
    assert previous_texts(windows, limit=12)[2] == "sentence 5"     # "4 sentence 5": cut at a word


def test_on_grid() -> None:
    assert [on_grid(x) for x in (0.0, 0.009, 0.011, 1.2345, -0.3, 29.999)] == [0.0, 0.0, 0.02, 1.24, 0.0, 30.0]
