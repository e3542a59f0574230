"""The systemd unit (packaging/bae.service) and the sd_notify client (daemon/systemd.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from daemon.systemd import Notifier, watchdog_loop

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "bae.service"
SHIPPED_EXEC = "/usr/local/bin/bae"


# --------------------------------------------------------------------- the unit file


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned (systemd allows repeats), comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {raw!r}"
        assert not line.endswith("\\"), "continuation lines are not used in bae.service"
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing from {UNIT.name}"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is not on PATH; run `make test`, which installs it (Debian package systemd)")
    return exe


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = systemd_analyze()
    # verify checks that ExecStart's binary exists and is executable, so point it
    # at the venv's console script when installed, else at a stand-in script.
    bae = Path(sys.executable).parent / "bae"
    if not (bae.is_file() and os.access(bae, os.X_OK)):
        bae = tmp_path / "bae"
        bae.write_text("#!/bin/sh\nexit 0\n")
        bae.chmod(bae.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    text = UNIT.read_text()
    assert SHIPPED_EXEC in text
    copy = tmp_path / "bae.service"
    copy.write_text(text.replace(SHIPPED_EXEC, str(bae)))

    proc = subprocess.run(
        [exe, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # Containers can print unrelated warnings about host units; only ours count.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if copy.name in line]
    assert proc.returncode == 0, f"systemd-analyze verify failed:\n{proc.stdout}{proc.stderr}"
    assert ours == [], "systemd-analyze verify warns about the unit:\n" + "\n".join(ours)


def test_unit_is_a_notify_service_with_watchdog(unit) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == (
        f"{SHIPPED_EXEC} run --config /etc/bae/bae.toml --data-dir ${{STATE_DIRECTORY}}"
    )
    assert one(unit, "Service", "WatchdogSec") == "10s"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec")
    stop = one(unit, "Service", "TimeoutStopSec")
    assert stop.endswith("s") and int(stop[:-1]) >= 30, "a drain plus final checkpoint needs >= 30 s"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    docs = one(unit, "Unit", "Documentation")
    assert docs.endswith("/operations.md") and (ROOT / "docs" / "operations.md").is_file()


def test_unit_directories_and_environment(unit) -> None:
    assert one(unit, "Service", "DynamicUser") == "yes"
    assert one(unit, "Service", "StateDirectory") == "bae"
    assert one(unit, "Service", "ConfigurationDirectory") == "bae"
    assert one(unit, "Service", "RuntimeDirectory") == "bae"
    env = dict(item.split("=", 1) for value in unit["Service"]["Environment"] for item in value.split())
    # numba must cache under the (writable) state directory: %S/bae == $STATE_DIRECTORY.
    assert env["NUMBA_CACHE_DIR"] == "%S/bae/numba-cache"
    assert one(unit, "Service", "LimitNOFILE") == "65536"


HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("key", sorted(HARDENING))
def test_unit_hardening(unit, key: str) -> None:
    assert one(unit, "Service", key) == HARDENING[key]


def test_unit_address_families_and_jit(unit) -> None:
    families = set(one(unit, "Service", "RestrictAddressFamilies").split())
    # AF_UNIX carries NOTIFY_SOCKET and ipc:// endpoints.
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # numba JIT needs writable+executable memory: W^X must be off, and say why.
    assert unit["Service"].get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    lines = UNIT.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("MemoryDenyWriteExecute"))
    comment = " ".join(line for line in lines[max(0, at - 4) : at] if line.startswith("#"))
    assert "numba" in comment.lower()


def test_unit_security_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the unit OK (exposure < 3)."""
    exe = systemd_analyze()
    copy = tmp_path / "bae.service"
    copy.write_text(UNIT.read_text())
    proc = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze predates `security --offline` (systemd < 250)")
    last = [line for line in proc.stdout.splitlines() if "Overall exposure level" in line]
    assert last, proc.stdout + proc.stderr
    score = float(last[-1].split(":", 1)[1].split()[0])
    assert score < 3.0, last[-1]


# ------------------------------------------------------------------- the sd_notify client


