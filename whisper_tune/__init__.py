"""whisper-tune: fine-tune Whisper on your own recordings.

    whisper_tune.pipeline   the CPU side (pipeline/ on disk): core basics, validate, featurize, cache, models
    whisper_tune.train      the GPU side (train/ on disk): training from the cache alone, and inference
    whisper_tune.cli        the `whisper-tune` console script, above both sides
    whisper_tune.testing    builders for tests and benchmarks (tiny random Whisper models, small caches)
"""

from whisper_tune.pipeline.core import log as _log  # noqa: E402,F401  (the one logging setup, installed once)
