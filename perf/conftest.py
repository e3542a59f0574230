"""Shared fixtures of the perf suite: seeded frames, a pinned clock, a daemon config, and a
summary of the rates each benchmark stored in ``benchmark.extra_info`` (the table does not
show them).

The clock: every benchmark ingests at ``NOW_US``, a fixed instant (``Engine.apply`` gets
it; the daemon's ``now_us`` is pinned to it), and every record is stamped in the second
before it. The engine accepts a service's first events down to ``model.late_buckets``
buckets before the caller's clock, so with the wall clock the seconds a session has run
would decide how much of the (session-wide) stream is dropped as late; pinned, none is,
on every machine, and the bytes are the same everywhere.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest

import workloads as wl

from bae_core import config, wire
from bae_core.engine import Engine
from daemon import server

# 0.4 s into a rate bucket (bucket_s 10 s), so the second before it spans the boundary
NOW_US = 1_700_000_000 * 10**6 + 400_000
SPREAD_US = 1_000_000
assert NOW_US % wl.BUCKET_US == 400_000 < SPREAD_US

_summary: list[str] = []
_state_summary: list[str] = []  # perf/test_state.py: its own section of the summary


def _requests(users: np.ndarray) -> np.ndarray:
    """``wl.requests`` at ``NOW_US``, stamped uniformly over the ``SPREAD_US`` before it
    (in stream order, so shuffled across the bucket boundary: ~40% of the events, and some
    services' first events, are in the bucket before ``NOW_US``'s)."""
    recs = wl.requests(users, NOW_US)
    rng = np.random.default_rng([wl.SEED, 4])
    recs["ts_us"] = NOW_US - rng.integers(0, SPREAD_US, len(recs))
    return recs


@pytest.fixture(scope="session")
def stream():
    """The shared bytes of benchmarks 1 and 2: REQUEST records of Zipf users, cut into
    body frames of 1,024 records and of 1 record."""
    recs = _requests(wl.zipf_users(wl.FRAMES * wl.RECORDS_PER_FRAME))
    assert wire.validate(wire.MsgType.REQUEST, recs, NOW_US, 3600 * 10**6,
                         300 * 10**6) is None, "generated records must all be valid"
    buckets = np.unique(recs["ts_us"] // wl.BUCKET_US).tolist()
    assert buckets == [NOW_US // wl.BUCKET_US - 1, NOW_US // wl.BUCKET_US]
    assert len(np.unique(recs["ts_us"][:wl.SINGLE] // wl.BUCKET_US)) == 2
    return {
        "records": recs,
        1024: wl.bodies(recs, wl.RECORDS_PER_FRAME),
        1: wl.bodies(recs[:wl.SINGLE], 1),
    }


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Load (or compile, on a cold numba cache) every kernel of the request path once, so
    no round pays for it."""
    recs = _requests(wl.zipf_users(2048))
    Engine(config.validate({})).apply(wire.MsgType.REQUEST, recs, NOW_US)
    wire.validate(wire.MsgType.REQUEST, recs, NOW_US, 10**9, 10**9)


@pytest.fixture(scope="session")
def make_requests():
    """``make_requests(users)``: REQUEST records stamped in the second before ``NOW_US``."""
    return _requests


@pytest.fixture
def clock(monkeypatch) -> int:
    """Pins the daemon's clock (``daemon.server.now_us``) to ``NOW_US``; returns it."""
    monkeypatch.setattr(server, "now_us", lambda: NOW_US)
    return NOW_US


@pytest.fixture
def daemon_cfg(tmp_path):
    return config.validate({"state": {"data_dir": str(tmp_path)}})


@pytest.fixture(scope="session")
def ceilings() -> dict:
    """Transport-ceiling events/s by records per frame, for the ratio of the handled run."""
    return {}


@pytest.fixture
def report(benchmark, request):
    """``report(seconds_per_round, events, **extra)``: store events/s (median round) and
    anything else in ``benchmark.extra_info`` and in the end-of-run summary."""

    def _report(times: list[float], events: int, **extra) -> float:
        med = statistics.median(times)
        eps = events / med
        benchmark.extra_info.update(events_per_s=round(eps), rounds=len(times),
                                    events_per_round=events, **extra)
        parts = [f"{eps / 1e6:8.2f} M events/s"] + [
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()]
        _summary.append(f"{request.node.name:<44} " + "  ".join(parts))
        return eps

    return _report


@pytest.fixture(scope="session")
def pinned_now() -> int:
    """``NOW_US`` for module-scoped fixtures (``clock`` pins the daemon for one test)."""
    return NOW_US


@pytest.fixture
def state_report(benchmark, request):
    """``state_report(**extra)``: store ``extra`` in ``benchmark.extra_info`` and print it
    in the state section of the end-of-run summary."""

    def _report(**extra) -> None:
        benchmark.extra_info.update(extra)
        parts = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in extra.items()]
        _state_summary.append(f"{request.node.name}\n    " + "  ".join(parts))

    return _report


def pytest_terminal_summary(terminalreporter):
    if _summary:
        terminalreporter.write_sep("-", "ingest rates (median round; compare ratios, not "
                                   "absolutes, across machines)")
        for line in _summary:
            terminalreporter.write_line(line)
    if _state_summary:
        terminalreporter.write_sep("-", "state: memory, checkpoints, loop lag, restart "
                                   "(1,000,000 users)")
        for line in _state_summary:
            terminalreporter.write_line(line)

