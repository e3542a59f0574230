"""The daemon: one uvloop event loop owns the sockets, the engine and the HTTP API.

Ingest: await one message, then drain up to ``ingest.batch_frames`` more with non-blocking
receives (awaiting every message costs ~18x more CPU); then one journal flush and the
acknowledgements of the durable messages in that batch. A ticker turns the engine's state
into allocation deltas on the PUB socket; a ROUTER answers snapshot requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from bae_core import wire
from bae_core.engine import Engine
from bae_core.errors import BAEError, SchemaMismatch, StoreError, WireError

from . import ingest as ingest_mod
from .checkpoint import Checkpointer
from .ingest import Counters, Ingest
from .journal import Journal
from .store import Store
from .systemd import Notifier, watchdog_loop

log = logging.getLogger("bae.daemon")


OUTPUT_KINDS = {"tier": wire.MsgType.TIER, "prewarm": wire.MsgType.PREWARM,
                "prefetch": wire.MsgType.PREFETCH}


def now_us() -> int:
    return ingest_mod.now_us()


DATA_DIR_ENTRIES = {"lmdb", "journal"}


def check_data_dir(path: Path) -> None:
    """The data folder holds BAE's ``lmdb`` and ``journal`` folders and nothing else; any
    other content means it belongs to someone else, and BAE writes nothing there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in path.iterdir() if p.name not in DATA_DIR_ENTRIES)
    except OSError as e:
        raise StoreError(f"cannot use data folder {path}: {e.strerror}; choose a writable "
                         "--data-dir") from e
    if foreign:
        raise SchemaMismatch(f"{path} holds files BAE did not write ({', '.join(foreign[:3])}"
                             "); point --data-dir at an empty folder or a BAE data folder")
    if not os.access(path, os.W_OK):
        raise StoreError(f"data folder {path} is read-only; choose a writable --data-dir")


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
        # The LMDB writer thread holds the GIL while it packs a chunk; a 1 ms switch
        # interval (default 5 ms) keeps the event loop's lag under that.
        sys.setswitchinterval(0.001)
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.counters = Counters()
        self.journal: Journal | None = None
        self.ingest = Ingest(cfg, self.engine, self.counters, clock=lambda: now_us())
        self.lag = LagMonitor()
        self.notifier = notifier or Notifier()
        self.instance_id = int.from_bytes(os.urandom(8), "little")
        self.seq = 0  # last published delta sequence
        self.started = time.time()
        self.ready = False
        self.http_token = self._token()
        self.gate = asyncio.Event()  # cleared while a checkpoint copies state
        self.gate.set()
        self._stop = asyncio.Event()
        self._nav_stop = threading.Event()
        self._flags = wire.FLAG_ADVISORY if cfg.policy.shadow else 0
        self.checkpointer: Checkpointer | None = None

    @property
    def producers(self) -> dict[int, int]:
        return self.ingest.producers

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

    def _open_state(self) -> None:
        """Open LMDB and the journal, load the last checkpoint, replay the journal tail."""
        cfg = self.cfg
        data = Path(cfg.state.data_dir)
        check_data_dir(data)
        self.store = Store(data / "lmdb", cfg.state.map_size_mb, cfg.state.max_map_size_mb)
        self.checkpointer = Checkpointer(self, self.store)
        if cfg.journal.enabled:
            jdir = cfg.journal.dir or str(data / "journal")
            self.journal = Journal(jdir, segment_bytes=cfg.journal.segment_mb << 20,
                                   retention_s=cfg.journal.retention_hours * 3600,
                                   retention_bytes=int(cfg.journal.retention_gb * (1 << 30)),
                                   fsync=cfg.journal.fsync)
            self.ingest.journal = self.journal
        t0 = time.monotonic()
        meta = self.checkpointer.restore()
        if meta is not None:
            if meta.get("config") != cfg.fingerprint():
                log.warning("model settings changed since the checkpoint; state reused as is")
            self.ingest.producers.update({int(k): v for k, v in meta["producers"].items()})
            self.counters.events_rejected.update(meta.get("events_rejected", {}))
        loaded = time.monotonic() - t0
        entries = events = 0
        if self.journal is not None:
            start = self.checkpointer.journal_seq
            first = self.journal.stats()["first_seq"]
            if first > start:
                log.warning("journal entries %d..%d were deleted before a checkpoint covered "
                            "them; events from that span are lost", start, first - 1)
            self.engine.nav_inline = True
            entries, events = self.ingest.replay_journal(start)
            self.engine.nav_inline = False
        replay = time.monotonic() - t0 - loaded
        self.restore_s = {"checkpoint_load_s": round(loaded, 3),
                          "journal_replay_s": round(replay, 3),
                          "journal_entries": entries, "journal_events": events}
        log.info("state restored", extra={**self.restore_s, **self.engine.stats()})

    async def run(self) -> None:
        cfg = self.cfg
        t0 = time.monotonic()
        Engine.warm_up(cfg, now_us())
        log.info("kernels ready", extra={"seconds": round(time.monotonic() - t0, 3)})
        self._open_state()
        self.engine.needs_inline = False  # the worker thread runs the needs pass
        nav = threading.Thread(target=self._learn_navigation, name="bae-navigation",
                               daemon=True)
        nav.start()
        self.ctx = zmq.asyncio.Context()
        self._auth = self._start_auth()
        self.pull = self._bind(zmq.PULL, cfg.ingest.endpoint, rcvhwm=cfg.ingest.hwm)
        self.durable = None
        if cfg.ingest.durable_endpoint:
            self.durable = self._bind(zmq.ROUTER, cfg.ingest.durable_endpoint,
                                      rcvhwm=cfg.ingest.hwm)
            self._durable_sync = zmq.Socket.shadow(self.durable.underlying)
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
        from aiohttp import web

        from .http import make_app

        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        host, port = cfg.http.listen.rsplit(":", 1)
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        sources = [(s, False) for s in [self.pull, *self.subs]]
        if self.durable is not None:
            sources.append((self.durable, True))
        ingest = [asyncio.create_task(self._ingest(s, durable)) for s, durable in sources]
        tasks = [asyncio.create_task(c) for c in (
            self._ticker(), self._heartbeat(), self._snapshots(), self.lag.run(),
            self._monitor_subscribers(), self._checkpoints(), self._evictions(),
            self._journal_retry(), watchdog_loop(self.notifier, self._stop),
            self._learned_models())]
        self.ready = True
        self.notifier.ready()
        self.notifier.status(f"serving: ingest {cfg.ingest.endpoint}, deltas "
                             f"{cfg.publish.endpoint}, http {host}:{self.http_port}")
        log.info("serving", extra={"ingest": cfg.ingest.endpoint,
                                   "durable": cfg.ingest.durable_endpoint,
                                   "publish": cfg.publish.endpoint,
                                   "snapshot": cfg.publish.snapshot_endpoint,
                                   "http": f"{host}:{self.http_port}",
                                   "instance": self.instance_id, "pid": os.getpid()})
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
            drained = await self._drain_until_quiet([s for s, _ in sources])
            self._publish_tick()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            self._nav_stop.set()
            nav.join()
            ok = await self.checkpointer.run("shutdown")
            self.checkpointer.close()
            if self.journal is not None:
                self.journal.close()
            self.store.close()
            for s in [self.pull, *self.subs, self.pub, self.router,
                      *([self.durable] if self.durable is not None else [])]:
                s.close(linger=0)
            if self._auth:
                self._auth.stop()
            self.ctx.term()
            log.info("stopped", extra={"drained_frames": drained, "final_checkpoint": ok,
                                       **self.stats()})

    def _learn_navigation(self) -> None:
        """Worker thread: teach the navigation model what ingest queued, and run the needs
        pass every ``policy.needs_interval_s`` (the kernels release the GIL), so ingest
        and ticks never wait for either."""
        e = self.engine
        if "markov" not in e.models:
            return
        every = self.cfg.policy.needs_interval_s
        next_needs = time.monotonic() + every
        while not self._nav_stop.is_set():
            try:
                if time.monotonic() >= next_needs:
                    next_needs = time.monotonic() + every
                    e.offer_needs(e.compute_needs(now_us()))
                if e.learn_navigation(16384) == 0:
                    self._nav_stop.wait(0.01)
            except Exception:  # a bug here must not stop learning for good
                log.exception("navigation worker failed")
                self._nav_stop.wait(1.0)

    async def _learned_models(self) -> None:
        """Serve the LSTM (an inference worker thread, hot reload of a changed model file)
        and Prophet (refits in a worker process); their forecasts go to the engine's
        ensemble. Either failing leaves the online models serving."""
        m = self.cfg.model
        worker = prophet_task = None
        if m.lstm:
            worker = self._start_lstm()
        if m.prophet:
            prophet_task = asyncio.create_task(self._prophet_refits())
        seen, mtime = None, self._model_mtime()
        try:
            while True:
                await asyncio.sleep(1.0)
                if worker is None:
                    continue
                got = worker.latest
                if got is not None and got is not seen:
                    seen = got
                    self.engine.offer_forecasts("lstm", got)
                now_mtime = self._model_mtime()
                if now_mtime != mtime:
                    mtime = now_mtime
                    await self._reload_lstm(worker)
        finally:
            if worker is not None:
                worker.stop()
            if prophet_task is not None:
                prophet_task.cancel()

    def _model_path(self):
        from models.runtime import DEFAULT_MODEL
        return self.cfg.model.lstm_path or DEFAULT_MODEL

    def _model_mtime(self) -> float | None:
        if not self.cfg.model.lstm:
            return None
        try:
            return os.stat(self._model_path()).st_mtime
        except (OSError, ImportError):
            return None

    def _start_lstm(self):
        m = self.cfg.model
        try:
            from models import features
            from models.runtime import InferenceWorker, LSTMRuntime
            rt = LSTMRuntime(self._model_path(), device=m.lstm_device, threads=m.lstm_threads,
                             max_batch=1024)
        except (ImportError, BAEError) as e:
            self.counters.model_failures += 1
            log.warning("LSTM not served; the online models serve alone", extra={
                "error": str(e)})
            return None
        worker = InferenceWorker(rt, lambda: self.engine.lstm_windows(features.HISTORY),
                                 interval_s=m.lstm_interval_s)
        worker.start()
        log.info("LSTM served", extra={"model": str(rt.path), "providers": rt.providers})
        return worker

    async def _reload_lstm(self, worker) -> None:
        try:
            await asyncio.to_thread(worker.runtime.reload, self._model_path())
            self.counters.model_reloads += 1
            worker.trigger()
        except BAEError as e:
            self.counters.model_failures += 1
            log.error("new LSTM model file rejected; the old one keeps serving",
                      extra={"error": str(e)})

    async def _prophet_refits(self) -> None:
        """Every ``model.prophet_interval_s``: Prophet refits every service's seasonal
        series (its forecasts join the service's ensemble) and every segment's (shown
        in /v1/segments/{id} beside Holt-Winters and ARIMA), in a worker process."""
        from models.prophet_refit import refit_many
        e, m = self.engine, self.cfg.model
        while True:
            got = e.lstm_windows(2016)  # a week of seasonal steps per service
            series = {} if got is None else {
                i: h[np.isfinite(h)] for i, h in enumerate(got[1]) if np.isfinite(h).sum() >= 24}
            if not series:  # nothing long enough yet: look again soon
                await asyncio.sleep(min(m.prophet_interval_s, 5.0))
                continue
            segs = e.segment_windows(2016)
            seg_series = {} if segs is None else {
                int(sid): h[np.isfinite(h)] for sid, h in zip(segs[0], segs[1])
                if np.isfinite(h).sum() >= 24}
            try:
                res = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: refit_many(series, 12, workers=1))
                rows = sorted(res)
                e.offer_forecasts("prophet", {"keys": got[0][rows], "p50": np.stack(
                    [res[i]["p50"] for i in rows])})
                if seg_series:
                    e.segment_prophet = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: refit_many(seg_series, 12, workers=1))
                self.counters.prophet_refits += 1
            except Exception as err:  # noqa: BLE001 - Prophet is optional
                self.counters.model_failures += 1
                log.error("Prophet refit failed; the other models serve",
                          extra={"error": str(err)})
            await asyncio.sleep(m.prophet_interval_s)

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
    async def _ingest(self, sock: zmq.asyncio.Socket, durable: bool) -> None:
        batch = self.cfg.ingest.batch_frames
        sync = zmq.Socket.shadow(sock.underlying)
        while True:
            frames = await sock.recv_multipart(copy=False)
            if not self.gate.is_set():
                await self.gate.wait()
            self._take(frames, durable)
            n = 1 + self._drain(sync, batch - 1, durable)
            self.commit()
            if n == batch:
                await asyncio.sleep(0)  # more is waiting: let the ticker and HTTP run
            if self.ingest.events_since_checkpoint >= self.cfg.state.checkpoint_events > 0:
                self.ingest.events_since_checkpoint = 0
                asyncio.ensure_future(self.checkpointer.run("events"))

    def _take(self, frames, durable: bool) -> None:
        if durable:
            self.ingest.handle(frames[1:], ident=frames[0].bytes)
        else:
            self.ingest.handle(frames)

    def _drain(self, sync: zmq.Socket, limit: int, durable: bool) -> int:
        n = 0
        while n < limit:
            try:
                frames = sync.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._take(frames, durable)
            n += 1
        return n

    def commit(self) -> bool:
        """Journal what was taken, then acknowledge the durable messages."""
        return self.ingest.commit(self._send_ack)

    def _send_ack(self, frames) -> None:
        try:
            self._durable_sync.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # producer gone: it resends and gets a duplicate acknowledgement

    async def _drain_until_quiet(self, socks, quiet_s: float = 0.25, max_s: float = 10.0):
        """Shutdown drain: take messages until none arrived for ``quiet_s`` (frames still
        in flight from producers that just flushed get in), at most ``max_s``."""
        poller = zmq.asyncio.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        syncs = [(zmq.Socket.shadow(s.underlying), s is self.durable) for s in socks]
        n, deadline = 0, time.monotonic() + max_s
        while time.monotonic() < deadline:
            if not await poller.poll(quiet_s * 1000):
                break
            n += sum(self._drain(s, 1 << 30, durable) for s, durable in syncs)
            self.commit()
        return n

    async def _journal_retry(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.ingest.journal_error is not None:
                self.commit()

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
        for kind, recs in self.engine.take_outputs().items():
            self._publish(OUTPUT_KINDS[kind], recs)

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
                self.ingest.rejections.warning("snapshot_" + e.reason,
                                               "snapshot request rejected", detail=str(e))
                continue
            await self._send_snapshot(ident)

    async def _send_snapshot(self, ident: bytes) -> None:
        e, s = self.engine, self.seq
        parts = [(wire.MsgType.NAME, e.service_names()),
                 (wire.MsgType.ALLOCATION, e.allocations(now_us()))]
        for mtype, held in ((wire.MsgType.TIER, e.published_tiers),
                            (wire.MsgType.PREWARM, e.published_prewarm),
                            (wire.MsgType.PREFETCH, e.published_prefetch)):
            if held:
                parts.append((mtype, np.concatenate([np.atleast_1d(r) for r in held.values()])))
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
    def checkpoint_meta(self) -> dict:
        """Daemon-side metadata saved with each checkpoint."""
        return {"config": self.cfg.fingerprint(), "saved_at": time.time(),
                "producers": {str(k): v for k, v in self.producers.items()},
                "events_rejected": dict(self.counters.events_rejected)}

    async def _checkpoints(self) -> None:
        every = self.cfg.state.checkpoint_interval_s
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every if self.checkpointer.error is None else min(every, 5))
            await self.checkpointer.run("interval")

    async def _evictions(self) -> None:
        ttl = self.cfg.state.user_ttl_s
        if ttl <= 0:
            return
        while True:
            await asyncio.sleep(min(60.0, ttl / 4))
            n = self.engine.evict(now_us(), int(ttl * 1e6))
            if n:
                log.info("users evicted", extra={"count": n, "users": len(self.engine.users)})

    def checkpoint_age_s(self) -> float:
        return self.checkpointer.age_s() if self.checkpointer else 0.0

    def health(self) -> dict:
        problems = {}
        if self.ingest.journal_error:
            problems["journal"] = self.ingest.journal_error
        if self.checkpointer and self.checkpointer.error:
            problems["checkpoint"] = self.checkpointer.error
        return problems

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
            "duplicates": c.duplicates, "out_of_order": c.out_of_order, "acks": c.acks,
            "producers": len(self.producers), "deltas_published": c.deltas_published,
            "sequence": self.seq, "subscribers": c.subscribers,
            "checkpoints": c.checkpoints, "checkpoint_failures": c.checkpoint_failures,
            "journal_failures": c.journal_failures,
            "model_reloads": c.model_reloads, "model_failures": c.model_failures,
            "prophet_refits": c.prophet_refits,
            "journal_replayed_events": c.journal_replayed_events,
            "uptime_s": time.time() - self.started, **e.stats(),
        }
