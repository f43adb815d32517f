"""The features stage on a Dask cluster (pipeline/featurize/cluster.py): a LocalCluster of 2 single-threaded
worker processes on 127.0.0.1 gives the cache a local run gives, also when one worker is killed mid-run; a
cluster-built cache is adopted by a local run after the client died; clear lines when the scheduler cannot be
reached or distributed is missing."""

from __future__ import annotations

import sys

import pytest

from whisper_tune.testing import features_config as config
from whisper_tune.testing import kill_once_after_a_shard, make_work, run, snapshot
from whisper_tune.pipeline.core.errors import ConfigError, WorkerError
from whisper_tune.pipeline.featurize import cluster

distributed = pytest.importorskip("distributed")   # the cluster extra (in dev: CI has it)


@pytest.fixture(scope="module")
def local_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", silence_logs=50) as lc:
        yield lc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    """The cache an uninterrupted local run builds (8 clips, one task per clip)."""
    work, _ = make_work(tmp_path_factory.mktemp("local"), n=8)
    run(work, config(tiny_model, **{"features.batch_clips": 1}))
    return snapshot(work)


@pytest.mark.slow
def test_cluster_cache_equals_local_cache(tmp_path, tiny_model, local_cluster, reference):
    work, _ = make_work(tmp_path, n=8)
    cfg = config(tiny_model, **{"features.batch_clips": 1, "features.scheduler": local_cluster.scheduler_address})
    res = run(work, cfg)
    assert res.scheduler == local_cluster.scheduler_address and res.clips_decoded == 8 and res.skipped == ()
    assert snapshot(work) == reference
    # the client dies before its index lists what the workers wrote: a local run adopts the shards, no audio work
    for index in (work / "cache").glob("index*"):
        index.unlink()
    again = run(work, config(tiny_model))
    assert again.clips_decoded == 0 and again.shards_adopted >= 8 and snapshot(work) == reference


@pytest.mark.slow
def test_killed_worker_tasks_run_elsewhere(tmp_path, tiny_model, local_cluster, reference):
    """One worker process dies by SIGKILL right after writing its first shard, before its result is back; the
    scheduler runs its tasks on the other worker (or the restarted one) and the cache equals the local one."""
    marker = tmp_path / "killed-once"                      # made by the worker that then dies
    work, _ = make_work(tmp_path, n=8)
    cfg = config(tiny_model, **{"features.batch_clips": 1, "features.scheduler": local_cluster.scheduler_address})
    with distributed.Client(local_cluster, set_as_default=False) as client:
        client.run(kill_once_after_a_shard, str(marker))
    res = run(work, cfg)
    assert marker.exists()
    assert res.clips_decoded == 8 and res.skipped == () and snapshot(work) == reference


def test_unreachable_scheduler_is_one_line(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    work, _ = make_work(tmp_path, n=2)
    with pytest.raises(WorkerError, match=r"^cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9 within 2 s "):
        run(work, config(tiny_model, **{"features.scheduler": "tcp://127.0.0.1:9"}))


def test_missing_distributed_is_one_line(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setenv(cluster.SCHEDULER_ENV, "tcp://127.0.0.1:8786")      # from the environment, no flag
    work, _ = make_work(tmp_path, n=2)
    with pytest.raises(ConfigError, match=r"--scheduler tcp://127\.0\.0\.1:8786: the Dask client is not installed; "
                                          r"install the cluster extra \(pip install 'whisper-tune\[cluster\]'\)"):
        run(work, config(tiny_model))


def test_scheduler_setting_is_checked():
    with pytest.raises(ConfigError, match=r"features\.scheduler = 'tcp://a b' is not allowed"):
        config("m", **{"features.scheduler": "tcp://a b"})
    cfg = config("m", **{"features.scheduler": ""})
    assert cluster.scheduler_address(cfg, {cluster.SCHEDULER_ENV: "tcp://10.0.0.5:8786"}) == "tcp://10.0.0.5:8786"
    assert cluster.scheduler_address(config("m", **{"features.scheduler": "tcp://h:1"}),
                                     {cluster.SCHEDULER_ENV: "tcp://other:2"}) == "tcp://h:1"
    assert cluster.scheduler_address(cfg, {}) == ""
