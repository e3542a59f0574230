"""Tests of daemon/journal.py: the write-ahead event journal, on real files.

Covers the round trip across segments, resume, torn tails at every byte offset of the
last entry (what a SIGKILL or power loss mid-write leaves), corruption in the middle of a
segment, foreign folders, retention by age and size (never past the recovery position),
readers in this and in another process, a full disk (a 1 MiB tmpfs), and decoding to
numpy records.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bae_core import wire
from bae_core.errors import SchemaMismatch, StoreError
from bae_core.wire import MsgType
from daemon import journal as jm
from daemon.journal import Journal, JournalFull, iter_records, list_segments

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000  # µs


def message(i: int, n: int = 4, mtype: MsgType = MsgType.REQUEST) -> tuple[bytes, bytes]:
    """Message ``i``: ``n`` records whose ids derive from ``i`` (protocol sequence = i)."""
    recs = np.zeros(n, wire.DTYPES[mtype])
    if mtype == MsgType.REQUEST:
        recs["user"] = i * 100_000 + np.arange(n)
        recs["ts_us"] = T0 + i
        recs["latency_ms"] = i % 97
    elif mtype == MsgType.METRIC:
        recs["service"] = i
        recs["cpu"] = np.arange(n) / 10
    elif mtype == MsgType.PROFILE:
        recs["user"] = i + np.arange(n)
        recs["tier"] = 1
    h, b = wire.encode(mtype, recs, producer=1, sequence=i)
    return h, b


def messages(count: int, start: int = 0, n=lambda i: 1 + i % 7) -> list[tuple[bytes, bytes]]:
    return [message(i, n(i)) for i in range(start, start + count)]


def entries(path, from_seq: int = 0) -> list[tuple[int, bytes, bytes]]:
    """Every entry a fresh reader sees, as (seq, header, body)."""
    return [(s, h, b) for s, _ts, h, b in jm._iter_entries(Path(path), from_seq)]


def expect(msgs, first: int = 0) -> list[tuple[int, bytes, bytes]]:
    return [(first + k, h, b) for k, (h, b) in enumerate(msgs)]


def write(path, msgs, **kw) -> Journal:
    j = Journal(path, **kw)
    for h, b in msgs:
        j.append(h, b)
    j.flush()
    return j


def seg_files(path) -> list[Path]:
    return [Path(path) / jm.segment_name(s) for s in list_segments(path)]


def snapshot(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir())}


# ---- round trip, resume ----------------------------------------------------------------
def test_round_trip_across_segments(tmp_path):
    msgs = messages(300)
    with write(tmp_path / "j", msgs, segment_bytes=4096) as j:
        assert j.next_seq == j.flushed_seq == 300
        assert [(s, h, b) for s, _ts, h, b in j.read_from(0)] == expect(msgs)
        assert [s for s, *_ in j.read_from(123)] == list(range(123, 300))
        st = j.stats()
    segs = list_segments(tmp_path / "j")
    assert len(segs) >= 5 and st["segments"] == len(segs)
    assert st["first_seq"] == 0 and st["next_seq"] == 300
    assert st["bytes"] == sum(p.stat().st_size for p in seg_files(tmp_path / "j"))
    assert 0 <= st["oldest_age_s"] < 60
    # each file is named by the seq of its first entry, 20 digits, and rolled past 4096
    names = sorted(p.name for p in (tmp_path / "j").glob("*.bjl"))
    assert names[0] == "00000000000000000000.bjl"
    got = entries(tmp_path / "j")
    for a, b in zip(segs, segs[1:]):
        size = (tmp_path / "j" / jm.segment_name(a)).stat().st_size
        last = max(len(h) + len(body) for s, h, body in got if a <= s < b) + jm.ENTRY_SIZE
        assert 4096 <= size < 4096 + last
    assert got == expect(msgs)


def test_resume_appends_after_last_entry(tmp_path):
    first, second = messages(10), messages(5, start=10)
    write(tmp_path, first, segment_bytes=1024).close()
    with Journal(tmp_path, segment_bytes=1024) as j:
        assert j.next_seq == j.flushed_seq == 10
        assert [j.append(h, b) for h, b in second] == list(range(10, 15))
        assert j.flush() == 15
    assert entries(tmp_path) == expect(first + second)
    with Journal(tmp_path) as j:
        assert j.next_seq == 15


def test_new_journal_can_start_at_a_given_seq(tmp_path):
    with Journal(tmp_path, first_seq=1000) as j:
        assert j.append(*message(0)) == 1000
    assert list_segments(tmp_path) == [1000]
    with Journal(tmp_path, first_seq=5) as j:  # ignored for an existing journal
        assert j.next_seq == 1001


def test_a_second_writer_is_refused(tmp_path):
    with Journal(tmp_path) as j:
        j.append(*message(0))
        with pytest.raises(StoreError, match="another process"):
            Journal(tmp_path)
    with Journal(tmp_path) as j:
        assert j.next_seq == 1


def test_fsync_mode_round_trip(tmp_path):
    msgs = messages(50)
    with write(tmp_path, msgs, segment_bytes=1024, fsync=True) as j:
        assert j.flush() == 50
    assert entries(tmp_path) == expect(msgs)


def test_append_accepts_memoryviews_and_copies(tmp_path):
    h, b = message(3, 10)
    body = bytearray(b)
    with Journal(tmp_path) as j:
        j.append(memoryview(h), memoryview(body))
        body[:] = bytes(len(body))  # the caller reuses its buffer
        j.flush()
        with pytest.raises(ValueError, match="32"):
            j.append(h[:20], b)
    assert entries(tmp_path) == [(0, h, b)]


# ---- torn tails (SIGKILL / power loss mid-write) ---------------------------------------
def _torn_copy(src: Path, dst: Path, cut: int) -> Path:
    shutil.copytree(src, dst)
    last = seg_files(dst)[-1]
    with open(last, "r+b") as f:
        f.truncate(cut)
    return last


def test_torn_tail_at_every_offset_of_the_last_entry(tmp_path, caplog):
    msgs = messages(12, n=lambda i: 3)
    src = tmp_path / "src"
    write(src, msgs, segment_bytes=600).close()
    segs = list_segments(src)
    assert len(segs) >= 3 and 12 - segs[-1] >= 2, "the last segment holds several entries"
    size = seg_files(src)[-1].stat().st_size
    entry = jm.ENTRY_SIZE + len(msgs[-1][0]) + len(msgs[-1][1])
    extra = message(99, 2)
    for cut in range(size - entry, size):
        dst = tmp_path / f"cut{cut}"
        last = _torn_copy(src, dst, cut)
        assert entries(dst) == expect(msgs[:11]), "a reader stops at the last whole entry"
        assert last.stat().st_size == cut, "readers never modify"
        caplog.clear()
        with caplog.at_level(logging.WARNING, "bae.journal"):
            j = Journal(dst, segment_bytes=600)
        assert j.next_seq == j.flushed_seq == 11, cut
        assert last.stat().st_size == size - entry, "the torn entry was cut off"
        assert (cut > size - entry) == any("torn" in r.message for r in caplog.records)
        assert j.append(*extra) == 11
        j.close()
        with Journal(dst) as j:
            assert j.next_seq == 12
        assert entries(dst) == expect(msgs[:11] + [extra]), cut
        shutil.rmtree(dst)


def test_torn_creation_of_a_new_segment(tmp_path, caplog):
    """Killed while the first entry of a fresh segment (or its header) was written."""
    src = tmp_path / "src"
    j = write(src, messages(6), segment_bytes=500)
    while list_segments(src)[-1] != j.next_seq - 1:  # until the last segment holds one
        j.append(*message(j.next_seq))
        j.flush()
    first = j.next_seq - 1
    j.close()
    size = seg_files(src)[-1].stat().st_size
    for cut in range(0, size):
        dst = tmp_path / f"cut{cut}"
        _torn_copy(src, dst, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "bae.journal"):
            with Journal(dst) as j:
                assert j.next_seq == first, cut
                assert j.append(*message(first, 9)) == first
        created = any("cut short while being created" in r.message for r in caplog.records)
        assert created == (cut < jm.SEG_HEADER_SIZE), cut
        assert entries(dst)[-1] == (first, *message(first, 9))
        assert [s for s, *_ in entries(dst)] == list(range(first + 1))
        shutil.rmtree(dst)


def test_bad_checksum_of_the_last_entry_is_a_torn_tail(tmp_path, caplog):
    msgs = messages(8)
    write(tmp_path, msgs).close()
    last = seg_files(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-1] ^= 0x40  # power loss left garbage in the last block
    last.write_bytes(bytes(data))
    assert [s for s, *_ in entries(tmp_path)] == list(range(7)), "readers stop before it"
    with caplog.at_level(logging.WARNING, "bae.journal"):
        with Journal(tmp_path) as j:
            assert j.next_seq == 7
    assert any("torn" in r.message for r in caplog.records)
    assert entries(tmp_path) == expect(msgs[:7])


# ---- corruption in the middle ----------------------------------------------------------
def _entry_offsets(seg: Path) -> list[int]:
    data, pos, out = seg.read_bytes(), jm.SEG_HEADER_SIZE, []
    while pos < len(data):
        out.append(pos)
        pos += jm.ENTRY_SIZE + jm.ENTRY.unpack_from(data, pos)[3]
    return out


@pytest.mark.parametrize("where", ["body", "length", "seq", "protocol_header"])
def test_flipped_byte_mid_segment_raises_and_modifies_nothing(tmp_path, where):
    write(tmp_path, messages(10)).close()
    seg = seg_files(tmp_path)[0]
    off = _entry_offsets(seg)[3]
    at = {"body": off + jm.ENTRY_SIZE + wire.HEADER_SIZE + 5, "length": off + 4,
          "seq": off + 8, "protocol_header": off + jm.ENTRY_SIZE + 1}[where]
    data = bytearray(seg.read_bytes())
    data[at] ^= 0x01
    seg.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="corrupt.*Move the journal folder away"):
        Journal(tmp_path)
    assert snapshot(tmp_path) == before
    with pytest.raises(StoreError, match="corrupt"):
        list(iter_records(tmp_path))
    assert snapshot(tmp_path) == before


def test_corruption_in_a_sealed_segment_stops_readers(tmp_path):
    msgs = messages(40)
    write(tmp_path, msgs, segment_bytes=700).close()
    seg = seg_files(tmp_path)[1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # last entry of a segment that is not the last one
    seg.write_bytes(bytes(data))
    with Journal(tmp_path) as j:  # opening scans the last segment only
        assert j.next_seq == 40
        it = j.read_from(0)
        with pytest.raises(StoreError, match="corrupt"):
            list(it)
    got = []
    with pytest.raises(StoreError, match="corrupt"):
        for seq, *_ in iter_records(tmp_path):
            got.append(seq)
    assert got == list(range(list_segments(tmp_path)[2] - 1))


def test_sealed_segment_cut_short_or_missing_stops_readers(tmp_path):
    write(tmp_path, messages(40), segment_bytes=700).close()
    segs = seg_files(tmp_path)
    size = segs[1].stat().st_size
    with open(segs[1], "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(StoreError, match="sealed segment"):
        list(iter_records(tmp_path))
    segs[1].unlink()
    with pytest.raises(StoreError, match="gap"):
        list(iter_records(tmp_path))
    with Journal(tmp_path) as j, pytest.raises(StoreError, match="gap"):
        list(j.read_from(0))


def test_segments_deleted_under_a_reader(tmp_path, caplog):
    """Retention deletes the oldest segments while readers are behind: a training reader
    (iter_records) goes on at the oldest segment left, recovery (read_from) fails."""
    msgs = messages(60)
    with write(tmp_path, msgs, segment_bytes=700) as j:
        segs = list_segments(tmp_path)
        lenient = iter_records(tmp_path)
        strict = j.read_from(0)
        assert next(lenient)[0] == 0 and next(strict)[0] == 0
        for s in segs[:3]:  # the segment being read (still open) and the next two
            (tmp_path / jm.segment_name(s)).unlink()
        with caplog.at_level(logging.WARNING, "bae.journal"):
            rest = [seq for seq, *_ in lenient]
        assert rest == list(range(1, segs[1])) + list(range(segs[3], 60))
        assert any("deleted by retention" in r.message for r in caplog.records)
        with pytest.raises(StoreError, match="gap"):
            list(strict)


# ---- foreign folders -------------------------------------------------------------------
def test_foreign_file_in_folder_raises_schema_mismatch(tmp_path):
    (tmp_path / "notes.txt").write_text("not a journal")
    with pytest.raises(SchemaMismatch, match="notes.txt"):
        Journal(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"], "nothing was written"
    with pytest.raises(SchemaMismatch):
        list(iter_records(tmp_path))


def test_segment_named_file_of_another_program_or_newer_format(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / jm.segment_name(0)).write_bytes(b"SQLite format 3\0" + bytes(100))
    with pytest.raises(SchemaMismatch, match="not a BAE journal segment"):
        Journal(a)
    b = tmp_path / "b"
    write(b, messages(3)).close()
    seg = seg_files(b)[0]
    data = bytearray(seg.read_bytes())
    data[4] = 2  # format version 2
    seg.write_bytes(bytes(data))
    before = snapshot(b)
    with pytest.raises(SchemaMismatch, match="format 2"):
        Journal(b)
    assert snapshot(b) == before


# ---- retention -------------------------------------------------------------------------
def _timed_journal(path, count=30, **kw) -> Journal:
    """Entry i appended at T0 + i seconds; about 3 entries per segment."""
    j = Journal(path, segment_bytes=400, **kw)
    for i in range(count):
        j.append(*message(i, 2), ts_us=T0 + i * 1_000_000)
    j.flush()
    return j


def _segment_ranges(path, next_seq):
    segs = list_segments(path)
    return list(zip(segs, segs[1:] + [next_seq]))


def test_retention_by_age_deletes_only_old_whole_segments(tmp_path, caplog):
    with _timed_journal(tmp_path, retention_s=10) as j:
        ranges = _segment_ranges(tmp_path, 30)
        assert len(ranges) >= 8
        now = T0 + 30 * 1_000_000  # entries 0..19 are older than 10 s
        keep = [r for r in ranges if r[1] - 1 >= 20]  # a segment whose last entry is new
        assert j.retain(keep_from_seq=30, now_us=now) == len(ranges) - len(keep)
        assert list_segments(tmp_path) == [r[0] for r in keep]
        assert [s for s, *_ in j.read_from(keep[0][0])] == list(range(keep[0][0], 30))
        with pytest.raises(StoreError, match="gone"):
            j.read_from(0)
        assert j.stats()["first_seq"] == keep[0][0]
        assert j.stats()["oldest_ts_us"] == T0 + keep[0][0] * 1_000_000
        assert j.retain(keep_from_seq=30, now_us=now) == 0
        caplog.clear()
        with caplog.at_level(logging.WARNING, "bae.journal"):  # the far future: all aged
            j.retain(keep_from_seq=30, now_us=now + 10**12)
        assert list_segments(tmp_path) == [ranges[-1][0]], "the active segment stays"
        assert not caplog.records
        j.append(*message(30, 2))
        assert j.flush() == 31
    assert entries(tmp_path)[-1][0] == 30


def test_retention_by_age_after_reopen(tmp_path):
    """The ages of segments written by an earlier process come from their entries."""
    _timed_journal(tmp_path, retention_s=10).close()
    ranges = _segment_ranges(tmp_path, 30)
    with Journal(tmp_path, segment_bytes=400, retention_s=10) as j:
        keep = [r for r in ranges if r[1] - 1 >= 20]
        assert j.retain(keep_from_seq=30, now_us=T0 + 30 * 1_000_000) == \
            len(ranges) - len(keep)
        assert list_segments(tmp_path) == [r[0] for r in keep]


def test_retention_never_deletes_what_recovery_needs(tmp_path, caplog):
    with _timed_journal(tmp_path, retention_s=1) as j:
        ranges = _segment_ranges(tmp_path, 30)
        keep_from = ranges[3][0] + 1  # inside the 4th segment
        with caplog.at_level(logging.WARNING, "bae.journal"):
            assert j.retain(keep_from_seq=keep_from, now_us=T0 + 10**12) == 3
        assert list_segments(tmp_path)[0] == ranges[3][0]
        assert any("needs for recovery" in r.message for r in caplog.records)
        assert [s for s, *_ in j.read_from(keep_from)] == list(range(keep_from, 30))
        keep_from = ranges[4][0]  # exactly the first entry of the 5th: the 4th may go
        assert j.retain(keep_from_seq=keep_from, now_us=T0 + 10**12) == 1
        assert list_segments(tmp_path)[0] == keep_from


def test_retention_by_size(tmp_path, caplog):
    with _timed_journal(tmp_path, retention_s=10**9, retention_bytes=2000) as j:
        ranges = _segment_ranges(tmp_path, 30)
        sizes = [p.stat().st_size for p in seg_files(tmp_path)]
        assert sum(sizes) > 2000
        assert j.retain(keep_from_seq=30, now_us=T0 + 31 * 10**6) > 0
        left = [p.stat().st_size for p in seg_files(tmp_path)]
        k = len(sizes) - len(left)
        assert left == sizes[k:], "oldest whole segments first"
        assert sum(left) <= 2000 < sum(sizes[k - 1:])
        assert list_segments(tmp_path)[0] == ranges[k][0]
        assert [s for s, *_ in j.read_from(ranges[k][0])] == list(range(ranges[k][0], 30))
        # a tiny budget deletes all but the active segment, unless recovery needs more
        j.retention_bytes = 0
        with caplog.at_level(logging.WARNING, "bae.journal"):
            j.retain(keep_from_seq=ranges[-3][0], now_us=T0 + 31 * 10**6)
        assert list_segments(tmp_path) == [r[0] for r in ranges[-3:]]
        assert any("by size" in r.message and "needs for recovery" in r.message
                   for r in caplog.records)
        j.retain(keep_from_seq=30, now_us=T0 + 31 * 10**6)
        assert list_segments(tmp_path) == [ranges[-1][0]]


# ---- readers ---------------------------------------------------------------------------
def test_read_from_while_appending_in_process(tmp_path):
    msgs = messages(30)
    with Journal(tmp_path, segment_bytes=500) as j:
        for h, b in msgs[:10]:
            j.append(h, b)
        assert list(j.read_from(0)) == []  # nothing flushed yet
        j.flush()
        it = j.read_from(0)
        assert next(it)[0] == 0
        for h, b in msgs[10:20]:  # appended and flushed while the reader is open
            j.append(h, b)
        j.flush()
        for h, b in msgs[20:]:
            j.append(h, b)  # buffered only
        assert [e[0] for e in it] == list(range(1, 10)), "up to what was flushed at the call"
        got = [(s, h, b) for s, _ts, h, b in j.read_from(5)]
        assert got == expect(msgs[5:20], 5)
        assert entries(tmp_path) == expect(msgs[:20]), "a plain reader sees what was flushed"
        j.flush()
        assert [e[0] for e in j.read_from(0)] == list(range(30))


READER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from daemon.journal import iter_records
    path, total = sys.argv[1], int(sys.argv[2])
    nxt, deadline = 0, time.monotonic() + 60
    while nxt < total and time.monotonic() < deadline:
        for seq, hdr, recs in iter_records(path, nxt):
            assert seq == nxt == hdr.sequence, (seq, nxt, hdr.sequence)
            assert (recs["user"] == seq * 100_000 + np.arange(len(recs))).all(), seq
            nxt += 1
        time.sleep(0.002)
    print(nxt)
""")


