"""The allocation policy in the engine: SLA tiers, panic, rate limits, learned start-up
time, pre-warm orders, prefetch lists and per-user needs."""

from __future__ import annotations

import numpy as np
import pytest

from bae_core import policy, wire
from bae_core.engine import Engine
from bae_core.kernels import holt_winters as hwk
from bae_core.wire import MsgType, Reason

from .test_engine import S, T0, make_cfg, metric, reqs


def feed(e: Engine, seconds, rate, service=7, users=(1,), start=T0, tick=True, **fields):
    """``rate`` requests a second for ``seconds`` seconds, ticking once a second."""
    outs = []
    for k in range(seconds):
        t = start + k * S
        n = int(rate)
        r = reqs(t + np.arange(n) * (S // max(n, 1)), service=service,
                 user=np.resize(np.asarray(users), n), **fields)
        e.apply(MsgType.REQUEST, r, t + S)
        if tick:
            outs.append((e.tick(t + S), e.take_outputs()))
    return outs


def profiles(e: Engine, users, tier, segment=0):
    p = np.zeros(len(users), wire.PROFILE)
    p["ts_us"], p["user"], p["tier"], p["segment"] = T0, users, tier, segment
    e.apply(MsgType.PROFILE, p, T0)


def test_tier_split_serves_gold_first_when_capped():
    rps_q = np.array([[100.0, 100.0, 100.0], [100.0, 100.0, 100.0]])
    share = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    per = np.array([10.0, 10.0])
    total, reps, _ = policy.tier_split(rps_q, share, per, np.zeros(3), 1, 8)
    assert total.tolist() == [8, 8]
    assert reps[0].tolist() == [3, 0, 5]  # gold's 5 first, bronze gets what is left
    assert reps[1].tolist() == [8, 0, 0]
    total, reps, _ = policy.tier_split(rps_q * 0, share, per, np.zeros(3), 2, 8)
    assert total.tolist() == [2, 2] and reps[0].tolist() == [0, 0, 2]  # the floor: top tier


def test_gold_users_get_their_quantile_and_headroom_in_tier_records():
    e = Engine(make_cfg(gold_headroom=0.5))
    profiles(e, [1], wire.Tier.GOLD)
    profiles(e, [2], wire.Tier.BRONZE)
    outs = feed(e, 30, 40, users=(1, 2))  # 20 rps gold, 20 rps bronze
    tiers = [o["tier"] for _, o in outs if "tier" in o]
    assert tiers, "TIER records are published"
    last = tiers[-1]
    by = {int(t["tier"]): t for t in last}
    assert by[wire.Tier.GOLD]["quantile"] == np.float32(0.99)
    assert by[wire.Tier.GOLD]["headroom"] == np.float32(0.5)
    assert by[wire.Tier.GOLD]["replicas"] >= 3  # 20 rps x 1.5 / 10 per replica
    assert by[wire.Tier.BRONZE]["replicas"] >= 2
    assert by[wire.Tier.GOLD]["maxconn"] == by[wire.Tier.GOLD]["replicas"] * 100
    alloc = [a for a, _ in outs if len(a)][-1]
    assert alloc["tier"][0] == wire.Tier.GOLD
    assert alloc["desired_replicas"][0] == sum(int(t["replicas"]) for t in last)
    assert set(e.published_tiers) == {7}


def test_panic_reacts_at_once_to_load_far_above_the_forecast():
    e = Engine(make_cfg(scale_up_period_s=60.0, panic_factor=1.5))
    feed(e, 20, 10)
    assert e.services.published[0] == 1
    outs = feed(e, 3, 200, start=T0 + 20 * S)
    a = np.concatenate([o for o, _ in outs])
    assert len(a) and a["reasons"][0] & Reason.PANIC
    assert a["desired_replicas"][0] >= 20  # observed 200 rps / 10 per replica
    # no scale-down during the panic window even when the load vanishes
    feed(e, 30, 0, start=T0 + 23 * S)
    assert e.services.published[0] >= 20


def test_panic_reads_the_open_bucket_once_it_spans_the_sync_period():
    e = Engine(make_cfg(bucket_s=60.0, late_buckets=0, scale_up_period_s=60.0))
    t0 = -(-T0 // (60 * S)) * 60 * S  # on a bucket boundary
    for b in range(10):  # ten minutes at 10 rps
        t = t0 + b * 60 * S
        e.apply(MsgType.REQUEST, reqs(t + np.arange(600) * (S // 10)), t + 60 * S - 1)
        e.tick(t + 60 * S)
    t = t0 + 600 * S  # the next minute runs at 50 rps
    e.apply(MsgType.REQUEST, reqs(t + np.arange(250) * (S // 50)), t + 5 * S)
    early = e.tick(t + 5 * S)  # 5 s into the bucket: too short to read a rate from
    assert not (early["reasons"] & Reason.PANIC).any()
    pub = int(e.services.published[0])
    e.apply(MsgType.REQUEST, reqs(t + 5 * S + np.arange(750) * (S // 50)), t + 20 * S)
    out = e.tick(t + 20 * S)  # 20 s in: 50 rps observed while the bucket is still open
    assert len(out) == 1 and out["reasons"][0] & Reason.PANIC
    assert out["desired_replicas"][0] >= 5 > pub


def _quiet_then(e: Engine, burst: int) -> np.ndarray:
    """Twenty 10 s buckets of one request each (0.1 rps), then ``burst`` requests in the
    next bucket; the ALLOCATION records of the tick that closes it."""
    t0 = -(-T0 // (10 * S)) * 10 * S
    for b in range(20):
        t = t0 + b * 10 * S
        e.apply(MsgType.REQUEST, reqs(t + 5 * S), t + 10 * S - 1)
        e.tick(t + 10 * S)
    t = t0 + 200 * S
    e.apply(MsgType.REQUEST, reqs(t + np.arange(burst) * (S // 4)), t + 10 * S - 1)
    return e.tick(t + 10 * S)


@pytest.mark.parametrize("panic_z, burst, panics", [
    (3.0, 3, False),  # 3 requests where 1 was expected: counting noise, not a surge
    (0.0, 3, True),  # without the noise guard the same bucket panics
    (3.0, 30, True),  # 30 where 1 was expected: a surge
])
def test_panic_ignores_counting_noise_on_a_quiet_service(panic_z, burst, panics):
    e = Engine(make_cfg(bucket_s=10.0, late_buckets=0, rps_per_replica=0.05,
                        scale_up_period_s=600.0, scale_down_window_s=60.0,
                        panic_factor=1.3, panic_z=panic_z))
    out = _quiet_then(e, burst)
    assert bool(len(out) and out["reasons"][0] & Reason.PANIC) is panics
    if panics:
        assert out["desired_replicas"][0] >= burst / 10 / 0.05


def test_scale_up_is_rate_limited_without_panic():
    e = Engine(make_cfg(scale_up_period_s=15.0, panic_factor=100.0))
    outs = feed(e, 10, 10)
    first = [a for a, _ in outs if len(a)][0]
    assert first["desired_replicas"][0] == 1
    outs = feed(e, 10, 80, start=T0 + 10 * S)  # want 8: at most 1 -> max(2x, +4) = 5
    ups = np.concatenate([a for a, _ in outs])
    assert ups["desired_replicas"].tolist()[0] == 5
    assert (np.diff(ups["ts_us"]) >= 15 * S).all()


def test_start_up_time_is_learned_and_sets_the_lead():
    e = Engine(make_cfg(lead_time_s=1.0))
    feed(e, 5, 10)
    feed(e, 5, 50, start=T0 + 5 * S)  # scale-up to 5
    assert e.services.order_us[0] > 0
    ordered = int(e.services.order_us[0])
    e.apply(MsgType.METRIC, metric(7, replicas=int(e.services.order_target[0]), cpu=0.5,
                                   ts=ordered + 40 * S), ordered + 40 * S)
    assert abs(e.services.startup_s[0] - 40.0) < 1e-6
    outs = feed(e, 60, 50, start=T0 + 10 * S)
    leads = [a["lead_time_s"][0] for a, _ in outs if len(a)]
    if leads:
        assert leads[-1] == 40.0


def test_anomalous_service_gets_the_multiplier_and_the_reason():
    e = Engine(make_cfg(anomaly_multiplier=2.0))
    feed(e, 400, 10, service=7)  # past the detector's grace period of 300 buckets
    outs = feed(e, 5, 60, start=T0 + 400 * S)  # a jump: the detector flags it
    a = np.concatenate([o for o, _ in outs])
    flagged = a[(a["reasons"] & Reason.ANOMALY) != 0]
    assert len(flagged) and (flagged["anomaly_multiplier"] == 2.0).all()


def test_idle_service_gets_prewarm_orders_from_its_idle_times():
    e = Engine(make_cfg(prewarm_min_idle_s=60.0))
    t = T0
    for cycle in range(4):  # bursts every 10 minutes: idle gaps of about 9 minutes
        feed(e, 20, 10, start=t)
        t += 600 * S
    e.tick(t - 300 * S)  # idle 5 minutes into the fifth gap
    out = e.take_outputs()
    assert "prewarm" in out
    w = out["prewarm"][0]
    assert w["service"] == 7 and w["reason"] == wire.PrewarmReason.IDLE_RETURN
    assert t - 600 * S + 20 * S < w["at_us"] <= t  # back within the idle-time histogram
    assert 0 < w["confidence"] <= 1 and w["replicas"] >= 1
    e.tick(t - 290 * S)
    assert "prewarm" not in e.take_outputs()  # once per idle period


def test_prefetch_lists_follow_navigation():
    e = Engine(make_cfg(needs_interval_s=1.0))
    # users walk /a -> /b -> /c on service 7, over and over
    t = T0
    for k in range(40):
        n = 30
        users = np.arange(n) + 1
        for step, res in enumerate((11, 12, 13)):
            r = reqs(np.full(n, t + step * 1000), service=7, user=users, resource=res)
            e.apply(MsgType.REQUEST, r, t + S)
        e.learn_navigation()
        e.tick(t + S)
        e.take_outputs()
        t += 2 * S
    lst = e.prefetch_list(0)
    assert [x["id"] for x in lst[:1]] == ["11"]  # after /c the walk starts over at /a
    assert abs(sum(x["probability"] for x in lst) - 1.0) < 1e-3
    assert set(e.published_prefetch) == {7}


def test_prefetch_fills_spare_places_with_popular_resources():
    e = Engine(make_cfg(needs_interval_s=1.0, prefetch_k=4))
    t = T0
    # one-off visitors hit /90 often and /91 less (no walk to learn from them), while
    # users 1..30 walk /11 -> /12
    for k in range(20):
        r = reqs(np.full(6, t), service=7, user=1000 + k * 10 + np.arange(6),
                 resource=np.array([90, 90, 90, 90, 91, 91]))
        e.apply(MsgType.REQUEST, r, t + S)
        users = np.arange(30) + 1
        for step, res in enumerate((11, 12)):
            e.apply(MsgType.REQUEST, reqs(np.full(30, t + step * 1000), service=7,
                                          user=users, resource=res), t + S)
        e.learn_navigation()
        e.tick(t + S)
        e.take_outputs()
        t += 2 * S
    lst = e.prefetch_list(0)
    ids = [x["id"] for x in lst]
    assert ids[0] == "11" and len(ids) == 4
    assert ids.index("90") < ids.index("91")  # the rest by recent popularity
    assert all(x["expected_hits"] >= 0 for x in lst)
    state = e.models["markov"].state()
    fresh = type(e.models["markov"])(**e.models["markov"].params())
    fresh.restore(state)  # popularity survives a checkpoint
    a, b = e.models["markov"].popular(t), fresh.popular(t)
    assert np.array_equal(a["resource"], b["resource"])
    assert np.allclose(a["weight"], b["weight"])


def test_predict_user_needs_surge_and_context():
    e = Engine(make_cfg())
    hour = hwk.HOUR_US
    start = (T0 // hour + 1) * hour
    # user 1: 20 requests an hour for two days; user 2 the same, then a scrape
    for h in range(48):
        t = start + h * hour
        e.apply(MsgType.REQUEST, reqs(t + np.arange(20) * S, user=1), t + 30 * S)
        e.apply(MsgType.REQUEST, reqs(t + np.arange(20) * S, user=2), t + 30 * S)
    t = start + 48 * hour
    e.apply(MsgType.REQUEST, reqs(t + np.arange(400) * 1000, user=2), t + S)
    e.tick(t + S)
    calm, hot = e.predict_user("1", t + 2 * S), e.predict_user("2", t + 2 * S)
    assert calm["anomaly_multiplier"] == 1.0 and hot["anomaly_multiplier"] == 1.3
    assert 0 < calm["base"] < 1  # ~20 an hour over 10 s
    assert hot["context_adjustment"] == 0.0  # one geography, one device: no mix shift
    assert hot["needs"] == pytest.approx(hot["base"] * 1.3, rel=1e-5)
    assert e.predict_user("nobody", t) is None
