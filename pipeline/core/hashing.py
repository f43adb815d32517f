"""Stable hashes: the one helper for ids, seeds, splits and fingerprints.

blake2b over the parts joined by a separator, identical on every machine, process and Python version (unlike
`hash()`). Strings are UTF-8, bytes are taken as they are, anything else as `str(part)`. The separator is a
parameter only because ids and seeds that users' data already depend on (clip ids, splits, the training
schedule) were defined with different ones; new code uses the default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

Part = str | bytes | int | float


def stable_digest(*parts: Part, size: int = 12, sep: bytes = b"\0") -> bytes:
    """blake2b (`size` bytes) over the parts joined by `sep` (no separator after the last part)."""
    data = sep.join([part if isinstance(part, bytes) else str(part).encode("utf-8") for part in parts])
    return hashlib.blake2b(data, digest_size=size).digest()     # one update: the same digest, fewer calls


def stable_hex(*parts: Part, size: int = 12, sep: bytes = b"\0") -> str:
    return stable_digest(*parts, size=size, sep=sep).hex()


def stable_int(*parts: Part, size: int = 8, sep: bytes = b"\0", byteorder: str = "little") -> int:
    """An unsigned integer of `size` bytes (e.g. a seed, or a bucket by `% n`)."""
    return int.from_bytes(stable_digest(*parts, size=size, sep=sep), byteorder)  # type: ignore[arg-type]


def stable_unit(*parts: Part, sep: bytes = b"\0") -> float:
    """A uniform number in [0, 1) from the parts (64 bits, big-endian)."""
    return stable_int(*parts, size=8, sep=sep, byteorder="big") / 2.0**64


def file_digest(path: Path | str, size: int = 16) -> str:
    """blake2b hex of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.blake2b(digest_size=size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
