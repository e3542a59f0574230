"""One policy tick at 1,000,000 users and 1,000 services (target < 50 ms).

Run with ``.venv/bin/python -m pytest -q -s perf/test_policy.py --benchmark-only``, or
``.venv/bin/python perf/test_policy.py`` for one JSON object.

The engine gets an hour of history first: 1,000,000 users (Zipf(1.2) visits, SLA tiers
mixed, 4 geographies, 3 devices) send 3,000,000 requests over 1,000 services and 20,000
resources (each resource belongs to one service), learned by the navigation model. Then:

* test_tick[plain]: ``Engine.tick`` as it runs every ``policy.tick_s`` on the event loop:
  close buckets, forecasts (smoother, Holt-Winters, ARIMA quantiles), SLA tiers, panic,
  rate limits, pre-warm orders, over every service.
* test_tick[with_needs]: the tick that also takes a needs pass handed over by the worker
  (the per-service contextual adjustment and the prefetch lists).
* test_needs_pass: ``Engine.compute_needs`` alone, as the daemon's worker thread runs it
  every ``policy.needs_interval_s``, off the event loop: ``predictResourceNeeds`` for every
  user, routed to services and resources through the navigation model.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bae_core import config, wire
from bae_core.engine import Engine

N_USERS = 1_000_000
N_SERVICES = 1_000
N_RESOURCES = 20_000
EVENTS = 3_000_000
T0 = 1_700_000_000 * 10**6
SEED = 42


def build() -> tuple[Engine, int]:
    cfg = config.validate({"model": {"bucket_s": 10.0}, "policy": {"needs_interval_s": 10.0}})
    e = Engine(cfg)
    e.needs_inline = False  # as in the daemon: the needs pass is the worker's
    rng = np.random.default_rng(SEED)
    prof = np.zeros(N_USERS, wire.PROFILE)
    prof["ts_us"], prof["user"] = T0, np.arange(N_USERS)
    prof["tier"] = rng.choice(3, N_USERS, p=[0.8, 0.15, 0.05])
    prof["segment"] = rng.integers(0, 16, N_USERS)
    for i in range(0, N_USERS, 65536):
        e.apply(wire.MsgType.PROFILE, prof[i:i + 65536], T0)
    users = np.concatenate([np.arange(N_USERS), (rng.zipf(1.2, EVENTS - N_USERS) - 1)
                            % N_USERS])
    rng.shuffle(users)
    res = (rng.zipf(1.3, EVENTS) - 1) % N_RESOURCES
    r = np.zeros(EVENTS, wire.REQUEST)
    r["ts_us"] = T0 + np.sort(rng.integers(0, 3600 * 10**6, EVENTS))
    r["user"], r["resource"] = users, res
    r["service"] = res % N_SERVICES
    r["geo"], r["device"] = rng.integers(0, 4, EVENTS), rng.integers(0, 3, EVENTS)
    r["status"], r["latency_ms"], r["bytes"] = 200, 10.0, 1000
    step = 10 * 10**6
    now = T0
    for i in range(0, EVENTS, 8192):
        b = r[i:i + 8192]
        e.apply(wire.MsgType.REQUEST, b, int(b["ts_us"][-1]))
        if b["ts_us"][-1] >= now + step:
            now = int(b["ts_us"][-1])
            e.learn_navigation(1 << 22)
            e.tick(now)
            e.take_outputs()
    while e.learn_navigation(1 << 22):
        pass
    return e, now


_ENGINE: list = []


def engine():
    if not _ENGINE:
        _ENGINE.append(build())
    return _ENGINE[0]


def tick_time(kind: str, rounds: int = 5) -> dict:
    e, now = engine()
    times = []
    for k in range(rounds):
        now += 1_000_000
        if kind == "with_needs":
            e.offer_needs(e.compute_needs(now))
        t0 = time.perf_counter()
        e.tick(now)
        times.append(time.perf_counter() - t0)
        e.take_outputs()
    return {"median_ms": 1e3 * float(np.median(times)), "max_ms": 1e3 * max(times),
            "users": len(e.users), "services": len(e.services),
            "navigation_rows": e.models["markov"].rows}


def needs_time(rounds: int = 3) -> dict:
    e, now = engine()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = e.compute_needs(now)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * float(np.median(times)), "services": len(r["service"]),
            "resources_expected": len(r["expected"]["resource"])}


def test_needs_pass(benchmark):
    r = benchmark.pedantic(needs_time, rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["services"] == N_SERVICES


@pytest.mark.parametrize("kind", ["plain", "with_needs"])
def test_tick(benchmark, kind):
    r = benchmark.pedantic(tick_time, args=(kind,), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["users"] == N_USERS and r["services"] == N_SERVICES


if __name__ == "__main__":
    t0 = time.perf_counter()
    engine()
    print(json.dumps({"build_s": time.perf_counter() - t0, "plain": tick_time("plain"),
                      "with_needs": tick_time("with_needs"), "needs_pass": needs_time()},
                     indent=1))
