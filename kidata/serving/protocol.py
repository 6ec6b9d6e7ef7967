"""openpi's wire format: msgpack with numpy arrays as ``{__ndarray__, data, dtype, shape}`` maps
(``openpi_client.msgpack_numpy``), so its clients and ours exchange the same bytes. Object arrays
are refused (never pickle)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"unsupported array dtype {obj.dtype} (numbers and booleans only)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(value: Any) -> bytes:
    import msgpack

    return msgpack.packb(value, default=_encode)


def unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, object_hook=_decode)
