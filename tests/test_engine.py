"""Unit tests of the model core: rate kernels, policy, Engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bae_core import config, policy, wire
from bae_core import engine as engine_mod
from bae_core.engine import Engine
from bae_core.kernels import rates
from bae_core.wire import MsgType, Reason

S = 1_000_000  # µs per second
T0 = 1_700_000_000 * S  # a bucket boundary for every bucket width used here
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_cfg(bucket_s=1.0, late_buckets=2, history=360, **policy_kw):
    pol = {"lead_time_s": 1.0, "scale_down_window_s": 10.0, "rps_per_replica": 10.0,
           "headroom": 0.0, "min_replicas": 1, "max_replicas": 100,
           "scale_up_period_s": 0.0, "scale_down_period_s": 0.0, "scale_down_fraction": 1.0}
    pol.update(policy_kw)
    return config.validate({"model": {"bucket_s": bucket_s, "late_buckets": late_buckets,
                                      "history": history},
                            "policy": pol})


def reqs(ts, service=7, user=1, **fields) -> np.ndarray:
    ts = np.atleast_1d(np.asarray(ts, np.int64))
    r = np.zeros(len(ts), wire.REQUEST)
    r["ts_us"] = ts
    r["service"] = service
    r["user"] = user
    r["resource"] = 2
    r["status"] = 200
    r["latency_ms"] = 10.0
    for k, v in fields.items():
        r[k] = v
    return r


def metric(service, replicas, cpu, ts=T0) -> np.ndarray:
    m = np.zeros(1, wire.METRIC)
    m["ts_us"], m["service"], m["replicas"], m["cpu"] = ts, service, replicas, cpu
    return m


def context(start, end, mult, service=wire.ALL, ts=T0) -> np.ndarray:
    c = np.zeros(1, wire.CONTEXT)
    c["ts_us"], c["start_us"], c["end_us"] = ts, start, end
    c["service"], c["segment"], c["multiplier"], c["campaign"] = service, wire.ALL, mult, 1
    return c


def closed_rates(e: Engine, slot: int = 0) -> list[float]:
    """Closed bucket rates of one service slot, oldest first (Engine.rate_history)."""
    return e.rate_history(slot).tolist()


def history_events(e: Engine) -> float:
    """Events in every closed bucket of every service: sum of closed rates x bucket_s."""
    return sum(float(e.rate_history(s).sum()) for s in range(len(e.services))) \
        * e.cfg.model.bucket_s


def holt(series, alpha, beta, phi):
    level = trend = 0.0
    for i, y in enumerate(series):
        if i == 0:
            level, trend = y, 0.0
        else:
            prev = level
            level = max(0.0, alpha * y + (1 - alpha) * (prev + phi * trend))  # a rate
            trend = beta * (level - prev) + (1 - beta) * phi * trend
    return level, trend


# ---- rate kernels ---------------------------------------------------------------------------

def test_forecast_damped_and_non_negative():
    level = np.array([10.0, 10.0, 1.0, 0.0])
    trend = np.array([2.0, -1.0, -5.0, 0.0])
    phi = 0.9
    for h in (1, 2, 5, 50):
        out = np.empty(4)
        rates.forecast(level, trend, phi, h, out)
        damp = sum(phi ** i for i in range(1, h + 1))
        want = np.maximum(level + damp * trend, 0.0)
        np.testing.assert_allclose(out, want, rtol=1e-12)
        assert (out >= 0).all()
    far = np.empty(4)
    rates.forecast(level, trend, phi, 10_000, far)
    assert far[0] <= 10.0 + 2.0 * phi / (1 - phi) + 1e-9  # damped: bounded growth
    assert far[2] == 0.0


def test_holt_kernel_matches_reference():
    counts = [0, 0, 5, 8, 2, 0, 12, 7, 7, 1]  # the series starts at the first non-empty bucket
    series = counts[2:]
    k, h = 4, 5
    ring_ids = np.full((1, k), -1, np.int64)
    ring_counts = np.zeros((1, k))
    closed = np.array([99], np.int64)
    level, trend, n_obs = np.zeros(1), np.zeros(1), np.zeros(1, np.int64)
    hist = np.zeros((1, h))
    alpha, beta, phi, bucket_s = 0.4, 0.2, 0.9, 2.0
    for j, c in enumerate(counts):
        b = 100 + j
        ring_ids[0, b % k], ring_counts[0, b % k] = b, c
        rates.close_until(0, b, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                          alpha, beta, phi, bucket_s)
        assert closed[0] == b
        assert n_obs[0] == max(0, j - 1)
    assert n_obs[0] == len(series)
    # hist is a ring of the last h rates: rate i of the series sits in cell i % h
    want_hist = [0.0] * h
    for i, c in enumerate(series):
        want_hist[i % h] = c / bucket_s
    assert hist[0].tolist() == want_hist
    want_l, want_t = holt([c / bucket_s for c in series], alpha, beta, phi)
    assert level[0] == pytest.approx(want_l, rel=1e-12)
    assert trend[0] == pytest.approx(want_t, rel=1e-12, abs=1e-15)
    assert not ring_counts.any()
    # closing up to an older bucket is a no-op
    rates.close_until(0, 105, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                      alpha, beta, phi, bucket_s)
    assert closed[0] == 109 and n_obs[0] == len(series)


def test_accumulate_kernel_clamps_opens_and_drops():
    k, late, B = 5, 1, 10
    n = 2
    ring_ids = np.full((n, k), -1, np.int64)
    ring_counts = np.zeros((n, k))
    closed = np.full(n, -1, np.int64)
    level, trend, n_obs = np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    hist = np.zeros((n, 8))
    per_svc = np.zeros(n, np.int64)
    svc = np.array([0, 0, 0, 0, 1], np.int64)
    # max_bucket 50: service 0 opens at closed = 48; ts 480 (b48) is late, 495 (b49) kept,
    # 990 (b99) is in the future and counts in b50; service 1's first event (b47) is late
    ts = np.array([495, 480, 990, 500, 470], np.int64)
    dropped = rates.accumulate(svc, ts, B, 50, late, ring_ids, ring_counts, closed, level,
                               trend, n_obs, hist, 0.5, 0.1, 0.9, 1.0, per_svc)
    assert dropped == 2 and per_svc.tolist() == [1, 1]
    assert closed.tolist() == [48, 48]
    assert ring_counts[0, 49 % k] == 1 and ring_ids[0, 49 % k] == 49
    assert ring_counts[0, 50 % k] == 2 and ring_ids[0, 50 % k] == 50
    assert ring_counts[1].sum() == 0 and n_obs.tolist() == [0, 0]
    # an event more than a ring ahead of closed first closes b49 .. b(56 - k)
    dropped = rates.accumulate(np.array([0], np.int64), np.array([560], np.int64), B, 60,
                               late, ring_ids, ring_counts, closed, level, trend, n_obs, hist,
                               0.5, 0.1, 0.9, 1.0, per_svc)
    assert dropped == 0 and closed[0] == 56 - k
    assert n_obs[0] == 3 and hist[0, :3].tolist() == [1.0, 2.0, 0.0]
    assert ring_counts[0].sum() == 1 and ring_ids[0, 56 % k] == 56


def test_service_totals_and_touch_users():
    e = Engine(make_cfg())
    r = reqs([T0, T0 + 5, T0 + 3], user=[1, 2, 1], status=[200, 503, 500],
             bytes=[100, 200, 300], latency_ms=[10.0, 20.0, 30.0])
    e.apply(MsgType.REQUEST, r, T0 + 5)
    s = e.services
    assert s.requests[0] == 3 and s.errors[0] == 2 and s.bytes[0] == 600
    assert s.latency_ms[0] == pytest.approx(10.0 + 0.01 * (20 - 10.0) +
                                            0.01 * (30 - (10.0 + 0.01 * 10)))
    u = e.users
    assert len(u) == 2
    assert u.hourly[:2].sum(axis=1).tolist() == [2, 1]  # a user's requests: its profile's sum
    assert u.last_seen_us[:2].tolist() == [T0 + 3, T0 + 5]
    assert e.accepted[MsgType.REQUEST] == 3


def test_users_grow_past_initial_capacity():
    e = Engine(make_cfg())
    users = np.arange(3000) % 2500
    e.apply(MsgType.REQUEST, reqs(np.full(3000, T0), user=users), T0)
    assert len(e.users) == 2500
    per_user = e.users.hourly.sum(axis=1)
    assert per_user[:2500].sum() == 3000
    assert per_user[:500].tolist() == [2] * 500
    assert len(e.users.hourly) >= e.users.slots.capacity


# ---- engine: buckets ------------------------------------------------------------------------

def test_bucket_closes_after_lateness_window():
    e = Engine(make_cfg(bucket_s=2.0, late_buckets=2))
    B = e.bucket_us
    b0 = T0 // B
    e.apply(MsgType.REQUEST, reqs(T0 + np.arange(5) * 300_000), T0 + S)  # 5 events in b0
    assert e.services.closed[0] == b0 - 3  # a new service accepts down to now - late
    assert len(e.tick(T0 + 3 * B - 1)) == 0  # now in b0+2: until = b0-1, not yet
    assert e.services.closed[0] == b0 - 1  # empty buckets before the first event ...
    assert closed_rates(e) == [] and e.services.n_obs[0] == 0  # ... are no observations
    out = e.tick(T0 + 3 * B)  # now in b0+3: until = b0 -> closes b0
    assert closed_rates(e) == [2.5]  # 5 events / 2 s
    assert e.services.level[0] == 2.5 and e.services.n_obs[0] == 1
    assert len(out) == 1 and out["reasons"][0] & Reason.FIRST


def test_tick_until_boundary():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=2))
    e.apply(MsgType.REQUEST, reqs([T0]), T0)
    e.tick(T0 + 3 * S - 1)  # now in b0+2: until = b0-1
    assert e.services.n_obs[0] == 0 and e.services.closed[0] == T0 // S - 1
    e.tick(T0 + 3 * S)
    assert e.services.n_obs[0] == 1 and e.services.closed[0] == T0 // S


def test_series_starts_at_first_non_empty_bucket():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    b0 = T0 // S
    e.apply(MsgType.REQUEST, reqs([T0 + 3 * S]), T0 + 3 * S + 7)  # closed = b0+1
    assert e.services.closed[0] == b0 + 1
    e.tick(T0 + 4 * S)  # until = b0+2: empty, before the first event
    assert e.services.closed[0] == b0 + 2 and e.services.n_obs[0] == 0
    assert closed_rates(e) == [] and e.services.level[0] == 0.0
    assert len(e.tick(T0 + 4 * S)) == 0  # not ready: no observation yet
    e.tick(T0 + 10 * S)  # until = b0+8: b0+3 .. b0+8
    assert closed_rates(e) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert e.services.n_obs[0] == 6 and e.services.closed[0] == b0 + 8


def test_empty_buckets_close_as_zero():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    e.apply(MsgType.REQUEST, reqs([T0] * 4), T0)
    e.tick(T0 + 2 * S)  # closes b0
    e.tick(T0 + 6 * S)  # closes b0+1 .. b0+4, all empty
    assert closed_rates(e) == [4.0, 0.0, 0.0, 0.0, 0.0]
    m = e.cfg.model
    want_l, want_t = holt([4.0, 0, 0, 0, 0], m.alpha, m.beta, m.phi)
    assert e.services.level[0] == pytest.approx(want_l, rel=1e-12)
    assert e.services.trend[0] == pytest.approx(want_t, rel=1e-12)
    e.tick(T0 + 6 * S)  # same tick again closes nothing more
    assert len(closed_rates(e)) == 5


def test_rate_history_keeps_the_last_model_history_rates():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=0, history=8))
    for j in range(12):  # bucket b0+j holds j+1 events
        e.apply(MsgType.REQUEST, reqs(np.full(j + 1, T0 + j * S)), T0 + j * S)
    assert len(closed_rates(e)) == e.services.n_obs[0] == 12 - e.services.ring
    e.tick(T0 + 13 * S)  # until = b0+12: one empty bucket after the last event
    series = [float(j + 1) for j in range(12)] + [0.0]
    assert e.services.n_obs[0] == 13
    assert closed_rates(e) == series[-8:]
    assert e.service_summary(0)["recent_rates_rps"] == series[-8:]
    m = e.cfg.model
    want_l, want_t = holt(series, m.alpha, m.beta, m.phi)
    assert e.services.level[0] == pytest.approx(want_l, rel=1e-12)
    assert e.services.trend[0] == pytest.approx(want_t, rel=1e-12)


def test_late_events_within_tolerance_are_folded_in():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=2))
    e.apply(MsgType.REQUEST, reqs([T0]), T0)
    e.apply(MsgType.REQUEST, reqs([T0 + 3 * S]), T0 + 3 * S)  # bucket b0+3
    e.tick(T0 + 3 * S)  # closes b0 only
    assert closed_rates(e) == [1.0]
    # now in b0+3: buckets b0+1 and b0+2 are still open (2 late buckets)
    e.apply(MsgType.REQUEST, reqs([T0 + S + 10, T0 + 2 * S, T0 + 2 * S + 1]), T0 + 3 * S)
    assert e.late_dropped == 0
    e.tick(T0 + 6 * S)
    assert closed_rates(e) == [1.0, 1.0, 2.0, 1.0]


def test_too_late_events_are_counted_and_dropped():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    e.apply(MsgType.REQUEST, reqs([T0, T0, T0 + S], service=[7, 7, 8]), T0 + S)
    e.tick(T0 + 3 * S)  # closes b0 and b0+1 of both services
    assert closed_rates(e, 0) == [2.0, 0.0]
    assert closed_rates(e, 1) == [1.0]  # service 8 starts at b0+1
    e.apply(MsgType.REQUEST, reqs([T0 + S, T0, T0 + 2 * S, T0 - 100 * S], service=[7, 8, 8, 8]),
            T0 + 3 * S)
    assert e.late_dropped == 3
    assert e.services.late_dropped[:2].tolist() == [1, 2]
    assert e.stats()["late_dropped"] == 3
    assert e.accepted[MsgType.REQUEST] == 7  # accepted by validation, then dropped as late
    e.tick(T0 + 10 * S)
    assert history_events(e) == 7 - 3
    assert closed_rates(e, 1) == [1.0, 1.0] + [0.0] * 6


def test_future_events_count_in_the_now_bucket():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    now = T0 + 2 * S + 500
    e.apply(MsgType.REQUEST, reqs([T0 + 2 * S, T0 + 3 * S, T0 + 900 * S, T0 + S]), now)
    assert e.late_dropped == 0 and e.services.closed[0] == T0 // S
    e.tick(T0 + 4 * S)  # until = b0+2
    assert closed_rates(e) == [1.0, 3.0]  # b0+1, then b0+2 with the two future events
    e.apply(MsgType.REQUEST, reqs([T0 + 2 * S]), T0 + 50 * S)  # b0+2 is closed now
    assert e.late_dropped == 1


def test_first_event_window_edges():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=2))
    b0 = T0 // S
    now = T0 + 5 * S + 123  # now bucket b0+5: a new service accepts b0+3 ..
    e.apply(MsgType.REQUEST, reqs([T0 + 3 * S - 1, T0 + 3 * S, T0 + 9 * S]), now)
    assert e.services.closed[0] == b0 + 2  # set by the first event, which it drops
    assert e.late_dropped == 1 and e.services.late_dropped[0] == 1
    e.tick(T0 + 8 * S)  # until = b0+5
    assert closed_rates(e) == [1.0, 0.0, 1.0]  # b0+3, b0+4, b0+5 (the future event)


def test_out_of_order_events_across_buckets():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=3))  # ring of 7 buckets
    first = [3, 1, 0, 2, 1, 3]
    then = [0, 5, 5, 4, 6, 0]
    rng = np.random.default_rng(1)

    def ts(offsets):
        return [T0 + o * S + int(rng.integers(0, S)) for o in offsets]

    e.apply(MsgType.REQUEST, reqs(ts(first)), T0 + 3 * S + S - 1)  # accepts b0 .. b0+3
    e.tick(T0 + 3 * S)  # closes nothing: until = b0-1
    assert e.services.n_obs[0] == 0 and e.services.closed[0] == T0 // S - 1
    e.apply(MsgType.REQUEST, reqs(ts(then)), T0 + 6 * S + 1)  # b0 .. b0+6: one ring
    assert e.late_dropped == 0 and e.services.n_obs[0] == 0
    e.tick(T0 + 20 * S)  # until = b0+16
    offsets = first + then
    want = [offsets.count(i) for i in range(7)] + [0] * 10
    assert closed_rates(e) == [float(c) for c in want]
    assert history_events(e) == len(offsets)


def test_ring_overwrite_closes_older_buckets_first():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    k = e.services.ring
    m = e.cfg.model
    e.apply(MsgType.REQUEST, reqs([T0] * 3), T0)  # b0
    e.apply(MsgType.REQUEST, reqs([T0 + S] * 2), T0 + S)  # b0+1
    # far ahead: same cell as b0+1
    e.apply(MsgType.REQUEST, reqs([T0 + (k + 1) * S] * 4), T0 + (k + 1) * S)
    assert e.services.closed[0] == T0 // S + 1  # b0 and b0+1 closed into the smoothing
    assert e.services.n_obs[0] == 2 and closed_rates(e) == [3.0, 2.0]
    e.apply(MsgType.REQUEST, reqs([T0 + (k + 2) * S]), T0 + (k + 2) * S)
    assert e.services.closed[0] == T0 // S + 2 and closed_rates(e) == [3.0, 2.0, 0.0]
    e.tick(T0 + (k + 10) * S)
    series = [3.0, 2.0] + [0.0] * (k - 1) + [4.0, 1.0] + [0.0] * 6
    assert e.services.n_obs[0] == len(series)
    assert closed_rates(e) == series
    want_l, want_t = holt(series, m.alpha, m.beta, m.phi)
    assert e.services.level[0] == pytest.approx(want_l, rel=1e-12)
    assert e.services.trend[0] == pytest.approx(want_t, rel=1e-9, abs=1e-12)
    assert e.late_dropped == 0


def test_ring_overwrite_closed_buckets_reach_history():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    k = e.services.ring
    e.apply(MsgType.REQUEST, reqs([T0] * 3), T0)
    e.apply(MsgType.REQUEST, reqs([T0 + k * S] * 2), T0 + k * S)  # closes b0 first
    assert closed_rates(e) == [3.0]
    e.tick(T0 + (k + 5) * S)
    assert history_events(e) == e.accepted[MsgType.REQUEST] - e.late_dropped == 5
    assert closed_rates(e) == [3.0] + [0.0] * (k - 1) + [2.0] + [0.0] * 3


def test_older_event_does_not_overwrite_newer_open_bucket():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1))
    k = e.services.ring
    e.apply(MsgType.REQUEST, reqs([T0]), T0)  # b0: closed = b0-2
    # b0+k+2: more than a ring ahead, so b0 .. b0+2 close first
    e.apply(MsgType.REQUEST, reqs([T0 + (k + 2) * S] * 4), T0 + (k + 2) * S)
    assert e.services.closed[0] == T0 // S + 2 and closed_rates(e) == [1.0, 0.0, 0.0]
    # b0+2 (same cell as b0+k+2) is closed now: dropped, the open bucket keeps its 4
    e.apply(MsgType.REQUEST, reqs([T0 + 2 * S]), T0 + (k + 2) * S)
    assert e.late_dropped == 1
    e.tick(T0 + (k + 10) * S)
    assert history_events(e) + e.late_dropped == e.accepted[MsgType.REQUEST] == 6
    assert closed_rates(e) == [1.0] + [0.0] * (k + 1) + [4.0] + [0.0] * 6


def test_first_events_out_of_order_within_tolerance_are_kept():
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=2))
    e.apply(MsgType.REQUEST, reqs([T0 + 2 * S, T0 + S]), T0 + 2 * S)  # one batch, newest first
    assert e.late_dropped == 0
    e.tick(T0 + 5 * S)  # until = b0+2
    assert closed_rates(e) == [1.0, 1.0]


class RefRates:
    """The request-rate rules in plain Python: open buckets in a dict (no ring cells), the
    closed series unbounded."""

    def __init__(self, bucket_us: int, bucket_s: float, late: int):
        self.B, self.bucket_s, self.late, self.ring = bucket_us, bucket_s, late, late + 4
        self.closed: dict[int, int] = {}  # service -> last closed bucket
        self.open: dict[int, dict[int, int]] = {}  # service -> {bucket: events}
        self.series: dict[int, list[float]] = {}  # closed rates from the first non-empty
        self.dropped: dict[int, int] = {}

    def apply(self, events: list[tuple[int, int]], now_us: int) -> None:
        now_b = now_us // self.B
        for svc, ts in events:
            b = min(ts // self.B, now_b)  # later than now counts as now
            if svc not in self.closed:  # first sight: accepts down to now - late
                self.closed[svc] = now_b - self.late - 1
                self.open[svc], self.series[svc], self.dropped[svc] = {}, [], 0
            if b <= self.closed[svc]:
                self.dropped[svc] += 1
                continue
            if b - self.closed[svc] > self.ring:  # keep open buckets within one ring
                self.close(svc, b - self.ring)
            self.open[svc][b] = self.open[svc].get(b, 0) + 1

    def close(self, svc: int, until: int) -> None:
        for b in range(self.closed[svc] + 1, until + 1):
            c = self.open[svc].pop(b, 0)
            if c or self.series[svc]:  # nothing before the first non-empty bucket
                self.series[svc].append(c / self.bucket_s)
        self.closed[svc] = max(self.closed[svc], until)

    def tick(self, now_us: int) -> None:
        until = now_us // self.B - self.late - 1
        for svc in self.closed:
            self.close(svc, until)


@st.composite
def event_steps(draw):
    """(bucket_s, late, steps); a step is ('clock', buckets ahead, phase in 1e-6 of a
    bucket), ('tick',) or ('batch', [(service, bucket offset from now, phase, count)])."""
    bucket_s = draw(st.sampled_from([1.0, 2.5]))
    late = draw(st.integers(0, 3))
    phase = st.integers(0, 999_999)
    event = st.tuples(st.sampled_from([1, 2, 3]), st.integers(-(late + 3), 2), phase,
                      st.integers(1, 3))
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("clock"), st.integers(0, late + 6), phase),
        st.tuples(st.just("tick")),
        st.tuples(st.just("batch"), st.lists(event, min_size=1, max_size=6))), max_size=40))
    return bucket_s, late, steps


@PROPS
@given(case=event_steps())
def test_property_no_counts_lost(case):
    """Random events, batches, clocks and ticks: every accepted event ends up in exactly
    one closed bucket (sum of closed rates x bucket_s + late_dropped == accepted), and each
    service's closed series, drops and Holt state equal the plain-Python reference."""
    bucket_s, late, steps = case
    e = Engine(make_cfg(bucket_s=bucket_s, late_buckets=late, history=1024))
    B = e.bucket_us
    ref = RefRates(B, bucket_s, late)
    m = e.cfg.model
    now = (T0 // B + 10) * B
    e.tick(now)

    def check():
        assert e.late_dropped == sum(ref.dropped.values())
        assert len(e.services) == len(ref.closed)
        for svc, series in ref.series.items():
            slot = e.services.slots.find_one(svc)
            assert slot >= 0
            assert e.services.closed[slot] == ref.closed[svc]
            assert e.services.n_obs[slot] == len(series)
            assert closed_rates(e, slot) == series
            assert e.services.late_dropped[slot] == ref.dropped[svc]

    for step in steps:
        if step[0] == "clock":
            now = max(now, (now // B + step[1]) * B + step[2] * B // 1_000_000)
        elif step[0] == "tick":
            e.tick(now)
            ref.tick(now)
        else:
            events = [(svc, (now // B + off) * B + ph * B // 1_000_000)
                      for svc, off, ph, n in step[1] for _ in range(n)]
            svcs, ts = zip(*events)
            e.apply(MsgType.REQUEST, reqs(list(ts), service=list(svcs)), now)
            ref.apply(events, now)
        check()
    now = (now // B + late + 1) * B  # until = the last bucket any event could count in
    e.tick(now)
    ref.tick(now)
    check()
    assert not any(ref.open.values())
    assert not e.services.ring_counts.any()
    accepted = e.accepted[MsgType.REQUEST]
    assert accepted == sum(n for s in steps if s[0] == "batch" for *_, n in s[1])
    assert history_events(e) + e.late_dropped == pytest.approx(accepted, rel=1e-12)
    for svc, series in ref.series.items():
        slot = e.services.slots.find_one(svc)
        assert sum(series) * bucket_s + ref.dropped[svc] == pytest.approx(
            e.services.requests[slot], rel=1e-12)
        want_l, want_t = holt(series, m.alpha, m.beta, m.phi)
        assert e.services.level[slot] == pytest.approx(want_l, rel=1e-9, abs=1e-12)
        assert e.services.trend[slot] == pytest.approx(want_t, rel=1e-9, abs=1e-12)


# ---- policy ---------------------------------------------------------------------------------

def decide(base, published, ring=None, slot=None, now=0, window=160, mult=None,
           per=10.0, headroom=0.0, lo=1, hi=100, ready=None):
    n = len(base)
    base = np.asarray(base, float)
    published = np.asarray(published, np.int64)
    ring = np.zeros((n, policy.WINDOW_SLOTS), np.int64) if ring is None else ring
    slot = np.full((n, policy.WINDOW_SLOTS), -1, np.int64) if slot is None else slot
    mult = np.ones(n) if mult is None else np.asarray(mult, float)
    ready = np.ones(n, bool) if ready is None else np.asarray(ready, bool)
    return policy.decide(base, mult, np.full(n, per), headroom, lo, hi, published,
                         ring, slot, now, window, ready)


def test_replicas_for_formula_and_clamp():
    got = policy.replicas_for(np.array([0.0, 10.0, 11.0, 1e9, np.nan, 25.0]),
                              np.array([10.0, 10.0, 10.0, 10.0, 10.0, 5.0]), 0.2, 2, 50)
    assert got.dtype == np.int64
    # ceil(rps * 1.2 / per): 0 -> 2 (min), 12 -> 2, 13.2 -> 2, huge -> 50 (max), nan -> min
    assert got.tolist() == [2, 2, 2, 50, 2, 6]


def test_first_allocation():
    d = decide([25.0, 25.0], published=[-1, -1], mult=[1.0, 2.0], ready=[True, True])
    assert d.desired.tolist() == [3, 5]
    assert d.publish.tolist() == [True, True]
    assert d.reasons.tolist() == [Reason.FIRST, Reason.FIRST]
    d = decide([25.0], published=[-1], ready=[False])
    assert d.publish.tolist() == [False] and d.reasons.tolist() == [0]


def test_scale_up_is_immediate_and_equal_is_quiet():
    d = decide([45.0, 30.0], published=[3, 3])
    assert d.desired.tolist() == [5, 3]
    assert d.publish.tolist() == [True, False]
    assert d.reasons.tolist() == [Reason.SCALE_UP, 0]


def test_scale_down_goes_to_the_largest_count_desired_within_the_window():
    ring = np.zeros((1, policy.WINDOW_SLOTS), np.int64)
    slot = np.full((1, policy.WINDOW_SLOTS), -1, np.int64)
    published = [10]
    # window 160 = 16 slots of 10: desired 10 at t=0, then lower
    assert not decide([100.0], published, ring, slot, now=0).publish[0]
    for now, base in [(30, 70.0), (60, 20.0), (99, 10.0)]:
        d = decide([base], published, ring, slot, now=now)
        assert not d.publish[0]  # 10 was desired within the window
    d = decide([10.0], published, ring, slot, now=165)  # t=0 left the window
    assert d.publish.tolist() == [True]
    assert d.desired.tolist() == [7]  # the largest desired since: t=30
    assert d.reasons.tolist() == [Reason.SCALE_DOWN]
    d = decide([10.0], [7], ring, slot, now=200)  # t=30 left too: down to 2 (t=60)
    assert d.desired.tolist() == [2]


def test_scale_down_waits_again_when_load_returns():
    ring = np.zeros((1, policy.WINDOW_SLOTS), np.int64)
    slot = np.full((1, policy.WINDOW_SLOTS), -1, np.int64)
    decide([100.0], [10], ring, slot, now=0)
    decide([50.0], [10], ring, slot, now=50)
    decide([100.0], [10], ring, slot, now=120)  # back at the published count
    d = decide([50.0], [10], ring, slot, now=200)
    assert not d.publish[0]  # t=120 is within the window
    d = decide([50.0], [10], ring, slot, now=290)
    assert d.publish[0] and d.desired[0] == 5


def test_scale_down_zero_window_is_immediate():
    d = decide([10.0], [10], now=5, window=0)
    assert d.publish.tolist() == [True] and d.desired.tolist() == [1]
    assert d.reasons.tolist() == [Reason.SCALE_DOWN]


def test_tolerance_band_keeps_the_published_count():
    n = 2
    ring = np.zeros((n, policy.WINDOW_SLOTS), np.int64)
    slot = np.full((n, policy.WINDOW_SLOTS), -1, np.int64)
    d = policy.decide(np.array([105.0, 125.0]), np.ones(n), np.full(n, 10.0), 0.0, 1, 100,
                      np.array([10, 10]), ring, slot, 0, 0, np.ones(n, bool), tolerance=0.1)
    assert d.desired.tolist() == [10, 13] and d.publish.tolist() == [False, True]
    d = policy.decide(np.array([91.0]), np.ones(1), np.full(1, 10.0), 0.0, 1, 100,
                      np.array([10]), ring[:1], slot[:1], 0, 0, np.ones(1, bool),
                      tolerance=0.1)
    assert d.desired.tolist() == [10] and not d.publish[0]  # 9.1 replicas: within 10%


def test_clamping_and_nan():
    d = decide([1e12, 0.0, np.nan, np.nan], published=[-1, -1, -1, 5], lo=2, hi=9, window=0)
    assert d.desired.tolist() == [9, 2, 2, 2]
    assert d.publish.tolist() == [True, True, True, True]
    assert d.reasons[3] == Reason.SCALE_DOWN


# ---- engine: decisions ------------------------------------------------------------------------

def warm_engine(rate=10, buckets=3, **policy_kw) -> tuple[Engine, int]:
    """An engine whose service 7 has closed ``buckets`` buckets of ``rate`` events/s.
    Returns it and the next tick time."""
    e = Engine(make_cfg(bucket_s=1.0, late_buckets=1, **policy_kw))
    for b in range(buckets):
        e.apply(MsgType.REQUEST, reqs(np.full(rate, T0 + b * S)), T0 + b * S)
    return e, T0 + (buckets + 1) * S


def test_first_tick_with_default_capacity():
    e, now = warm_engine(rate=25)
    assert len(e.tick(T0)) == 0  # nothing closed yet: not ready
    out = e.tick(now)
    assert len(out) == 1
    a = out[0]
    assert a["service"] == 7 and a["ts_us"] == now
    assert a["desired_replicas"] == 3  # ceil(25 / 10)
    assert a["previous_replicas"] == 0
    assert a["reasons"] == Reason.FIRST | Reason.DEFAULT_CAPACITY
    assert a["rps_per_replica"] == 10.0
    assert a["base_forecast"] == pytest.approx(25.0)
    assert a["predicted_rps"] == pytest.approx(25.0)
    assert a["context_adjustment"] == 0.0 and a["anomaly_multiplier"] == 1.0
    assert a["lead_time_s"] == 1.0
    assert len(e.tick(now)) == 0  # unchanged: nothing to publish
    snap = e.allocations(now + 1)
    assert snap["desired_replicas"].tolist() == [3] and snap["previous_replicas"].tolist() == [3]
    assert e.service_summary(0)["published_replicas"] == 3


def test_metrics_teach_rps_per_replica():
    e, now = warm_engine(rate=25)
    first = e.tick(now)
    assert first["reasons"][0] == Reason.FIRST | Reason.DEFAULT_CAPACITY
    assert first["desired_replicas"][0] == 3 and first["rps_per_replica"][0] == 10.0
    # a METRIC is paired with the request rate of its window once that window has closed
    end = T0 + 3 * S  # its window ends with bucket 2, closed already
    e.apply(MsgType.METRIC, metric(7, replicas=5, cpu=0.5, ts=end), now)
    assert e.services.observed_replicas[0] == 5 and e.services.cpu[0] == 0.5
    assert e.services.learned_rps_per_replica[0] == 0.0  # learned at the tick
    out = e.tick(now)
    est = 25.0 / (5 * 0.5) * e.cfg.policy.target_utilisation  # 7 rps per replica
    assert e.services.learned_rps_per_replica[0] == pytest.approx(est)
    assert len(out) == 1
    assert out["desired_replicas"][0] == 4  # ceil(25 / 7)
    assert out["previous_replicas"][0] == 3 and out["observed_replicas"][0] == 5
    assert out["rps_per_replica"][0] == pytest.approx(est, rel=1e-6)
    assert out["reasons"][0] == Reason.SCALE_UP  # the DEFAULT_CAPACITY bit is gone
    assert e.service_summary(0)["capacity_learned"] is True
    # a second sample: decayed sums of rate and busy replicas, not a mean of ratios
    e.apply(MsgType.METRIC, metric(7, replicas=2, cpu=0.5, ts=end), now)
    assert len(e.tick(now)) == 0  # ceil(25 / 10.1) = 3 < 4: waits for the window
    d = engine_mod.CAPACITY_DECAY
    learned = (d * 25 + 25) / (d * 2.5 + 1.0) * 0.7
    assert e.services.learned_rps_per_replica[0] == pytest.approx(learned)
    assert e.services.desired[0] == 3
    assert e.allocations(now)["rps_per_replica"][0] == pytest.approx(learned, rel=1e-6)


def test_capacity_waits_for_the_metric_window_and_skips_saturation():
    e, now = warm_engine(rate=20)
    e.tick(now)
    # the window of this METRIC ends in bucket 4, still open at the next tick
    e.apply(MsgType.METRIC, metric(7, replicas=4, cpu=0.5, ts=T0 + 5 * S), now)
    e.apply(MsgType.REQUEST, reqs(np.full(40, T0 + 3 * S)), now)
    e.apply(MsgType.REQUEST, reqs(np.full(40, T0 + 4 * S)), now)
    e.tick(now)
    assert e.services.learned_rps_per_replica[0] == 0.0
    e.tick(T0 + 6 * S)  # buckets 3 and 4 close: the window (clipped to the series) is
    # 20, 20, 20, 40, 40 requests/s, mean 28, against 4 x 0.5 replicas busy
    assert e.services.learned_rps_per_replica[0] == pytest.approx(28 / 2.0 * 0.7)
    before = e.services.learned_rps_per_replica[0]
    e.apply(MsgType.METRIC, metric(7, replicas=1, cpu=1.0, ts=T0 + 5 * S), now)
    e.tick(T0 + 7 * S)  # saturated: only a bound, not learned from
    assert e.services.learned_rps_per_replica[0] == before


def test_memory_and_db_time_count_when_configured():
    e, now = warm_engine(rate=20, memory_per_replica_bytes=1e9, db_query_ms_budget=50.0)
    m = metric(7, replicas=4, cpu=0.25, ts=T0 + 3 * S)
    m["memory_bytes"] = 2e9  # 4 replicas x 1 GB: memory is half used, the binding resource
    m["db_query_ms"] = 10.0
    e.apply(MsgType.METRIC, m, now)
    e.tick(now)
    assert e.services.learned_rps_per_replica[0] == pytest.approx(20 / (4 * 0.5) * 0.7)
    e2, now = warm_engine(rate=20, db_query_ms_budget=50.0)
    m["db_query_ms"] = 40.0  # 0.8 of the budget: the database binds
    e2.apply(MsgType.METRIC, m, now)
    e2.tick(now)
    assert e2.services.learned_rps_per_replica[0] == pytest.approx(20 / (4 * 0.8) * 0.7)


def test_metrics_ignored_without_observations_or_load():
    e = Engine(make_cfg())
    e.apply(MsgType.METRIC, metric(9, replicas=3, cpu=0.9), T0)  # no buckets closed yet
    e.apply(MsgType.METRIC, metric(9, replicas=0, cpu=0.9), T0)
    assert len(e.services) == 1
    assert e.services.learned_rps_per_replica[0] == 0.0
    assert e.services.observed_replicas[0] == 0
    assert len(e.tick(T0 + 100 * S)) == 0  # no request buckets: not ready


def test_campaign_for_all_services_applies_inside_window():
    e, now = warm_engine(rate=10)
    for b in range(3):
        e.apply(MsgType.REQUEST, reqs(np.full(10, T0 + b * S), service=8), T0 + b * S)
    start, end = now + 2 * S, now + 20 * S  # lead time is 1 s = S
    e.apply(MsgType.CONTEXT, context(start, end, 3.0), now)
    assert e.campaign_multipliers(start - 1).tolist() == [1.0, 1.0]
    assert e.campaign_multipliers(start).tolist() == [3.0, 3.0]
    assert e.campaign_multipliers(end - 1).tolist() == [3.0, 3.0]
    assert e.campaign_multipliers(end).tolist() == [1.0, 1.0]
    assert e.campaign_multipliers(start - S, start).tolist() == [3.0, 3.0]  # look-ahead
    out = e.tick(now)
    assert out["desired_replicas"].tolist() == [1, 1]
    assert not (out["reasons"] & Reason.CAMPAIGN).any()
    out = e.tick(start - S)  # one lead time before the start: capacity is ordered now
    assert sorted(out["service"].tolist()) == [7, 8]
    assert (out["reasons"] & Reason.CAMPAIGN).all() and (out["reasons"] & Reason.SCALE_UP).all()
    base = out["base_forecast"]
    np.testing.assert_allclose(out["predicted_rps"], base * 3, rtol=1e-6)
    np.testing.assert_allclose(out["context_adjustment"], base * 2, rtol=1e-6)
    assert e.stats()["active_campaigns"] == 1
    e.tick(end)
    assert len(e.campaigns) == 0 and e.stats()["active_campaigns"] == 0
    assert e.campaign_multipliers(start).tolist() == [1.0, 1.0]  # dropped for good


def test_campaign_for_one_service_and_largest_multiplier_wins():
    e, now = warm_engine(rate=10)
    e.apply(MsgType.REQUEST, reqs([T0], service=8), T0)
    e.apply(MsgType.CONTEXT, np.concatenate([
        context(now, now + 10 * S, 2.0, service=8),
        context(now, now + 10 * S, 4.0, service=8),
        context(now, now + 10 * S, 1.5, service=wire.ALL),
        context(now, now + 10 * S, 9.0, service=12345),  # unknown service: ignored
    ]), now)
    assert e.campaign_multipliers(now).tolist() == [1.5, 4.0]
    e.apply(MsgType.REQUEST, reqs([T0], service=12345), T0)
    assert e.campaign_multipliers(now).tolist() == [1.5, 4.0, 9.0]
    assert e.accepted[MsgType.CONTEXT] == 4


def test_expired_campaigns_dropped_on_tick():
    e = Engine(make_cfg())
    e.apply(MsgType.CONTEXT, np.concatenate([context(0, T0, 2.0), context(0, T0 + S, 2.0)]), T0)
    e.tick(T0)
    assert e.campaigns["end_us"].tolist() == [T0 + S]


def test_profiles_set_segment_and_tier():
    e = Engine(make_cfg())
    p = np.zeros(3, wire.PROFILE)
    p["ts_us"], p["user"], p["segment"], p["tier"] = T0, [5, 6, 5], [10, 20, 30], [1, 2, 0]
    e.apply(MsgType.PROFILE, p, T0)
    u = e.users
    s5, s6 = u.slots.find_one(5), u.slots.find_one(6)
    assert (u.segment[s5], u.tier[s5]) == (30, 0)  # the later record wins
    assert (u.segment[s6], u.tier[s6]) == (20, wire.Tier.GOLD)
    e.apply(MsgType.REQUEST, reqs([T0], user=6), T0)
    assert u.slots.find_one(6) == s6 and u.hourly[s6].sum() == 1


def test_names_registered_and_found():
    e = Engine(make_cfg())
    e.apply(MsgType.REQUEST, reqs([T0], service=[42]), T0)
    e.apply(MsgType.NAME, np.concatenate([
        wire.make_names(wire.NameKind.SERVICE, [42, 43], ["images", "api"]),
        wire.make_names(wire.NameKind.USER, [1], ["host.example"]),
    ]), T0)
    assert e.names[wire.NameKind.USER] == {1: "host.example"}
    assert e.service_name(42) == "images" and e.service_name(99) == "99"
    assert e.find_service("images") == 0
    assert e.find_service("42") == 0
    assert e.find_service("api") == -1  # named, but no records yet
    assert e.find_service("nope") == -1 and e.find_service("7") == -1
    names = e.service_names()
    assert names.dtype == wire.NAME
    assert {int(r["id"]): wire.name_str(r) for r in names} == {42: "images", 43: "api"}
    new = e.take_new_names()
    assert new["id"].tolist() == [42, 43] and (new["kind"] == wire.NameKind.SERVICE).all()
    assert e.take_new_names() is None
    e.apply(MsgType.NAME, wire.make_names(wire.NameKind.SERVICE, [42], ["img"]), T0)
    assert e.service_name(42) == "img" and e.find_service("images") == -1
    assert e.service_summary(0)["name"] == "img"


def test_find_service_huge_number_is_unknown():
    e = Engine(make_cfg())
    e.apply(MsgType.REQUEST, reqs([T0], service=wire.ALL - 1), T0)
    assert e.find_service("9" * 23) == -1
    assert e.find_service(str(2**64)) == -1 and e.find_service(str(wire.ALL + 1)) == -1
    assert e.find_service(str(wire.ALL - 1)) == 0


def test_find_service_unicode_digit_is_unknown():
    e = Engine(make_cfg())
    e.apply(MsgType.REQUEST, reqs([T0], service=2), T0)
    assert e.find_service("2") == 0
    for s in ("²", "٢", "２", "", " 2", "-2", "+2"):
        assert e.find_service(s) == -1, s


def test_tick_without_services():
    e = Engine(make_cfg())
    out = e.tick(T0)
    assert out.dtype == wire.ALLOCATION and len(out) == 0
    assert len(e.allocations(T0)) == 0 and len(e.service_names()) == 0


def test_apply_empty_batch_is_noop():
    e = Engine(make_cfg())
    e.apply(MsgType.REQUEST, np.zeros(0, wire.REQUEST), T0)
    assert e.accepted[MsgType.REQUEST] == 0 and len(e.services) == 0


def test_scale_down_through_engine():
    e, now = warm_engine(rate=50, scale_down_window_s=5.0)
    assert e.tick(now)["desired_replicas"].tolist() == [5]
    # load stops: empty buckets drive the level down
    outs = [e.tick(now + i * S) for i in range(1, 40)]
    published = [(i, o) for i, o in enumerate(outs, 1) if len(o)]
    assert published, "never scaled down"
    i, o = published[0]
    assert o["reasons"][0] & Reason.SCALE_DOWN
    assert o["previous_replicas"][0] == 5 and o["desired_replicas"][0] < 5
    assert i >= 5  # not before the stabilisation window


# ---- state / restore ----------------------------------------------------------------------------

def busy_engine() -> tuple[Engine, int]:
    cfg = make_cfg(bucket_s=1.0, late_buckets=2)
    e = Engine(cfg)
    rng = np.random.default_rng(7)
    for b in range(8):
        n = int(rng.integers(5, 60))
        e.apply(MsgType.REQUEST, reqs(T0 + b * S + rng.integers(0, S, n),
                                      service=rng.choice([7, 8, 9], n),
                                      user=rng.integers(0, 2000, n)), T0 + b * S + S - 1)
        e.tick(T0 + b * S)
    e.apply(MsgType.METRIC, metric(8, replicas=3, cpu=0.6), T0 + 8 * S)
    e.apply(MsgType.CONTEXT, context(T0, T0 + 100 * S, 2.0, service=9), T0 + 8 * S)
    p = np.zeros(2, wire.PROFILE)
    p["user"], p["segment"], p["tier"] = [1, 2], [3, 4], [1, 2]
    e.apply(MsgType.PROFILE, p, T0 + 8 * S)
    e.apply(MsgType.NAME, wire.make_names(wire.NameKind.SERVICE, [7, 8], ["web", "api"]),
            T0 + 8 * S)
    e.apply(MsgType.REQUEST, reqs([T0 - 50 * S]), T0 + 8 * S)  # a late drop
    return e, T0 + 8 * S


def assert_same_state(a: Engine, b: Engine):
    ma, aa = a.state()
    mb, ab = b.state()
    assert ma == mb
    assert set(aa) == set(ab)
    for k in aa:
        assert aa[k].dtype == ab[k].dtype, k
        assert aa[k].tobytes() == ab[k].tobytes(), k


def test_state_restore_round_trip():
    e, now = busy_engine()
    meta, arrays = e.state()
    assert meta["late_dropped"] == e.late_dropped > 0
    assert arrays["services.rows"][0] == 3 and arrays["users.rows"][0] == e.users.rows
    r = Engine(e.cfg)
    r.restore(meta, arrays)
    assert_same_state(e, r)
    assert r.service_names().tobytes() == e.service_names().tobytes()
    assert r.find_service("api") == e.find_service("api") >= 0
    assert r.stats() == e.stats()
    for t in (now, now + 3 * S, now + 30 * S):
        oa, ob = e.tick(t), r.tick(t)
        assert oa.tobytes() == ob.tobytes()
        assert_same_state(e, r)
    more = reqs(now + 30 * S + np.arange(20) * 100_000, service=[7, 8, 9, 10] * 5)
    e.apply(MsgType.REQUEST, more, now + 32 * S)
    r.apply(MsgType.REQUEST, more, now + 32 * S)
    oa, ob = e.tick(now + 40 * S), r.tick(now + 40 * S)
    assert len(oa) and oa.tobytes() == ob.tobytes()
    assert_same_state(e, r)


def test_state_is_a_copy():
    e, now = busy_engine()
    meta, arrays = e.state()
    before = {k: v.copy() for k, v in arrays.items()}
    e.apply(MsgType.REQUEST, reqs(np.full(50, now)), now)
    e.tick(now + 10 * S)
    for k in before:
        assert arrays[k].tobytes() == before[k].tobytes(), k


def test_restore_empty_engine():
    e = Engine(make_cfg())
    meta, arrays = e.state()
    r = Engine(make_cfg())
    r.restore(meta, arrays)
    assert_same_state(e, r)
    assert len(r.tick(T0)) == 0


def test_navigation_queue_is_bounded_and_counted_and_replay_learns_inline():
    cfg = config.validate({"model": {"markov_queue_events": 1024}})
    e = Engine(cfg)
    frames = [reqs(T0 + k * 1000 + np.arange(1000), user=k) for k in range(3)]
    for f in frames:
        e.apply(MsgType.REQUEST, f, T0)
    st = e.stats()
    assert st["navigation_skipped"] == 2000 and st["navigation_queued"] == 1000
    assert e.learn_navigation() == 1000 and e.learn_navigation() == 0
    assert e.stats()["navigation_learned"] == 1000
    r = Engine(cfg)
    r.nav_inline = True  # replaying a journal: learn instead of skipping
    for f in frames:
        r.apply(MsgType.REQUEST, f, T0)
    r.learn_navigation()
    assert r.stats()["navigation_skipped"] == 0 and r.stats()["navigation_learned"] == 3000


def test_checkpoint_state_holds_every_queued_navigation_event():
    e = Engine(make_cfg())
    e.apply(MsgType.REQUEST, reqs(T0 + np.arange(500)), T0)
    meta, arrays = e.state()
    assert meta["nav_learned"] == 500 and e.stats()["navigation_queued"] == 0
    assert arrays["model.markov.meta"][1] == 499  # transitions after the first request


def test_segment_series_feed_their_own_models():
    e = Engine(config.validate({"model": {"seasonal_bucket_s": 60.0}}))
    p = np.zeros(2, wire.PROFILE)
    p["ts_us"], p["user"], p["segment"] = T0, [1, 2], [10, 20]
    e.apply(MsgType.PROFILE, p, T0)
    for k in range(30):  # 30 one-minute steps: segment 10 sends 120 a minute, 20 sends 60
        t = T0 + k * 60 * S
        e.apply(MsgType.REQUEST, reqs(t + np.arange(180) * 1000, user=[1, 2, 1] * 60), t)
        e.tick(t + 60 * S)
    v10, v20 = e.segment_view("10"), e.segment_view("20")
    slots = e.segments.slots.find(np.array([10, 20], np.uint64))
    assert e.models["segment_holt_winters"]._n_obs[slots].tolist() == [29, 29]
    assert abs(v10["forecast_rps"]["mean"][0] - 2.0) < 0.2  # 120 a minute
    assert abs(v20["forecast_rps"]["mean"][0] - 1.0) < 0.1
    assert 0.0 <= v10["anomaly_score"] <= 1.0 and v10["anomalous"] in (True, False)
    assert e.segment_view("30") is None and e.segment_view("x") is None
    meta, arrays = e.state()
    r = Engine(e.cfg)
    r.restore(meta, arrays)
    assert r.segment_view("10")["forecast_rps"] == v10["forecast_rps"]
