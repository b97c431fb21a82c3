"""A Parquet file's key-value metadata, read from its footer without pyarrow.

Listing traces reads nothing else of a file, and importing pyarrow (and numpy with it) takes
longer than listing 100,000 traces this way. A Parquet file ends with its footer, then the
footer's length (4 bytes, little-endian) and `PAR1`. The footer is a FileMetaData struct in
Thrift's compact protocol; its field 5, key_value_metadata, is a list of KeyValue structs
(1: key, 2: value, both binary). Every other field is skipped by its wire type, so this reads
any version of the format (parquet-format's parquet.thrift; Thrift's compact protocol spec).

Why not the `thrift` package: its protocol's generic skip decodes every binary field as UTF-8,
and a Parquet footer's column statistics are raw bytes, so it fails on the first float column.
The tests check this decoder against its encoder, and against footers pyarrow writes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

from replay.errors import InvalidTraceError

MAGIC = b"PAR1"
_ENCRYPTED = b"PARE"
_KEY_VALUE_METADATA = 5  # FileMetaData's field

# The compact protocol's wire types (a struct field's bool is in its header, no value bytes).
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE = range(8)
_BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(8, 14)
_FIXED = {_BYTE: 1, _DOUBLE: 8, _UUID: 16}
_MAX_DEPTH = 64
_CHUNK = 1 << 16


class CorruptFooter(ValueError):
    """The footer's bytes do not decode; the message says where."""


class _Reader:
    """Reads compact-protocol values from a footer front to back, a chunk at a time, and seeks
    over the values it skips (a bundle's provenance is megabytes that a listing never needs)."""

    __slots__ = ("buf", "fh", "left", "pos", "size", "start")

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh  # positioned at the footer's first byte
        self.size = size  # the footer's length
        self.left = size  # bytes of it not yet read from fh
        self.buf = b""
        self.pos = 0  # in buf
        self.start = 0  # the footer offset of buf[0]

    def where(self) -> str:
        return f"byte {self.start + self.pos} of {self.size}"

    def _fill(self, n: int) -> None:
        """Make n bytes readable at pos."""
        have = len(self.buf) - self.pos
        if n - have > self.left:
            raise CorruptFooter(f"it ends early (a value of {n} bytes at {self.where()})")
        count = max(n - have, min(_CHUNK, self.left))
        more = self.fh.read(count)
        if len(more) != count:
            raise CorruptFooter("the file changed while it was read")
        self.start += self.pos
        self.buf = self.buf[self.pos :] + more
        self.pos = 0
        self.left -= count

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            self._fill(1)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CorruptFooter(f"a varint longer than 64 bits at {self.where()}")

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            self._fill(n)
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def advance(self, n: int) -> None:
        have = len(self.buf) - self.pos
        if n <= have:
            self.pos += n
            return
        if n - have > self.left:
            raise CorruptFooter(f"it ends early (a value of {n} bytes at {self.where()})")
        self.fh.seek(n - have, os.SEEK_CUR)
        self.left -= n - have
        self.start += len(self.buf) + n - have
        self.buf = b""
        self.pos = 0

    def binary(self) -> bytes:
        return self.take(self.varint())

    def field(self, last: int) -> tuple[int, int]:
        """The next field's (id, wire type) after field `last`; wire type _STOP ends a struct."""
        header = self.byte()
        kind = header & 0x0F
        if kind == _STOP:
            return 0, _STOP
        delta = header >> 4
        if delta:
            return last + delta, kind
        n = self.varint()
        return (n >> 1) ^ -(n & 1), kind  # zigzag i16

    def collection(self) -> tuple[int, int]:
        """A list's or set's (element wire type, size)."""
        header = self.byte()
        size = header >> 4
        return header & 0x0F, self.varint() if size == 15 else size

    def skip(self, kind: int, depth: int = 0, element: bool = False) -> None:
        """Skip one value; `element`: inside a collection, where a bool takes a byte."""
        if depth > _MAX_DEPTH:
            raise CorruptFooter(f"structures nested over {_MAX_DEPTH} deep at {self.where()}")
        if kind in (_TRUE, _FALSE):
            if element:
                self.advance(1)
        elif kind in _FIXED:
            self.advance(_FIXED[kind])
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _BINARY:
            self.advance(self.varint())
        elif kind in (_LIST, _SET):
            etype, size = self.collection()
            for _ in range(size):
                self.skip(etype, depth + 1, element=True)
        elif kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.skip(types >> 4, depth + 1, element=True)
                self.skip(types & 0x0F, depth + 1, element=True)
        elif kind == _STRUCT:
            fid, ftype = self.field(0)
            while ftype != _STOP:
                self.skip(ftype, depth + 1)
                fid, ftype = self.field(fid)
        else:
            raise CorruptFooter(f"unknown wire type {kind} at {self.where()}")

    def key_value(self, unread: Collection[bytes]) -> tuple[bytes, bytes]:
        key: bytes | None = None
        value = b""  # an absent value reads as empty, as pyarrow reads it
        fid, ftype = self.field(0)
        while ftype != _STOP:
            if fid == 1 and ftype == _BINARY:
                key = self.binary()
            elif fid == 2 and ftype == _BINARY and key is not None and key in unread:
                self.advance(self.varint())
            elif fid == 2 and ftype == _BINARY:
                value = self.binary()
            else:
                self.skip(ftype)
            fid, ftype = self.field(fid)
        if key is None:
            raise CorruptFooter(f"a key-value pair without a key before {self.where()}")
        return key, b"" if key in unread else value  # read anyway when it came before its key