class Receiver:
    """A datagram socket standing in for systemd's notify socket; records sender pids."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(address)
        # The kernel attaches the sender's pid/uid/gid to each datagram, which is how
        # systemd enforces NotifyAccess=main.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)

    def recv(self) -> tuple[str, int] | None:
        """One (payload, sender pid), or None when nothing is queued."""
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("iII")))
        except BlockingIOError:
            return None
        pid = -1
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", cdata[: struct.calcsize("iII")])
        return data.decode(), pid

    def drain(self) -> list[str]:
        """Every queued payload; asserts each came from this process."""
        out = []
        while (got := self.recv()) is not None:
            payload, pid = got
            assert pid == os.getpid(), f"datagram from pid {pid}, expected {os.getpid()}"
            out.append(payload)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sun_path is 108 bytes; pytest's tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="bae-sd-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture(params=["path", "abstract"])
def bus(request, short_dir: Path) -> Iterator[tuple[Receiver, str]]:
    """(receiver, NOTIFY_SOCKET value) for a filesystem socket and an abstract one."""
    if request.param == "path":
        address = str(short_dir / "notify")
        value = address
    else:
        name = f"bae-test-{uuid.uuid4().hex}"
        address, value = "\0" + name, "@" + name
    receiver = Receiver(address)
    yield receiver, value
    receiver.close()


def test_messages_arrive_from_this_pid(bus) -> None:
    receiver, value = bus
    with Notifier({"NOTIFY_SOCKET": value}) as n:
        assert n.enabled
        assert n.ready()
        assert n.status("loading models")
        assert n.watchdog()
        assert n.stopping()
        assert n.notify("STATUS=raw\nERRNO=0")
        assert n.notify(STATUS="two\nlines", EXTEND_TIMEOUT_USEC=5)
        assert n.ready(status="serving")
        assert n.extend_timeout(1.5)
    assert receiver.drain() == [
        "READY=1\n",
        "STATUS=loading models\n",
        "WATCHDOG=1\n",
        "STOPPING=1\n",
        "STATUS=raw\nERRNO=0\n",
        "STATUS=two lines\nEXTEND_TIMEOUT_USEC=5\n",
        "READY=1\nSTATUS=serving\n",
        "EXTEND_TIMEOUT_USEC=1500000\n",
    ]


def test_reloading_carries_monotonic_usec(bus) -> None:
    receiver, value = bus
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with Notifier({"NOTIFY_SOCKET": value}) as n:
        n.reloading()
    (payload,) = receiver.drain()
    fields = dict(line.split("=", 1) for line in payload.splitlines())
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    sock = "/run/nonexistent/notify"
    assert Notifier({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "10000000"}).watchdog_interval_s == 5.0
    own = {"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(own).watchdog_interval_s == 1.5
    assert Notifier({"NOTIFY_SOCKET": sock}).watchdog_interval_s is None
    assert Notifier({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    # Without a socket the pings would go nowhere: no watchdog either.
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval_s is None


def test_watchdog_pid_of_another_process_disables_watchdog() -> None:
    other = os.getppid() if os.getppid() != os.getpid() else os.getpid() + 1
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(other)}
    n = Notifier(env)
    assert n.enabled  # notifications still go out, only the watchdog is not ours
    assert n.watchdog_interval_s is None


def test_reads_os_environ_by_default(monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@bae-env")
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier().watchdog_interval_s == 2.0
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier().enabled


def test_without_notify_socket_everything_is_a_noop(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="bae.systemd")
    with Notifier({}) as n:
        assert not n.enabled
        assert n.watchdog_interval_s is None
        assert not n.ready()
        assert not n.status("x")
        assert not n.stopping()
        assert not n.watchdog()
        assert not n.reloading()
        assert not n.notify("READY=1")
        assert n._sock is None  # not even a socket was opened
    assert caplog.records == []


def test_missing_socket_warns_once_and_never_raises(short_dir: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="bae.systemd")
    with Notifier({"NOTIFY_SOCKET": str(short_dir / "gone"), "WATCHDOG_USEC": "1000000"}) as n:
        assert n.enabled
        for _ in range(5):
            assert not n.ready()
            assert not n.watchdog()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert warnings[0].name == "bae.systemd"
    assert "gone" in warnings[0].getMessage()


def test_unsupported_socket_address_is_disabled(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bae.systemd")
    n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval_s is None and not n.ready()
    assert len(caplog.records) == 1


def test_socket_that_appears_later_is_used(short_dir: Path, caplog) -> None:
    """A failed send is not fatal: once the socket exists, messages go through."""
    path = short_dir / "late"
    with Notifier({"NOTIFY_SOCKET": str(path)}) as n:
        with caplog.at_level(logging.WARNING, logger="bae.systemd"):
            assert not n.ready()
        receiver = Receiver(str(path))
        try:
            assert n.ready()
            assert receiver.drain() == ["READY=1\n"]
        finally:
            receiver.close()


# ------------------------------------------------------------------- the watchdog loop


def test_watchdog_loop_is_uvloop_and_pings_at_half_watchdog_usec(short_dir: Path) -> None:
    interval = 0.05
    receiver = Receiver(str(short_dir / "notify"))
    env = {"NOTIFY_SOCKET": str(short_dir / "notify"), "WATCHDOG_USEC": str(int(2 * interval * 1e6))}
    arrivals: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop)

        def on_readable() -> None:
            for payload in receiver.drain():
                assert payload == "WATCHDOG=1\n"
                arrivals.append(time.monotonic())

        loop.add_reader(receiver.sock.fileno(), on_readable)
        stop = asyncio.Event()
        with Notifier(env) as n:
            assert n.watchdog_interval_s == pytest.approx(interval)
            task = asyncio.create_task(watchdog_loop(n, stop))
            await asyncio.sleep(12.5 * interval)
            stop.set()
            await asyncio.wait_for(task, timeout=1.0)
            count = len(arrivals)
            await asyncio.sleep(3 * interval)  # nothing more after stop
            on_readable()
            assert len(arrivals) == count
        loop.remove_reader(receiver.sock.fileno())

    try:
        uvloop.run(main())
    finally:
        receiver.close()
    # 12.5 intervals -> pings at 0, 1, ..., 12 intervals (13), allowing scheduler slack.
    assert 9 <= len(arrivals) <= 14, arrivals
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    median = gaps[len(gaps) // 2]
    assert 0.8 * interval <= median <= 1.6 * interval, gaps


def test_watchdog_loop_stops_as_soon_as_the_event_is_set() -> None:
    """It waits on the event, not on the next tick: stop is prompt with a long interval."""

    async def main() -> float:
        stop = asyncio.Event()
        with Notifier({"NOTIFY_SOCKET": "@bae-test-unbound", "WATCHDOG_USEC": "20000000"}) as n:
            task = asyncio.create_task(watchdog_loop(n, stop))
            await asyncio.sleep(0.05)
            assert not task.done()
            stop.set()
            t0 = time.monotonic()
            await asyncio.wait_for(task, timeout=5.0)
            return time.monotonic() - t0

    assert uvloop.run(main()) < 1.0  # the next ping would have been 10 s away


def test_watchdog_loop_returns_at_once_without_watchdog() -> None:
    async def main() -> None:
        with Notifier({}) as n:
            await asyncio.wait_for(watchdog_loop(n, asyncio.Event()), timeout=0.5)

    uvloop.run(main())


def test_blocked_loop_sends_no_pings(short_dir: Path) -> None:
    """The pings ride on the event loop: a coroutine that blocks it silences them."""
    interval = 0.05
    receiver = Receiver(str(short_dir / "notify"))
    env = {"NOTIFY_SOCKET": str(short_dir / "notify"), "WATCHDOG_USEC": str(int(2 * interval * 1e6))}

    async def blocker() -> tuple[int, int]:
        before = len(receiver.drain())
        time.sleep(10 * interval)  # deliberately blocks the loop
        during = len(receiver.drain())  # read before yielding to the loop again
        return before, during

    async def main() -> tuple[int, int, int]:
        stop = asyncio.Event()
        with Notifier(env) as n:
            task = asyncio.create_task(watchdog_loop(n, stop))
            await asyncio.sleep(3.5 * interval)
            before, during = await blocker()
            await asyncio.sleep(3.5 * interval)  # loop is free again: pings resume
            after = len(receiver.drain())
            stop.set()
            await task
        return before, during, after

    try:
        before, during, after = uvloop.run(main())
    finally:
        receiver.close()
    assert before >= 2
    assert during == 0
    assert after >= 2
