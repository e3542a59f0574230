"""End-to-end: the real daemon process, real ZeroMQ sockets, real LMDB, real HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error

import numpy as np
import pytest
import zmq

from bae_core import wire
from daemon.client import DeltaSubscriber, EventPublisher

from .conftest import NASA, ROOT, write_config

pytestmark = pytest.mark.slow


def now_us() -> int:
    return time.time_ns() // 1000


def requests(n: int, services=(1, 2, 3), users: int = 100, ts_us: int | None = None,
             seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, wire.REQUEST)
    r["ts_us"] = now_us() if ts_us is None else ts_us
    r["user"] = rng.integers(0, users, n)
    r["resource"] = rng.integers(0, 1000, n)
    r["service"] = np.asarray(services)[rng.integers(0, len(services), n)]
    r["latency_ms"] = rng.uniform(1, 50, n)
    r["status"] = 200
    r["bytes"] = 1000
    return r


def service_names(ids, names):
    return wire.make_names(wire.NameKind.SERVICE, ids, names)


def metric_value(text: str, name: str, labels: str = "") -> float:
    pat = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    m = re.search(r"^" + pat + "$", text, re.M)
    assert m, f"{name}{{{labels}}} not in /metrics"
    return float(m.group(1))


def test_events_become_deltas_and_a_late_subscriber_gets_a_snapshot(daemon):
    with EventPublisher(daemon.ingest) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1, 2, 3], ["web", "api", "img"]))
        sent = [requests(100, seed=k) for k in range(10)]
        for r in sent:  # ~1 s of traffic at ~1000 rps for three services
            pub.send_frame(wire.MsgType.REQUEST, r)
            time.sleep(0.1)
    stats = daemon.wait_for(lambda s: s["events_accepted"] == 1000, what="1000 accepted")
    assert stats["names_registered"] == 3 and stats["services"] == 3
    users = len(np.unique(np.concatenate(sent)["user"]))
    assert stats["users"] == users and stats["events_rejected"] == 0
    daemon.wait_for(lambda s: s["deltas_published"] >= 2, what="deltas")
    # joins after the deltas were published: the snapshot must carry them
    with DeltaSubscriber(daemon.publish, daemon.snapshot) as sub:
        sub.poll(0.3)
        assert sub.sequence >= 2
        reps = sub.state.replicas()
        assert set(reps) == {"web", "api", "img"}
        http = {a["service"]: a["desired_replicas"]
                for a in daemon.get("/v1/allocations")["allocations"]}
        assert reps == http
        assert all(v >= 1 for v in reps.values())
    svc = daemon.get("/v1/services/web")
    assert svc["requests"] > 0 and svc["buckets_observed"] > 0
    assert max(svc["recent_rates_rps"] + [0]) > 0 or svc["buckets_observed"] > 12


def test_subscriber_follows_updates_in_order(daemon):
    with DeltaSubscriber(daemon.publish, daemon.snapshot) as sub:
        sub.poll(0.2)
        seq0 = sub.sequence
        seen = []
        with EventPublisher(daemon.ingest) as pub:
            pub.send_frame(wire.MsgType.NAME, service_names([7], ["burst"]))
            for k in range(15):  # rising load: scale-up deltas follow
                pub.send_frame(wire.MsgType.REQUEST, requests(20 * (k + 1), services=(7,)))
                seen += sub.poll(0.1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                h.type == wire.MsgType.ALLOCATION and r["desired_replicas"].max() > 1
                for h, r in seen):
            seen += sub.poll(0.1)
        seqs = [h.sequence for h, _ in seen]
        assert seqs == list(range(seq0 + 1, seq0 + 1 + len(seqs))), "updates out of order"
        ups = [r for h, r in seen if h.type == wire.MsgType.ALLOCATION]
        assert ups and max(int(r["desired_replicas"].max()) for r in ups) > 1
        assert sub.state.names[7] == "burst" and sub.gaps == 0


def test_malformed_input_is_counted_and_the_daemon_keeps_serving(daemon):
    good = requests(10)
    bad_latency = requests(10)
    bad_latency["latency_ms"][:3] = np.nan
    bad_latency["latency_ms"][3] = -1.0
    skewed = requests(5, ts_us=now_us() - 10 * 3600 * 10**6)
    hdr, body = wire.encode(wire.MsgType.REQUEST, good, 99, 0)
    with EventPublisher(daemon.ingest, producer_id=42) as pub:
        pub.send_raw([b"NOPE" + hdr[4:], body])  # bad magic
        pub.send_raw([hdr, body[:-5]])  # truncated
        pub.send_raw([hdr])  # one frame
        pub.send_raw([wire.encode_header(wire.MsgType.REQUEST, 10, 5, 0)[:6] + b"\x63\x00"
                      + hdr[8:], body])  # unknown type 99
        pub.send_raw([wire.encode_header(wire.MsgType.ALLOCATION, 0, 5, 1), b""])
        pub.send_raw([hdr[:20], body])  # short header
        pub.send_frame(wire.MsgType.REQUEST, bad_latency)
        pub.send_frame(wire.MsgType.REQUEST, skewed)
        pub.send_frame(wire.MsgType.REQUEST, good)
    s = daemon.wait_for(lambda s: s["events_accepted"] == 16, what="good records")
    assert s["events_rejected_by_reason"]["non_finite"] == 3
    assert s["events_rejected_by_reason"]["negative"] == 1
    assert s["events_rejected_by_reason"]["timestamp_skew"] == 5
    fr = s["frames_rejected"]
    for reason in ("bad_magic", "truncated", "bad_frame_count", "unknown_type",
                   "unexpected_type", "bad_header"):
        assert fr.get(reason) == 1, (reason, fr)
    text = daemon.get("/metrics")
    assert metric_value(text, "bae_frames_rejected_total", 'reason="bad_magic"') == 1
    assert metric_value(text, "bae_events_rejected_total", 'reason="non_finite"') == 3
    assert metric_value(text, "bae_events_accepted_total", 'type="request"') == 16
    for name in ("bae_frames_total", "bae_sequence_gaps_total", "bae_deltas_published_total",
                 "bae_subscribers", "process_resident_memory_bytes"):
        assert metric_value(text, name) >= 0
    assert metric_value(text, "bae_loop_lag_seconds", 'quantile="0.99"') < 1.0
    assert daemon.get("/healthz")["status"] == "ok"
    assert '"reason": "bad_magic"' in daemon.log()


def test_sequence_gaps_restarts_and_stale_frames(daemon):
    recs = requests(4)
    with EventPublisher(daemon.ingest, producer_id=7) as pub:
        for seq in (0, 1, 2, 5, 6):  # 3 and 4 missing: a gap of 2
            pub.sequence = seq
            pub.send_frame(wire.MsgType.REQUEST, recs)
        pub.sequence = 3  # older than the last one: stale
        pub.send_frame(wire.MsgType.REQUEST, recs)
        pub.sequence = 0  # the producer restarted
        pub.send_frame(wire.MsgType.REQUEST, recs)
        pub.send_frame(wire.MsgType.REQUEST, recs)
    s = daemon.wait_for(lambda s: s["events_accepted"] == 28, what="accepted")
    time.sleep(0.2)
    s = daemon.stats()
    assert s["sequence_gaps"] == 2
    assert s["producer_restarts"] == 1
    assert s["frames_rejected"] == {"stale_sequence": 1}
    assert s["events_accepted"] == 28 and s["producers"] == 1


def test_every_event_sent_is_accepted_under_backpressure(start_daemon):
    d = start_daemon({"ingest": {"hwm": 4}})
    n_frames = 600
    with EventPublisher(d.ingest, sndhwm=4) as pub:
        for k in range(n_frames):
            pub.send_frame(wire.MsgType.REQUEST, requests(1024, users=100_000, seed=k))
    s = d.wait_for(lambda s: s["events_accepted"] == n_frames * 1024, timeout_s=60,
                   what="all events")
    assert s["events_rejected"] == 0 and s["sequence_gaps"] == 0


def test_sigterm_drains_checkpoints_and_restart_restores(start_daemon, tmp_path):
    state = tmp_path / "state"
    d = start_daemon(data_dir=state, name="first")
    with EventPublisher(d.ingest) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        for k in range(20):
            pub.send_frame(wire.MsgType.REQUEST, requests(500, services=(1,), seed=k))
    # SIGTERM at once: whatever reached the socket is drained, then saved
    rc = d.stop()
    assert rc == 0, d.log()
    log = d.log()
    assert "stopped" in log
    stopped = json.loads([ln for ln in log.splitlines() if '"stopped"' in ln][-1])
    assert (state / "lmdb" / "data.mdb").exists() and (state / "journal").is_dir()
    d2 = start_daemon(data_dir=state, name="second")
    s = d2.stats()
    assert s["events_accepted"] == stopped["events_accepted"] == 10_000
    assert s["users"] == stopped["users"] and s["services"] == 1
    assert d2.get("/v1/services/web")["requests"] == 10_000


def test_config_typo_stops_the_daemon_with_a_fix(tmp_path):
    cfg = write_config(tmp_path / "bad.toml", {"ingest": {"endpiont": "tcp://127.0.0.1:1"}})
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "ingest.endpiont" in r.stderr and "did you mean 'endpoint'" in r.stderr
    cfg = write_config(tmp_path / "bad2.toml", {"policy": {"tick_s": "fast"}})
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "policy.tick_s" in r.stderr and "float" in r.stderr


def test_bearer_token_guards_api_but_not_health(start_daemon):
    d = start_daemon({"http": {"token": "s3cret"}})
    with pytest.raises(urllib.error.HTTPError) as e:
        d.get("/v1/stats")
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError):
        d.get("/metrics", token="wrong")
    assert d.get("/v1/stats", token="s3cret")["events_accepted"] == 0
    assert "bae_frames_total" in d.get("/metrics", token="s3cret")
    assert d.get("/healthz")["status"] == "ok" and d.get("/readyz")["ready"]


def test_sub_ingest_receives_from_a_producer_pub_socket(start_daemon, tmp_path):
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    ep = f"ipc://{tmp_path}/producer-pub"
    pub.bind(ep)
    try:
        d = start_daemon({"ingest": {"subscribe": [ep]}})
        seq = 0
        deadline = time.monotonic() + 20
        # PUB drops until the daemon's SUB has joined: the sequence numbers show it
        while d.stats()["events_accepted"] == 0 and time.monotonic() < deadline:
            pub.send_multipart(wire.encode(wire.MsgType.REQUEST, requests(3), 5, seq))
            seq += 1
            time.sleep(0.05)
        first = d.stats()["events_accepted"]
        assert first > 0
        for _ in range(5):
            pub.send_multipart(wire.encode(wire.MsgType.REQUEST, requests(3), 5, seq))
            seq += 1
        s = d.wait_for(lambda s: s["events_accepted"] == first + 15, what="SUB events")
        assert s["sequence_gaps"] == 0  # joined mid-stream: no gap after the first message
    finally:
        pub.close()


def test_curve_encryption_and_client_authentication(start_daemon, tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    for name in ("server", "balancer", "stranger"):
        r = subprocess.run([sys.executable, "-m", "daemon.cli", "keygen", str(keys), "--name",
                            name], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    (allowed / "balancer.key").write_bytes((keys / "balancer.key").read_bytes())
    d = start_daemon({"security": {"curve": True,
                                   "server_secret_key": str(keys / "server.key_secret"),
                                   "authorized_keys_dir": str(allowed)}})
    server_pub = str(keys / "server.key")
    with EventPublisher(d.ingest, server_public_key=server_pub,
                        client_cert=str(keys / "stranger.key_secret"), send_timeout_s=0.5) as p:
        p.send_frame(wire.MsgType.REQUEST, requests(5))  # queued, never admitted
        time.sleep(1.0)
    assert d.stats()["events_accepted"] == 0
    with EventPublisher(d.ingest, server_public_key=server_pub,
                        client_cert=str(keys / "balancer.key_secret")) as p:
        p.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        p.send_frame(wire.MsgType.REQUEST, requests(50, services=(1,)))
    d.wait_for(lambda s: s["events_accepted"] == 50 and s["deltas_published"] >= 1,
               what="curve events")
    with DeltaSubscriber(d.publish, d.snapshot, server_public_key=server_pub,
                         client_cert=str(keys / "balancer.key_secret")) as sub:
        deadline = time.monotonic() + 10  # the first allocation follows a closed bucket
        while "web" not in sub.state.replicas() and time.monotonic() < deadline:
            sub.poll(0.2)
        assert "web" in sub.state.replicas() and sub.resyncs >= 1


def test_replay_cli_sends_the_nasa_log(daemon):
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "replay", str(NASA), "--format",
                        "nasa", "--to", daemon.ingest, "--max", "--limit", "5000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sent"] == 5000 and out["rejected"] == 0
    s = daemon.wait_for(lambda s: s["events_accepted"] == 5000, what="replayed events")
    assert s["names_registered"] == out["names_sent"]
    names = {x["name"] for x in daemon.get("/v1/services")["services"]}
    assert {"images", "shuttle", "history"} <= names


def test_replay_cli_counts_unparseable_lines(daemon, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(
        '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /shop/a.gif HTTP/1.0" 200 2326\n'
        "this is not a log line\n"
        '10.0.0.2 - bob [10/Oct/2000:13:55:37 -0700] "GET /shop/b HTTP/1.1" 404 12 "-" "x"\n')
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "replay", str(log), "--format",
                        "clf", "--to", daemon.ingest, "--max"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sent"] == 2 and out["rejected"] == 1
    daemon.wait_for(lambda s: s["events_accepted"] == 2, what="2 events")
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "replay", str(tmp_path / "none"),
                        "--format", "clf", "--to", daemon.ingest],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bae: error:" in r.stderr


def test_systemd_notify_ready_watchdog_and_stopping(start_daemon, tmp_path):
    import socket
    import struct

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    sock.settimeout(0.2)
    got: list[tuple[int, str]] = []

    def drain(until, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until():
            try:
                msg, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = next(struct.unpack("iII", data)[0] for lvl, typ, data in anc
                       if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS)
            got.append((pid, msg.decode()))

    try:
        d = start_daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        pid = d.proc.pid
        drain(lambda: sum("WATCHDOG=1" in m for _, m in got) >= 3)
        assert any("READY=1" in m for _, m in got)
        assert any(m.startswith("STATUS=serving") for _, m in got)
        assert sum("WATCHDOG=1" in m for _, m in got) >= 3
        assert all(p == pid for p, _ in got), "notifications must come from the daemon"
        assert d.stop() == 0
        drain(lambda: any("STOPPING=1" in m for _, m in got), timeout_s=5)
        assert any("STOPPING=1" in m for _, m in got)
    finally:
        sock.close()


def test_user_profile_and_service_forecast_routes(start_daemon):
    daemon = start_daemon({"state": {"user_history": 8}, "model": {"user_surge_new": 160}})
    names = wire.make_names(wire.NameKind.USER, [5], ["alice.example.org"])
    with EventPublisher(daemon.ingest) as pub:
        pub.send_frame(wire.MsgType.NAME, names)
        pub.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        for k in range(30):  # three seconds of traffic: buckets close, forecasters learn
            r = requests(50, services=(1,), users=20, seed=k)
            r["user"][r["user"] == 5] = 6
            r["user"][:6] = 5  # alice cycles through three pages
            r["resource"][:6] = [100, 200, 300, 100, 200, 300]
            pub.send_frame(wire.MsgType.REQUEST, r)
            time.sleep(0.1)
    daemon.wait_for(lambda s: s["navigation_learned"] == 1500, what="navigation learned")
    u = daemon.get("/v1/users/alice.example.org")
    assert u["id"] == "5" and u["requests"] == 180 and u["name"] == "alice.example.org"
    top = u["next_resources"][0]  # after 200, 300 comes 100
    assert top["id"] == "100" and top["probability"] > 0.5, u["next_resources"]
    assert sum(u["hourly_requests_utc"]) == u["requests"]
    assert len(u["recent_request_times_s"]) == 8 and u["recent_rate_per_min"] > 0
    assert daemon.get("/v1/users/5")["requests"] == u["requests"]
    # a new user past 160 requests in an hour is flagged (alice sends 180, others ~70)
    assert u["surges"] == 1 and u["surging"] is True
    assert daemon.get("/v1/stats")["user_surges"] == 1
    assert len(u["forecast_requests_next_24h"]) == 24
    assert u["forecast_requests_next_24h"][0] >= 160  # no closed hour yet: the count so far
    f = daemon.get("/v1/services/web/forecast?horizon=6")
    assert f["horizon"] == 6 and f["unit"] == "requests/s"
    assert len(f["models"]["holt"]["mean"]) == 6
    arima = f["models"]["arima"]
    assert len(arima["p90"]) == 6 and all(p >= m for p, m in zip(arima["p90"], arima["mean"]))
    hw = f["models"]["holt_winters"]  # its own, coarser step: not warmed up yet
    assert hw["bucket_s"] == daemon.doc["model"].get("seasonal_bucket_s", 300)
    assert len(hw["mean"]) >= 1
    svc = daemon.get("/v1/services/web")
    assert 0.0 <= svc["anomaly_score"] <= 1.0 and svc["anomalous"] in (True, False)
    seg = daemon.get("/v1/segments/0")  # users without a profile
    assert seg["id"] == "0" and len(seg["forecast_rps"]["mean"]) == 12
    pred = daemon.get("/v1/predictions/users/alice.example.org")
    assert pred["id"] == "5" and pred["needs"] >= 0 and pred["interval_s"] == 10.0
    for bad, code in (("/v1/users/nobody", 404), ("/v1/services/nope/forecast", 404),
                      ("/v1/services/web/forecast?horizon=x", 400), ("/v1/segments/77", 404),
                      ("/v1/predictions/users/nobody", 404), ("/v1/prefetch/nope", 404)):
        with pytest.raises(urllib.error.HTTPError) as e:
            daemon.get(bad)
        assert e.value.code == code


def test_demo_runs_the_nasa_log_end_to_end():
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--trace", str(NASA),
                        "--speed", "20000"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "daemon stopped cleanly (exit 0)" in r.stdout
    summary = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith('{"replay"')))
    assert summary["replay"]["sent"] == summary["daemon"]["events_accepted"] == 30_969
    assert summary["daemon"]["deltas_published"] > 0 and summary["daemon"]["services"] > 10