def _decode(fh: BinaryIO, size: int, unread: Collection[bytes]) -> dict[bytes, bytes]:
    reader = _Reader(fh, size)
    fid, ftype = reader.field(0)
    while ftype != _STOP:
        if fid == _KEY_VALUE_METADATA:
            if ftype != _LIST:
                raise CorruptFooter(f"key_value_metadata has wire type {ftype}, not a list")
            etype, count = reader.collection()
            if etype != _STRUCT:
                raise CorruptFooter(f"key_value_metadata holds wire type {etype}, not structs")
            return dict(reader.key_value(unread) for _ in range(count))
        reader.skip(ftype)
        fid, ftype = reader.field(fid)
    return {}


def decode_key_value_metadata(
    footer: bytes, *, unread: Collection[bytes] = ()
) -> dict[bytes, bytes]:
    """The key-value metadata of a compact-encoded FileMetaData: {} when it has none, a key
    given twice keeps its last value, and the value of a key in `unread` is skipped unread and
    reads as b"". Raises CorruptFooter."""
    return _decode(io.BytesIO(footer), len(footer), unread)


def key_value_metadata(path: Path, *, unread: Collection[bytes] = ()) -> dict[bytes, bytes]:
    """The file's Parquet key-value metadata, reading only its footer (and seeking over the
    values of keys in `unread`, which read as b""); a file that is not Parquet, is cut short
    or is corrupt raises InvalidTraceError naming it."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < 12:
                raise CorruptFooter(f"{size} bytes is too short for a Parquet file")
            fh.seek(size - 8)
            tail = fh.read(8)
            if tail[4:] == _ENCRYPTED:
                raise CorruptFooter("its footer is encrypted")
            if tail[4:] != MAGIC:
                raise CorruptFooter("it does not end in PAR1 (not Parquet, or cut short)")
            length = int.from_bytes(tail[:4], "little")
            if length > size - 12:
                raise CorruptFooter(f"its footer length {length} exceeds the file ({size} bytes)")
            fh.seek(size - 8 - length)
            return _decode(fh, length, unread)
    except (OSError, CorruptFooter) as exc:
        raise InvalidTraceError(f"{path}: cannot read Parquet: {exc}") from exc
