"""The one exception tree of BAE. Every message says what went wrong and what to do."""

from __future__ import annotations


class BAEError(Exception):
    """Base of every error BAE raises on purpose."""


class ConfigError(BAEError):
    """A configuration key or value is wrong; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem}; {fix}")


class WireError(BAEError):
    """A frame or record broke protocol v1 (docs/protocol.md).

    ``reason`` is the short code counted in ``bae_frames_rejected_total{reason=...}``.
    """

    reason = "malformed"
    count = 0  # records the frame declared, when its header was readable

    def __init__(self, detail: str):
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class BadFrameCount(WireError):
    reason = "bad_frame_count"


class BadHeader(WireError):
    reason = "bad_header"


class BadMagic(WireError):
    reason = "bad_magic"


class UnsupportedVersion(WireError):
    reason = "unsupported_version"


class UnknownType(WireError):
    reason = "unknown_type"


class UnexpectedType(WireError):
    reason = "unexpected_type"


class BadRecordSize(WireError):
    reason = "bad_record_size"


class OversizedFrame(WireError):
    reason = "oversized"


class TruncatedFrame(WireError):
    reason = "truncated"


class CountMismatch(WireError):
    reason = "count_mismatch"


class LogFormatError(BAEError):
    """An access log or CSV cannot be read at all (a single bad line is counted, not raised)."""


class StoreError(BAEError):
    """The LMDB data folder cannot be used as it is."""


class SchemaMismatch(StoreError):
    """The data folder was written by another program or a newer BAE; nothing is written to it."""


class HAProxyError(BAEError):
    """The HAProxy runtime API could not do what the agent asked."""

    reason = "haproxy_error"


class HAProxyUnreachable(HAProxyError):
    """The stats socket cannot be reached (HAProxy stopped, restarting, wrong path)."""

    reason = "unreachable"

    def __init__(self, path: str, problem: str):
        self.path = path
        super().__init__(f"HAProxy runtime API at {path} is unreachable ({problem}); check "
                         "that HAProxy runs and that its global section has 'stats socket "
                         f"{path} level admin'")


class HAProxyRefused(HAProxyError):
    """HAProxy answered a command with an error text."""

    reason = "refused"

    def __init__(self, command: str, answer: str):
        self.command, self.answer = command, answer
        if "permission denied" in answer.lower():
            fix = "the stats socket needs 'level admin'"
        elif "backend" in answer.lower() or "proxy" in answer.lower() \
                or "server" in answer.lower():
            fix = ("declare that backend and its servers in haproxy.cfg, or map the service "
                   "to an existing backend with --map SERVICE=BACKEND")
        else:
            fix = "check the HAProxy version (2.6 or later) and its configuration"
        super().__init__(f"HAProxy refused '{command}': {answer}; {fix}")
