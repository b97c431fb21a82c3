"""Opening what ingest reads: a file, gzip'd or zstd'd (told by content, not name), or stdin."""

from __future__ import annotations

import gzip
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import zstandard

from replay.errors import ReplayError

STDIN = "-"
STDIN_NAME = Path("<stdin>")
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


class Source:
    """A readable input: its lines, decompressed, and how many raw bytes were read (progress)."""

    def __init__(self, name: Path, raw: IO[bytes]) -> None:
        self.name = name
        self._raw = raw
        self.compression = ""
        self._stream: Any = raw
        self.rewind()

    def rewind(self) -> None:
        """Back to the start (a log read out of order is read again, sorted)."""
        self._raw.seek(0)
        magic = self._raw.read(4)
        self._raw.seek(0)
        if magic.startswith(_GZIP):
            self.compression = "gzip"
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
        elif magic == _ZSTD:
            self.compression = "zstd"
            reader: Any = zstandard.ZstdDecompressor().stream_reader(
                self._raw, read_across_frames=True, closefd=False
            )
            self._stream = io.BufferedReader(reader, buffer_size=1 << 20)
        else:
            self._stream = self._raw

    def readlines(self, hint: int) -> list[bytes]:
        """The next lines, about hint bytes of them (decompressed); [] at the end."""
        try:
            lines: list[bytes] = self._stream.readlines(hint)
            return lines
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise ReplayError(f"{self.name}: cannot read it as {self.compression}: {exc}") from exc

    def position(self) -> int:
        """Raw (compressed) bytes read so far."""
        return self._raw.tell()


@contextmanager
def open_source(path: Path) -> Iterator[Source]:
    """A Source for path; `-` is standard input, spooled to a temporary file first."""
    if str(path) == STDIN:
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            yield Source(STDIN_NAME, spool)
        return
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        yield Source(path, fh)


def input_size(path: Path) -> int:
    """Bytes a progress bar expects from path (0 for stdin or a missing file)."""
    if str(path) == STDIN or not path.is_file():
        return 0
    return path.stat().st_size
