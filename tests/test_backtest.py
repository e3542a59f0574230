"""``bae backtest`` and the simulator behind it (bae_core.simulate)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest

from bae_core import config, simulate, wire
from daemon.cli import main

from .conftest import DATA, NASA

ALIBABA = DATA / "datacenter-traces" / "alibaba2018" / \
    "machine_usage_days_1_to_8_grouped_300_seconds.csv"
SVC = 7


def _settings(**kw):
    base = dict(step_s=10.0, rps_per_replica=5.0, target_utilisation=0.7, min_replicas=1,
                max_replicas=100, startup_s=60.0)
    base.update(kw)
    return simulate.SimSettings(**base)


def _step_demand(s, lo=10.0, hi=40.0, minutes=30):
    """``lo`` rps for ``minutes``, then ``hi`` rps for as long (rows of 10 s)."""
    n = minutes * 6
    values = np.r_[np.full(n, lo), np.full(n, hi)]
    return simulate.demand_from_series(values, 10.0, s, float(values.mean()),
                                       1_699_999_200 * 10**6, SVC, "svc")


class Oracle:
    """An engine stand-in that orders ``hi`` replicas from ``at_us`` on (``lo`` before),
    and optionally emits PREFETCH / PREWARM records."""

    def __init__(self, at_us, lo=3, hi=12, outputs=None):
        self.at_us, self.lo, self.hi, self.outputs = at_us, lo, hi, outputs or {}
        self.published = None
        self.metrics = []
        self.models = {}

    def apply(self, mtype, recs, now_us):
        if mtype == wire.MsgType.METRIC:
            self.metrics.append(recs.copy())

    def tick(self, now_us):
        want = self.hi if now_us >= self.at_us else self.lo
        if want == self.published:
            return np.zeros(0, wire.ALLOCATION)
        self.published = want
        out = np.zeros(1, wire.ALLOCATION)
        out["ts_us"], out["service"], out["desired_replicas"] = now_us, SVC, want
        out["predicted_rps"] = 10.0
        return out

    def take_outputs(self):
        return self.outputs.pop(self._now, {}) if hasattr(self, "_now") else {}


# ----------------------------------------------------------------------------- metrics

def test_constant_load_at_the_right_count_is_neither_under_nor_over():
    d = np.full((1, 360), 100.0)  # 10 rps in 10-s steps
    need = math.ceil(10.0 / 2.5)  # 4 replicas of 2.5 rps
    ready = np.full((1, 360), need * 10.0)
    m = simulate.provisioning_metrics(d, ready, ready, 2.5, 10.0)
    assert m["over_provisioned_replica_hours"] == 0
    assert m["under_provisioned_requests"] == 0
    assert m["under_provisioned_s"] == 0
    assert m["replica_hours"] == pytest.approx(4.0)
    # one replica more for the hour: one over-provisioned replica-hour
    m = simulate.provisioning_metrics(d, ready + 10.0, ready + 10.0, 2.5, 10.0)
    assert m["over_provisioned_replica_hours"] == pytest.approx(1.0)
    # one fewer: 2.5 rps unserved for an hour
    m = simulate.provisioning_metrics(d, ready - 10.0, ready - 10.0, 2.5, 10.0)
    assert m["under_provisioned_requests"] == pytest.approx(2.5 * 3600)
    assert m["under_provisioned_s"] == 3600


def test_series_demand_is_spread_evenly_and_scaled_to_the_mean():
    s = _settings()
    d = simulate.demand_from_series(np.array([1.0, 3.0]), 300.0, s, 2.0, 0, SVC, "x")
    steps = d.steps[0]
    assert d.n_steps == 60 and steps.sum() == 1200  # mean 2 rps over 600 s
    assert set(steps[:30]) == {10} and set(steps[30:]) == {30}
    ev = d.events(31)
    assert len(ev) == 30 and (ev["service"] == SVC).all()
    assert (ev["ts_us"] >= 310_000_000).all() and (ev["ts_us"] < 320_000_000).all()


# ----------------------------------------------------------------------------- reactive

def test_reactive_under_provisions_for_about_startup_plus_sync_after_a_step():
    s = _settings()
    d = _step_demand(s)
    r = simulate.run_reactive(d, s)["metrics"]
    # 3 replicas (15 rps) until the sync at T+15 sees 40 rps and orders 12, ready at T+75
    assert 70 <= r["under_provisioned_s"] <= 90
    assert 1500 <= r["under_provisioned_requests"] <= 2100
    assert r["scaling_actions"] == 1


def test_reactive_holds_within_the_tolerance_and_stabilises_scale_down():
    s = _settings(rps_per_replica=10.0)
    values = np.r_[np.full(180, 70.0), np.full(180, 20.0)]  # 10 replicas, then 3
    d = simulate.demand_from_series(values, 10.0, s, float(values.mean()), 0, SVC, "x")
    out = simulate.run_reactive(d, s)
    ordered = out["ordered_steps"][0]
    assert ordered[0] == 10 and ordered[179] == 10
    # the drop at 1800 s is followed only after the 300-s window
    assert ordered[180 + 25] == 10 and ordered[180 + 33] == 3
    assert out["metrics"]["scaling_actions"] == 1


# ----------------------------------------------------------------------------- predictive

def test_a_policy_told_of_the_surge_ahead_does_not_under_provision():
    s = _settings()
    d = _step_demand(s)
    surge = d.t0_us + 1800 * 10**6
    early = simulate.run_predictive(None, d, s, engine=Oracle(surge - 60 * 10**6))
    assert early["metrics"]["under_provisioned_requests"] == 0
    late = simulate.run_predictive(None, d, s, engine=Oracle(surge - 30 * 10**6))
    # ready 30 s after the surge: three steps short of 25 rps
    assert late["metrics"]["under_provisioned_requests"] == pytest.approx(750)
    assert late["metrics"]["prefetch_hit_rate"] is None  # synthetic resources
    assert late["metrics"]["prewarm_hits"] is None


def test_metric_records_report_ready_replicas_and_utilisation():
    s = _settings()
    d = _step_demand(s)
    eng = Oracle(d.t0_us + 1800 * 10**6 - 60 * 10**6)
    simulate.run_predictive(None, d, s, engine=eng)
    m = np.concatenate(eng.metrics)
    assert (m["service"] == SVC).all()
    steady = m[10:170]
    assert (steady["replicas"] == 3).all()
    assert np.allclose(steady["cpu"], 10.0 / 15.0, atol=1e-6)
    assert m["replicas"].max() == 12


def test_the_real_engine_with_a_campaign_ahead_beats_the_reactive_baseline():
    s = _settings()
    d = _step_demand(s)
    doc = simulate.apply_overrides({}, s)
    cfg = config.validate(doc)
    surge = d.t0_us + 1800 * 10**6
    camp = np.zeros(1, wire.CONTEXT)
    camp["ts_us"], camp["start_us"], camp["end_us"] = d.t0_us, surge, surge + 600 * 10**6
    camp["service"], camp["multiplier"], camp["campaign"] = SVC, 4.0, 1
    camp["segment"] = wire.ALL
    res = simulate.backtest(cfg, d, s, contexts=camp)
    assert res.reactive["under_provisioned_requests"] > 1000
    assert res.predictive["under_provisioned_requests"] <= \
        0.5 * res.reactive["under_provisioned_requests"]


def test_prefetch_and_prewarm_outputs_are_scored():
    s = _settings(cache_size=1)
    t0 = 1_700_000_000 * 10**6 // 10**7 * 10**7
    n = 200
    recs = np.zeros(n, wire.REQUEST)
    recs["ts_us"] = t0 + np.arange(n) * 5 * 10**6  # one request per 5 s for 1000 s
    recs["service"] = SVC
    recs["resource"] = np.where(np.arange(n) % 2 == 0, 100, 200)  # alternating: LRU(1) misses
    d = simulate.demand_from_requests(recs, s)
    pf = np.zeros(1, wire.PREFETCH)
    pf["service"], pf["resource"] = SVC, 100
    pw = np.zeros(2, wire.PREWARM)
    pw["service"], pw["replicas"] = SVC, 5
    pw["at_us"] = [t0 + 500 * 10**6, t0 + 5000 * 10**6]  # a hit, and one after the trace

    class Eng(Oracle):
        def tick(self, now_us):
            self._now = now_us
            return super().tick(now_us)

    first = t0 + 10 * 10**6
    eng = Eng(10**19, lo=1, hi=1, outputs={first: {"prefetch": pf, "prewarm": pw}})
    m = simulate.run_predictive(None, d, s, engine=eng)["metrics"]
    # the list [100] is known from the first tick (10 s): half of the later requests hit
    assert m["prefetch_hit_rate"] == pytest.approx(99 / 200)
    assert m["lru_hit_rate"] == 0.0  # alternating two resources in a cache of 1
    assert m["prewarm_hits"] == 1 and m["prewarm_misses"] == 1
    assert m["cache_sizes"] == {"7": 1}


# ----------------------------------------------------------------------------- LRU

def _lru_reference(svcs, res, size):
    caches, out = {}, []
    for sv, r in zip(svcs.tolist(), res.tolist()):
        c = caches.setdefault(sv, OrderedDict())
        hit = r in c
        out.append(hit)
        if hit:
            c.move_to_end(r)
        else:
            c[r] = True
            if len(c) > size:
                c.popitem(last=False)
    return np.array(out)


def test_lru_hits_on_a_tiny_stream():
    res = np.array([1, 2, 1, 3, 2, 1], np.uint64)
    svc = np.zeros(6, np.uint32)
    assert simulate.lru_hits(svc, res, 2).tolist() == [0, 0, 1, 0, 0, 0]
    assert simulate.lru_hits(svc, res, 3).tolist() == [0, 0, 1, 0, 1, 1]
    # per service: the same resource ids in another service are another cache
    svc2 = np.array([0, 1, 0, 1, 0, 1], np.uint32)
    res2 = np.array([5, 5, 5, 5, 6, 6], np.uint64)
    assert simulate.lru_hits(svc2, res2, 1).tolist() == [0, 0, 1, 1, 0, 0]
    assert simulate.lru_hits(svc2, res2, {0: 1, 1: 0}).tolist() == [0, 0, 1, 0, 0, 0]


def test_lru_hits_match_a_reference_cache():
    rng = np.random.default_rng(3)
    svc = rng.integers(0, 3, 3000).astype(np.uint32)
    res = rng.zipf(1.5, 3000).clip(0, 60).astype(np.uint64)
    for size in (1, 4, 16):
        assert (simulate.lru_hits(svc, res, size) == _lru_reference(svc, res, size)).all()


# ----------------------------------------------------------------------------- CLI

def _run(capsys, *argv):
    rc = main(["backtest", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


KEYS = {"under_provisioned_requests", "over_provisioned_replica_hours", "scaling_actions",
        "prefetch_hit_rate", "under_provisioned_s", "replica_hours"}


def test_cli_nasa_json_and_plot(capsys, tmp_path):
    assert NASA.is_file(), f"{NASA} is missing: the shared data set is required"
    png = tmp_path / "bt.png"
    rc, out, err = _run(capsys, NASA, "--format", "nasa", "--json", "--plot", png)
    assert rc == 0, err
    res = json.loads(out)
    assert set(res) >= {"predictive", "reactive", "trace", "settings"}
    p, r = res["predictive"], res["reactive"]
    assert KEYS <= set(p) and KEYS <= set(r) and "lru_hit_rate" in p
    assert res["trace"]["requests"] == 30969 and res["trace"]["services"] > 10
    assert res["trace"]["busiest_service"] == "images"
    assert res["settings"]["rps_per_replica"] > 0
    for side in (p, r):
        assert side["under_provisioned_requests"] >= 0
        assert 0 < side["replica_hours"] < 1e6
        assert 0 <= side["over_provisioned_replica_hours"] <= side["replica_hours"]
        assert side["scaling_actions"] > 0
        assert 0.5 < side["served_fraction"] <= 1
    assert 0 < p["lru_hit_rate"] < 1 and r["prefetch_hit_rate"] == p["lru_hit_rate"]
    assert p["prefetch_hit_rate"] is None or 0 <= p["prefetch_hit_rate"] <= 1
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert res["settings"]["seconds"] < 90  # target: well under 60 s on an idle machine


def test_cli_datacenter_trace(capsys):
    assert ALIBABA.is_file(), f"{ALIBABA} is missing: the shared data set is required"
    rc, out, err = _run(capsys, ALIBABA, "--format", "csv", "--value-column",
                        "cpu_util_percent", "--bucket-seconds", "300", "--json")
    assert rc == 0, err
    res = json.loads(out)
    tr = res["trace"]
    assert tr["rows"] == 2243 and tr["services"] == 1 and tr["row_seconds"] == 300
    assert tr["requests"] == pytest.approx(5.0 * 2243 * 300, rel=1e-3)
    for side in (res["predictive"], res["reactive"]):
        assert KEYS <= set(side)
        assert side["prefetch_hit_rate"] is None
        assert side["replica_hours"] > 0
    assert res["predictive"]["lru_hit_rate"] is None
    # the text table too
    rc, out, _ = _run(capsys, ALIBABA, "--format", "csv", "--value-column",
                      "cpu_util_percent", "--bucket-seconds", "300", "--startup-seconds",
                      "120")
    assert rc == 0 and "under-provisioned requests" in out and "reactive" in out


@pytest.mark.parametrize("case", ["missing", "empty", "column", "short", "nasa_missing",
                                  "nasa_empty", "no_column_flag"])
def test_bad_input_is_a_clear_error(case, capsys, tmp_path):
    f = tmp_path / "t.csv"
    if case == "missing":
        argv = [tmp_path / "nope.csv", "--format", "csv", "--value-column", "v"]
        want = "no such file"
    elif case == "empty":
        f.write_text("")
        argv = [f, "--format", "csv", "--value-column", "v"]
        want = "empty"
    elif case == "column":
        f.write_text("a,b\n1,2\n")
        argv = [f, "--format", "csv", "--value-column", "v"]
        want = "column 'v' is not in"
    elif case == "short":
        f.write_text("v\n1\n2\n3\n")
        argv = [f, "--format", "csv", "--value-column", "v", "--step-seconds", "10"]
        want = "a backtest needs at least"
    elif case == "nasa_missing":
        argv = [tmp_path / "nope.tsv", "--format", "nasa"]
        want = "no such file"
    elif case == "nasa_empty":
        f = tmp_path / "t.tsv"
        f.write_text("")
        argv = [f, "--format", "nasa"]
        want = "empty"
    else:
        f.write_text("v\n1\n")
        argv = [f, "--format", "csv"]
        want = "--value-column"
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert want in err and "Traceback" not in err and out == ""
    assert err.startswith("bae: error:")
