"""``bae agent haproxy`` against a real HAProxy 2.6 (runtime API over its stats socket), real
HTTP backends behind it, and a real daemon publishing the deltas."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bae_core import wire
from daemon.agent_haproxy import (AgentOptions, HAProxyAgent, HAProxyRefused,
                                  HAProxyUnreachable, RuntimeAPI)
from daemon.client import DeltaState, DeltaSubscriber, EventPublisher

from .conftest import ROOT, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="needs haproxy (packaging/bootstrap.sh installs it)"),
]

WEB, GHOST = 1, 2  # service ids


def now_us() -> int:
    return time.time_ns() // 1000


def wait_until(pred, timeout_s: float, what: str, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)


class NamedHTTP:
    """A threaded HTTP server on a loopback port that answers its own name."""

    def __init__(self, name: str):
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class HAProxy:
    """``haproxy -db -f cfg`` with one backend per service; each backend declares a pool of
    servers (each a NamedHTTP), all but the first ``disabled`` (maintenance)."""

    def __init__(self, tmp: Path, pools: dict[str, int]):
        self.tmp = tmp
        self.sock = str(tmp / "haproxy.sock")
        self.port = free_port()
        self.http = {b: [NamedHTTP(f"s{i + 1}") for i in range(n)] for b, n in pools.items()}
        lines = ["global", f"    stats socket {self.sock} mode 600 level admin",
                 "defaults", "    mode http", "    timeout connect 1s", "    timeout client 5s",
                 "    timeout server 5s", "frontend fe", f"    bind 127.0.0.1:{self.port}"]
        backends = list(pools)
        for b in backends[1:]:
            lines.append(f"    use_backend {b} if {{ path_beg /{b} }}")
        lines.append(f"    default_backend {backends[0]}")
        for b, servers in self.http.items():
            lines += [f"backend {b}", "    balance roundrobin"]
            for i, srv in enumerate(servers):
                lines.append(f"    server s{i + 1} 127.0.0.1:{srv.port} weight 100"
                             + (" disabled" if i else ""))
        self.cfg = tmp / "haproxy.cfg"
        self.cfg.write_text("\n".join(lines) + "\n")
        self.api = RuntimeAPI(self.sock)
        self.proc = None
        self.start()

    def start(self) -> None:
        self._log = open(self.tmp / f"haproxy-{time.monotonic_ns()}.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)],
                                     stdout=self._log, stderr=subprocess.STDOUT)

        def answers():
            assert self.proc.poll() is None, f"haproxy exited {self.proc.returncode}"
            try:
                return "Pid:" in self.api.command("show info")
            except HAProxyUnreachable:
                return False

        wait_until(answers, 10, "haproxy's stats socket")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        for servers in self.http.values():
            for s in servers:
                s.close()

    def ready(self, backend: str = "web") -> list[str]:
        return [s.name for s in self.api.servers_state(backend) if s.ready]

    def hits(self, n: int, path: str = "/") -> list[str]:
        out = []
        for _ in range(n):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                out.append(r.read().decode())
        return out


@pytest.fixture
def haproxy_factory(tmp_path):
    started: list[HAProxy] = []

    def start(pools=None, name="hx"):
        d = tmp_path / name
        d.mkdir()
        h = HAProxy(d, pools or {"web": 4})
        started.append(h)
        return h

    yield start
    for h in started:
        h.close()


class Traffic:
    """REQUEST events for one service at ``rps`` (changeable), stamped now, every 0.1 s."""

    def __init__(self, endpoint: str, service: int, rps: float):
        self.endpoint, self.service, self.rps = endpoint, service, rps
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        owed = 0.0
        with EventPublisher(self.endpoint) as pub:
            while not self._stop.wait(0.1):
                owed += self.rps * 0.1
                n = int(owed)
                owed -= n
                if n:
                    r = np.zeros(n, wire.REQUEST)
                    r["ts_us"] = now_us()
                    r["user"] = np.arange(n)
                    r["service"] = self.service
                    r["latency_ms"] = 5.0
                    r["status"] = 200
                    pub.send_frame(wire.MsgType.REQUEST, r)

    def close(self):
        self._stop.set()
        self._t.join(5)


def send_names(endpoint: str, ids, names) -> None:
    with EventPublisher(endpoint) as pub:
        pub.send_frame(wire.MsgType.NAME, wire.make_names(wire.NameKind.SERVICE, ids, names))


def desired(daemon, name: str = "web") -> int | None:
    for a in daemon.get("/v1/allocations")["allocations"]:
        if a["service"] == name:
            return a["desired_replicas"]
    return None


class AgentThread:
    """The agent's real loop (``HAProxyAgent.run``) in a thread, following a daemon."""

    def __init__(self, socket_path: str, daemon, **opts):
        base = dict(reconcile_s=0.5, step_s=0.1, ramp_s=0.3, drain_s=0.2, backoff_s=0.1,
                    backoff_max_s=0.4)
        self.agent = HAProxyAgent(RuntimeAPI(socket_path, 1.0), AgentOptions(**{**base, **opts}))
        self.daemon = daemon
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            with DeltaSubscriber(self.daemon.publish, self.daemon.snapshot,
                                 snapshot_timeout_s=1.0) as sub:
                self.agent.run(sub, self.stop, poll_s=0.05)
        except BaseException as e:  # reported by close()
            self.error = e

    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def close(self):
        self.stop.set()
        self.thread.join(10)
        assert self.error is None, f"agent loop died: {self.error!r}"


