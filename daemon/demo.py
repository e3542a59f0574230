"""``bae demo``: the daemon on its embedded defaults (plus a demo time scale), a real access
log replayed into it, and a subscriber showing the deltas live."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bae_core import wire

from .client import DeltaSubscriber
from .replay import replay

REASONS = {wire.Reason.FIRST: "first", wire.Reason.SCALE_UP: "up",
           wire.Reason.SCALE_DOWN: "down", wire.Reason.DEFAULT_CAPACITY: "default-capacity",
           wire.Reason.CAMPAIGN: "campaign", wire.Reason.PANIC: "panic",
           wire.Reason.ANOMALY: "anomaly", wire.Reason.MODEL_HOLT_WINTERS: "hw",
           wire.Reason.MODEL_ARIMA: "arima", wire.Reason.MODEL_LSTM: "lstm",
           wire.Reason.MODEL_PROPHET: "prophet"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_config(d: Path, speed: float, http: str) -> Path:
    """Embedded defaults, with time scaled down by the replay speed (so one bucket still
    holds ~10 s of the log's own time) and loopback ipc endpoints in a temp folder."""
    host, port = http.rsplit(":", 1)
    if port == "0":
        http = f"{host}:{_free_port()}"
    bucket = round(max(0.05, 10.0 * 60.0 / speed), 3)
    cfg = f"""
[ingest]
endpoint = "ipc://{d}/ingest"
durable_endpoint = "ipc://{d}/durable"
[publish]
endpoint = "ipc://{d}/deltas"
snapshot_endpoint = "ipc://{d}/snapshot"
heartbeat_s = 0.5
[http]
listen = "{http}"
[model]
bucket_s = {bucket:.3f}
seasonal_bucket_s = {bucket * 30:.3f}
[policy]
tick_s = 0.25
rps_per_replica = 20.0
lead_time_s = {bucket * 3:.3f}
scale_down_window_s = {bucket * 10:.3f}
[state]
data_dir = "{d}/state"
[log]
format = "text"
level = "warning"
"""
    p = d / "bae.toml"
    p.write_text(cfg)
    return p


def _reasons(bits: int) -> str:
    return ",".join(n for b, n in REASONS.items() if bits & b)


def _table(sub: DeltaSubscriber, changes: dict, progress: dict, stats: dict) -> Group:
    t = Table(title="BAE allocation deltas (desired replicas per service)", expand=False)
    for col in ("service", "forecast rps", "rps/replica", "replicas", "change", "why",
                "updates", "prefetch n@p1"):
        t.add_column(col, justify="right" if col not in ("service", "why") else "left")
    rows = sorted(sub.state.allocations.items(), key=lambda kv: -kv[1]["predicted_rps"])
    for sid, r in rows[:15]:
        prev, n = changes.get(sid, (0, 0))
        des = int(r["desired_replicas"])
        arrow = "" if prev == des else (f"[green]{prev}->{des}" if des > prev
                                        else f"[yellow]{prev}->{des}")
        pf = sub.state.prefetch.get(sid)
        t.add_row(sub.state.names.get(sid, str(sid)), f"{r['predicted_rps']:.1f}",
                  f"{r['rps_per_replica']:.0f}", str(des), arrow, _reasons(int(r["reasons"])),
                  str(n), "" if pf is None else f"{len(pf)}@{pf['probability'].max():.2f}")
    sent, total = progress["sent"], progress["total"]
    bar = int(30 * sent / max(total, 1))
    head = Text.from_markup(
        f"replay [{'#' * bar}{'.' * (30 - bar)}] {sent}/{total} events   "
        f"accepted {stats.get('events_accepted', 0)}   rejected "
        f"{stats.get('events_rejected', 0)}   delta seq {sub.sequence}   "
        f"resyncs {sub.resyncs}   pre-warm orders {len(sub.state.prewarm)} services   "
        f"prefetch lists {len(sub.state.prefetch)}")
    return Group(head, t)


def demo(trace: str, *, speed: float = 900.0, http: str = "127.0.0.1:0") -> int:
    console = Console()
    if not Path(trace).is_file():
        console.print(f"[red]bae demo: no trace at {trace}; pass --trace PATH to the NASA log")
        return 2
    total = sum(1 for _ in open(trace, "rb")) - 1
    with tempfile.TemporaryDirectory(prefix="bae-demo-") as tmp:
        d = Path(tmp)
        cfg_path = _demo_config(d, speed, http)
        cfg = __import__("tomllib").loads(cfg_path.read_text())
        http_url = f"http://{cfg['http']['listen']}"
        console.print(f"starting daemon: bae run --config {cfg_path}  (HTTP API {http_url})")
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config",
                                 str(cfg_path)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            if not _wait_ready(http_url, proc):
                console.print("[red]daemon did not become ready; see its log above")
                return 1
            sub = DeltaSubscriber(cfg["publish"]["endpoint"],
                                  cfg["publish"]["snapshot_endpoint"])
            progress = {"sent": 0, "total": total, "result": None}

            def run_replay():
                progress["result"] = replay(
                    trace, "nasa", cfg["ingest"]["endpoint"], speed=speed,
                    on_batch=lambda n, _s: progress.__setitem__("sent", n))

            th = threading.Thread(target=run_replay, daemon=True)
            th.start()
            changes: dict[int, tuple[int, int]] = {}
            stats: dict = {}
            last_stats, ended = 0.0, None
            with Live(console=console, refresh_per_second=4) as live:
                while not _finished(ended, stats, progress):
                    if ended is None and not th.is_alive():
                        ended = time.monotonic()  # a last look at the final deltas
                    for _hdr, recs in sub.poll(0.25):
                        if _hdr.type != wire.MsgType.ALLOCATION:
                            continue
                        for r in recs:
                            sid = int(r["service"])
                            n = changes.get(sid, (0, 0))[1]
                            changes[sid] = (int(r["previous_replicas"]), n + 1)
                    if time.monotonic() - last_stats > (0.25 if ended else 1.0):
                        stats = _get_json(http_url + "/v1/stats") or stats
                        last_stats = time.monotonic()
                    live.update(_table(sub, changes, progress, stats))
            th.join()
            sub.close()
            console.print()
            print(json.dumps({"replay": progress["result"], "daemon": {
                k: stats.get(k) for k in ("events_accepted", "events_rejected", "services",
                                          "users", "deltas_published")}}), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        console.print(f"daemon stopped cleanly (exit {rc})" if rc == 0 else
                      f"[red]daemon exited with {rc}")
        return 0 if rc == 0 else 1


def _finished(ended: float | None, stats: dict, progress: dict) -> bool:
    """The replay ended 2 s ago and the daemon has taken every event (or 30 s passed)."""
    if ended is None:
        return False
    waited = time.monotonic() - ended
    caught_up = stats.get("events_accepted", 0) >= progress["sent"]
    return waited >= 30.0 or (waited >= 2.0 and caught_up)


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _wait_ready(http_url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if (_get_json(http_url + "/readyz") or {}).get("ready"):
            return True
        time.sleep(0.2)
    return False
