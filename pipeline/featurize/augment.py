"""The augmentation chain: audiomentations transforms named in the config, applied to variants 1..V-1.

Each variant's randomness comes from its own seed, derived from (augment.seed, clip id, variant), so a re-run,
a part run or a resumed run produces the same audio. audiomentations draws from Python's `random` module and
NumPy's global generator. Its `random` is replaced by a stand-in that draws from the calling thread's own
generator, seeded per call (other threads, such as a Dask worker's event loop, draw from `random` at any time);
NumPy's global generator is seeded per call under a lock and restored afterwards. The draws are the ones a
seeded global generator gives, so caches built before stay valid.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import AudioError, ConfigError
from whisper_tune.pipeline.core.hashing import stable_hex, stable_int

AUGMENT_CODE_VERSION = "augment-1"


def variant_seed(base_seed: int, clip_id: str, variant: int) -> int:
    """A 32-bit seed for one (clip, variant), stable across machines and Python versions."""
    return stable_int(int(base_seed), clip_id, int(variant), size=8) & 0xFFFF_FFFF


@dataclass(frozen=True)
class Augmented:
    samples: np.ndarray   # float32
    fired: bool           # False: no transform applied, the samples equal the input


def _build_transform(spec: Mapping[str, Any], i: int):
    import audiomentations
    from audiomentations.core.transforms_interface import BaseTransform

    key = f"augment.transforms[{i}]"
    name = spec.get("name")
    cls = getattr(audiomentations, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, BaseTransform)):
        raise ConfigError(f"{key}.name = {name!r} is not an audiomentations transform; use a class name such as "
                          "AddGaussianNoise, Gain, TimeStretch, PitchShift or AddBackgroundNoise")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"{key} ({name}): invalid settings {kwargs}: {err}") from None


def augment_fingerprint(transforms: Sequence[Mapping[str, Any]], base_seed: int) -> str:
    """Identity of the chain (settings, seed, audiomentations version) without importing audiomentations."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib = version("audiomentations")
    except PackageNotFoundError:   # pragma: no cover
        lib = "missing"
    return stable_hex(json.dumps({"code": AUGMENT_CODE_VERSION, "audiomentations": lib, "seed": int(base_seed),
                                  "transforms": [dict(t) for t in transforms]}, sort_keys=True, default=str))


class _ThreadRandom(types.ModuleType):
    """Stands in for the `random` module inside audiomentations: within Augmenter's call, draws come from that
    thread's own random.Random(seed); outside one, from `random` itself."""

    def __init__(self) -> None:
        super().__init__("random")
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        rng = getattr(self._local, "rng", None)
        value = getattr(rng, name, None) if rng is not None else None
        return value if value is not None else getattr(random, name)


_THREAD_RANDOM = _ThreadRandom()
_NUMPY_RANDOM_LOCK = threading.Lock()


def _private_random() -> None:
    """Point every loaded audiomentations module's `random` at the per-thread stand-in."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "audiomentations" and getattr(module, "random", None) is random:
            module.random = _THREAD_RANDOM


class Augmenter:
    """Build once per process from cfg.augment.transforms; call per (clip, variant)."""

    def __init__(self, transforms: Sequence[Mapping[str, Any]], base_seed: int) -> None:
        self.specs = [dict(t) for t in transforms]
        self.base_seed = int(base_seed)
        self._transforms = [_build_transform(t, i) for i, t in enumerate(self.specs)]
        _private_random()
        self.fingerprint = augment_fingerprint(self.specs, self.base_seed)

    def __call__(self, samples: np.ndarray, clip_id: str, variant: int) -> Augmented:
        if not self._transforms:
            return Augmented(samples, fired=False)
        seed = variant_seed(self.base_seed, clip_id, variant)
        with _NUMPY_RANDOM_LOCK:
            np_state = np.random.get_state()
            _THREAD_RANDOM._local.rng = random.Random(seed)
            try:
                np.random.seed(seed)
                out = samples
                fired = False
                for t in self._transforms:
                    out = t(out, sample_rate=SAMPLE_RATE_HZ)
                    fired = fired or bool(t.parameters.get("should_apply"))
            finally:
                _THREAD_RANDOM._local.rng = None
                np.random.set_state(np_state)
        if not fired:
            return Augmented(samples, fired=False)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.size == 0 or not np.isfinite(out).all():
            raise AudioError(f"augmentation of variant {variant} produced empty or non-finite audio")
        return Augmented(out, fired=True)
