"""``bae replay``: send a real access log, or a journal's history, to the daemon."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from bae_core import logparse, wire

from .client import EventPublisher

CHUNK_S = 0.02  # paced replays send what falls due within this window as one frame


def log_source(path: str, fmt: str, stats_out: dict) -> Iterator[tuple[wire.MsgType, np.ndarray]]:
    """NAME and REQUEST batches of an access log; the parser's counts go to ``stats_out``."""
    for batch in logparse.iter_batches(path, fmt):
        stats_out["stats"] = batch.stats
        if len(batch.names):
            yield wire.MsgType.NAME, batch.names
        if len(batch.records):
            yield wire.MsgType.REQUEST, batch.records


def journal_source(path: str) -> Iterator[tuple[wire.MsgType, np.ndarray]]:
    """The messages a journal holds, oldest first."""
    from .journal import iter_records

    for _seq, hdr, recs in iter_records(path):
        if len(recs):
            yield hdr.type, np.ascontiguousarray(recs).astype(wire.DTYPES[hdr.type])


def replay(path: str, fmt: str, endpoint: str, *, speed: float | None = 1.0,
           limit: int | None = None, producer_id: int | None = None, durable: bool = False,
           ack_timeout_s: float = 120.0, on_batch=None) -> dict:
    """Send ``path`` (an access log, or a journal folder with ``fmt='journal'``) to
    ``endpoint``. ``speed`` X replays X times faster than the recorded pace with timestamps
    rebased to now; ``speed=None`` sends as fast as the daemon takes them (timestamps =
    send time). ``durable`` waits for the daemon's acknowledgements. Returns the counts
    printed as the final JSON line."""
    if speed is not None and speed <= 0:
        raise ValueError("--speed must be > 0")
    holder: dict = {"stats": logparse.Stats()}
    source = journal_source(path) if fmt == "journal" else log_source(path, fmt, holder)
    t_start = time.monotonic()
    wall0_us = time.time_ns() // 1000
    t0 = None
    sent = names_sent = 0
    pub = EventPublisher(endpoint, producer_id=producer_id, durable=durable)
    try:
        for mtype, recs in source:
            if mtype == wire.MsgType.NAME:
                pub.send_frame(mtype, recs)
                names_sent += len(recs)
                continue
            if limit is not None:
                recs = recs[: max(0, limit - sent)]
                if len(recs) == 0:
                    break
            recs = recs.copy()
            if t0 is None:
                t0 = int(recs["ts_us"][0])
            if speed is None:
                recs["ts_us"] = time.time_ns() // 1000
                pub.send_frame(mtype, recs)
                sent += len(recs)
                if on_batch:
                    on_batch(sent, holder["stats"])
            else:
                for n in _paced(pub, mtype, recs, t0, wall0_us, t_start, speed):
                    sent += n
                    if on_batch:
                        on_batch(sent, holder["stats"])
        acked = pub.wait_acked(ack_timeout_s)
    finally:
        pub.close()
    dur = time.monotonic() - t_start
    stats = holder["stats"]
    out = {"sent": sent, "rejected": stats.skipped_total, "rejected_by_reason": stats.skipped,
           "lines": stats.lines, "names_sent": names_sent, "frames": pub.frames_sent,
           "producer": str(pub.producer_id), "duration_s": round(dur, 3),
           "events_per_s": round(sent / dur, 1) if dur > 0 else None}
    if durable:
        out.update(acknowledged=acked, unacked=pub.unacked, resent=pub.resent,
                   rejected_by_daemon=pub.rejected)
    return out


def _paced(pub, mtype, recs, t0, wall0_us, t_start, speed):
    """Send ``recs`` as frames at their due times; yields the size of each frame sent."""
    offset_s = (recs["ts_us"] - t0) / 1e6 / speed  # when each is due, from the start
    recs["ts_us"] = wall0_us + (offset_s * 1e6).astype(np.int64)
    i = 0
    while i < len(recs):
        wait = offset_s[i] - (time.monotonic() - t_start)
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic() - t_start
        j = max(i + 1, int(np.searchsorted(offset_s, now + CHUNK_S, side="right")))
        pub.send_frame(mtype, recs[i:j])
        yield j - i
        i = j
