from whisper_tune.pipeline.core.text import normalize_text


def test_guide_behaviour_on_english():
    assert normalize_text("  Hello,   World!  It's 5 PM. ") == "hello world its 5 pm"


def test_keeps_every_script():
    assert normalize_text("Café crème, s'il vous plaît !") == "café crème sil vous plaît"
    assert normalize_text("مرحبا، كيف حالك؟") == "مرحبا كيف حالك"
    assert normalize_text("हिन्दी भाषा।") == "हिन्दी भाषा"


def test_none_mode_only_strips():
    assert normalize_text("  Keep, This!  ", "none") == "Keep, This!"


def test_loop_detector_on_made_up_outputs():
    from whisper_tune.pipeline.core.text import has_loop, word_count

    looping = ["you you you you", "Thank you. Thank you. Thank you.", "the pump the pump the pump is off",
               "a b c d a b c d a b c d", "so " * 30, "la la la la la la la"]
    fine = ["", "you", "Thank you. Thank you.", "very very good", "the pump is off and the valve is on",
            "we had had enough", "one two three one two three four", "bye bye", "no, no, no"]
    assert [has_loop(t) for t in looping] == [True] * len(looping)
    assert [has_loop(t) for t in fine] == [False] * len(fine)
    assert has_loop("x" * 200)                     # one long repetitive token: caught by the compression ratio
    assert [word_count(t) for t in ("", " you ", "Hello, world!", "...")] == [0, 1, 2, 0]
