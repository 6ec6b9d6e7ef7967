"""Webdataset shards: deterministic tar bytes, written atomically, local or any fsspec URL.

A sample is a dict of members (``tokens.npy``, ``base_0.jpg``, ``meta.json``, ...) under a key
``<episode>_<step>`` with no dots. Tar headers carry fixed metadata (mtime 0, fixed owner) so the
same samples give byte-identical shards on any machine and any engine.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from typing import Any, Iterable

import numpy as np

from kidata.manifest import ShardInfo
from kidata.schema import Sample

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(record_id: str, step: int | None = None) -> str:
    """``<record>_<step>``: webdataset splits member names at the first dot, so keys have none."""
    base = _KEY_SAFE.sub("-", record_id)
    return base if step is None else f"{base}_{step:06d}"


def npy_bytes(array: np.ndarray) -> bytes:
    """.npy (version 1.0) bytes of an array, byte-identical to ``np.save``'s; the header of each
    (dtype, shape) is built once — ``np.save`` rebuilds it per call, ~50 us of a sample's time."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays are not stored (no pickle)")
    return _npy_prefix(array.dtype.str, array.shape) + array.tobytes()


@functools.lru_cache(maxsize=1024)
def _npy_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # magic, version, header length, header


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable).encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in meta.json")


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """JPEG of a uint8 [H, W, 3] image (libjpeg-turbo through simplejpeg)."""
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality, colorspace="RGB")


def sample_members(sample: Sample, images: dict[str, bytes], *, build_id: str = "") -> dict[str, bytes]:
    """The shard members of a sample (images already JPEG-encoded, by camera name); ``build_id``,
    when given, goes into ``meta.json`` as "build" (``kidata verify`` ties shards to a manifest by it)."""
    members = {f"{camera}.jpg": data for camera, data in sorted(images.items())}
    members["tokens.npy"] = npy_bytes(sample.tokens)
    members["ar.npy"] = npy_bytes(sample.ar)
    members["loss.npy"] = npy_bytes(sample.loss)
    if sample.state is not None:
        members["state.npy"] = npy_bytes(sample.state.astype(np.float32))
    if sample.actions is not None:
        members["actions.npy"] = npy_bytes(sample.actions.astype(np.float32))
        members["action_valid.npy"] = npy_bytes(sample.action_valid.astype(bool))
    meta = {"kind": sample.kind, "prefix_length": sample.prefix_length, "has_actions": sample.has_actions,
            "fast_span": list(sample.fast_span) if sample.fast_span else None, "state_slot": sample.state_slot,
            **sample.meta}
    if build_id:
        meta["build"] = build_id
    members["meta.json"] = json_bytes(meta)
    return members


class ShardWriter:
    """Writes ``<prefix>-00000.tar``, ``-00001`` ... of about ``target_bytes`` each under ``root``.

    Members stream into ``<shard>.tmp`` as they come (memory stays flat whatever the shard size),
    hashed on the way; a complete shard is renamed into place."""

    def __init__(self, fs, root: str, prefix: str, split: str, target_bytes: int) -> None:
        self.fs, self.root, self.prefix, self.split = fs, root.rstrip("/"), prefix, split
        self.target_bytes = max(1, int(target_bytes))
        self.shards: list[ShardInfo] = []
        self._handle = None
        self._hash = None
        self._size = 0
        self._count = 0

    def _path(self) -> tuple[str, str]:
        relative = f"{self.prefix}-{len(self.shards):05d}.tar"
        return relative, f"{self.root}/{relative}"

    def _emit(self, data: bytes) -> None:
        self._handle.write(data)
        self._hash.update(data)
        self._size += len(data)

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._handle is None:
            _, final = self._path()
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self._handle = self.fs.open(f"{final}.tmp", "wb")
            self._hash, self._size, self._count = hashlib.sha256(), 0, 0
        # the sample's members assembled in one buffer (each member's bytes copied once), then one
        # hash update and one write
        record = bytearray()
        for name in sorted(members):
            append_tar_member(record, f"{key}.{name}", members[name])
        self._emit(record)
        self._count += 1
        if self._size >= self.target_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._handle is None:
            return
        end = self._size + 2 * _BLOCK  # two zero blocks, then padding to tar's 10 KiB records
        self._emit(b"\0" * (2 * _BLOCK + (-end) % _RECORD))
        self._handle.close()
        relative, final = self._path()
        self.fs.mv(f"{final}.tmp", final)
        self.shards.append(ShardInfo(relative, self._hash.hexdigest(), self._count, self._size, self.split))
        self._handle = None

    def close(self) -> list[ShardInfo]:
        self._flush()
        return self.shards


