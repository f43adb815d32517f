"""Basics every stage uses; nothing here imports another subpackage.

    errors.py              the exception types, and first_line(err)
    constants.py           audio and feature constants, with units
    tokens.py              Whisper's special tokens and languages
    config.py              settings as frozen dataclasses; load_config checks every value once
    fileio.py              atomic writes, full-disk errors
    hashing.py             stable hashes (clip ids, seeds, fingerprints)
    system.py              core count, peak memory
    log.py                 the one logging setup (messages to stderr, results to stdout)
    text.py                the text normalizer shared by labels and metrics
    english_normalizer.py  Whisper's English normalizer, offline
"""
