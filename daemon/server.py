"""The daemon: one uvloop event loop owns the sockets, the engine and the HTTP API.

Ingest: await one message, then drain up to ``ingest.batch_frames`` more with non-blocking
receives (awaiting every message costs ~18x more CPU). Each message is decoded zero-copy,
validated by a numba kernel and handed to the engine. A ticker turns the engine's state
into allocation deltas on the PUB socket; a ROUTER answers snapshot requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bae_core import wire
from bae_core.engine import Engine
from bae_core.errors import BAEError, WireError

from . import logs
from .store import Store
from .systemd import Notifier, watchdog_loop

log = logging.getLogger("bae.daemon")


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
        self.deltas_published = 0
        self.snapshots_served = 0
        self.subscribers = 0
        self.checkpoint_failures = 0


class LagMonitor:
    """Samples event-loop lag every ``period_s``; keeps the last minute."""

    def __init__(self, period_s: float = 0.05):
        self.period_s = period_s
        self.samples: deque[float] = deque(maxlen=int(60 / period_s))

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.period_s)
            self.samples.append(max(0.0, loop.time() - t0 - self.period_s))

    def quantiles(self) -> dict[str, float]:
        if not self.samples:
            return {"0.5": 0.0, "0.99": 0.0, "1": 0.0}
        a = np.fromiter(self.samples, float)
        return {"0.5": float(np.quantile(a, 0.5)), "0.99": float(np.quantile(a, 0.99)),
                "1": float(a.max())}


class Daemon:
    def __init__(self, cfg, *, notifier: Notifier | None = None):
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.counters = Counters()
        self.lag = LagMonitor()
        self.notifier = notifier or Notifier()
        self.instance_id = int.from_bytes(os.urandom(8), "little")
        self.seq = 0  # last published delta sequence
        self.producers: dict[int, int] = {}
        self.started = time.time()
        self.ready = False
        self.http_token = self._token()
        self.rejections = logs.RateLimited(log)
        self._stop = asyncio.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="bae-lmdb")
        self._last_checkpoint = time.monotonic()
        self._max_past_us = int(cfg.ingest.max_past_s * 1e6)
        self._max_future_us = int(cfg.ingest.max_future_s * 1e6)
        self._flags = wire.FLAG_ADVISORY if cfg.policy.shadow else 0

    def _token(self) -> str:
        h = self.cfg.http
        if h.token_file:
            try:
                return Path(h.token_file).read_text().strip()
            except OSError as e:
                raise BAEError(f"http.token_file {h.token_file!r}: {e.strerror}; create it or "
                               "remove the key") from e
        return h.token

    # ---- lifecycle ----------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        self.store = Store(cfg.state.data_dir, cfg.state.map_size_mb)
        self._restore()
        self.ctx = zmq.asyncio.Context()
        self._auth = self._start_auth()
        self.pull = self._bind(zmq.PULL, cfg.ingest.endpoint, rcvhwm=cfg.ingest.hwm)
        self.subs = []
        for ep in cfg.ingest.subscribe:
            s = self.ctx.socket(zmq.SUB)
            s.rcvhwm = cfg.ingest.hwm
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(ep)
            self.subs.append(s)
        self.pub = self._bind(zmq.PUB, cfg.publish.endpoint, sndhwm=cfg.publish.hwm)
        self.router = self._bind(zmq.ROUTER, cfg.publish.snapshot_endpoint)
        self._pub_sync = zmq.Socket.shadow(self.pub.underlying)
        from .http import make_app
        from aiohttp import web

        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        host, port = cfg.http.listen.rsplit(":", 1)
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        ingest = [asyncio.create_task(self._ingest(s)) for s in [self.pull, *self.subs]]
        tasks = [asyncio.create_task(c) for c in (
            self._ticker(), self._heartbeat(), self._snapshots(), self.lag.run(),
            self._monitor_subscribers(), self._checkpointer(),
            watchdog_loop(self.notifier, self._stop))]
        self.ready = True
        self.notifier.ready()
        self.notifier.status(f"serving: ingest {cfg.ingest.endpoint}, deltas "
                             f"{cfg.publish.endpoint}, http {host}:{self.http_port}")
        log.info("serving", extra={"ingest": cfg.ingest.endpoint, "publish":
                                   cfg.publish.endpoint, "snapshot":
                                   cfg.publish.snapshot_endpoint, "http":
                                   f"{host}:{self.http_port}", "instance": self.instance_id,
                                   "pid": os.getpid()})
        try:
            await self._stop.wait()
        finally:
            self.ready = False
            self.notifier.stopping()
            self.notifier.status("draining and saving state")
            log.info("stopping: draining ingest")
            for t in ingest:
                t.cancel()
            await asyncio.gather(*ingest, return_exceptions=True)
            drained = await self._drain_until_quiet()
            self._publish_tick()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            await loop.run_in_executor(self._writer, self._save, self._checkpoint_data())
            self._writer.shutdown(wait=True)
            self.store.close()
            for s in [self.pull, *self.subs, self.pub, self.router]:
                s.close(linger=0)
            if self._auth:
                self._auth.stop()
            self.ctx.term()
            log.info("stopped", extra={"drained_frames": drained, **self.stats()})

    def _bind(self, kind: int, endpoint: str, **opts) -> zmq.asyncio.Socket:
        s = self.ctx.socket(kind)
        s.linger = 0
        for k, v in opts.items():
            setattr(s, k, v)
        if self.cfg.security.curve:
            s.curve_publickey, s.curve_secretkey = self._server_keys
            s.curve_server = True
        try:
            s.bind(endpoint)
        except zmq.ZMQError as e:
            s.close()
            raise BAEError(f"cannot bind {endpoint}: {e.strerror}; is another BAE running? "
                           "choose another endpoint in the config") from e
        return s

    def _start_auth(self):
        sec = self.cfg.security
        if not sec.curve:
            return None
        import zmq.auth
        from zmq.auth.asyncio import AsyncioAuthenticator

        try:
            self._server_keys = zmq.auth.load_certificate(sec.server_secret_key)
        except (OSError, ValueError) as e:
            raise BAEError(f"security.server_secret_key {sec.server_secret_key!r}: {e}; "
                           "make one with 'bae keygen DIR'") from e
        if self._server_keys[1] is None:
            raise BAEError(f"{sec.server_secret_key} holds no secret key: point "
                           "security.server_secret_key at the .key_secret file")
        if not sec.authorized_keys_dir or not Path(sec.authorized_keys_dir).is_dir():
            raise BAEError("security.authorized_keys_dir must be a folder of client .key "
                           "files when security.curve is on")
        auth = AsyncioAuthenticator(self.ctx)
        auth.start()
        auth.configure_curve(domain="*", location=sec.authorized_keys_dir)
        return auth

    # ---- ingest -------------------------------------------------------------------
    async def _ingest(self, sock: zmq.asyncio.Socket) -> None:
        batch = self.cfg.ingest.batch_frames
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._handle(frames)
            if self._drain(sock, batch - 1) == batch - 1:
                await asyncio.sleep(0)  # more is waiting: let the ticker and HTTP run

    def _drain(self, sock: zmq.asyncio.Socket, limit: int) -> int:
        sync = zmq.Socket.shadow(sock.underlying)
        n = 0
        while n < limit:
            try:
                frames = sync.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._handle(frames)
            n += 1
        return n

    async def _drain_until_quiet(self, quiet_s: float = 0.25, max_s: float = 10.0) -> int:
        """Shutdown drain: take messages until none arrived for ``quiet_s`` (frames still
        in flight from producers that just flushed get in), at most ``max_s``."""
        socks = [self.pull, *self.subs]
        poller = zmq.asyncio.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        n, deadline = 0, time.monotonic() + max_s
        while time.monotonic() < deadline:
            if not await poller.poll(quiet_s * 1000):
                break
            n += sum(self._drain(s, 1 << 30) for s in socks)
        return n

    def _handle(self, frames) -> None:
        c = self.counters
        c.frames += 1
        try:
            hdr, recs = wire.decode(frames, max_records=self.cfg.ingest.max_records_per_frame)
        except WireError as e:
            self._reject_frame(e.reason, e.count, str(e))
            return
        last = self.producers.get(hdr.producer)
        if last is not None and hdr.sequence != last + 1:
            if hdr.sequence > last + 1:
                c.sequence_gaps += hdr.sequence - last - 1
            elif hdr.sequence == 0:
                c.producer_restarts += 1
            else:
                self._reject_frame("stale_sequence", hdr.count, f"producer {hdr.producer} "
                                   f"sent sequence {hdr.sequence} after {last}")
                return
        self.producers[hdr.producer] = hdr.sequence
        now = now_us()
        codes = wire.validate(hdr.type, recs, now, self._max_past_us, self._max_future_us)
        if codes is not None:
            counts = np.bincount(codes, minlength=len(wire.RECORD_REASONS))
            for code in np.flatnonzero(counts[1:]) + 1:
                reason = wire.RECORD_REASONS[code]
                c.events_rejected[reason] += int(counts[code])
                self.rejections.warning(reason, "records rejected", type=hdr.type.name,
                                        producer=hdr.producer, count=int(counts[code]))
            recs = recs[codes == 0]
        self.engine.apply(hdr.type, recs, now)

    def _reject_frame(self, reason: str, count: int, detail: str) -> None:
        self.counters.frames_rejected[reason] += 1
        if count:
            self.counters.events_rejected[reason] += count
        self.rejections.warning(reason, "frame rejected", detail=detail)

    # ---- output -------------------------------------------------------------------
    def _publish(self, mtype: wire.MsgType, recs: np.ndarray | None) -> None:
        self.seq += 1
        hdr, body = wire.encode(mtype, recs, self.instance_id, self.seq, self._flags)
        self._pub_sync.send_multipart([wire.TOPICS[mtype], hdr, body], copy=False)
        self.counters.deltas_published += 1

    def _publish_tick(self) -> None:
        names = self.engine.take_new_names()
        if names is not None:
            self._publish(wire.MsgType.NAME, names)
        allocs = self.engine.tick(now_us())
        if len(allocs):
            self._publish(wire.MsgType.ALLOCATION, allocs)

    async def _ticker(self) -> None:
        period = self.cfg.policy.tick_s
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while True:
            nxt += period
            await asyncio.sleep(max(0.0, nxt - loop.time()))
            self._publish_tick()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.publish.heartbeat_s)
            hdr, body = wire.encode(wire.MsgType.HEARTBEAT, None, self.instance_id, self.seq)
            self._pub_sync.send_multipart([wire.TOPICS[wire.MsgType.HEARTBEAT], hdr, body])

    async def _snapshots(self) -> None:
        accept = frozenset({wire.MsgType.SNAPSHOT_REQUEST})
        while True:
            frames = await self.router.recv_multipart()
            ident, rest = frames[0], frames[1:]
            try:
                wire.decode(rest, accept=accept)
            except WireError as e:
                self.counters.frames_rejected[f"snapshot_{e.reason}"] += 1
                self.rejections.warning("snapshot_" + e.reason, "snapshot request rejected",
                                        detail=str(e))
                continue
            await self._send_snapshot(ident)

    async def _send_snapshot(self, ident: bytes) -> None:
        e, s = self.engine, self.seq
        parts = [(wire.MsgType.NAME, e.service_names()),
                 (wire.MsgType.ALLOCATION, e.allocations(now_us()))]
        for mtype, recs in parts:
            if len(recs):
                hdr, body = wire.encode(mtype, recs, self.instance_id, s, self._flags)
                await self.router.send_multipart([ident, wire.TOPICS[mtype], hdr, body])
        hdr, body = wire.encode(wire.MsgType.SNAPSHOT_END, None, self.instance_id, s)
        await self.router.send_multipart([ident, b"end", hdr, body])
        self.counters.snapshots_served += 1

    async def _monitor_subscribers(self) -> None:
        mon = self.pub.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            while True:
                ev = parse_monitor_message(await mon.recv_multipart())
                if ev["event"] == zmq.EVENT_ACCEPTED:
                    self.counters.subscribers += 1
                elif ev["event"] == zmq.EVENT_DISCONNECTED:
                    self.counters.subscribers = max(0, self.counters.subscribers - 1)
        finally:
            self.pub.disable_monitor()
            mon.close(linger=0)

    # ---- state --------------------------------------------------------------------
    def _checkpoint_data(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Copies of the state, taken on the loop thread; the writer thread saves them."""
        meta, arrays = self.engine.state()
        meta.update(config=self.cfg.fingerprint(), saved_at=time.time(),
                    producers={str(k): v for k, v in self.producers.items()},
                    events_rejected=dict(self.counters.events_rejected))
        return meta, arrays

    def _save(self, data) -> None:
        try:
            self.store.save(*data)
            self._last_checkpoint = time.monotonic()
        except Exception:
            self.counters.checkpoint_failures += 1
            log.exception("checkpoint failed; state stays in memory, will retry")

    async def _checkpointer(self) -> None:
        every = self.cfg.state.checkpoint_interval_s
        if every <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            await loop.run_in_executor(self._writer, self._save, self._checkpoint_data())

    def _restore(self) -> None:
        got = self.store.load()
        if got is None:
            return
        meta, arrays = got
        if meta.get("config") != self.cfg.fingerprint():
            log.warning("model settings changed since the checkpoint; state is reused as is")
        self.engine.restore(meta, arrays)
        self.producers = {int(k): v for k, v in meta.get("producers", {}).items()}
        self.counters.events_rejected.update(meta.get("events_rejected", {}))
        log.info("state restored", extra=self.engine.stats())

    def checkpoint_age_s(self) -> float:
        return time.monotonic() - self._last_checkpoint

    def stats(self) -> dict:
        e, c = self.engine, self.counters
        return {
            "events_accepted": sum(n for t, n in e.accepted.items()
                                   if t != wire.MsgType.NAME),
            "names_registered": e.accepted[wire.MsgType.NAME],
            "events_accepted_by_type": {t.name.lower(): n for t, n in e.accepted.items()},
            "events_rejected": sum(c.events_rejected.values()),
            "events_rejected_by_reason": dict(c.events_rejected),
            "frames": c.frames, "frames_rejected": dict(c.frames_rejected),
            "sequence_gaps": c.sequence_gaps, "producer_restarts": c.producer_restarts,
            "producers": len(self.producers), "deltas_published": c.deltas_published,
            "sequence": self.seq, "subscribers": c.subscribers,
            "uptime_s": time.time() - self.started, **e.stats(),
        }
