"""The client library against real ZeroMQ peers played by the test: gaps, restarts and
unknown types in the delta stream; batching in the publisher."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from bae_core import wire
from daemon.client import DeltaSubscriber, EventPublisher


class FakeDaemonPeer:
    """A real PUB + ROUTER pair that speaks protocol v1 the way the daemon does, with a
    state the test controls (so it can skip sequence numbers on purpose)."""

    def __init__(self, tmp):
        self.ctx = zmq.Context.instance()
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        for s in (self.pub, self.router):
            s.linger = 0
        self.pub_ep, self.snap_ep = f"ipc://{tmp}/pub", f"ipc://{tmp}/snap"
        self.pub.bind(self.pub_ep)
        self.router.bind(self.snap_ep)
        self.instance, self.seq = 11, 0
        self.allocs: dict[int, int] = {}
        self.snapshots = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _records(self, items):
        r = np.zeros(len(items), wire.ALLOCATION)
        r["service"] = [k for k, _ in items]
        r["desired_replicas"] = [v for _, v in items]
        return r

    def _serve(self):
        while not self._stop.is_set():
            if not self.router.poll(20):
                continue
            ident, *_ = self.router.recv_multipart()
            recs = self._records(sorted(self.allocs.items()))
            h, b = wire.encode(wire.MsgType.ALLOCATION, recs, self.instance, self.seq)
            self.router.send_multipart([ident, b"alloc", h, b])
            h, b = wire.encode(wire.MsgType.SNAPSHOT_END, None, self.instance, self.seq)
            self.router.send_multipart([ident, b"end", h, b])
            self.snapshots += 1

    def update(self, service, replicas, *, skip=0, publish=True):
        self.allocs[service] = replicas
        self.seq += 1 + skip
        if publish:
            h, b = wire.encode(wire.MsgType.ALLOCATION, self._records([(service, replicas)]),
                               self.instance, self.seq)
            self.pub.send_multipart([b"alloc", h, b])

    def send(self, topic, mtype_value, seq, body=b""):
        h = wire.HEADER.pack(wire.MAGIC, 1, mtype_value, 0, 0, 0, self.instance, seq)
        self.pub.send_multipart([topic, h, body])

    def heartbeat(self):
        h, b = wire.encode(wire.MsgType.HEARTBEAT, None, self.instance, self.seq)
        self.pub.send_multipart([b"hb", h, b])

    def close(self):
        self._stop.set()
        self._t.join()
        self.pub.close()
        self.router.close()


@pytest.fixture
def peer(tmp_path):
    p = FakeDaemonPeer(tmp_path)
    yield p
    p.close()


def settle(sub, pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sub.poll(0.05)
        if pred():
            return
    raise AssertionError("condition not reached")


def test_snapshot_then_updates_then_gap_resync(peer):
    peer.update(1, 3)
    with DeltaSubscriber(peer.pub_ep, peer.snap_ep) as sub:
        sub.poll(0.2)
        assert sub.state.allocations[1]["desired_replicas"] == 3 and sub.sequence == 1
        time.sleep(0.2)  # the SUB connection is up: updates now arrive
        peer.update(2, 5)
        settle(sub, lambda: 2 in sub.state.allocations)
        assert sub.sequence == 2 and sub.resyncs == 1
        peer.update(1, 9, skip=1)  # sequence 4 arrives after 2: a gap
        settle(sub, lambda: sub.sequence == 4)
        assert sub.gaps == 1 and sub.resyncs == 2
        assert sub.state.allocations[1]["desired_replicas"] == 9  # from the new snapshot


def test_heartbeat_ahead_of_state_means_missed_tail(peer):
    with DeltaSubscriber(peer.pub_ep, peer.snap_ep) as sub:
        sub.poll(0.2)
        time.sleep(0.2)
        peer.update(4, 2, publish=False)  # the update itself is lost
        peer.heartbeat()  # ...but the heartbeat carries its sequence
        settle(sub, lambda: sub.sequence == 1)
        assert sub.state.allocations[4]["desired_replicas"] == 2 and sub.resyncs == 2


def test_new_daemon_instance_triggers_resync(peer):
    with DeltaSubscriber(peer.pub_ep, peer.snap_ep) as sub:
        sub.poll(0.2)
        time.sleep(0.2)
        peer.instance, peer.seq = 12, 0  # the daemon restarted
        peer.update(3, 1)
        settle(sub, lambda: sub.instance == 12 and 3 in sub.state.allocations)


def test_unknown_types_are_skipped_in_sequence(peer):
    with DeltaSubscriber(peer.pub_ep, peer.snap_ep) as sub:
        sub.poll(0.2)
        time.sleep(0.2)
        peer.seq += 1
        peer.send(b"future", 99, peer.seq)  # a type a later v1 daemon may add
        peer.update(5, 4)
        settle(sub, lambda: 5 in sub.state.allocations)
        assert sub.ignored == 1 and sub.gaps == 0 and sub.resyncs == 1


def test_snapshot_timeout_returns_nothing(tmp_path):
    with DeltaSubscriber(f"ipc://{tmp_path}/nobody", f"ipc://{tmp_path}/nobody-snap",
                         snapshot_timeout_s=0.2) as sub:
        assert sub.poll(0.05) == [] and sub.sequence == -1


def test_publisher_batches_by_size_and_time(tmp_path):
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    ep = f"ipc://{tmp_path}/in"
    pull.bind(ep)
    try:
        pub = EventPublisher(ep, producer_id=3, batch=100, max_delay_s=0.05)
        recs = np.zeros(250, wire.REQUEST)
        recs["user"] = np.arange(250)
        pub.add(wire.MsgType.REQUEST, recs)  # two full frames leave at once
        frames = [pull.recv_multipart() for _ in range(2)]
        hdrs = [wire.decode(f)[0] for f in frames]
        assert [h.count for h in hdrs] == [100, 100] and [h.sequence for h in hdrs] == [0, 1]
        assert not pull.poll(20)  # 50 wait for more or for time
        time.sleep(0.06)
        pub.add(wire.MsgType.REQUEST, recs[:0])  # any add checks the age
        h, got = wire.decode(pull.recv_multipart())
        assert h.count == 50 and h.sequence == 2 and np.array_equal(got["user"],
                                                                     np.arange(200, 250))
        pub.add(wire.MsgType.METRIC, np.zeros(3, wire.METRIC))
        pub.close()  # flushes
        h, _ = wire.decode(pull.recv_multipart())
        assert h.type == wire.MsgType.METRIC and h.count == 3 and h.producer == 3
    finally:
        pull.close()
