"""sd_notify(3) in pure stdlib: readiness, status and watchdog messages to systemd.

systemd passes the socket in $NOTIFY_SOCKET (a path, or an abstract-namespace name
written with a leading '@') and the watchdog timeout in $WATCHDOG_USEC, restricted to
the process in $WATCHDOG_PID when that is set. Every message is one non-blocking
AF_UNIX datagram of newline-separated ``KEY=value`` fields. Without $NOTIFY_SOCKET
(run by hand, in tests, under another supervisor) every method is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_loop"]

log = logging.getLogger("bae.systemd")


class Notifier:
    """Sends sd_notify messages to the socket systemd named in the environment.

    Sends never raise: the first failure (missing socket, refused, buffer full) is
    logged once at WARNING on the "bae.systemd" logger, later ones at DEBUG, and
    every later send is still attempted.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from environ (default os.environ)."""
        env = os.environ if environ is None else environ
        self._address: str | None = _parse_socket(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec: int | None = _parse_watchdog(env) if self._address else None
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a usable NOTIFY_SOCKET was given, i.e. sends go somewhere."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when off.

        Off when notifications are disabled, WATCHDOG_USEC is unset or invalid, or
        WATCHDOG_PID names another process.
        """
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def notify(self, raw: str | None = None, /, **fields: object) -> bool:
        """Sends raw text and/or KEY=value fields in one datagram; True if it was sent.

        ``notify("READY=1")`` and ``notify(READY=1, STATUS="up")`` are equivalent
        forms. Newlines in field values become spaces (a newline ends a field).
        """
        lines = [raw.rstrip("\n")] if raw else []
        lines += [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
        if self._address is None or not lines:
            return False
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
            return True
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "sd_notify to %r failed (%s); notifications are ignored", _show(self._address), exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) finished; systemd arms the watchdog."""
        return self.notify(READY=1, **_status(status))

    def status(self, text: str) -> bool:
        """STATUS=text: one line shown by `systemctl status bae`."""
        return self.notify(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: a graceful shutdown (drain, final checkpoint) has begun."""
        return self.notify(STOPPING=1, **_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload); end with ready()."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec, **_status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: one keep-alive ping. Sent even when the watchdog is off (harmless)."""
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: asks for `seconds` more for the current start or stop."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1e6)))

    def close(self) -> None:
        """Closes the sending socket; a later send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def watchdog_loop(notifier: Notifier, stop_event: asyncio.Event) -> None:
    """Sends WATCHDOG=1 every notifier.watchdog_interval_s until stop_event is set.

    The pings come from the running event loop, so a loop blocked for longer than
    WatchdogSec stops them and systemd kills the process. Returns at once when the
    watchdog is off, and within one loop iteration once stop_event is set.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while not stop_event.is_set():
        notifier.watchdog()
        try:
            await asyncio.wait_for(stop_event.wait(), timeout=interval)
        except TimeoutError:
            pass


def _parse_socket(value: str) -> str | None:
    """The sendto() address for a NOTIFY_SOCKET value, or None when unset or unsupported."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET=%r is not a unix socket address; notifications are off", value)
    return None


def _parse_watchdog(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC as a positive int when it applies to this process, else None."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = env.get("WATCHDOG_PID")
        if pid is not None and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status(text: str | None) -> dict[str, str]:
    return {} if text is None else {"STATUS": text}


def _show(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
