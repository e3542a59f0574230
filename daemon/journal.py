"""The event journal: a write-ahead log of accepted input messages.

Every protocol v1 ``[header, body]`` message the daemon accepts (after validation) is
appended here before it is acknowledged. The journal serves three readers:

1. crash recovery: each LMDB checkpoint records ``Journal.next_seq``; on restart the
   daemon re-applies every entry from that position (``Journal.read_from``);
2. ``bae replay --from-journal DIR`` re-sends history to a daemon;
3. training code reads numpy record arrays with ``iter_records``.

Durability: ``append`` only buffers; ``flush`` hands everything to the OS, which is
durable against the death of the process (SIGKILL). With ``fsync=True`` flush also
fsyncs, which is durable against a machine crash. Acknowledge a producer only after the
flush that covered its message returned.

Layout: a folder of segment files ``<first seq, 20 digits>.bjl`` and ``journal.lock``
(the writer's ``flock``; readers ignore it). A segment is a 16-byte segment header
(``BAEJ``, format version, entry header size, first seq) followed by entries::

    entry header, 32 bytes little-endian:
      magic "BJ"  version u8  flags u8  payload length u32  seq u64  ts_us i64
      crc u32 (CRC-32 of the payload)  hcrc u32 (CRC-32 of the 28 bytes before it)
    payload: the 32-byte protocol header, then the body bytes

The header checksum means a damaged length field is detected as damage instead of being
mistaken for a torn tail (which would truncate good entries after it). A segment is
rolled when it passes ``segment_bytes`` (it may exceed it by one entry).

Damage on open: only the last segment can have been cut short by a kill or a power loss.
A defect there (incomplete entry, bad checksum) with no intact entry anywhere after it is
a torn tail: it is truncated and logged. A defect followed by an intact entry is
corruption: ``StoreError``, and nothing is modified. Readers apply the same rule and
stop at a torn tail; a defect in any earlier segment is always ``StoreError``.

Threads: one writer (the event loop thread) owns a ``Journal``; readers (``read_from``,
``iter_records``) may run in other threads or processes on what was flushed.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bae_core import errors, wire
from bae_core.errors import SchemaMismatch, StoreError

log = logging.getLogger("bae.journal")

SEG_MAGIC = b"BAEJ"
FORMAT_VERSION = 1
SEG_HEADER = struct.Struct("<4sHHQ")  # magic version entry_header_size first_seq
SEG_HEADER_SIZE = SEG_HEADER.size  # 16
ENTRY_MAGIC = b"BJ"
ENTRY = struct.Struct("<2sBBIQqII")  # magic version flags length seq ts_us crc hcrc
ENTRY_SIZE = ENTRY.size  # 32
_ENTRY28 = struct.Struct("<2sBBIQqI")  # the part hcrc covers
_U32 = struct.Struct("<I")
SUFFIX = ".bjl"
LOCK_NAME = "journal.lock"
_SEG_NAME = re.compile(r"^(\d{20})\.bjl$")
_MAX_PAYLOAD = 0xFFFFFFFF
_NOSPACE = (errno.ENOSPC, errno.EDQUOT)

_crc32 = zlib.crc32  # 4.4 GB/s here: 11 us per 48 KiB frame, ~5% of the append budget


class JournalFull(StoreError):
    """The disk holding the journal is full. Nothing flushed before is damaged; the
    entries not written stay buffered and the next ``flush`` writes them."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def _now_us() -> int:
    return time.time_ns() // 1000


