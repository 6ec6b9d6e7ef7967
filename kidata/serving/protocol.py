"""openpi's wire format: msgpack with numpy arrays as ``{__ndarray__, data, dtype, shape}`` maps
(``openpi_client.msgpack_numpy``), so its clients and ours exchange the same bytes.

Requests come from the network and are read as data, never trusted: an array map must name a
number or boolean dtype (object arrays would read pointers out of the request's bytes), a shape
of at most ``MAX_ARRAY_DIMS`` non-negative sizes, and exactly the bytes that shape needs. What
does not decode raises ``ProtocolError`` with one sentence naming the problem."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_ARRAY_DIMS = 8  # an observation's arrays have 1 to 4 dimensions; batches add one
MAX_NESTING = 32  # maps and lists inside one another; an observation needs 3


class ProtocolError(ValueError):
    """Bytes that are not an openpi-protocol request; names what is wrong with them."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"unsupported array dtype {obj.dtype} (numbers and booleans only)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _dtype(value: Any) -> np.dtype:
    """A number or boolean dtype from its wire name (``"<f4"``), or ProtocolError."""
    try:
        dtype = np.dtype(value.decode() if isinstance(value, bytes) else value) if isinstance(value, (str, bytes)) else None
    except (TypeError, ValueError, UnicodeDecodeError):
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ProtocolError(f"an array's dtype {value!r} is not a number or boolean dtype such as '<f4' or '|u1'")
    return dtype


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        get = lambda key: obj.get(key.encode(), obj.get(key))  # noqa: E731 - openpi sends bytes keys
        dtype, shape, data = _dtype(get("dtype")), get("shape"), get("data")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_ARRAY_DIMS
                or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape)):
            raise ProtocolError(f"an array's shape {shape!r} is not a list of at most {MAX_ARRAY_DIMS} sizes >= 0")
        if not isinstance(data, bytes):
            raise ProtocolError(f"an array's data is {type(data).__name__}, not bytes")
        needed = math.prod(shape) * dtype.itemsize
        if len(data) != needed:
            raise ProtocolError(f"an array of shape {list(shape)} and dtype {dtype.str} needs {needed} bytes; "
                                f"its data holds {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        get = lambda key: obj.get(key.encode(), obj.get(key))  # noqa: E731
        dtype, value = _dtype(get("dtype")), get("data")
        if not isinstance(value, (bool, int, float)):
            raise ProtocolError(f"a scalar of dtype {dtype.str} holds {type(value).__name__}, not a number")
        try:
            return dtype.type(value)
        except OverflowError:
            raise ProtocolError(f"a scalar {value!r} does not fit its dtype {dtype.str}") from None
    return obj


def packb(value: Any) -> bytes:
    import msgpack

    return msgpack.packb(value, default=_encode)


def unpackb(data: bytes) -> Any:
    """A decoded message; ProtocolError (one sentence) for bytes that are not one."""
    import msgpack

    try:
        value = msgpack.unpackb(data, object_hook=_decode)
    except ProtocolError:
        raise
    except UnicodeDecodeError as error:
        raise ProtocolError(f"a string of the message is not valid UTF-8 ({error.reason} at byte {error.start}); "
                            "send text as UTF-8") from None
    except msgpack.exceptions.StackError:
        raise ProtocolError("the message nests maps and lists deeper than msgpack's stack allows") from None
    except msgpack.exceptions.ExtraData:
        raise ProtocolError("the message is not one msgpack value (bytes follow its end)") from None
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as error:
        raise ProtocolError(f"the message is not valid msgpack ({error or type(error).__name__})") from None
    _check_nesting(value)
    return value


def _check_nesting(value: Any) -> None:
    """ProtocolError for maps and lists nested deeper than ``MAX_NESTING`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else ()
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                if depth + 1 > MAX_NESTING:
                    raise ProtocolError(f"the message nests maps and lists more than {MAX_NESTING} deep; an "
                                        "observation needs 3")
                stack.append((child, depth + 1))