def append_tar_member(out: bytearray, name: str, data: bytes) -> None:
    """Appends one regular-file member in POSIX ustar form with fixed metadata (mode 0444, owner
    kidata, mtime 0), a GNU long-name entry first when the name exceeds 99 bytes. Written by hand
    because ``tarfile`` (under webdataset's TarWriter) spent ~0.13 ms per member building and
    parsing TarInfo objects, a tenth of a build's time (benchmarks/RESULTS.md); the output is a
    standard tar that ``tarfile``, webdataset and GNU tar read (tested)."""
    encoded = name.encode("utf-8")
    if len(encoded) > 99:
        out += _header(b"././@LongLink", len(encoded) + 1, b"L")
        out += encoded
        out += _ZEROS[: _BLOCK - len(encoded) % _BLOCK]  # the name's NUL terminator, then padding
        encoded = encoded[:99]
    out += _header(encoded, len(data), b"0")
    out += data
    out += _ZEROS[: (-len(data)) % _BLOCK]


def _header(name: bytes, size: int, kind: bytes) -> bytes:
    """A ustar header: name, size and type vary, every other field is fixed (``_HEADER_PARTS``).
    The checksum is the byte sum of the header with its own field read as spaces."""
    size_field = b"%011o\0" % size
    checksum = _HEADER_SUM + sum(name) + sum(size_field) + kind[0]
    return b"".join((name.ljust(100, b"\0"), _HEADER_PARTS[0], size_field, _HEADER_PARTS[1], b"%06o\0 " % checksum,
                     kind, _HEADER_PARTS[2]))


# mode, uid, gid | mtime | link name, magic + version, owner, group, device numbers, prefix, padding
_HEADER_PARTS = (b"0000444\0" + b"0000000\0" * 2, b"00000000000\0",
                 b"\0" * 100 + b"ustar\x0000" + b"kidata".ljust(32, b"\0") * 2 + b"0000000\0" * 2 + b"\0" * 167)
_HEADER_SUM = sum(b"".join(_HEADER_PARTS)) + sum(b" " * 8)


_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_RECORD = 20 * _BLOCK


# the largest member a shard may hold: images are a few hundred KiB, arrays less
MAX_MEMBER_BYTES = 256 << 20


def iter_tar(fileobj) -> Iterable[tuple[str, dict[str, bytes]]]:
    """(key, members) of each sample of a shard, streaming (a shard is never held whole).

    Reads the tar stream directly (ustar / GNU long names / pax ``path`` records): ``tarfile``'s
    per-member objects cost more than the loader's JPEG decoding (benchmarks/loader_bench.py)."""
    current, members = None, {}
    for name, data in _tar_members(fileobj):
        key, member = name.split(".", 1)
        if key != current and current is not None:
            yield current, members
            members = {}
        current = key
        members[member] = data
    if current is not None:
        yield current, members


def _tar_members(fileobj) -> Iterable[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a tar stream."""
    pending_name = None
    while True:
        header = fileobj.read(_BLOCK)
        if len(header) < _BLOCK or header.count(0) == _BLOCK:
            return
        if sum(header[:148]) + sum(header[156:]) + 8 * 32 != int(header[148:156].strip(b"\0 ") or b"0", 8):
            raise ValueError("corrupt tar header (checksum mismatch)")
        size_field = header[124:136]
        size = int.from_bytes(size_field[1:], "big") if size_field[0] & 0x80 else int(size_field.strip(b"\0 ") or b"0", 8)
        if size > MAX_MEMBER_BYTES:  # a header is data: a flipped bit must not become a read of gigabytes
            raise ValueError(f"tar member of {size} bytes exceeds the {MAX_MEMBER_BYTES >> 20} MiB a shard member "
                             "may hold (a damaged header)")
        data = fileobj.read(size)
        if len(data) < size:
            raise ValueError("truncated tar member")
        fileobj.read((-size) % _BLOCK)
        kind = header[156:157]
        if kind == b"L":  # GNU long name for the next member
            pending_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind in (b"x", b"g"):  # pax records: "<length> <key>=<value>\n"
            for line in data.decode("utf-8").splitlines():
                field = line.split(" ", 1)[1] if " " in line else ""
                if field.startswith("path="):
                    pending_name = field[len("path="):]
            continue
        if kind not in (b"0", b"\0"):
            pending_name = None
            continue
        name = pending_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8") + "/" + name
        pending_name = None
        yield name, data


def iter_shard(data: bytes) -> Iterable[tuple[str, dict[str, bytes]]]:
    """(key, members) of each sample in a shard's bytes, in order."""
    return iter_tar(io.BytesIO(data))


def load_npy(data: bytes) -> np.ndarray:
    """An array from .npy bytes (a writable copy). The header of each distinct layout is parsed
    once; ``np.load`` re-parses it every time, which is most of the cost for the small arrays
    of a sample."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not .npy data")
    length_bytes = 2 if data[6] == 1 else 4
    header_length = int.from_bytes(data[8 : 8 + length_bytes], "little")
    start = 8 + length_bytes + header_length
    dtype, shape, fortran = _npy_header(bytes(data[8 + length_bytes : start]))
    array = np.frombuffer(data, dtype=dtype, offset=start, count=int(np.prod(shape)) if shape else 1)
    return array.reshape(shape, order="F" if fortran else "C").copy()


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    import ast

    fields = ast.literal_eval(header.decode("latin1"))
    dtype = np.dtype(fields["descr"])
    if dtype.hasobject:
        raise ValueError("object arrays are not loaded (no pickle)")
    return dtype, tuple(fields["shape"]), bool(fields["fortran_order"])
