"""Long-form check: grouping clips into 60-90 s recordings, and the glued-word detector."""

from __future__ import annotations

from whisper_tune.train.inference.longform import GAP_S, glued_words, group_clips


def _length(group, durations):
    return sum(durations[i] for i in group) + GAP_S * (len(group) - 1)


def test_recordings_are_60_to_90_seconds_of_consecutive_clips():
    durations = [6.6, 5.4, 7.6, 4.1, 8.0, 6.0, 5.5, 7.2, 6.1, 4.8, 9.3, 5.0, 6.6, 7.0, 5.2, 4.4, 6.9, 8.8,
                 6.3, 5.9, 7.7, 4.6, 6.2, 5.1, 6.8, 7.4, 5.6, 6.4, 4.9, 7.1]
    groups = group_clips(durations)
    flat = [i for g in groups for i in g]
    assert flat == list(range(len(flat)))                   # consecutive, in order, none twice
    assert len(groups) == 3 and len(flat) == len(durations)
    assert all(60.0 <= _length(g, durations) <= 90.0 for g in groups)


def test_too_few_clips_make_one_short_recording():
    assert group_clips([5.0, 6.0]) == [[0, 1]]
    assert group_clips([]) == []


def test_glued_words_are_two_reference_words_as_one():
    ref = "The next dose is montelukast instead. Please check diabetes, my father said."
    hyp = "the next doseis montelukast insteadplease check diabetesmy father said"
    assert glued_words(ref, hyp) == ["doseis", "insteadplease", "diabetesmy"]
    assert glued_words(ref, ref) == []
    assert glued_words("a cat", "acat dog") == ["acat"]
