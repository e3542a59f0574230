"""Client library for producers and balancers (protocol v1, docs/protocol.md).

``EventPublisher`` batches input records into frames; ``DeltaSubscriber`` keeps a copy of
the daemon's allocation state with the Clone pattern (snapshot, then ordered updates).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from bae_core import wire
from bae_core.errors import UnknownType, WireError

log = logging.getLogger("bae.client")


def _curve_client(sock: zmq.Socket, server_public_key: str | None, client_cert: str | None):
    if not server_public_key:
        return
    import zmq.auth

    if not client_cert:
        raise ValueError("CURVE needs client_cert (a .key_secret file made by 'bae keygen') "
                         "next to server_public_key")
    pub, sec = zmq.auth.load_certificate(client_cert)
    server_pub, _ = zmq.auth.load_certificate(server_public_key)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server_pub


class EventPublisher:
    """Batches records into v1 frames and sends them to the daemon.

    Records of each input type collect in a preallocated array; a frame leaves when
    ``batch`` records are waiting or the oldest waiting record is older than
    ``max_delay_s`` (checked on every add), and on ``flush``/``close``. Each frame carries
    this producer's id and the next sequence number.

    Plain mode PUSHes to the ingest endpoint; it blocks when the daemon's high-water mark
    is reached (back-pressure, not loss), but a frame still in flight when the daemon
    dies is lost. ``durable=True`` talks DEALER to the daemon's durable endpoint and keeps
    every frame until the daemon acknowledges it as journaled: at most ``max_in_flight``
    frames wait at once, and when no acknowledgement arrives for ``retry_s`` all waiting
    frames are sent again in order (the daemon drops the duplicates).
    """

    def __init__(self, endpoint: str, *, producer_id: int | None = None, batch: int = 1024,
                 max_delay_s: float = 0.05, sndhwm: int = 1000, send_timeout_s: float = 30.0,
                 context: zmq.Context | None = None, server_public_key: str | None = None,
                 client_cert: str | None = None, durable: bool = False,
                 max_in_flight: int = 256, retry_s: float = 1.0):
        self.producer_id = (int.from_bytes(os.urandom(8), "little") if producer_id is None
                            else producer_id)
        self.sequence = 0
        self.batch = batch
        self.max_delay_s = max_delay_s
        self.durable = durable
        self.max_in_flight, self.retry_s = max_in_flight, retry_s
        self._unacked: dict[int, list] = {}  # sequence -> frames, in send order
        self._last_progress = time.monotonic()
        self.acked = self.rejected = self.resent = 0
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER if durable else zmq.PUSH)
        self._sock.sndhwm = sndhwm
        self._sock.sndtimeo = int(send_timeout_s * 1000)
        self._sock.linger = int(send_timeout_s * 1000)
        _curve_client(self._sock, server_public_key, client_cert)
        self._sock.connect(endpoint)
        self._buf = {t: np.zeros(batch, wire.DTYPES[t]) for t in wire.INPUT_TYPES}
        self._n = dict.fromkeys(wire.INPUT_TYPES, 0)
        self._since = dict.fromkeys(wire.INPUT_TYPES, 0.0)
        self.frames_sent = 0
        self.records_sent = 0

    def add(self, mtype: wire.MsgType, records: np.ndarray) -> None:
        """Queue records (a structured array of ``wire.DTYPES[mtype]``) for sending."""
        buf = self._buf[mtype]
        i = 0
        while i < len(records):
            n = self._n[mtype]
            if n == 0:
                self._since[mtype] = time.monotonic()
            k = min(len(records) - i, self.batch - n)
            buf[n:n + k] = records[i:i + k]
            self._n[mtype] = n + k
            i += k
            if self._n[mtype] == self.batch:
                self._flush_type(mtype)
        self.maybe_flush()

    def send_frame(self, mtype: wire.MsgType, records: np.ndarray | None,
                   flags: int = 0) -> None:
        """Send ``records`` as one frame now, bypassing the batch buffers."""
        frames = wire.encode(mtype, records, self.producer_id, self.sequence, flags)
        if self.durable:
            self._wait_acks(self.max_in_flight - 1)
            if not self._unacked:
                self._last_progress = time.monotonic()
            self._unacked[self.sequence] = frames
        self._sock.send_multipart(frames, copy=False)
        self.sequence += 1
        self.frames_sent += 1
        self.records_sent += 0 if records is None else len(records)

    @property
    def unacked(self) -> int:
        """Durable frames sent but not yet acknowledged."""
        return len(self._unacked)

    def _wait_acks(self, at_most: int, timeout_s: float | None = None) -> bool:
        """Read acknowledgements until at most ``at_most`` frames wait (resending after
        ``retry_s`` without progress). False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._read_acks(0)
            if len(self._unacked) <= at_most:
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now - self._last_progress >= self.retry_s:
                for frames in list(self._unacked.values()):
                    self._sock.send_multipart(frames, copy=False)
                self.resent += len(self._unacked)
                self._last_progress = now
            self._read_acks(50)

    def _read_acks(self, timeout_ms: int) -> None:
        while self._sock.poll(timeout_ms):
            timeout_ms = 0
            frames = self._sock.recv_multipart()
            try:
                hdr = wire.decode_header(frames[0])
            except WireError:
                continue
            if hdr.type != wire.MsgType.ACK or hdr.producer != self.producer_id:
                continue
            if self._unacked.pop(hdr.sequence, None) is not None:
                self._last_progress = time.monotonic()
                self.acked += 1
                if hdr.flags & wire.FLAG_REJECTED:
                    self.rejected += 1
                    log.warning("daemon rejected frame %d for good", hdr.sequence)

    def wait_acked(self, timeout_s: float = 60.0) -> bool:
        """Durable mode: block until every frame is acknowledged (True) or ``timeout_s``."""
        self.flush()
        return not self.durable or self._wait_acks(0, timeout_s)

    def send_raw(self, frames: list[bytes]) -> None:
        """Send frames exactly as given (for tests of malformed input)."""
        self._sock.send_multipart(frames)

    def maybe_flush(self) -> None:
        now = time.monotonic()
        for t, n in self._n.items():
            if n and now - self._since[t] >= self.max_delay_s:
                self._flush_type(t)

    def flush(self) -> None:
        for t, n in self._n.items():
            if n:
                self._flush_type(t)

    def _flush_type(self, mtype: wire.MsgType) -> None:
        n = self._n[mtype]
        self.send_frame(mtype, self._buf[mtype][:n])
        self._n[mtype] = 0

    def close(self) -> None:
        """Flush and close; waits up to ``send_timeout_s`` for queued frames to leave (and,
        when durable, for their acknowledgements; unacknowledged ones are logged)."""
        try:
            self.flush()
            if self.durable and not self._wait_acks(0, self._sock.linger / 1000):
                log.warning("%d frames were never acknowledged", len(self._unacked))
        finally:
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class DeltaState:
    """What a balancer knows: the latest record of each kind per service."""

    allocations: dict[int, np.void] = field(default_factory=dict)
    tiers: dict[tuple[int, int], np.void] = field(default_factory=dict)
    prewarm: dict[int, np.void] = field(default_factory=dict)
    prefetch: dict[int, np.ndarray] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    advisory: bool = False

    def apply(self, hdr: wire.Header, recs: np.ndarray) -> None:
        t = hdr.type
        self.advisory = bool(hdr.flags & wire.FLAG_ADVISORY) if t == wire.MsgType.ALLOCATION \
            else self.advisory
        if t == wire.MsgType.ALLOCATION:
            for r in recs:
                self.allocations[int(r["service"])] = r.copy()
        elif t == wire.MsgType.TIER:
            for r in recs:
                self.tiers[(int(r["service"]), int(r["tier"]))] = r.copy()
        elif t == wire.MsgType.PREWARM:
            for r in recs:
                self.prewarm[int(r["service"])] = r.copy()
        elif t == wire.MsgType.PREFETCH:
            for svc in np.unique(recs["service"]):
                self.prefetch[int(svc)] = recs[recs["service"] == svc].copy()
        elif t == wire.MsgType.NAME:
            for r in recs:
                if r["kind"] == wire.NameKind.SERVICE:
                    self.names[int(r["id"])] = wire.name_str(r)

    def replicas(self) -> dict[str, int]:
        """Desired replicas by service name (id when unnamed)."""
        return {self.names.get(s, str(s)): int(r["desired_replicas"])
                for s, r in self.allocations.items()}


