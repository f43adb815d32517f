"""bench/defaults_bench.py: the rule that names the default, and the rows built on the winner."""

from __future__ import annotations

from whisper_tune.testing import load_script

bench = load_script("bench/defaults_bench.py")


def _rows(**wers):
    return {name: {"test_wer": test, "everyday_wer": every} for name, (test, every) in wers.items()}


def test_a_row_no_worse_on_both_wins():
    assert bench.pick(_rows(unpacked=(20.0, 30.0), packed=(22.0, 25.0), clips=(19.0, 25.0)), 27.0) == "clips"
    assert bench.pick(_rows(unpacked=(20.0, 25.0), packed=(20.0, 25.0)), 27.0) == "unpacked"   # a tie: the first


def test_without_a_dominating_row_the_lowest_domain_wer_without_everyday_regression_wins():
    rows = _rows(unpacked=(18.0, 30.0), packed=(24.0, 26.0), clips=(21.0, 27.0))
    assert bench.pick(rows, 27.0) == "clips"          # unpacked is best on the domain but forgets (30 > 27)
    assert bench.pick(rows, 25.0) == "packed"         # every row regresses: the least everyday WER


def test_full_and_specaug_rows_start_from_the_winner():
    done = {"base": {"test_wer": 100.0, "everyday_wer": 27.0},
            "unpacked": {"settings": bench.BASE_ROWS["unpacked"], "test_wer": 18.0, "everyday_wer": 30.0},
            "packed": {"settings": bench.BASE_ROWS["packed"], "test_wer": 24.0, "everyday_wer": 26.0}}
    full = bench.settings_of("full", done)
    assert full == {**bench.BASE_ROWS["packed"], "training.freeze_encoder": False}
    assert bench.settings_of("specaug", done) == {**bench.BASE_ROWS["packed"], "training.spec_augment": True}
    done["full"] = {"settings": full, "test_wer": 20.0, "everyday_wer": 25.0}        # full beats packed on both
    assert bench.settings_of("specaug", done) == {**full, "training.spec_augment": True}
    assert bench.label("full", done["full"]) == "packed, 2 windows/step, full fine-tuning"
    assert "SpecAugment" in bench.label("specaug", {"settings": bench.settings_of("specaug", done)})


def test_share_rows_and_full_without_trained_rows():
    """ns-S rows are demo.toml's settings (the `clips` row) with that non-speech share; `full` with no row of the
    three trained starts from `clips`."""
    assert bench.settings_of("ns-0.2", {}) == {**bench.BASE_ROWS["clips"], "augment.no_speech_share": 0.2}
    assert bench.share_row("ns-0.05") == 0.05 and bench.share_row("full") is None
    done = {"base": {"test_wer": 100.0, "everyday_wer": 27.0}}
    assert bench.settings_of("full", done) == {**bench.BASE_ROWS["clips"], "training.freeze_encoder": False}
    done["ns-0.3"] = {"settings": bench.settings_of("ns-0.3", done), "test_wer": 20.0, "everyday_wer": 25.0}
    assert bench.order(done) == ["base", "ns-0.3"]
    assert bench.label("ns-0.3", done["ns-0.3"]).endswith("decoder only, no_speech_share 0.3")