@pytest.fixture
def agents():
    started: list[AgentThread] = []

    def start(*args, **kw):
        a = AgentThread(*args, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def converged(hx: HAProxy, daemon, backend: str = "web", service: str = "web",
              at_least: int = 1):
    """The ready servers when HAProxy holds what the daemon wants (within the pool)."""
    want = desired(daemon, service)
    if want is None or want < at_least:
        return None
    servers = hx.api.servers_state(backend)
    ready = [s.name for s in servers if s.ready]
    expect = [s.name for s in servers[:min(want, len(servers))]]
    full = all(s.uweight == s.iweight for s in servers if s.ready)
    return ready if ready == expect and full else None


# ---- 1. allocations from a real daemon, through the `bae agent haproxy` command ------------
def test_cli_agent_follows_daemon_allocations_and_traffic_hits_only_ready_servers(
        start_daemon, haproxy_factory, tmp_path):
    d = start_daemon()
    hx = haproxy_factory()
    assert hx.ready() == ["s1"] and set(hx.hits(6)) == {"s1"}
    send_names(d.ingest, [WEB], ["web"])
    err = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "agent", "haproxy", "--socket", hx.sock,
         "--subscribe", d.publish, "--snapshot", d.snapshot, "--reconcile-s", "0.5",
         "--step-s", "0.1", "--ramp-s", "0.3", "--drain-s", "0.2", "--stats-every-s", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    traffic = Traffic(d.ingest, WEB, 25.0)  # 25 rps / 10 per replica: 3
    try:
        ready = wait_until(lambda: converged(hx, d, at_least=2), 20, "scale-up applied")
        assert len(ready) >= 2
        # real requests through the frontend reach the ready servers and only those
        ready = wait_until(lambda: converged(hx, d, at_least=2), 5, "steady")
        got = hx.hits(8 * len(ready))
        assert set(got) == set(ready), (got, ready)
        traffic.rps = 0.0  # load gone: after the daemon's window, drain then maintenance
        # drained first (no new requests), then in maintenance
        wait_until(lambda: [s.maint for s in hx.api.servers_state("web")]
                   == [False, True, True, True], 20, "scale-down to one server")
        assert hx.ready() == ["s1"] and set(hx.hits(6)) == {"s1"}
    finally:
        traffic.close()
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=15)
        err.close()
    assert agent.returncode == 0, (tmp_path / "agent.log").read_text()
    final = json.loads(out.strip().splitlines()[-1])
    assert final["stopped"] and final["stats"]["error_total"] == 0
    assert final["stats"]["set_drain"] >= 1 and final["stats"]["set_maint"] >= 1
    events = [json.loads(ln) for ln in (tmp_path / "agent.log").read_text().splitlines()]
    assert any(e.get("event") == "applied" and e["backend"] == "web" for e in events)
    assert any(e.get("event") == "stats" for e in events)


