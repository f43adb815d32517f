"""Fixtures for the training tests: one small cache built once per test module."""

from __future__ import annotations

import pytest

from whisper_tune.testing import build_cache


@pytest.fixture(scope="module")
def work(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("work")
    build_cache(folder, tiny_model, n_train=4, n_test=2, variants=2)
    return folder
