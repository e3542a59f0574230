"""Event journal benchmarks (daemon/journal.py): append+flush and read-back throughput.

Run with ``.venv/bin/python -m pytest -q perf/test_journal.py --benchmark-only`` (or
``make bench``). The input is the shared stream of the ingest benchmarks: 2,000 frames of
1,024 REQUEST records (48 B each, so 48 KiB bodies), written to a fresh journal in
pytest's tmp folder (default 64 MiB segments, so every round also rolls a segment).

* test_append_flush[fsync-off-flush64]: ``append`` every frame, ``flush`` every 64 frames
  (written to the page cache: durable against a process kill). Target: well above
  5,000,000 events/s (``x_target`` = events/s over 5 M).
* test_append_flush[fsync-off-flush1]: ``flush`` after every frame, the daemon's cadence
  under light load (one frame per drained batch).
* test_append_flush[fsync-on-flush64]: ``fsync=True``, flush (= write + fsync) every 64
  frames (~3 MiB): durable against a machine crash; depends on the disk (``fs`` names it).
* test_read_back[entries|records]: ``Journal.read_from`` (verified raw entries) and
  ``iter_records`` (decoded to numpy record arrays) over the whole journal.

Each benchmark checks that the journal holds exactly what was appended.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import pytest

import workloads as wl

from bae_core import wire
from daemon.journal import Journal, iter_records

ROUNDS = 5
TARGET_EPS = 5_000_000


def _fs_type(path: Path) -> str:
    """The filesystem type holding ``path`` (longest mount point prefix)."""
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


def _check(path: Path, headers: list[bytes], bodies: list[bytes]) -> None:
    """The journal in ``path`` holds exactly the frames, in order."""
    n = 0
    with Journal(path) as j:
        for seq, _ts, h, b in j.read_from(0):
            assert seq == n and h == headers[n] and b == bodies[n], f"entry {seq} differs"
            n += 1
    assert n == len(bodies)


@pytest.mark.parametrize("fsync,every", [(False, 64), (False, 1), (True, 64)],
                         ids=["fsync-off-flush64", "fsync-off-flush1", "fsync-on-flush64"])
def test_append_flush(benchmark, report, stream, tmp_path, fsync, every):
    bodies = stream[1024]
    n, per = len(bodies), wl.RECORDS_PER_FRAME
    headers = wl.headers(n, per, producer=1)
    dirs = iter(tmp_path / f"r{i}" for i in range(1, 1 << 20))
    state: dict = {}
    times: list[float] = []

    def setup():
        if "dir" in state:
            shutil.rmtree(state["dir"])
        state["dir"] = d = next(dirs)
        state["journal"] = Journal(d, fsync=fsync)
        return (state["journal"],), {}

    def run(j: Journal):
        t0 = time.perf_counter()
        append, flush = j.append, j.flush
        for i in range(n):
            append(headers[i], bodies[i])
            if i % every == every - 1:
                flush()
        last = flush()
        times.append(time.perf_counter() - t0)
        assert last == n
        j.close()

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    _check(state["dir"], headers, bodies)
    size = sum(p.stat().st_size for p in state["dir"].glob("*.bjl"))
    assert len(list(state["dir"].glob("*.bjl"))) == 2  # rolled at 64 MiB
    med = statistics.median(times)
    report(times, n * per, us_per_frame=med / n * 1e6, x_target=n * per / med / TARGET_EPS,
           MB_per_s=size / med / 1e6, fs=_fs_type(tmp_path))


@pytest.fixture(scope="module")
def written(stream, tmp_path_factory):
    bodies = stream[1024]
    headers = wl.headers(len(bodies), wl.RECORDS_PER_FRAME, producer=1)
    d = tmp_path_factory.mktemp("journal-read")
    with Journal(d) as j:
        for h, b in zip(headers, bodies):
            j.append(h, b)
    return d, headers, bodies


@pytest.mark.parametrize("how", ["entries", "records"])
def test_read_back(benchmark, report, written, how):
    path, headers, bodies = written
    n, per = len(bodies), wl.RECORDS_PER_FRAME
    times: list[float] = []
    out: dict = {}

    def run():
        t0 = time.perf_counter()
        count, events = 0, 0
        if how == "entries":
            with Journal(path) as j:
                for _seq, _ts, _h, b in j.read_from(0):
                    count += 1
                    events += len(b) // wire.REQUEST.itemsize
                    last = b
        else:
            for _seq, hdr, recs in iter_records(path):
                count += 1
                events += len(recs)
                last = recs
        times.append(time.perf_counter() - t0)
        out.update(count=count, events=events, last=last)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    assert out["count"] == n and out["events"] == n * per
    last = out["last"]
    if how == "records":
        assert last.dtype == wire.REQUEST
        last = last.tobytes()
    assert last == bodies[-1]
    # the whole stream reads back byte for byte (checked once, outside the timing)
    with Journal(path) as j:
        assert [b for *_, b in j.read_from(0)] == bodies
    med = statistics.median(times)
    report(times, n * per, us_per_frame=med / n * 1e6,
           MB_per_s=n * (len(bodies[0]) + 64) / med / 1e6)