def _as_bytes_view(buf) -> memoryview:
    mv = memoryview(buf.buffer if hasattr(buf, "buffer") else buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def list_segments(path: str | os.PathLike) -> list[int]:
    """First sequence numbers of the segments in ``path``, sorted. Raises
    ``SchemaMismatch`` when the folder holds anything else."""
    segs, foreign = [], []
    for name in os.listdir(path):
        m = _SEG_NAME.match(name)
        if m:
            segs.append(int(m.group(1)))
        elif name != LOCK_NAME:
            foreign.append(name)
    if foreign:
        raise SchemaMismatch(f"{path} holds files that are not BAE journal segments "
                             f"({', '.join(sorted(foreign)[:3])}); point the journal at an "
                             "empty folder or at a BAE journal")
    segs.sort()
    return segs


def _check_seg_header(p: Path, head: bytes, first: int) -> None:
    magic, version, esize, fseq = SEG_HEADER.unpack_from(head)
    if magic != SEG_MAGIC:
        raise SchemaMismatch(f"{p} is not a BAE journal segment (starts with {magic!r}); "
                             "point the journal at an empty folder or at a BAE journal")
    if version != FORMAT_VERSION or esize != ENTRY_SIZE:
        raise SchemaMismatch(f"{p} is journal format {version}, this BAE reads format "
                             f"{FORMAT_VERSION}: run the BAE version that wrote it, or move "
                             "the folder away")
    if fseq != first:
        raise StoreError(f"{p} says it starts at seq {fseq} but is named for seq {first}: "
                         "it was renamed or is corrupt; move the journal folder away and "
                         "restart (the events after the last checkpoint are then lost)")


def _corrupt(p: Path, offset: int, seq: int, what: str) -> StoreError:
    return StoreError(f"journal segment {p} is corrupt at byte {offset} (entry seq {seq}: "
                      f"{what}) and intact entries follow it, so it is not a torn tail; "
                      "nothing was modified. Move the journal folder away and restart "
                      "(a new journal starts; the events after the last checkpoint are "
                      "then lost), and check the disk")


def _entry_header_ok(buf, off: int = 0) -> bool:
    """Whether ``buf[off:off+32]`` is an intact entry header (magic, version, hcrc)."""
    return (buf[off:off + 2] == ENTRY_MAGIC and buf[off + 2] == FORMAT_VERSION
            and _crc32(buf[off:off + 28]) == _U32.unpack_from(buf, off + 28)[0])


def _intact_entry_after(data: bytes, start: int) -> int | None:
    """Offset of the first intact entry header at or after ``start``, or None."""
    i = data.find(ENTRY_MAGIC, start)
    while i != -1 and i + ENTRY_SIZE <= len(data):
        if _entry_header_ok(data, i):
            return i
        i = data.find(ENTRY_MAGIC, i + 1)
    return None


def _walk(data: bytes, pos: int, seq: int) -> tuple[int, int, int | None, str | None]:
    """Check the entries of a segment image from ``pos``. Returns (offset after the last
    intact entry, its seq + 1, its ts_us or None, why the walk stopped or None at EOF)."""
    size = len(data)
    data = memoryview(data)
    last_ts = None
    while pos < size:
        if size - pos < ENTRY_SIZE:
            return pos, seq, last_ts, "incomplete entry header"
        if not _entry_header_ok(data, pos):
            return pos, seq, last_ts, "bad entry header checksum"
        _, _, _, n, eseq, ts, crc, _ = ENTRY.unpack_from(data, pos)
        if eseq != seq or n < wire.HEADER_SIZE:
            return pos, seq, last_ts, f"entry says seq {eseq} length {n}, expected seq {seq}"
        end = pos + ENTRY_SIZE + n
        if end > size:
            return pos, seq, last_ts, "incomplete payload"
        if _crc32(data[pos + ENTRY_SIZE:end]) != crc:
            return pos, seq, last_ts, "bad payload checksum"
        pos, seq, last_ts = end, seq + 1, ts
    return pos, seq, last_ts, None


class _Chunk:
    """Buffered bytes bound for one segment. ``ends``: offset in ``buf`` after each
    entry; ``hdr``: bytes of segment header at the front (a segment still to create)."""

    __slots__ = ("seg", "buf", "ends", "seq0", "hdr")

    def __init__(self, seg: int, seq0: int, create: bool):
        self.seg, self.seq0 = seg, seq0
        self.buf = bytearray(SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, ENTRY_SIZE, seg)
                             if create else b"")
        self.hdr = len(self.buf)
        self.ends: list[int] = []


