"""Forecast-error quantiles: the kernel against a weighted-sample reference, and the
engine's tier quantiles calibrated on a real series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bae_core import config, wire
from bae_core.engine import Engine
from bae_core.kernels import residuals

NASA = Path(__file__).resolve().parents[1] / "../shared/data/nasa-http/nasa_19950801.tsv"


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    c = np.cumsum(w[order])
    return float(x[order][np.searchsorted(c, q * c[-1] - 1e-9)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_match_decayed_weighted_samples(seed):
    rng = np.random.default_rng(seed)
    n, steps, unit, decay = 3, 400, 10.0, 0.99
    forecast = np.array([1.0, 50.0, 0.2])
    scale = np.array([0.5, 20.0, 0.05])
    hist = np.zeros((n, residuals.ERR_BINS), np.float32)
    values = forecast + scale * rng.standard_t(3, (steps, n))
    slots = np.tile(np.arange(n), steps)
    residuals.learn(slots, values.ravel(), forecast, hist, decay, unit)
    qs = np.array([0.5, 0.9, 0.99])
    out = np.empty((n, 3))
    residuals.quantiles(hist, n, qs, 5.0, unit, out)
    w = decay ** np.arange(steps)[::-1]
    for s in range(n):
        err = np.maximum(values[:, s] - forecast[s], 0.0)
        for j, q in enumerate(qs):
            ref = weighted_quantile(err, w, q)
            # the upper edge of a bin 1/16 octave of (1 + error x unit) wide
            hi = ((1 + ref * unit) * 2 ** (1 / 16) - 1) / unit
            assert ref - 1e-9 <= out[s, j] <= hi + 1e-9, (s, q, out[s, j], ref)


def test_quantiles_wait_for_enough_errors_and_skip_missing_forecasts():
    hist = np.zeros((2, residuals.ERR_BINS), np.float32)
    fc = np.array([-1.0, 1.0])  # service 0 has no forecast yet: nothing is scored
    residuals.learn(np.array([0, 1, 1]), np.array([5.0, 2.0, np.nan]), fc, hist, 1.0, 1.0)
    assert hist[0].sum() == 0 and hist[1].sum() == 1  # the NaN value is skipped too
    out = np.empty((2, 1))
    residuals.quantiles(hist, 2, np.array([0.5]), 2.0, 1.0, out)
    assert np.isnan(out).all()
    residuals.quantiles(hist, 2, np.array([0.5]), 1.0, 1.0, out)
    assert np.isnan(out[0, 0]) and 1.0 <= out[1, 0] <= 2 ** (1 / 16) * 2 - 1  # its bin's top


def test_errors_beyond_the_range_land_in_the_last_bin():
    hist = np.zeros((1, residuals.ERR_BINS), np.float32)
    residuals.learn(np.zeros(1, np.int64), np.array([1e12]), np.zeros(1), hist, 1.0, 1.0)
    assert hist[0, -1] == 1.0


@pytest.mark.skipif(not NASA.exists(), reason="needs ../shared/data")
def test_bronze_quantile_covers_its_share_of_real_buckets():
    """Replayed NASA requests of the busiest service: the share of 10 s buckets at or
    below forecast + bronze width is close to the bucket quantile it stands for."""
    from bae_core.logparse import read_log

    recs, _, _ = read_log(str(NASA), "nasa")
    recs = recs[np.argsort(recs["ts_us"], kind="stable")]
    top = np.bincount(np.unique(recs["service"], return_inverse=True)[1]).argmax()
    recs = recs[recs["service"] == np.unique(recs["service"])[top]]
    cfg = config.validate({"model": {"bucket_s": 10.0, "late_buckets": 0, "markov": False}})
    e = Engine(cfg)
    q = e.bucket_quantiles()[0]
    step = 10_000_000
    t0 = int(recs["ts_us"][0]) // step * step
    edges = np.searchsorted(recs["ts_us"], t0 + step * np.arange(1, 4700))
    lo, covered, scored, bound = 0, 0, 0, None
    for k, hi in enumerate(edges):
        now = t0 + (k + 1) * step
        e.apply(wire.MsgType.REQUEST, recs[lo:hi], now - 1)
        lo = hi
        if bound is not None and k > 360:  # after an hour of errors
            scored += 1
            covered += (hi - edges[k - 1]) / 10.0 <= bound + 1e-9
        e.tick(now)
        base, widths = e._forecast_ahead(1, np.ones(1, np.int64))
        bound = float(e.services.err_fc[0] + widths[0, 0])
    assert scored > 3000
    assert abs(covered / scored - q) < 0.02, (covered / scored, q)
    shown = e.service_summary(0)["tier_widths_rps"]
    assert shown["source"] == "errors"
    assert shown["bronze"] == pytest.approx(float(widths[0, 0]))
    assert shown["bronze"] <= shown["silver"] <= shown["gold"]


def test_tier_widths_come_from_arima_until_enough_errors():
    cfg = config.validate({"model": {"bucket_s": 1.0, "late_buckets": 0, "markov": False}})
    e = Engine(cfg)
    t0 = 1_700_000_000_000_000
    r = np.zeros(5, wire.REQUEST)
    r["service"], r["user"], r["status"] = 3, 1, 200
    for k in range(5):
        r["ts_us"] = t0 + k * 1_000_000
        e.apply(wire.MsgType.REQUEST, r, t0 + (k + 1) * 1_000_000 - 1)
        e.tick(t0 + (k + 1) * 1_000_000)
    shown = e.service_summary(0)["tier_widths_rps"]
    assert shown["source"] == "arima" and all(shown[t] >= 0 for t in ("bronze", "silver", "gold"))


def test_the_demand_quantile_bounds_a_noisy_forecast_plus_its_errors():
    """Alternating buckets of 0 and 2 requests: the smoother swings between 0.7 and 1.3
    and its errors by +-1.3, so forecast + bronze width reaches 2.7 requests per bucket;
    the bronze quantile of the demand itself is 2, and the allocation is sized for that."""
    cfg = config.validate({
        "model": {"bucket_s": 10.0, "late_buckets": 0, "markov": False},
        "policy": {"rps_per_replica": 0.035, "scale_down_window_s": 100.0,
                   "lead_time_s": 10.0, "panic_factor": 100.0, "anomaly_multiplier": 1.0,
                   "tolerance": 0.0, "scale_up_period_s": 0.0, "scale_down_period_s": 0.0}})
    e = Engine(cfg)
    step = 10_000_000
    t0 = 1_700_000_000 * 1_000_000 // step * step
    above = 0
    for k in range(80):
        now = t0 + (k + 1) * step
        if k % 2:
            r = np.zeros(2, wire.REQUEST)
            r["ts_us"] = now - step // 2
            r["service"], r["user"], r["resource"], r["status"] = 7, 1, 2, 200
            e.apply(wire.MsgType.REQUEST, r, now - 1)
        e.tick(now)
        if k > 40:
            base, widths = e._forecast_ahead(1, np.ones(1, np.int64))
            above += (e.services.err_fc[0] + widths[0, 0]) * 10 > 2.5
    shown = e.service_summary(0)
    assert shown["tier_demand_rps"]["bronze"] == pytest.approx(0.2, rel=0.05)
    assert above > 10  # forecast + width alone would ask for 2.5+ requests per bucket
    # 2.08 requests per bucket (the bin's upper edge) at 70 % of 0.05 rps per replica: 5;
    # 2.7 would need 6
    assert shown["published_replicas"] == 5
