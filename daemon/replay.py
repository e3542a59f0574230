"""``bae replay``: send a real access log to the daemon as REQUEST events."""

from __future__ import annotations

import time

import numpy as np

from bae_core import logparse, wire

from .client import EventPublisher

CHUNK_S = 0.02  # paced replays send what falls due within this window as one frame


def replay(path: str, fmt: str, endpoint: str, *, speed: float | None = 1.0,
           limit: int | None = None,
           producer_id: int | None = None, on_batch=None) -> dict:
    """Send ``path`` to ``endpoint``. ``speed`` X replays X times faster than the log's own
    pace with timestamps rebased to now; ``speed=None`` sends as fast as the daemon takes
    them (timestamps = send time). Returns the counts printed as the final JSON line."""
    if speed is not None and speed <= 0:
        raise ValueError("--speed must be > 0")
    t_start = time.monotonic()
    wall0_us = time.time_ns() // 1000
    log0_us = None
    sent = names_sent = 0
    stats = logparse.Stats()
    with EventPublisher(endpoint, producer_id=producer_id) as pub:
        for batch in logparse.iter_batches(path, fmt):
            stats = batch.stats
            recs = batch.records
            if limit is not None:
                recs = recs[: max(0, limit - sent)]
            if len(batch.names):
                pub.send_frame(wire.MsgType.NAME, batch.names)
                names_sent += len(batch.names)
            if len(recs) == 0:
                if limit is not None and sent >= limit:
                    break
                continue
            recs = recs.copy()
            if log0_us is None:
                log0_us = int(recs["ts_us"][0])
            if speed is None:
                recs["ts_us"] = time.time_ns() // 1000
                pub.send_frame(wire.MsgType.REQUEST, recs)
                sent += len(recs)
                if on_batch:
                    on_batch(sent, stats)
            else:
                for n in _paced(pub, recs, log0_us, wall0_us, t_start, speed):
                    sent += n
                    if on_batch:
                        on_batch(sent, stats)
    dur = time.monotonic() - t_start
    return {"sent": sent, "rejected": stats.skipped_total, "rejected_by_reason": stats.skipped,
            "lines": stats.lines, "names_sent": names_sent, "frames": pub.frames_sent,
            "producer": str(pub.producer_id), "duration_s": round(dur, 3),
            "events_per_s": round(sent / dur, 1) if dur > 0 else None}


def _paced(pub, recs, log0_us, wall0_us, t_start, speed):
    """Send ``recs`` as frames at their due times; yields the size of each frame sent."""
    offset_s = (recs["ts_us"] - log0_us) / 1e6 / speed  # when each is due, from the start
    recs["ts_us"] = wall0_us + (offset_s * 1e6).astype(np.int64)
    i = 0
    while i < len(recs):
        wait = offset_s[i] - (time.monotonic() - t_start)
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic() - t_start
        j = max(i + 1, int(np.searchsorted(offset_s, now + CHUNK_S, side="right")))
        pub.send_frame(wire.MsgType.REQUEST, recs[i:j])
        yield j - i
        i = j
