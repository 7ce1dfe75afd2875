"""Just enough RIFF/WAVE to add our own chunks to a WAV that soundfile wrote.

soundfile (libsndfile) writes the `fmt ` and `data` chunks; metadata chunks (a `LIST`/`INFO`
list, `iXML`, and later `smpl` loop points) are added here afterwards. A RIFF file is a
12-byte header (`RIFF`, size, `WAVE`) followed by chunks: a 4-byte id, a little-endian 32-bit
payload size, the payload, and one pad byte when the size is odd.

Only plain `RIFF` files under 4 GiB are handled (no `RF64`); anything else raises `RiffError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

HEADER = struct.Struct("<4sI4s")
CHUNK_HEADER = struct.Struct("<4sI")
MAX_RIFF_SIZE = 0xFFFFFFFF


class RiffError(ValueError):
    """The file is not a RIFF/WAVE file this module can edit."""


@dataclass(frozen=True)
class Chunk:
    """One chunk in a RIFF file: `offset` is where its 8-byte header starts."""

    id: bytes
    offset: int
    size: int
    form: bytes | None = None  # the list type of a LIST chunk, e.g. b"INFO"

    @property
    def data_offset(self) -> int:
        return self.offset + CHUNK_HEADER.size

    @property
    def end(self) -> int:
        """Offset just past the payload and its pad byte."""
        return self.data_offset + self.size + (self.size & 1)

    @property
    def key(self) -> tuple[bytes, bytes | None]:
        """What identifies a chunk for replacement: the id, plus the list type for LIST."""
        return (self.id, self.form)


def encode_chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """Header + payload + pad byte: ready to append to a RIFF file."""
    if len(chunk_id) != 4:
        raise ValueError(f"a RIFF chunk id is 4 bytes, got {chunk_id!r}")
    pad = b"\x00" if len(payload) & 1 else b""
    return CHUNK_HEADER.pack(chunk_id, len(payload)) + payload + pad


def encode_info(tags: Mapping[str, str]) -> bytes:
    """A complete `LIST`/`INFO` chunk. Tag ids are 4 ASCII letters (INAM, ISFT, ICMT, ...);
    values are stored as zero-terminated UTF-8 (readers that expect ASCII see plain ASCII)."""
    body = b"INFO"
    for tag, value in tags.items():
        tag_id = tag.encode("ascii")
        text = value.encode("utf-8", "backslashreplace").replace(b"\x00", b"") + b"\x00"
        body += encode_chunk(tag_id, text)
    return encode_chunk(b"LIST", body)


def decode_info(payload: bytes) -> dict[str, str]:
    """The tags of a `LIST` chunk payload that starts with `INFO`; {} for other lists."""
    if payload[:4] != b"INFO":
        return {}
    tags: dict[str, str] = {}
    for chunk_id, start, size in _walk(payload, 4, len(payload)):
        value = payload[start : start + size].split(b"\x00", 1)[0]
        tags[chunk_id.decode("latin-1")] = value.decode("utf-8", "replace")
    return tags


def read_chunks(path: str | os.PathLike[str]) -> list[Chunk]:
    """Every top-level chunk of a RIFF/WAVE file, in file order."""
    with open(path, "rb") as f:
        file_size = _check_header(f.read(HEADER.size), os.fstat(f.fileno()).st_size)
        chunks = []
        offset = HEADER.size
        while offset + CHUNK_HEADER.size <= file_size:
            f.seek(offset)
            chunk_id, size = CHUNK_HEADER.unpack(f.read(CHUNK_HEADER.size))
            form = f.read(4) if chunk_id == b"LIST" and size >= 4 else None
            chunk = Chunk(chunk_id, offset, size, form)
            if chunk.data_offset + size > file_size:
                break  # truncated last chunk: stop rather than read past the end
            chunks.append(chunk)
            offset = chunk.end
        return chunks


def read_chunk(path: str | os.PathLike[str], chunk: Chunk) -> bytes:
    """The payload of one chunk (without header or pad byte)."""
    with open(path, "rb") as f:
        f.seek(chunk.data_offset)
        return f.read(chunk.size)


def find_chunk(
    path: str | os.PathLike[str], chunk_id: bytes, form: bytes | None = None
) -> bytes | None:
    """The payload of the first chunk with this id (and list type, for LIST), or None."""
    for chunk in read_chunks(path):
        if chunk.id == chunk_id and (form is None or chunk.form == form):
            return read_chunk(path, chunk)
    return None


def set_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> None:
    """Put encoded chunks (from `encode_chunk`/`encode_info`) at the end of a WAV file,
    replacing existing chunks with the same key (id, or id + list type for LIST).

    Edits in place: use it on a file that is not yet visible (the exporter's temp file).
    """
    new = list(chunks)
    new_keys = {_key_of(c) for c in new}
    existing = read_chunks(path)
    replaced = [c for c in existing if c.key in new_keys]
    added = sum(len(c) for c in new)
    with open(path, "r+b") as f:
        if not replaced:
            end = f.seek(0, os.SEEK_END)
            pad = b"\x00" if end & 1 else b""
            _check_size(end + len(pad) + added)
            f.write(pad)
            for c in new:
                f.write(c)
        else:
            kept = []
            for chunk in existing:
                if chunk.key in new_keys:
                    continue
                f.seek(chunk.offset)
                raw = f.read(chunk.end - chunk.offset)
                kept.append(raw + (b"\x00" if len(raw) & 1 else b""))
            body = b"".join(kept) + b"".join(new)
            _check_size(HEADER.size + len(body))
            f.seek(HEADER.size)
            f.write(body)
            f.truncate()
        end = f.seek(0, os.SEEK_END)
        f.seek(4)
        f.write(struct.pack("<I", end - 8))


def _key_of(encoded: bytes) -> tuple[bytes, bytes | None]:
    chunk_id = encoded[:4]
    form = encoded[8:12] if chunk_id == b"LIST" and len(encoded) >= 12 else None
    return (chunk_id, form)


def _walk(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    offset = start
    while offset + CHUNK_HEADER.size <= end:
        chunk_id, size = CHUNK_HEADER.unpack_from(data, offset)
        data_start = offset + CHUNK_HEADER.size
        if data_start + size > end:
            return
        yield chunk_id, data_start, size
        offset = data_start + size + (size & 1)


def _check_header(header: bytes, file_size: int) -> int:
    if len(header) < HEADER.size:
        raise RiffError("too short to be a WAV file")
    riff, _size, wave = HEADER.unpack(header)
    if riff != b"RIFF" or wave != b"WAVE":
        raise RiffError(f"not a RIFF/WAVE file (starts with {riff!r} {wave!r})")
    return file_size


def _check_size(total: int) -> None:
    if total - 8 > MAX_RIFF_SIZE:
        raise RiffError("the WAV file would exceed the 4 GiB RIFF limit")
