"""errors.first_line: the one helper for an exception's first line, which cannot raise."""

from __future__ import annotations

import pytest

from whisper_tune.pipeline.core.errors import ModelError, first_line, without_worker_traceback


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@pytest.mark.parametrize("err, expected", [
    (ValueError("bad value\nsecond line"), "bad value"),
    (ValueError(""), "ValueError"),                    # an empty message: the type's name, not an IndexError
    (OSError(), "OSError"),
    (ValueError("\n\n  third  \n"), "third"),
    (_BrokenStr(), "_BrokenStr"),
    (ValueError("x" * 500), "x" * 160),
])
def test_first_line_of_any_exception(err, expected):
    assert first_line(err) == expected


def test_a_loader_error_with_an_empty_message_is_one_line(monkeypatch, tmp_path):
    """Reproduced through load_processor: an exception without a message used to raise IndexError."""
    import transformers

    from whisper_tune.pipeline.models import source

    def boom(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(transformers.WhisperProcessor, "from_pretrained", boom)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"cannot load a Whisper processor from .*: OSError"):
        source.load_processor(str(tmp_path))


def test_worker_traceback_is_stripped():
    err = ModelError("Caught X in DataLoader worker.\nOriginal Traceback (most recent call last):\n  File ...\n"
                     "whisper_tune.pipeline.core.errors.CacheError: shard broken")
    assert str(without_worker_traceback(err)) == "shard broken"
    plain = ModelError("fine")
    assert without_worker_traceback(plain) is plain
