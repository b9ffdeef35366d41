"""msgpack with numpy arrays, in starVLA's wire format: an array travels as ``{b"__ndarray__": True, b"data": raw
bytes, b"dtype": dtype.str, b"shape": shape}`` and a numpy scalar as ``{b"__npgeneric__": True, ...}``. Object,
void and complex arrays are refused (they would need pickle)."""

from __future__ import annotations

import msgpack
import numpy as np


def _encode(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in "VOc":
        raise TypeError(f"cannot send a numpy array of dtype {obj.dtype} (object/void/complex)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot pack an object of type {type(obj).__name__}")


def _decode(obj: dict):
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in "VOc":
            raise TypeError(f"refusing a numpy array of dtype {dtype} (object/void/complex)")
        return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(obj[b"shape"]))
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes):
    """Decode one message; raises ``ValueError`` naming what is wrong for bytes that are not one."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, strict_map_key=False)
    except Exception as err:  # msgpack raises several unrelated types for garbage
        raise ValueError(f"undecodable message ({type(err).__name__}: {err}); expected msgpack") from None
