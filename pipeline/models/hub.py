"""Hub ids without the network: use the local Hugging Face cache, or fail at once with the offline alternatives.

    resolved = hub_source("openai/whisper-small.en")   # the id, or its cached snapshot folder when offline

transformers alone retries an unreachable hub for minutes before an error that never names the network. Here one
TCP connection to the hub's endpoint (HF_ENDPOINT, default https://huggingface.co) decides, within
CONNECT_TIMEOUT_S; HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) skips even that. A model already in the local cache
keeps working offline: its snapshot folder is returned and loaded like any local folder.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from whisper_tune.pipeline.core.constants import BUNDLED_MODEL
from whisper_tune.pipeline.core.errors import ModelError

CONNECT_TIMEOUT_S = 5.0          # name lookup + TCP connect to the hub, one attempt, no retries
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
OFFLINE_CHOICES = (f"use a model that needs no network: --model {BUNDLED_MODEL}, a local transformers folder, "
                   "or a CTranslate2 / faster-whisper folder")


def offline_by_setting() -> str | None:
    """The environment variable that forbids the network, e.g. "HF_HUB_OFFLINE=1", or None."""
    for name in OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    return None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of repo_id in the Hugging Face cache when its config.json is there, else None."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=constants.HF_HUB_CACHE)
    except (ValueError, OSError):
        return None
    return Path(found).parent if isinstance(found, str) else None


def reach(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the endpoint opens within `timeout`, else why not (one attempt)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    worker = threading.Thread(target=attempt, daemon=True)   # the name lookup itself ignores socket timeouts
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def hub_source(repo_id: str) -> str:
    """repo_id when the hub can be used, its cached snapshot folder when it cannot, else a one-line ModelError."""
    snapshot = cached_snapshot(repo_id)
    setting = offline_by_setting()
    if setting is None:
        problem = reach(hub_endpoint())
        if problem is None:
            return repo_id
        why = f"the hub ({hub_endpoint()}) cannot be reached over the network: {problem}"
    else:
        why = f"{setting} forbids the network"
    if snapshot is not None:
        return str(snapshot)
    raise ModelError(f"--model {repo_id} is a hub id that is not in the local Hugging Face cache, and {why}; "
                     f"download it once on a machine with network access, or {OFFLINE_CHOICES}")
