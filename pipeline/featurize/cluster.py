"""The features stage's tasks on a Dask cluster: `whisper-tune features --scheduler tcp://HOST:8786`.

    address = scheduler_address(cfg)          # --scheduler / features.scheduler, else $DASK_SCHEDULER_ADDRESS
    with DaskPool(address) as pool:           # one line naming the address if it cannot be reached
        for result in pool.run(featurize_task, tasks, settings, in_flight):
            ...                               # as each task finishes, never in waves

The workers read the audio and write their own shards into WORK/cache, which every worker must see at the same
path (a shared file system); results carry only index records. A worker that dies has its tasks run again on
another one by the scheduler (a task writes the same shard names again). Exceptions inside a task reach the
client as the task's exception, so transient read errors are retried inside the task (work.load_audio), not by
Dask. Stopping the client (Ctrl-C) cancels every task still queued or running.

dask[distributed] is the optional `cluster` extra; nothing here imports it until a scheduler is named.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.errors import ConfigError, WhisperTuneError, WorkerError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 10           # an unreachable scheduler is reported after this long
WORKERS_TIMEOUT_S = 60           # a scheduler without workers is reported after this long
FIX = f"start it (`dask scheduler`, `dask worker ADDRESS`) or correct --scheduler / features.scheduler / ${SCHEDULER_ENV}"


def scheduler_address(cfg: Config, environ: dict[str, str] | None = None) -> str:
    """The Dask scheduler to run on: the flag or config value, else $DASK_SCHEDULER_ADDRESS; "" = local."""
    env = os.environ if environ is None else environ
    return (cfg.features.scheduler or env.get(SCHEDULER_ENV, "")).strip()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def connect(address: str):
    """A distributed.Client on the scheduler at address; one line when distributed is missing or it is unreachable."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(f"--scheduler {address}: the Dask client is not installed; install the cluster extra "
                          "(pip install 'whisper-tune[cluster]'), or drop --scheduler to run on this machine") from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise WorkerError(f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S} s "
                          f"({_first_line(err)}); {FIX}") from None


class DaskPool:
    """Tasks on the Dask cluster at `address`, results as they finish, a bounded number in flight."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: Any = None
        self.n_workers = 0

    def __enter__(self) -> "DaskPool":
        self.client = connect(self.address)
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            self.client.close()
            raise WorkerError(f"the Dask scheduler at {self.address} has no workers after {WORKERS_TIMEOUT_S} s "
                              f"({_first_line(err)}); {FIX}") from None
        workers = self.client.scheduler_info().get("workers", {})
        self.n_workers = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(self, fn: Callable[..., Any], tasks: Iterable[Any], settings: Any, in_flight: int) -> Iterator[Any]:
        """fn(task, settings) for every task on the cluster; yields results as they finish."""
        from distributed import wait

        from whisper_tune.pipeline.featurize.pool import stream

        def submit(task: Any) -> Any:
            return self.client.submit(fn, task, settings, pure=False)

        with self.client.as_current():          # distributed.wait finds its client so
            for future in stream(submit, tasks, in_flight, wait):
                result = self._result(future)
                future.release()
                yield result

    def _result(self, future: Any) -> Any:
        try:
            return future.result()
        except WhisperTuneError:
            raise
        except Exception as err:
            raise WorkerError(f"a features task failed on the Dask cluster at {self.address} "
                              f"({_first_line(err)})") from None