def test_reader_in_another_process_follows_the_writer(tmp_path):
    total = 600
    j = Journal(tmp_path, segment_bytes=8192)
    child = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), str(total)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        for i in range(total):
            j.append(*message(i, 1 + i % 40))
            if i % 7 == 6:
                j.flush()
        j.flush()
        out, err = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        j.close()
    assert child.returncode == 0, err
    assert int(out) == total
    assert len(list_segments(tmp_path)) > 10, "the reader crossed segment rolls"


# ---- full disk -------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted at the end. Failing to mount one fails the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("this test needs a 1 MiB tmpfs to fill (run as root, or with "
                    f"CAP_SYS_ADMIN): mount failed: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> None:
    """Write page-sized blocks to ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, b"\xff" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def test_disk_full_while_creating_a_segment(small_disk, tmp_path):
    jdir = small_disk / "j"
    j = Journal(jdir, segment_bytes=1)  # every entry rolls to a new segment
    sent = [message(0, 3)]
    j.append(*sent[0])
    j.flush()
    _fill(small_disk / "filler")
    sent.append(message(1, 3))
    j.append(*sent[1])
    with pytest.raises(JournalFull, match="creating|writing"):
        j.flush()
    assert list_segments(jdir) == [0], "no empty or partial segment is left behind"
    assert j.flushed_seq == 1 and entries(jdir) == expect(sent[:1])
    (small_disk / "filler").unlink()
    sent.append(message(2, 3))
    j.append(*sent[2])
    assert j.flush() == 3
    j.close()
    assert list_segments(jdir) == [0, 1, 2]
    assert entries(jdir) == expect(sent)


def test_disk_full_raises_journal_full_and_retry_loses_nothing(small_disk, tmp_path, caplog):
    mnt = small_disk
    assert issubclass(JournalFull, StoreError)
    filler = mnt / "filler"
    filler.write_bytes(b"\xff" * (300 << 10))
    jdir = mnt / "j"
    j = Journal(jdir, segment_bytes=100 << 10)
    sent = []
    with pytest.raises(JournalFull, match="disk full") as exc:
        for i in range(10_000):
            sent.append(message(i, 50 + i % 200))
            j.append(*sent[-1])
            if i % 5 == 4:
                j.flush()
    assert "free space" in str(exc.value)
    durable = j.flushed_seq
    assert 0 < durable < j.next_seq == len(sent)
    assert len(list_segments(jdir)) >= 3
    # what was flushed is intact and whole: no torn entry left behind on disk
    assert entries(jdir) == expect(sent[:durable])
    copy = tmp_path / "copy"
    shutil.copytree(jdir, copy, ignore=shutil.ignore_patterns(jm.LOCK_NAME))
    with caplog.at_level(logging.WARNING, "bae.journal"):
        with Journal(copy) as c:
            assert c.next_seq == durable
    assert not [r for r in caplog.records if "torn" in r.message]
    # still full: the retry fails the same way and keeps everything; appends go on
    with pytest.raises(JournalFull):
        j.flush()
    for i in range(len(sent), len(sent) + 20):
        sent.append(message(i, 30))
        j.append(*sent[-1])
    assert entries(jdir) == expect(sent[:j.flushed_seq])
    filler.unlink()  # space comes back
    assert j.flush() == len(sent)
    assert j.stats()["buffered_bytes"] == 0
    assert entries(jdir) == expect(sent), "no entry lost or duplicated"
    j.close()
    with Journal(jdir) as j:
        assert j.next_seq == len(sent)
    assert entries(jdir) == expect(sent)


# ---- decoding --------------------------------------------------------------------------
def test_iter_records_decodes_what_was_appended(tmp_path):
    kinds = [MsgType.REQUEST, MsgType.METRIC, MsgType.PROFILE, MsgType.NAME]
    sent = []
    with Journal(tmp_path, segment_bytes=2048) as j:
        for i in range(40):
            mtype = kinds[i % 4]
            if mtype == MsgType.NAME:
                recs = wire.make_names(wire.NameKind.SERVICE, [i, i + 1], [f"svc-{i}", "é"])
                h, b = wire.encode(mtype, recs, producer=2, sequence=i)
            else:
                h, b = message(i, 1 + i % 9, mtype)
            j.append(h, b)
            sent.append((mtype, h, b))
    got = list(iter_records(tmp_path))
    assert [s for s, _, _ in got] == list(range(40))
    for (seq, hdr, recs), (mtype, h, b) in zip(got, sent):
        assert hdr == wire.decode_header(h) and hdr.type == mtype
        assert recs.dtype == wire.DTYPES[mtype] and len(recs) == hdr.count
        assert recs.tobytes() == b
    metrics = list(iter_records(tmp_path, from_seq=10, types=[MsgType.METRIC]))
    assert [s for s, _, _ in metrics] == [13, 17, 21, 25, 29, 33, 37]
    assert all(h.type == MsgType.METRIC for _, h, _ in metrics)
    assert list(iter_records(tmp_path, from_seq=40)) == []