class Journal:
    """The writer of one journal folder (held with an exclusive ``flock``)."""

    def __init__(self, path: str | os.PathLike, *, segment_bytes: int = 64 << 20,
                 retention_s: float = 7 * 86400, retention_bytes: int = 10 << 30,
                 fsync: bool = False, first_seq: int = 0):
        """Open (creating it if needed) the journal in ``path`` and resume after its last
        intact entry. ``first_seq`` numbers the first entry of a new, empty journal."""
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self.path = Path(path)
        self.segment_bytes = int(segment_bytes)
        self.retention_s = float(retention_s)
        self.retention_bytes = int(retention_bytes)
        self.fsync = bool(fsync)
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._chunks: list[_Chunk] = []
        self._cur: _Chunk | None = None  # the chunk appends go to
        self._last_ts: dict[int, int | None] = {}  # sealed segment -> ts of its last entry
        self._unsynced = False
        self._broken: str | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create journal folder {self.path}: {e.strerror}; "
                             "choose a writable folder") from e
        segs = list_segments(self.path)  # before writing anything there
        self._lock()
        try:
            if segs:
                self._resume(segs[-1])
            else:
                self._create_first(int(first_seq))
        except BaseException:
            self._release()
            raise

    # ---- opening ---------------------------------------------------------------------
    def _lock(self) -> None:
        p = self.path / LOCK_NAME
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot create {p}: {e.strerror}; choose a writable "
                             "journal folder") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise StoreError(f"journal {self.path} is open for writing by another process "
                             "(its journal.lock is held): stop that daemon or give this "
                             "one another data folder") from e
        self._lock_fd = fd

    def _release(self) -> None:
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                os.close(fd)

    def _create_first(self, seq: int) -> None:
        p = self.path / segment_name(seq)
        head = SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, ENTRY_SIZE, seq)
        self._next = self._flushed = seq
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                         | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise self._error(e, f"creating {p}", 0) from e
        try:
            if os.write(fd, head) != len(head):
                raise OSError(errno.ENOSPC, "short write")
            if self.fsync:
                os.fsync(fd)
                self._fsync_dir()
        except OSError as e:
            os.close(fd)
            os.unlink(p)
            raise self._error(e, f"creating {p}", 0) from e
        self._fd, self._seg, self._size = fd, seq, len(head)
        self._next = self._flushed = seq
        self._tail_seg, self._tail_size, self._tail_count, self._tail_ts = seq, len(head), 0, None

    def _resume(self, first: int) -> None:
        p = self.path / segment_name(first)
        data = p.read_bytes()
        head = SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, ENTRY_SIZE, first)
        if len(data) < SEG_HEADER_SIZE:
            if not head.startswith(data):
                raise StoreError(f"journal segment {p} is {len(data)} bytes of something "
                                 "else; move the journal folder away and restart (the events "
                                 "after the last checkpoint are then lost)")
            log.warning("journal segment %s was cut short while being created (%d bytes); "
                        "rewriting its header", p, len(data))
            with open(p, "r+b") as f:
                f.write(head)
                f.truncate(len(head))
                if self.fsync:
                    os.fsync(f.fileno())
            data = head
        _check_seg_header(p, data, first)
        end, seq, last_ts, why = _walk(data, SEG_HEADER_SIZE, first)
        if why is not None:
            if why.startswith("entry says") or _intact_entry_after(data, end + 1) is not None:
                raise _corrupt(p, end, seq, why)
            log.warning("journal segment %s ends in a torn entry at byte %d (seq %d: %s), "
                        "as a kill or power loss mid-write leaves; truncating %d bytes",
                        p, end, seq, why, len(data) - end)
            with open(p, "r+b") as f:
                f.truncate(end)
                if self.fsync:
                    os.fsync(f.fileno())
        self._fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._seg, self._size = first, end
        self._next = self._flushed = seq
        self._tail_seg, self._tail_size = first, end
        self._tail_count, self._tail_ts = seq - first, last_ts

    # ---- writing ---------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The sequence number the next ``append`` gets."""
        return self._next

    @property
    def flushed_seq(self) -> int:
        """Entries below this sequence number have reached the OS."""
        return self._flushed

    def append(self, header, body, ts_us: int | None = None) -> int:
        """Buffer one message (32-byte protocol header and body; bytes, memoryview or zmq
        Frame, copied). Returns its journal sequence number. No system call."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        h = _as_bytes_view(header)
        b = _as_bytes_view(body)
        if h.nbytes != wire.HEADER_SIZE:
            raise ValueError(f"protocol header is {h.nbytes} bytes, not {wire.HEADER_SIZE}")
        n = wire.HEADER_SIZE + b.nbytes
        if n > _MAX_PAYLOAD:
            raise ValueError(f"message of {n} bytes is too large for the journal")
        ts = _now_us() if ts_us is None else int(ts_us)
        seq = self._next
        ch = self._cur
        if self._tail_size >= self.segment_bytes and self._tail_count:
            self._last_ts[self._tail_seg] = self._tail_ts
            ch = self._cur = _Chunk(seq, seq, True)
            self._chunks.append(ch)
            self._tail_seg, self._tail_size, self._tail_count = seq, ch.hdr, 0
        elif ch is None:
            ch = self._cur = _Chunk(self._tail_seg, seq, False)
            self._chunks.append(ch)
        e28 = _ENTRY28.pack(ENTRY_MAGIC, FORMAT_VERSION, 0, n, seq, ts, _crc32(b, _crc32(h)))
        buf = ch.buf
        buf += e28
        buf += _U32.pack(_crc32(e28))
        buf += h
        buf += b
        ch.ends.append(len(buf))
        self._next = seq + 1
        self._tail_size += ENTRY_SIZE + n
        self._tail_count += 1
        self._tail_ts = ts
        return seq

    def flush(self) -> int:
        """Write everything appended so far to the OS (and fsync it when ``fsync``).
        Returns the next sequence number: every entry below it is durable. Raises
        ``JournalFull`` on a full disk (``StoreError`` on another IO error); the entries not
        written stay buffered for the next call."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        if self._broken:
            raise StoreError(self._broken)
        while self._chunks:
            self._write(self._chunks[0])
            ch = self._chunks.pop(0)
            if ch is self._cur:
                self._cur = None
        if self.fsync and self._unsynced:
            try:
                os.fsync(self._fd)
            except OSError as e:
                raise self._error(e, f"fsync of {self._seg_path(self._seg)}", 0) from e
            self._unsynced = False
        return self._flushed

    def _seg_path(self, seg: int) -> Path:
        return self.path / segment_name(seg)

    def _write(self, ch: _Chunk) -> None:
        create = ch.hdr > 0
        p = self._seg_path(ch.seg)
        if create:
            if self.fsync and self._unsynced:  # the old segment is durable before the new
                try:
                    os.fsync(self._fd)
                except OSError as e:
                    raise self._error(e, f"fsync of {self._seg_path(self._seg)}", 0) from e
                self._unsynced = False
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                             | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise self._error(e, f"creating {p}", 0) from e
            base = 0
        else:
            fd, base = self._fd, self._size
        written, err = 0, None
        with memoryview(ch.buf) as mv:
            try:
                while written < len(mv):
                    w = os.write(fd, mv[written:])
                    if w <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written += w
            except OSError as e:
                err = e
        if err is None:
            keep, k = written, len(ch.ends)
        else:  # keep the whole entries that were written, drop a partial one
            k = bisect.bisect_right(ch.ends, written)
            keep = ch.ends[k - 1] if k else (ch.hdr if written >= ch.hdr else 0)
            try:
                os.ftruncate(fd, base + keep)
            except OSError as e2:
                self._broken = (f"journal segment {p} could not be cut back after a failed "
                                f"write ({e2.strerror}); restart the daemon (the torn tail "
                                "is truncated on open)")
                raise StoreError(self._broken) from err
            if create and keep == 0:
                os.close(fd)
                try:
                    os.unlink(p)
                except OSError:
                    pass  # an empty segment file is recreated by the retry
                raise self._error(err, f"writing {p}", 0) from err
        if create:  # the new segment exists: it becomes the one written to
            os.close(self._fd)
            self._fd, self._seg = fd, ch.seg
            if self.fsync:
                self._fsync_dir()
        self._size = base + keep
        self._unsynced = self._unsynced or keep > 0
        if err is None:
            self._flushed = ch.seq0 + k
            return
        del ch.buf[:keep]
        ch.ends = [e - keep for e in ch.ends[k:]]
        ch.seq0 += k
        ch.hdr = 0
        self._flushed = ch.seq0
        raise self._error(err, f"writing {p}", k) from err

    def _error(self, e: OSError, doing: str, written: int) -> StoreError:
        pending = self._next - self._flushed - written
        if e.errno in _NOSPACE:
            return JournalFull(f"journal disk full while {doing}: {pending} entries stay in "
                               "memory and are written by the next flush; free space on "
                               f"the disk holding {self.path} or lower the journal retention")
        return StoreError(f"journal IO error while {doing}: {e.strerror}; {pending} entries "
                          "stay in memory and are retried by the next flush; check the disk")

    def _fsync_dir(self) -> None:
        dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # ---- reading, retention, stats ---------------------------------------------------
    def read_from(self, seq: int) -> Iterator[tuple[int, int, bytes, bytes]]:
        """``(seq, ts_us, header, body)`` of every entry from ``seq`` up to what was
        flushed when called, in order across segments. Raises ``StoreError`` when entries
        from ``seq`` on were already deleted by retention."""
        segs = list_segments(self.path)
        stop = self._flushed
        if seq < stop and seq < segs[0]:
            raise StoreError(f"journal entries from seq {seq} are gone (retention deleted "
                             f"them; the oldest kept is {segs[0]}): read from {segs[0]} to "
                             "get what is left")
        return _iter_entries(self.path, seq, stop, strict=True)

    def retain(self, keep_from_seq: int, now_us: int | None = None) -> int:
        """Delete the oldest whole segments whose last entry is older than ``retention_s``,
        or while the folder is over ``retention_bytes``; never one holding an entry with
        seq >= ``keep_from_seq`` (recovery needs it) nor the segment being written.
        Returns the number of segments deleted."""
        now = _now_us() if now_us is None else int(now_us)
        segs = list_segments(self.path)
        sizes = {s: self._seg_path(s).stat().st_size for s in segs}
        total = sum(sizes.values())
        deleted, blocked = 0, None
        for i, s in enumerate(segs):
            if s >= self._seg:
                break
            nxt = segs[i + 1]
            ts = self._segment_last_ts(s)
            aged = ts is None or now - ts > self.retention_s * 1e6
            over = total > self.retention_bytes
            if not (aged or over):
                break
            if nxt > keep_from_seq:
                blocked = (s, "age" if aged else "size")
                break
            self._seg_path(s).unlink()
            self._last_ts.pop(s, None)
            total -= sizes[s]
            deleted += 1
        if blocked:
            log.warning("journal retention by %s is exceeded (%d bytes in %s) but segment "
                        "%d holds entries at or after seq %d, which the last checkpoint "
                        "needs for recovery; it is kept. Check that checkpoints succeed",
                        blocked[1], total, self.path, blocked[0], keep_from_seq)
        return deleted

    def _segment_last_ts(self, s: int) -> int | None:
        if s not in self._last_ts:
            self._last_ts[s] = _last_entry_ts(self._seg_path(s))
        return self._last_ts[s]

    def stats(self) -> dict:
        segs = list_segments(self.path)
        size = sum(self._seg_path(s).stat().st_size for s in segs)
        oldest = None
        for s in segs:
            oldest = _first_entry_ts(self._seg_path(s))
            if oldest is not None:
                break
        first = segs[0] if segs and segs[0] < self._flushed else self._flushed
        return {
            "segments": len(segs), "bytes": size,
            "buffered_bytes": sum(len(c.buf) for c in self._chunks),
            "first_seq": first, "next_seq": self._next, "flushed_seq": self._flushed,
            "oldest_ts_us": oldest,
            "oldest_age_s": None if oldest is None else (_now_us() - oldest) / 1e6,
        }

    def close(self) -> None:
        """Flush and close. If the flush fails the journal is still closed (the buffered
        entries are lost, and counted in the log) and the error is raised."""
        if self._fd is None:
            return
        try:
            self.flush()
        except StoreError:
            log.error("journal %s closed with %d entries not written", self.path,
                      self._next - self._flushed)
            raise
        finally:
            self._release()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_entry_ts(p: Path) -> int | None:
    try:
        with open(p, "rb") as f:
            f.seek(SEG_HEADER_SIZE)
            eh = f.read(ENTRY_SIZE)
    except FileNotFoundError:
        return None
    if len(eh) < ENTRY_SIZE or not _entry_header_ok(eh):
        return None
    return ENTRY.unpack(eh)[5]


