"""Shared fixtures: a real daemon process on ipc endpoints in a temp folder, a free HTTP
port, and paths to the shared real data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NASA = DATA / "nasa-http" / "nasa_19950801.tsv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, doc: dict) -> Path:
    lines = []
    for section, keys in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProc:
    """A ``bae run`` child process and the endpoints it serves."""

    def __init__(self, tmp: Path, overrides: dict | None = None, env: dict | None = None,
                 data_dir: Path | None = None):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        doc = {
            "publish": {"endpoint": f"ipc://{tmp}/deltas",
                        "snapshot_endpoint": f"ipc://{tmp}/snap", "heartbeat_s": 0.2},
            "http": {"listen": f"127.0.0.1:{self.port}"},
            "model": {"bucket_s": 0.2, "late_buckets": 1},
            "policy": {"tick_s": 0.1, "lead_time_s": 0.4, "scale_down_window_s": 1.0,
                       "rps_per_replica": 10.0},
            "ingest": {"endpoint": f"ipc://{tmp}/in", "durable_endpoint": f"ipc://{tmp}/durable"},
            "state": {"data_dir": str(data_dir or tmp / "state")},
            "log": {"level": "info", "format": "json"},
        }
        for section, keys in (overrides or {}).items():
            doc.setdefault(section, {}).update(keys)
        self.doc = doc
        self.config = write_config(tmp / "bae.toml", doc)
        self.ingest = doc["ingest"]["endpoint"]
        self.durable = doc["ingest"]["durable_endpoint"]
        self.publish = doc["publish"]["endpoint"]
        self.snapshot = doc["publish"]["snapshot_endpoint"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.data_dir = Path(doc["state"]["data_dir"])
        self.launch()

    def launch(self) -> None:
        """Start (or start again, after a stop or kill) the daemon on the same config."""
        self.log_path = self.tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})

    def kill(self) -> None:
        """SIGKILL: no drain, no final checkpoint."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def wait_ready(self, timeout_s: float = 60.0) -> "DaemonProc":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")["ready"]:
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout_s}s:\n{self.log()}")

    def get(self, path: str, token: str | None = None):
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            r = urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            e.close()  # its socket would otherwise linger until garbage collection
            raise
        with r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" \
                else body.decode()

    def stats(self) -> dict:
        return self.get("/v1/stats")

    def wait_for(self, pred, timeout_s: float = 20.0, what: str = "condition"):
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.stats()
            if pred(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last stats {last}")

    def wait_for_health(self, pred, timeout_s: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.get("/healthz")
            if pred(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting on /healthz; last {last}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_daemon(tmp_path):
    """Factory: ``start_daemon(overrides=..., env=...)`` -> a ready DaemonProc; every daemon
    started is stopped at the end of the test."""
    started: list[DaemonProc] = []

    def start(overrides=None, env=None, data_dir=None, name=None, ready=True):
        d = DaemonProc(tmp_path / (name or f"d{len(started)}"), overrides, env, data_dir)
        started.append(d)
        return d.wait_ready() if ready else d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def daemon(start_daemon):
    return start_daemon()
