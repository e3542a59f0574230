"""The ingest path of one message: decode, sequence checks, validation, journal, engine.

Everything here runs on the event loop thread, once per message (never per record).
Durable messages (from the ROUTER endpoint) are acknowledged only after ``commit`` has put
them in the journal; duplicates of journaled messages are acknowledged again, not applied.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import defaultdict

import numpy as np

from bae_core import wire
from bae_core.errors import StoreError, WireError

from . import logs

log = logging.getLogger("bae.ingest")
_PRODUCER_SEQ = struct.Struct("<QQ")


def now_us() -> int:
    return time.time_ns() // 1000


class Counters:
    """Plain counters, read by /metrics and /v1/stats at request time."""

    def __init__(self):
        self.frames = 0
        self.frames_rejected: dict[str, int] = defaultdict(int)
        self.events_rejected: dict[str, int] = defaultdict(int)
        self.sequence_gaps = 0
        self.producer_restarts = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.acks = 0
        self.deltas_published = 0
        self.snapshots_served = 0
        self.subscribers = 0
        self.checkpoints = 0
        self.checkpoint_failures = 0
        self.journal_failures = 0
        self.model_reloads = 0  # LSTM model files hot-reloaded
        self.model_failures = 0  # learned models that failed to load, reload or refit
        self.prophet_refits = 0
        self.journal_replayed_events = 0


class Ingest:
    def __init__(self, cfg, engine, counters: Counters, journal=None, clock=now_us):
        self.cfg, self.engine, self.c, self.journal = cfg, engine, counters, journal
        self.clock = clock
        self.producers: dict[int, int] = {}  # last sequence accepted per producer
        self.pending_acks: list[tuple[bytes, bytes]] = []  # (identity, ACK header)
        self.events_since_checkpoint = 0
        self.journal_error: str | None = None
        self.rejections = logs.RateLimited(log)
        self._max_records = cfg.ingest.max_records_per_frame
        self._past = int(cfg.ingest.max_past_s * 1e6)
        self._future = int(cfg.ingest.max_future_s * 1e6)

    def handle(self, frames, ident: bytes | None = None) -> None:
        """One message: ``[header, body]``; ``ident`` is the ROUTER identity of a durable
        producer (None for PULL and SUB)."""
        c = self.c
        c.frames += 1
        try:
            hdr, recs = wire.decode(frames, max_records=self._max_records)
        except WireError as e:
            self._reject(e.reason, e.count, str(e))
            if ident is not None:
                self._ack_rejected(ident, frames)
            return
        last = self.producers.get(hdr.producer)
        if last is not None and hdr.sequence != last + 1:
            if ident is not None and hdr.sequence > last + 1:
                # durable producers resend in order: wait for the missing ones first
                c.out_of_order += 1
                return
            if ident is not None and hdr.sequence <= last and not (hdr.sequence == 0 < last):
                c.duplicates += 1
                self._ack(ident, hdr, wire.FLAG_DUPLICATE)
                return
            if hdr.sequence > last + 1:
                c.sequence_gaps += hdr.sequence - last - 1
            elif hdr.sequence == 0:
                c.producer_restarts += 1
            else:
                self._reject("stale_sequence", hdr.count, f"producer {hdr.producer} sent "
                             f"sequence {hdr.sequence} after {last}")
                return
        self.producers[hdr.producer] = hdr.sequence
        now = self.clock()
        codes = wire.validate(hdr.type, recs, now, self._past, self._future)
        head = _buffer(frames[0])
        body = _buffer(frames[1])
        if codes is not None:
            counts = np.bincount(codes, minlength=len(wire.RECORD_REASONS))
            for code in np.flatnonzero(counts[1:]) + 1:
                reason = wire.RECORD_REASONS[code]
                c.events_rejected[reason] += int(counts[code])
                self.rejections.warning(reason, "records rejected", type=hdr.type.name,
                                        producer=hdr.producer, count=int(counts[code]))
            recs = recs[codes == 0]
            head = wire.encode_header(hdr.type, len(recs), hdr.producer, hdr.sequence,
                                      hdr.flags, hdr.record_size)
            body = recs.tobytes()
        if self.journal is not None:
            self.journal.append(head, body)
        self.engine.apply(hdr.type, recs, now)
        if hdr.type != wire.MsgType.NAME:
            self.events_since_checkpoint += len(recs)
        if ident is not None:
            self._ack(ident, hdr, 0)

    def commit(self, send) -> bool:
        """Flush the journal, then ``send([identity, header, body])`` every pending ACK.
        Returns False (ACKs kept for the next try) when the journal cannot be written."""
        if self.journal is not None:
            try:
                self.journal.flush()
            except (StoreError, OSError) as e:
                if self.journal_error is None:
                    log.error("journal write failed; serving from memory, durable producers "
                              "wait for acknowledgements", extra={"error": str(e)})
                self.journal_error = str(e)
                self.c.journal_failures += 1
                return False
            if self.journal_error is not None:
                log.warning("journal writable again", extra={"after": self.journal_error})
                self.journal_error = None
        for ident, head in self.pending_acks:
            send([ident, head, b""])
        self.c.acks += len(self.pending_acks)
        self.pending_acks.clear()
        return True

    def replay_journal(self, from_seq: int) -> tuple[int, int]:
        """Re-apply journal entries from ``from_seq`` (recovery after the last checkpoint).
        Entries were validated when first accepted; they are applied as they were, at the
        time they were journaled. Returns (entries, events)."""
        entries = events = 0
        for _seq, ts_us, head, body in self.journal.read_from(from_seq):
            hdr, recs = wire.decode([head, body], max_records=1 << 31)
            last = self.producers.get(hdr.producer)
            if last is not None and hdr.sequence == 0 < last:
                self.c.producer_restarts += 1
            self.producers[hdr.producer] = hdr.sequence
            self.engine.apply(hdr.type, recs, ts_us)
            entries += 1
            events += len(recs) if hdr.type != wire.MsgType.NAME else 0
        self.c.journal_replayed_events += events
        return entries, events

    def _ack(self, ident: bytes, hdr: wire.Header, flags: int) -> None:
        self.pending_acks.append((ident, wire.encode_header(
            wire.MsgType.ACK, 0, hdr.producer, hdr.sequence, flags)))

    def _ack_rejected(self, ident: bytes, frames) -> None:
        """A durable message that can never be accepted: tell the producer to drop it, when
        its header says who sent it."""
        head = bytes(_buffer(frames[0])) if frames else b""
        if len(head) == wire.HEADER_SIZE and head[:4] == wire.MAGIC:
            producer, seq = _PRODUCER_SEQ.unpack_from(head, 16)
            self.pending_acks.append((ident, wire.encode_header(
                wire.MsgType.ACK, 0, producer, seq, wire.FLAG_REJECTED)))

    def _reject(self, reason: str, count: int, detail: str) -> None:
        self.c.frames_rejected[reason] += 1
        if count:
            self.c.events_rejected[reason] += count
        self.rejections.warning(reason, "frame rejected", detail=detail)


def _buffer(frame):
    return frame.buffer if hasattr(frame, "buffer") else frame
