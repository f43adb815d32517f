"""Reading a CTranslate2 model.bin.

There is no official reader for `model.bin` in Python; its layout is the one
`ctranslate2.specs.model_spec.ModelSpec._serialize` writes (little-endian):

    uint32 binary_version
    string spec_name, uint32 spec_revision                     (binary_version >= 2)
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank],
        uint8 dtype_id, uint32 n_bytes, bytes data             (binary_version >= 4)
        uint8 item_size, uint32 n_items, bytes data            (binary_version < 4)
    uint32 n_aliases, then per alias: string alias, string target   (binary_version >= 3)

where a string is a uint16 length (including a trailing NUL) followed by UTF-8 bytes and the NUL. dtype ids follow
CTranslate2's DataType enum: float32, int8, int16, int32, float16, bfloat16. Quantized weights carry a sibling
`<name>_scale` (int8: one float per output row; int16: one float), and are dequantized here as value / scale.

This module needs numpy only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from whisper_tune.pipeline.core.errors import ModelError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_LEGACY_ITEM_SIZE = {4: np.float32, 2: np.int16, 1: np.int8}


@dataclass(frozen=True)
class Ct2Model:
    """The variables of a CTranslate2 model.bin, aliases resolved, quantized weights as stored."""

    spec: str
    revision: int
    binary_version: int
    variables: Mapping[str, np.ndarray]

    def has(self, name: str) -> bool:
        return name in self.variables

    def raw(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise ModelError(f"model.bin has no variable {name}; is this a CTranslate2 Whisper model?") from None

    def float32(self, name: str) -> np.ndarray:
        """The variable as float32, dequantized with its `<name>_scale` when it is stored as int8/int16."""
        value = self.raw(name)
        if value.dtype in (np.int8, np.int16):
            scale_name = f"{name}_scale"
            if scale_name not in self.variables:
                raise ModelError(f"model.bin stores {name} as {value.dtype} without {scale_name}; cannot dequantize")
            scale = self.variables[scale_name].astype(np.float32)
            value = value.astype(np.float32)
            if scale.ndim == 0 or scale.size == 1:
                return value / scale.reshape(())
            return value / scale.reshape((-1,) + (1,) * (value.ndim - 1))
        return np.array(value, dtype=np.float32)  # always a copy: aliased variables must not share memory

    def scalar(self, name: str) -> int:
        return int(np.asarray(self.raw(name)).reshape(-1)[0])


class _Reader:
    def __init__(self, buf: memoryview, source: Path):
        self.buf, self.pos, self.source = buf, 0, source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ModelError(f"{self.source} ends early (truncated or not a CTranslate2 model.bin); re-copy the model folder")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.u16()))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{self.source} is not a CTranslate2 model.bin (bad variable name)") from None


def _bf16_to_f32(data: np.ndarray) -> np.ndarray:
    return (data.astype(np.uint32) << 16).view(np.float32)


def read_model_bin(path: Path) -> Ct2Model:
    """Parse a CTranslate2 model.bin (see the module doc). Arrays are read-only views of the file's bytes."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err}") from None
    return _parse(memoryview(data), path)


def _parse(buf: memoryview, path: Path) -> Ct2Model:
    r = _Reader(buf, path)
    version = r.u32()
    if not 1 <= version <= 6:
        raise ModelError(f"{path}: binary version {version} is not a CTranslate2 format this tool reads (1 to 6); "
                         "re-convert the model with a current ctranslate2")
    spec, revision = "", 1
    if version >= 2:
        spec, revision = r.string(), r.u32()
    variables: dict[str, np.ndarray] = {}
    try:
        for _ in range(r.u32()):
            name = r.string()
            shape = tuple(r.u32() for _ in range(r.u8()))
            if version >= 4:
                type_id, n_bytes = r.u8(), r.u32()
                if type_id not in _DTYPES:
                    raise ModelError(f"{path}: variable {name} has unknown dtype id {type_id}")
                dtype = _DTYPES[type_id]
            else:
                item_size, n_items = r.u8(), r.u32()
                if item_size not in _LEGACY_ITEM_SIZE:
                    raise ModelError(f"{path}: variable {name} has unknown item size {item_size}")
                dtype, n_bytes = _LEGACY_ITEM_SIZE[item_size], n_items * item_size
            data = r.take(n_bytes)
            if dtype == "bfloat16":
                array = _bf16_to_f32(np.frombuffer(data, dtype="<u2"))
            else:
                array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
            variables[name] = array.reshape(shape)
        if version >= 3:
            for _ in range(r.u32()):
                alias, target = r.string(), r.string()
                if target not in variables:
                    raise ModelError(f"{path}: alias {alias} points to missing variable {target}")
                variables[alias] = variables[target]
                if f"{target}_scale" in variables and f"{alias}_scale" not in variables:
                    variables[f"{alias}_scale"] = variables[f"{target}_scale"]
    except ValueError as err:  # reshape of a wrongly sized buffer
        raise ModelError(f"{path} is corrupt: {err}") from None
    return Ct2Model(spec=spec, revision=revision, binary_version=version, variables=variables)
