"""Old home of the cache builders; they live in tests/helpers.py now (import from there)."""

from helpers import TEXTS, build_cache, synthetic_examples  # noqa: F401
