"""Tasks as they finish, a bounded number in flight: the one loop behind both pools of the features stage
(local worker processes in work.py, a Dask cluster in cluster.py)."""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterable, Iterator


def stream(submit: Callable[[Any], Any], tasks: Iterable[Any], in_flight: int, wait: Callable[..., Any],
           on_start: Callable[[], None] = lambda: None) -> Iterator[Any]:
    """Futures of submit(task) for every task, as they finish, with at most in_flight submitted and unfinished;
    the ones still pending when the caller stops (an error, Ctrl-C) are cancelled. wait is
    concurrent.futures.wait or distributed.wait; on_start runs after the first tasks went out."""
    todo = iter(tasks)
    live = {submit(task) for task in islice(todo, max(1, in_flight))}
    on_start()
    try:
        while live:
            done, pending = wait(live, return_when="FIRST_COMPLETED")
            live = set(pending)
            for future in done:
                live.update(submit(task) for task in islice(todo, 1))   # keep the workers busy meanwhile
                yield future
    finally:
        for future in live:
            future.cancel()