OUTPUT_TYPES = frozenset(wire.TOPICS) | {wire.MsgType.SNAPSHOT_END}


class DeltaSubscriber:
    """Clone-pattern subscriber: SUB first, then a snapshot from the ROUTER endpoint, then
    the PUB updates newer than the snapshot, in order. A gap in the sequence, a heartbeat
    ahead of the last applied update, or a new daemon instance id triggers a resync.
    """

    def __init__(self, publish_endpoint: str, snapshot_endpoint: str, *,
                 context: zmq.Context | None = None, snapshot_timeout_s: float = 5.0,
                 server_public_key: str | None = None, client_cert: str | None = None):
        self._ctx = context or zmq.Context.instance()
        self._pub_ep, self._snap_ep = publish_endpoint, snapshot_endpoint
        self._keys = (server_public_key, client_cert)
        self.snapshot_timeout_s = snapshot_timeout_s
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = 0
        _curve_client(self._sub, *self._keys)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(publish_endpoint)
        self.state = DeltaState()
        self.sequence = -1  # last applied; -1: no snapshot yet
        self.instance: int | None = None
        self.resyncs = 0
        self.gaps = 0
        self.ignored = 0
        self.last_heartbeat = 0.0

    def _request_snapshot(self) -> bool:
        """Fetch a snapshot; True when one was applied."""
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.linger = 0
        _curve_client(dealer, *self._keys)
        dealer.connect(self._snap_ep)
        try:
            dealer.send_multipart(wire.encode(wire.MsgType.SNAPSHOT_REQUEST, None, 0, 0))
            state = DeltaState()
            deadline = time.monotonic() + self.snapshot_timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not dealer.poll(int(left * 1000)):
                    log.warning("snapshot from %s timed out", self._snap_ep)
                    return False
                frames = dealer.recv_multipart()
                try:
                    hdr, recs = wire.decode(frames[1:], accept=OUTPUT_TYPES)
                except WireError as e:
                    log.warning("bad snapshot message: %s", e)
                    return False
                if hdr.type == wire.MsgType.SNAPSHOT_END:
                    self.state, self.sequence, self.instance = state, hdr.sequence, hdr.producer
                    self.last_heartbeat = time.monotonic()
                    return True
                state.apply(hdr, recs)
        finally:
            dealer.close()

    def sync(self) -> bool:
        """Take a snapshot now (done automatically by ``poll`` when needed)."""
        ok = self._request_snapshot()
        if ok:
            self.resyncs += 1
        return ok

    def poll(self, timeout_s: float = 0.1) -> list[tuple[wire.Header, np.ndarray]]:
        """Apply everything that arrives within ``timeout_s``; returns the applied updates."""
        if self.sequence < 0 and not self.sync():
            return []
        applied = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self._sub.poll(int(left * 1000)):
                return applied
            frames = self._sub.recv_multipart()
            try:
                hdr, recs = wire.decode(frames[1:], accept=OUTPUT_TYPES)
            except UnknownType as e:
                # a type added later in v1: skip it, but keep the sequence in step
                self.ignored += 1
                if e.producer == self.instance and e.sequence == self.sequence + 1:
                    self.sequence = e.sequence
                continue
            except WireError:
                self.ignored += 1
                continue
            if hdr.producer != self.instance:
                self._resync()
                continue
            if hdr.type == wire.MsgType.HEARTBEAT:
                self.last_heartbeat = time.monotonic()
                if hdr.sequence > self.sequence:
                    self._resync()
                continue
            if hdr.sequence <= self.sequence:
                continue  # already in the snapshot
            if hdr.sequence > self.sequence + 1:
                self.gaps += 1
                self._resync()
                continue
            self.state.apply(hdr, recs)
            self.sequence = hdr.sequence
            applied.append((hdr, recs))

    def _resync(self) -> None:
        self.sequence = -1
        self.sync()

    def close(self) -> None:
        self._sub.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
