"""The augmentation chain: audiomentations transforms named in the config, applied to variants 1..V-1.

Each variant's randomness comes from its own seed, derived from (augment.seed, clip id, variant), so a re-run,
a part run or a resumed run produces the same audio. audiomentations draws from Python's `random` module and
NumPy's global generator; both are seeded per call and restored afterwards.
"""

from __future__ import annotations

import json
import random
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


class Augmenter:
    """Build once per process from cfg.augment.transforms; call per (clip, variant)."""

    def __init__(self, transforms: Sequence[Mapping[str, Any]], base_seed: int) -> None:
        self.specs = [dict(t) for t in transforms]
        self.base_seed = int(base_seed)
        self._transforms = [_build_transform(t, i) for i, t in enumerate(self.specs)]
        self.fingerprint = augment_fingerprint(self.specs, self.base_seed)

    def __call__(self, samples: np.ndarray, clip_id: str, variant: int) -> Augmented:
        if not self._transforms:
            return Augmented(samples, fired=False)
        seed = variant_seed(self.base_seed, clip_id, variant)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            out = samples
            fired = False
            for t in self._transforms:
                out = t(out, sample_rate=SAMPLE_RATE_HZ)
                fired = fired or bool(t.parameters.get("should_apply"))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        if not fired:
            return Augmented(samples, fired=False)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.size == 0 or not np.isfinite(out).all():
            raise AudioError(f"augmentation of variant {variant} produced empty or non-finite audio")
        return Augmented(out, fired=True)
