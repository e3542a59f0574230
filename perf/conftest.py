"""Shared fixtures of the perf suite: seeded frames, a daemon config, and a summary of the
rates each benchmark stored in ``benchmark.extra_info`` (the table does not show them)."""

from __future__ import annotations

import statistics

import pytest

import workloads as wl

from bae_core import config, wire
from bae_core.engine import Engine

_summary: list[str] = []


@pytest.fixture(scope="session")
def stream():
    """The shared bytes of benchmarks 1 and 2: REQUEST records of Zipf users, cut into
    body frames of 1,024 records and of 1 record."""
    recs = wl.requests(wl.zipf_users(wl.FRAMES * wl.RECORDS_PER_FRAME))
    assert wire.validate(wire.MsgType.REQUEST, recs, int(recs["ts_us"].max()), 3600 * 10**6,
                         300 * 10**6) is None, "generated records must all be valid"
    return {
        "records": recs,
        1024: wl.bodies(recs, wl.RECORDS_PER_FRAME),
        1: wl.bodies(recs[:wl.SINGLE], 1),
    }


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Load (or compile, on a cold numba cache) every kernel of the request path once, so
    no round pays for it."""
    recs = wl.requests(wl.zipf_users(2048))
    Engine(config.validate({})).apply(wire.MsgType.REQUEST, recs)
    wire.validate(wire.MsgType.REQUEST, recs, int(recs["ts_us"].max()), 10**9, 10**9)


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


def pytest_terminal_summary(terminalreporter):
    if _summary:
        terminalreporter.write_sep("-", "ingest rates (median round; compare ratios, not "
                                   "absolutes, across machines)")
        for line in _summary:
            terminalreporter.write_line(line)

