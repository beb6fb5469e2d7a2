"""Damaged compressed streams: .gz/.zst decoded up to the damage and resumed at the
next member or frame that decodes, each gap described (curation.io.read counts it)."""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Iterator

import zstandard

from curation.fs import FS


class _LostRows:
    """Rows of a Parquet row group that could not be decoded (counted from the footer)."""

    __slots__ = ("count", "detail")

    def __init__(self, count: int, detail: str):
        self.count, self.detail = count, detail


def _size_note(f) -> str:
    try:
        return f" (the file is {f.seek(0, 2)} bytes)"
    except (OSError, ValueError, AttributeError):
        return ""


class _TooLarge:
    """An Arrow row already known to be over the limit, kept only as a prefix."""

    __slots__ = ("size", "prefix")

    def __init__(self, size: int, prefix: str):
        self.size, self.prefix = size, prefix


@dataclass
class _Damage:
    """Where a compressed stream stopped decoding, and what is known of the loss."""

    cause: str                # truncated_file | corrupt_data | unreadable_file
    error: str                # what went wrong
    frame: int                # 1-based gzip member / zstd frame it happened in
    at: int                   # compressed offset of the read that failed
    good: int                 # compressed bytes decoded cleanly before it (whole file so far)
    resume: int | None        # where decoding resumed (the next frame that decodes), None: nowhere
    end: int | None           # the file's size, when reading reached its end
    lost: int | None = None   # decompressed bytes known lost (a zstd frame header's content size)
    step: int = 0             # compressed bytes in the read that failed
    dropped: int = 0          # decoded bytes of the frame dropped because its checksum failed

    def unread(self) -> int | None:
        stop = self.resume if self.resume is not None else self.end
        return None if stop is None else stop - self.at

    def describe(self) -> str:
        kind = "gzip member" if self.error.startswith("gzip") else "zstd frame"
        if self.cause == "truncated_file":
            out = f"the file ends inside {kind} {self.frame} after {self.at} compressed bytes"
            out += (f"; its header says {self.lost} more decompressed bytes were due" if self.lost is not None
                    else "; how much followed is not recorded in the file")
            return out
        out = f"{self.error} in {kind} {self.frame} within compressed bytes {self.at}-{self.at + self.step}"
        if self.dropped:
            out += f"; its {self.dropped} decoded bytes are dropped, as its checksum failed"
        if self.resume is not None:
            return out + f"; {self.unread()} compressed bytes skipped to the next readable frame at byte {self.resume}"
        return out + f"; {self.unread()} compressed bytes of {self.end} unread (no readable frame after it)"


_CHUNK = 1 << 16          # compressed bytes fed to a decoder at a time
_HOLD = 8 << 20           # a frame's output held until its checksum is checked, up to this size
_RESYNC_CHECK = 1 << 16   # decompressed bytes a frame found by scanning must yield cleanly (or end)
_MAGIC = {"gz": b"\x1f\x8b\x08", "zst": b"\x28\xb5\x2f\xfd"}


def _decoder(comp: str):
    return zlib.decompressobj(16 + zlib.MAX_WBITS) if comp == "gz" else zstandard.ZstdDecompressor().decompressobj()