def _last_entry_ts(p: Path) -> int | None:
    """ts_us of the last intact entry of a sealed segment (walks the entry headers)."""
    last = None
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = SEG_HEADER_SIZE
        while pos + ENTRY_SIZE <= size:
            f.seek(pos)
            eh = f.read(ENTRY_SIZE)
            if len(eh) < ENTRY_SIZE or not _entry_header_ok(eh):
                break
            n, ts = ENTRY.unpack(eh)[3], ENTRY.unpack(eh)[5]
            if pos + ENTRY_SIZE + n > size:
                break
            last, pos = ts, pos + ENTRY_SIZE + n
    return last


def _iter_entries(path: Path, from_seq: int = 0, stop_seq: int | None = None,
                  strict: bool = False) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Entries ``(seq, ts_us, header, body)`` with from_seq <= seq < stop_seq, verified.
    Stops at the last complete entry of the last segment (the tail a writer may be
    appending to, or a torn tail). ``strict``: a segment deleted under the reader is an
    error (else the reader continues at the oldest one left)."""
    path = Path(path)
    segs = list_segments(path)
    if not segs:
        return
    i = max(bisect.bisect_right(segs, from_seq) - 1, 0)
    expect = None  # the seq the next segment must start at
    while True:
        first = segs[i]
        p = path / segment_name(first)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            if strict:
                raise StoreError(f"journal segment {p} was deleted while being read "
                                 "(retention); read again from a later seq") from None
            segs = list_segments(path)  # continue at the oldest segment left
            i = bisect.bisect_right(segs, first)
            while i + 1 < len(segs) and segs[i + 1] <= from_seq:
                i += 1
            if i >= len(segs):
                return
            expect = None
            continue
        with f:
            head = f.read(SEG_HEADER_SIZE)
            if len(head) < SEG_HEADER_SIZE:
                segs = list_segments(path)
                if segs[-1] == first:
                    return  # being created, or a torn creation the writer repairs
                raise StoreError(f"journal segment {p} is cut short; move the journal "
                                 "folder away and restart")
            _check_seg_header(p, head, first)
            if expect is not None and first != expect:
                if not strict and first > expect and segs[0] == first:
                    log.warning("journal entries %d..%d were deleted by retention while "
                                "being read; reading goes on at %d", expect, first - 1, first)
                    expect = None
            if expect is not None and first != expect:
                raise StoreError(f"journal has a gap: entries {expect}..{first - 1} are "
                                 f"missing before {p}; move the journal folder away and "
                                 "restart (the events after the last checkpoint are then lost)")
            seq, rechecked = first, False
            while True:
                if stop_seq is not None and seq >= stop_seq:
                    return
                pos = f.tell()
                eh = f.read(ENTRY_SIZE)
                ok = len(eh) == ENTRY_SIZE
                why = None if ok else ("incomplete entry header" if eh else None)
                if ok:
                    if not _entry_header_ok(eh):
                        why = "bad entry header checksum"
                    else:
                        _, _, _, n, eseq, ts, crc, _ = ENTRY.unpack(eh)
                        if eseq != seq or n < wire.HEADER_SIZE:
                            raise _corrupt(p, pos, seq, f"entry says seq {eseq} length {n}")
                        if seq < from_seq:
                            if pos + ENTRY_SIZE + n <= os.fstat(f.fileno()).st_size:
                                f.seek(pos + ENTRY_SIZE + n)
                                seq += 1
                                continue
                            ok, why = False, "incomplete payload"
                        else:
                            mh = f.read(wire.HEADER_SIZE)
                            body = f.read(n - wire.HEADER_SIZE)
                            if len(mh) + len(body) < n:
                                ok, why = False, "incomplete payload"
                            elif _crc32(body, _crc32(mh)) != crc:
                                why = "bad payload checksum"
                            else:
                                yield seq, ts, mh, body
                                seq += 1
                                rechecked = False
                                continue
                # no further intact entry at pos (clean end, incomplete or damaged)
                segs = list_segments(path)
                later = segs[-1] > first
                if why in ("bad entry header checksum", "bad payload checksum"):
                    f.seek(0)
                    data = f.read()
                    if later or _intact_entry_after(data, pos + 1) is not None:
                        raise _corrupt(p, pos, seq, why)
                    log.warning("journal segment %s ends in a torn entry at byte %d (seq %d:"
                                " %s); reading stops there", p, pos, seq, why)
                    return
                if not later:
                    return  # the tail: a writer may still be appending
                if not rechecked:  # the writer rolled: this segment is complete now
                    rechecked = True
                    f.seek(pos)
                    continue
                if why is not None:
                    raise _corrupt(p, pos, seq, why + " in a sealed segment")
                break
        expect = seq
        i = bisect.bisect_right(segs, first)


def iter_records(path: str | os.PathLike, from_seq: int = 0,
                 types: Iterable[int] | None = None
                 ) -> Iterator[tuple[int, wire.Header, np.ndarray]]:
    """``(seq, header, records)`` of each journal entry from ``from_seq`` (or the oldest
    one kept), records decoded by ``wire.decode`` (read-only zero-copy arrays), keeping
    only message ``types`` when given. Read-only; safe on a journal another process is
    appending to (stops at its last complete entry)."""
    want = None if types is None else frozenset(int(t) for t in types)
    accept = frozenset(wire.MsgType)
    for seq, _ts, mh, body in _iter_entries(Path(path), from_seq):
        if want is not None and int.from_bytes(mh[6:8], "little") not in want:
            continue
        try:
            hdr, recs = wire.decode([mh, body], max_records=_MAX_PAYLOAD, accept=accept)
        except errors.WireError as e:
            raise StoreError(f"journal entry {seq} in {path} is not a protocol v1 message "
                             f"({e}); it was written by another program or a newer BAE"
                             ) from e
        yield seq, hdr, recs