# ---- 2. a campaign announced ahead: servers ready before the surge arrives ------------------
def test_replayed_surge_makes_servers_ready_before_the_surge_requests_arrive(
        start_daemon, haproxy_factory, agents):
    d = start_daemon({"policy": {"lead_time_s": 10.0}, "model": {"bucket_s": 0.5}})
    hx = haproxy_factory({"web": 6})
    send_names(d.ingest, [WEB], ["web"])
    traffic = Traffic(d.ingest, WEB, 10.0)  # steady: 2 replicas
    a = agents(hx.sock, d)
    try:
        def steady():
            r = converged(hx, d)
            if r is None:
                return None
            time.sleep(1.0)  # and still so a second later
            return r if converged(hx, d) == r else None

        n0 = len(wait_until(steady, 25, "steady allocation applied"))
        assert n0 < 5
        start = time.time() + 6.0
        ctx = np.zeros(1, wire.CONTEXT)
        ctx["ts_us"] = now_us()
        ctx["start_us"] = int(start * 1e6)
        ctx["end_us"] = int((start + 60) * 1e6)
        ctx["campaign"] = 1
        ctx["segment"] = wire.ALL
        ctx["service"] = WEB
        ctx["multiplier"] = 4.0
        with EventPublisher(d.ingest) as pub:
            pub.send_frame(wire.MsgType.CONTEXT, ctx)
        ready_at = None
        while time.time() < start:  # watch the socket until the campaign starts
            if ready_at is None and len(hx.ready()) > n0:
                ready_at = time.time()
            time.sleep(0.02)
        assert ready_at is not None, f"no server made ready ahead of the campaign " \
                                     f"(stats {a.agent.stats()})"
        ready = hx.ready()
        # the surge: REQUEST events to the daemon and requests through HAProxy
        first_request = time.time()
        traffic.rps = 40.0
        got = hx.hits(10 * len(ready))
    finally:
        traffic.close()
    assert ready_at < first_request and start - ready_at > 2.0
    assert len(ready) >= max(n0 + 2, 4)
    assert set(got) == set(ready)  # every pre-warmed server takes its share at once
    assert a.agent.stats()["error_total"] == 0


# ---- 3. HAProxy restarted: back to its config, the agent reconciles --------------------------
def test_haproxy_restart_is_reconciled_back_to_the_desired_state(start_daemon, haproxy_factory,
                                                                 agents):
    d = start_daemon()
    hx = haproxy_factory()
    send_names(d.ingest, [WEB], ["web"])
    traffic = Traffic(d.ingest, WEB, 20.0)
    a = agents(hx.sock, d)
    try:
        before = wait_until(lambda: converged(hx, d, at_least=2), 20, "scale-up applied")
        hx.kill()
        hx.start()  # same cfg: servers 2..4 in maintenance again
        after = wait_until(lambda: converged(hx, d, at_least=2), 10, "reconciled after restart")
        assert len(after) >= 2 and len(before) >= 2
        assert set(hx.hits(4 * len(after))) == set(after)
    finally:
        traffic.close()
    s = a.agent.stats()
    assert s["haproxy_up"] and a.alive()
    assert s["set_ready"] >= len(before) - 1 + len(after) - 1


