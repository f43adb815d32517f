"""Fixtures for the training tests: one small cache built once per test module."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from whisper_tune.testing import build_cache


class _Planned(Exception):
    """Raised once train has built its model and datasets: what they hold is all some tests need."""


@dataclass
class PlannedTrain:
    train_ids: list[str]
    eval_ids: list[str]
    model: object
    output: str


@pytest.fixture(scope="module")
def work(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("work")
    build_cache(folder, tiny_model, n_train=4, n_test=2, variants=2)
    return folder


@pytest.fixture
def planned_train(monkeypatch):
    """planned_train(work, model, *flags): `whisper-tune train` run up to its batch planning, then stopped."""
    from whisper_tune.cli import app
    from whisper_tune.train import trainer

    seen = {}
    real = trainer.EvalDataset

    def eval_spy(cache, split="test", max_clips=0):
        seen["eval"] = real(cache, split=split, max_clips=max_clips)
        return seen["eval"]

    def stop(t, model, cache, clip_ids, precision):
        raise _Planned(list(clip_ids), model)

    monkeypatch.setattr(trainer, "plan_batch", stop)
    monkeypatch.setattr(trainer, "EvalDataset", eval_spy)

    def run(work, model, *flags) -> PlannedTrain:
        res = CliRunner().invoke(app, ["train", "--work", str(work), "--model", str(model),
                                       "--output-dir", str(work / "out"), *flags])
        if not isinstance(res.exception, _Planned):
            raise AssertionError(res.output)
        train_ids, net = res.exception.args
        return PlannedTrain(train_ids, list(seen["eval"].clip_ids), net, res.output)

    return run