class _Decoded:
    """The decompressed bytes of a .gz or .zst file, as pieces (bytes, or a `_Damage`).

    Decoding stops at damage instead of raising, after yielding everything decoded
    before it. Gzip members and zstd frames each start with a magic number, so after
    corrupt bytes the rest of the file is scanned for the next one that decodes
    cleanly for 64 KiB (or to its end), and reading resumes there; a deflate or
    zstd stream cannot be resumed inside a member/frame. Deterministic: the same
    bytes give the same pieces. Concatenated members/frames are read in turn (gzip's
    zero padding between members is skipped, as Python's gzip does)."""

    def __init__(self, src, comp: str):
        self.src, self.comp = src, comp
        self.buf, self.base, self.eof = bytearray(), 0, False

    def _fill_to(self, end: int) -> None:
        while not self.eof and self.base + len(self.buf) < end:
            data = self.src.read(max(_CHUNK, end - self.base - len(self.buf)))
            if not data:
                self.eof = True
            self.buf += data

    def _drop(self, off: int) -> None:
        if off > self.base:
            del self.buf[:off - self.base]
            self.base = off

    def _peek(self, off: int, n: int) -> bytes:
        self._fill_to(off + n)
        return bytes(self.buf[off - self.base:off - self.base + n])

    def _take(self, off: int, n: int) -> bytes:
        self._drop(off)
        return self._peek(off, n)

    def _find(self, p: int) -> int:
        magic = _MAGIC[self.comp]
        while True:
            self._drop(p)
            j = self.buf.find(magic)
            if j >= 0:
                return self.base + j
            if self.eof:
                return -1
            p = max(p, self.base + len(self.buf) - len(magic) + 1)
            self._fill_to(self.base + len(self.buf) + _CHUNK)

    def _decodes(self, off: int) -> bool:
        """Whether a frame starting at `off` decodes cleanly (for _RESYNC_CHECK bytes or to its end)."""
        d, n = _decoder(self.comp), 0
        while True:
            chunk = self._peek(off, _CHUNK)
            if not chunk:
                return n > 0
            try:
                n += len(d.decompress(chunk))
            except (zlib.error, zstandard.ZstdError):
                return False
            if d.eof or n >= _RESYNC_CHECK:
                return True
            off += len(chunk)

    def pieces(self) -> Iterator[bytes | _Damage]:
        d, fed, frame, good, content, frame_out, produced = None, 0, 0, 0, None, 0, 0
        step = _CHUNK if self.comp == "gz" else _CHUNK // 4   # zstd output is lost by the step
        # A frame's output is held until its checksum passes, while it is under _HOLD bytes:
        # corrupt deflate data can decode into wrong bytes that only the checksum notices.
        held: list[bytes] | None = None
        held_n = 0
        while True:
            if d is None:
                if self.comp == "gz":           # zero padding between members
                    while (b := self._take(fed, 1)) == b"\x00":
                        fed += 1
                if not self._take(fed, 1):
                    return
                d, frame, frame_out, content = _decoder(self.comp), frame + 1, 0, None
                held, held_n = [], 0
                if self.comp == "zst":
                    with contextlib.suppress(zstandard.ZstdError):
                        size = zstandard.get_frame_parameters(self._take(fed, 18)).content_size
                        content = size if 0 <= size < zstandard.CONTENTSIZE_UNKNOWN else None
            chunk = self._take(fed, step)
            if not chunk:
                lost = content - frame_out if content is not None else None
                yield from held or ()
                yield _Damage("truncated_file", f"{'gzip' if self.comp == 'gz' else 'zstd'}: stream ends early",
                              frame, fed, good, None, fed, lost)
                return
            saved = d.copy() if self.comp == "gz" else None
            try:
                out = d.decompress(chunk)
            except (zlib.error, zstandard.ZstdError) as e:
                err = f"{'gzip' if self.comp == 'gz' else 'zstd'} data is corrupt ({type(e).__name__}: {e})"
                dropped = 0
                if held is not None and ("incorrect data check" in str(e) or "checksum" in str(e)):
                    # wrong somewhere in the frame: none of it is trusted
                    dropped = held_n + (len(_salvage(saved, chunk)) if saved is not None else 0)
                else:
                    for piece in held or ():
                        produced += len(piece)
                        yield piece
                    if saved is not None and (head := _salvage(saved, chunk)):
                        produced += len(head)
                        yield head
                held = None
                p = fed + 1
                while (nxt := self._find(p)) >= 0 and not self._decodes(nxt):
                    p = nxt + 1
                resume = nxt if nxt >= 0 else None
                cause = "unreadable_file" if produced == dropped == 0 and resume is None else "corrupt_data"
                end = None if resume is not None else self.base + len(self.buf)
                yield _Damage(cause, err, frame, fed, good, resume, end, step=len(chunk), dropped=dropped)
                if resume is None:
                    return
                d, fed = None, resume
                continue
            used = len(chunk) - len(d.unused_data) if d.eof else len(chunk)
            fed += used
            good += used
            frame_out += len(out)
            if out:
                if held is not None and held_n + len(out) <= _HOLD:
                    held.append(out)
                    held_n += len(out)
                else:
                    pending, held = (held or []) + [out], None
                    for piece in pending:
                        produced += len(piece)
                        yield piece
            if d.eof:
                for piece in held or ():
                    produced += len(piece)
                    yield piece
                d, held = None, None


def _salvage(d, chunk: bytes) -> bytes:
    """What a (copied) zlib decoder yields from `chunk` before the error in it."""
    out = []
    for i in range(0, len(chunk), 256):
        try:
            out.append(d.decompress(chunk[i:i + 256]))
        except zlib.error:
            break
    return b"".join(out)


def _plain_pieces(src) -> Iterator[bytes | _Damage]:
    pos = 0
    while True:
        try:
            data = src.read(_CHUNK)
        except OSError as e:
            yield _Damage("unreadable_file", f"{type(e).__name__}: {e}", 1, pos, pos, None, None)
            return
        if not data:
            return
        pos += len(data)
        yield data


class _Lines:
    """`readline` over pieces: returns ``(bytes, damage)``; `damage` is set when the
    line was cut by damage (bytes is then its partial start, possibly empty).
    ``(b"", None)`` at the end."""

    def __init__(self, pieces: Iterator[bytes | _Damage]):
        self._pieces, self._buf, self._pos = pieces, b"", 0
        self.decoded = 0          # decompressed bytes handed out

    def readline(self, limit: int) -> tuple[bytes, _Damage | None]:
        pos = self._pos
        nl = self._buf.find(b"\n", pos, pos + limit)
        if nl >= 0:                        # the common case: the whole line is buffered
            self._pos = nl + 1
            self.decoded += nl + 1 - pos
            return self._buf[pos:nl + 1], None
        parts, n = [], 0
        while n < limit:
            if self._pos >= len(self._buf):
                piece = next(self._pieces, None)
                if piece is None:
                    break
                if isinstance(piece, _Damage):
                    line = b"".join(parts)
                    self.decoded += len(line)
                    return line, piece
                self._buf, self._pos = piece, 0
            nl = self._buf.find(b"\n", self._pos, self._pos + limit - n)
            stop = nl + 1 if nl >= 0 else min(len(self._buf), self._pos + limit - n)
            parts.append(self._buf[self._pos:stop])
            n += stop - self._pos
            self._pos = stop
            if nl >= 0:
                break
        line = b"".join(parts)
        self.decoded += len(line)
        return line, None


def _open_jsonl(fs: FS, path: str, compression: str, stack: contextlib.ExitStack) -> _Lines:
    raw = stack.enter_context(fs.open_read(path))
    return _Lines(_Decoded(raw, compression).pieces() if compression else _plain_pieces(raw))