# ---- 4. refused commands and HAProxy gone: counted, agent runs on, last state applied -------
def test_refused_commands_and_haproxy_gone_are_counted_and_survived(start_daemon,
                                                                    haproxy_factory, agents):
    d = start_daemon()
    hx = haproxy_factory()
    with pytest.raises(HAProxyRefused, match="No such server"):
        hx.api.set_state("web", "s9", "ready")
    with pytest.raises(HAProxyRefused, match="--map"):
        hx.api.servers_state("nosuch")
    send_names(d.ingest, [WEB, GHOST], ["web", "ghost"])
    traffic = Traffic(d.ingest, WEB, 20.0)
    ghost = Traffic(d.ingest, GHOST, 5.0)
    a = agents(hx.sock, d, mapping={"ghost": "nosuch"})  # a backend HAProxy does not have
    try:
        wait_until(lambda: converged(hx, d, at_least=2), 20, "web applied")
        wait_until(lambda: a.agent.stats()["errors"]["refused"] >= 2, 10, "refusals retried")
        assert "nosuch" in a.agent.stats()["last_error"]
        hx.kill()
        traffic.rps = 40.0  # the daemon wants more (4) while HAProxy is gone
        wait_until(lambda: a.agent.stats()["errors"]["unreachable"] >= 2, 10,
                   "unreachable counted")
        wait_until(lambda: (desired(d) or 0) >= 4, 15, "daemon scaled up")
        assert a.alive() and a.agent.stats()["haproxy_up"] is False
        assert "unreachable" in a.agent.stats()["last_error"]
        hx.start()
        ready = wait_until(lambda: converged(hx, d, at_least=4), 10, "last state applied")
        assert len(ready) == 4
    finally:
        traffic.close()
        ghost.close()
    s = a.agent.stats()
    assert s["haproxy_up"] and s["reconnects"] >= 1 and a.alive()


# ---- 5. shadow mode: advisory deltas are logged, not applied --------------------------------
def test_advisory_deltas_are_logged_not_applied(start_daemon, haproxy_factory, agents, caplog):
    d = start_daemon({"policy": {"shadow": True}})
    hx = haproxy_factory()
    before = hx.api.servers_state("web")
    send_names(d.ingest, [WEB], ["web"])
    traffic = Traffic(d.ingest, WEB, 20.0)
    with caplog.at_level(logging.INFO, logger="bae.agent"):
        a = agents(hx.sock, d)
        try:
            wait_until(lambda: (desired(d) or 0) >= 2
                       and a.agent.stats()["advisory_decisions"] >= 1
                       and any(getattr(r, "wanted", 0) and r.wanted >= 2 for r in caplog.records
                               if getattr(r, "event", None) == "advisory"),
                       20, "an advisory scale-up")
            time.sleep(0.5)
        finally:
            traffic.close()
    assert hx.api.servers_state("web") == before  # nothing touched
    s = a.agent.stats()
    assert s["daemon"]["advisory"] is True
    assert s["set_ready"] == s["set_weight"] == s["set_maint"] == s["set_drain"] == 0
    rec = [r for r in caplog.records if getattr(r, "event", None) == "advisory"][-1]
    assert "ready s2 cold" in rec.would and rec.backend == "web"


# ---- 6. PREWARM and TIER records (the daemon does not publish them yet) ---------------------
def _state(desired_replicas: int, prewarm_at_s: float | None = None, prewarm_replicas: int = 0,
           tiers: dict[int, tuple[int, int]] | None = None) -> DeltaState:
    st = DeltaState(names={7: "web"})
    a = np.zeros(1, wire.ALLOCATION)
    a["ts_us"], a["service"], a["desired_replicas"] = now_us(), 7, desired_replicas
    st.allocations[7] = a[0]
    if prewarm_at_s is not None:
        p = np.zeros(1, wire.PREWARM)
        p["ts_us"], p["at_us"], p["service"] = now_us(), int(prewarm_at_s * 1e6), 7
        p["replicas"], p["reason"], p["confidence"] = prewarm_replicas, 2, 0.9
        st.prewarm[7] = p[0]
    for tier, (replicas, maxconn) in (tiers or {}).items():
        t = np.zeros(1, wire.TIER)
        t["ts_us"], t["service"], t["tier"] = now_us(), 7, tier
        t["replicas"], t["maxconn"], t["quantile"], t["headroom"] = replicas, maxconn, 0.9, 0.2
        st.tiers[(7, tier)] = t[0]
    return st


