from whisper_tune.pipeline.core.text import normalize_text


def test_guide_behaviour_on_english():
    assert normalize_text("  Hello,   World!  It's 5 PM. ") == "hello world its 5 pm"


def test_keeps_every_script():
    assert normalize_text("Café crème, s'il vous plaît !") == "café crème sil vous plaît"
    assert normalize_text("مرحبا، كيف حالك؟") == "مرحبا كيف حالك"
    assert normalize_text("हिन्दी भाषा।") == "हिन्दी भाषा"


def test_none_mode_only_strips():
    assert normalize_text("  Keep, This!  ", "none") == "Keep, This!"