def maxconns(hx: HAProxy) -> list[str]:
    stat = hx.api.stat("web")
    return [stat[f"s{i}"]["slim"] for i in range(1, 5)]


def test_prewarm_readies_servers_ahead_of_at_and_tiers_set_maxconn(haproxy_factory):
    hx = haproxy_factory()
    agent = HAProxyAgent(hx.api, AgentOptions(prewarm_lead_s=1.0, prewarm_hold_s=1.0,
                                              ramp_s=0, drain_s=0, step_s=0.05))
    at = time.time() + 2.0
    st = _state(1, at, 3, {wire.Tier.GOLD: (2, 90), wire.Tier.SILVER: (1, 30)})
    agent.step(st, changed=True)
    assert hx.ready() == ["s1"]  # the pre-warm window has not opened yet
    assert maxconns(hx) == ["120"] * 4  # (90 + 30) connections over one ready server

    def step_ready(n):
        agent.step(st)
        return len(hx.ready()) == n

    wait_until(lambda: step_ready(3), 3, "pre-warmed servers", step_s=0.02)
    t_ready = time.time()
    assert at - 1.2 < t_ready < at, "pre-warm must land ahead of at_us, within its lead"
    assert hx.ready() == ["s1", "s2", "s3"] and maxconns(hx) == ["40"] * 4
    assert agent.stats()["backends"]["web"]["prewarm"] is True
    wait_until(lambda: step_ready(1), 4, "pre-warm released after its hold", step_s=0.02)
    assert time.time() >= at + 1.0
    # the allocation catches up: no pre-warm needed, tiers change
    st = _state(2, tiers={wire.Tier.GOLD: (2, 50)})
    agent.step(st, changed=True)
    assert hx.ready() == ["s1", "s2"] and maxconns(hx) == ["25"] * 4
    assert agent.stats()["error_total"] == 0


def test_new_servers_ramp_their_weight_and_a_pool_too_small_is_capped(haproxy_factory):
    hx = haproxy_factory()
    agent = HAProxyAgent(hx.api, AgentOptions(ramp_s=0.6, ramp_start=0.1, step_s=0.05,
                                              drain_s=0.3))
    agent.step(_state(2), changed=True)
    w = {s.name: s.uweight for s in hx.api.servers_state("web") if s.ready}
    assert w == {"s1": 100, "s2": 10}  # the new one starts low ...
    wait_until(lambda: (agent.step(), [s.uweight for s in hx.api.servers_state("web")
                                       if s.ready] == [100, 100])[1], 3, "ramp to full weight")
    st = _state(9)
    agent.step(st, changed=True)
    assert hx.ready() == ["s1", "s2", "s3", "s4"]
    s = agent.stats()
    assert s["capped"] == 1 and s["backends"]["web"]["capped"] is True
    agent.step(_state(1), changed=True)  # scale down: drain first, maintenance after 0.3 s
    states = hx.api.servers_state("web")
    assert [x.drain for x in states] == [False, True, True, True]
    wait_until(lambda: (agent.step(), hx.ready() == ["s1"]
                        and all(x.maint for x in hx.api.servers_state("web")[1:]))[1],
               3, "maintenance after the drain")
    agent.step(_state(2), changed=True)  # cold again: ramps from the bottom
    assert {s.name: s.uweight for s in hx.api.servers_state("web") if s.ready} == \
        {"s1": 100, "s2": 10}
