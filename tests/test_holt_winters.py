"""Many-series Holt-Winters kernel and model, and the light per-user hourly tier."""

from __future__ import annotations

import numpy as np
import pytest

from bae_core.kernels import holt_winters as K
from bae_core.models.holt_winters import HoltWinters


def reference(y, p1, p2, wc, a, b, g, phi, against=K.AGAINST_LEVEL, mode="additive"):
    """Component-form Holt-Winters for one series (plain Python), with the same warm-up as
    the kernel; seasonal indices against the level (textbook) or the slow mean of about
    the last p1 values. Returns (level, trend, s1, s2)."""
    mul = mode == "multiplicative"
    def cycle_mean(t, p):  # of the last complete cycle before t (the first: so far)
        if not p:
            return 0.0
        if t >= p:
            start = (t // p - 1) * p
            return sum(y[start:start + p]) / p
        return sum(y[:t]) / t if t else y[0]

    slow = [(cycle_mean(t, p1), cycle_mean(t, p2)) for t in range(len(y))]
    lvl, tr = y[0], 0.0
    s1 = [0.0] * max(p1, 1)
    s2 = [1.0 if mul else 0.0] * max(p2, 1)
    n0 = wc * p1 if p1 else 1
    if p1:
        raw = [[] for _ in range(p1)]
        for t in range(n0):
            raw[t % p1].append(y[t])
        s1 = [sum(r) / len(r) for r in raw]
        m = sum(s1) / p1
        lvl = sum(y[n0 - p1:n0]) / p1
        s1 = [v / m for v in s1] if mul else [v - m for v in s1]
    for t in range(n0, len(y)):
        i1, i2 = (t % p1 if p1 else 0), (t % p2 if p2 else 0)
        d, w = (s1[i1] if p1 else (1.0 if mul else 0.0)), (s2[i2] if p2 else (1.0 if mul else 0.0))
        g1 = max(g, 1.0 / (t // p1 + 1)) if p1 else 0.0
        g2 = max(g, 1.0 / (t // p2 + 1)) if p2 else 0.0
        prev = lvl
        base = lvl + phi * tr
        if against == K.AGAINST_SLOW:  # the gain is not shared with the level
            g1, g2 = g1 / (1 - a) if a < 1 else 0.0, g2 / (1 - a) if a < 1 else 0.0
            x1 = (y[t] / slow[t][0]) if mul else y[t] - slow[t][0]
            x2 = 0.0 if not p2 else (y[t] / (slow[t][1] * d)) if mul else \
                y[t] - slow[t][1] - d
        elif mul:
            x1, x2 = y[t] / (base * w), y[t] / (base * d)
        else:
            x1, x2 = y[t] - base - w, y[t] - base - d
        if mul:
            e = y[t] - base * d * w
            lvl = alpha_blend(a, y[t] / (d * w), base)
            tr = b * (lvl - prev) + (1 - b) * phi * tr
            if p1:
                s1[i1] = d + g1 * (1 - a) * (x1 - d)
            if p2:
                s2[i2] = w + g2 * (1 - a) * (x2 - w)
        else:
            e = y[t] - base - d - w
            lvl = alpha_blend(a, y[t] - d - w, base)
            tr = b * (lvl - prev) + (1 - b) * phi * tr
            if p1:  # against the level: = g1 * (y - l_new - w) + (1 - g1) * d
                s1[i1] = d + g1 * (1 - a) * (x1 - d)
            if p2:
                s2[i2] = w + g2 * (1 - a) * (x2 - w)
    return lvl, tr, np.array(s1), np.array(s2)


def alpha_blend(a, x, base):
    return a * x + (1 - a) * base


def feed(m, series):
    """Interleave the rows of several series, one observation per row."""
    n, t = series.shape
    m.learn({"slot": np.tile(np.arange(n, dtype=np.int64), t), "value": series.T.ravel()})


@pytest.mark.parametrize("mode,periods", [("additive", (5, 15)), ("additive", (0, 0)),
                                          ("multiplicative", (6, 0))])
def test_kernel_matches_plain_python_reference(mode, periods):
    rng = np.random.default_rng(1)
    t = np.arange(90)
    series = np.stack([20 + 5 * np.sin(2 * np.pi * t / 5) + rng.normal(0, 1, 90) + 0.05 * t,
                       50 + 3 * np.cos(2 * np.pi * t / 6) + rng.normal(0, 2, 90),
                       10 + rng.gamma(2, 1, 90)])
    grid = ((0.3, 0.1, 0.2, 0.95, K.AGAINST_LEVEL), (0.1, 0.0, 0.05, 0.9, K.AGAINST_LEVEL),
            (0.3, 0.1, 0.2, 0.95, K.AGAINST_SLOW), (0.1, 0.0, 0.05, 0.9, K.AGAINST_SLOW))
    m = HoltWinters(periods=periods, grid=grid, seasonal=mode, n_series=3, warmup_cycles=2)
    feed(m, series)
    st = m.state()
    for s in range(3):
        for k, (a, b, g, phi, against) in enumerate(grid):
            lvl, tr, s1, s2 = reference(list(series[s]), *periods, 2, a, b, g, phi, against,
                                        mode)
            assert st["level"][s, k] == pytest.approx(lvl, rel=1e-9)
            assert st["trend"][s, k] == pytest.approx(tr, rel=1e-9, abs=1e-12)
            if periods[0]:
                np.testing.assert_allclose(st["s1"][s, :, k], s1, rtol=1e-9, atol=1e-12)
            if periods[1]:
                np.testing.assert_allclose(st["s2"][s, :, k], s2, rtol=1e-9, atol=1e-12)


def test_double_seasonality_recovers_daily_and_weekly_pattern():
    day, week = 24, 168
    t = np.arange(8 * week)
    daily = 10 * np.sin(2 * np.pi * t / day)
    weekly = np.where((t % week) >= 5 * day, -15.0, 3.0)  # quiet weekends
    rng = np.random.default_rng(2)
    y = 100 + daily + weekly + rng.normal(0, 1, len(t))
    n_train = 7 * week
    m = HoltWinters(bucket_s=3600, periods=(day, week), grid=((0.02, 0.0, 0.1, 0.9),),
                    n_series=1)
    m.learn({"slot": np.zeros(n_train, np.int64), "value": y[:n_train]})
    f = m.predict({"h": week, "slots": np.array([0])})["mean"][0]
    truth = (100 + daily + weekly)[n_train:]
    single = HoltWinters(bucket_s=3600, periods=(day, 0), grid=((0.02, 0.0, 0.1, 0.9),),
                         n_series=1)
    single.learn({"slot": np.zeros(n_train, np.int64), "value": y[:n_train]})
    f1 = single.predict({"h": week, "slots": np.array([0])})["mean"][0]
    mae2, mae1 = np.abs(f - truth).mean(), np.abs(f1 - truth).mean()
    assert mae2 < 2.0 and mae2 < 0.3 * mae1, (mae2, mae1)


def test_grid_follows_the_set_with_the_lower_error():
    # a random walk: the high-alpha set wins at one step; white noise: the low-alpha one
    rng = np.random.default_rng(3)
    walk = 100 + np.cumsum(rng.normal(0, 1, 2000))
    noise = 100 + rng.normal(0, 1, 2000)
    grid = ((0.05, 0.0, 0.0, 1.0), (0.9, 0.0, 0.0, 1.0))
    m = HoltWinters(periods=(0, 0), grid=grid, n_series=2)
    feed(m, np.stack([walk, noise]))
    out = m.predict({"h": 1})
    assert list(out["set"]) == [1, 0]
    err = m.state()["err"][:, 0]
    assert err[0, 1] < err[0, 0] and err[1, 0] < err[1, 1]
    # the forecast is the sets' mean weighted by error^-power, mostly the winner's
    lv = m.state()["level"][0]
    w = err[0] ** -6.0
    assert out["mean"][0, 0] == pytest.approx((w * lv).sum() / w.sum())
    assert abs(out["mean"][0, 0] - lv[1]) < abs(out["mean"][0, 0] - lv[0])


def test_quantile_coverage_near_nominal_on_noise():
    rng = np.random.default_rng(4)
    n, t, p = 200, 400, 12
    season = 5 * np.sin(2 * np.pi * np.arange(t + 24) / p)
    y = 50 + season + rng.normal(0, 2, (n, t + 24))
    m = HoltWinters(periods=(p, 0), grid=((0.1, 0.0, 0.05, 0.95),), n_series=n,
                    err_decay=0.01)
    feed(m, y[:, :t])
    out = m.predict({"h": 24})
    actual = y[:, t:]
    for q, nominal in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        cov = np.mean(actual <= out[q])
        assert abs(cov - nominal) < 0.04 if nominal < 0.99 else cov > 0.97, (q, cov)
    assert np.all(out["p99"] > out["p90"]) and np.all(out["p90"] > out["p50"])


def test_multiplicative_season_scales_with_the_level():
    p = 8
    t = np.arange(40 * p)
    shape = 1 + 0.5 * np.sin(2 * np.pi * t / p)
    y = (100 + 2 * t) * shape  # the swing grows with the level
    fc = {}
    for mode in ("additive", "multiplicative"):
        m = HoltWinters(periods=(p, 0), grid=((0.3, 0.1, 0.2, 1.0),), seasonal=mode,
                        n_series=1)
        m.learn({"slot": np.zeros(len(t) - p, np.int64), "value": y[:-p]})
        fc[mode] = np.abs(m.predict({"h": p, "slots": np.array([0])})["mean"][0] - y[-p:]).mean()
    assert fc["multiplicative"] < 0.5 * fc["additive"], fc
    assert fc["multiplicative"] < 0.02 * y[-p:].mean()


def test_state_round_trip_and_growth():
    m = HoltWinters(periods=(4, 8), n_series=2)
    rng = np.random.default_rng(5)
    m.learn({"slot": rng.integers(0, 5, 300), "value": rng.gamma(3, 2, 300)})
    assert m.state()["n_obs"].shape == (5,) or m.state()["n_obs"].shape[0] >= 5
    r = HoltWinters(periods=(4, 8), n_series=2)
    r.restore(m.state())
    q = {"h": 10}
    for k, v in m.predict(q).items():
        np.testing.assert_array_equal(v, r.predict(q)[k])
    # n_obs, the cycle sums and means; per set level, trend, var, 3 errors, s1, s2 and
    # the two forecast rings (4 and max(4, 4 // 2) steps)
    assert m.state_bytes_per_series == 8 * (1 + 4 + len(m._alpha) * (6 + 4 + 8 + 4 + 4))
    assert np.isnan(m.predict({"h": 2, "slots": np.array([10 ** 6])})["mean"]).all()


def test_update_skips_bad_rows():
    m = HoltWinters(periods=(0, 0), n_series=2)
    skipped = m.learn_arrays(np.array([0, 1, 5, 0], np.int64),
                             np.array([1.0, np.nan, 2.0, np.inf]))
    assert skipped == 3 and list(m.state()["n_obs"]) == [1, 0]


# ------------------------------------------------------------------ light per-user tier

HOUR = K.HOUR_US


def test_user_rate_learns_hour_of_day_profile_and_forecasts():
    st = K.user_rate_state(3)
    assert st[0].nbytes <= 256
    # user 0: 10 requests in hours 9-17 of each day, none otherwise; user 1: 2 per hour
    slots, ts = [], []
    for hour in range(24 * 14):
        hod = hour % 24
        n0 = 10 if 9 <= hod < 18 else 0
        for i in range(n0):
            slots.append(0)
            ts.append(hour * HOUR + i * 1000)
        for i in range(2):
            slots.append(1)
            ts.append(hour * HOUR + i * 1000)
    slots, ts = np.array(slots, np.int64), np.array(ts, np.int64)
    params = (0.1, 0.0, 0.2, 0.98)
    surge = (6.0, 60.0, 600.0, 24)
    assert K.user_rate_update(slots, ts, st, *params, *surge) == (0, 0)
    late = K.user_rate_update(np.array([1], np.int64), np.array([HOUR], np.int64), st,
                              *params, *surge)
    assert late == (1, 0)
    now = 24 * 14 * HOUR  # midnight of day 15
    K.user_rate_close(now, st, *params)
    out = np.zeros((3, 24), np.float32)
    K.user_rate_forecast(np.array([0, 1, 2], np.int64), now, st, 0.98, out)
    day = out[0]
    assert day[9:18].min() > 6 and day[:8].max() < 1.5 and day[19:].max() < 1.5, day
    assert np.abs(out[1] - 2).max() < 0.5
    assert np.all(out[2] == 0)  # never seen


def test_user_surge_flags_a_user_far_above_their_own_profile_once_per_hour():
    st = K.user_rate_state(3)
    params = (0.1, 0.0, 0.2, 0.98, 6.0, 60.0, 600.0, 24)
    slots, ts = [], []
    for hour in range(24 * 3):  # three quiet days: 20 requests an hour each
        for u in (0, 1):
            slots += [u] * 20
            ts += [hour * HOUR + i for i in range(20)]
    # day 4, hour 0: user 0 scrapes (400 in the hour); user 1 is busier but within reach;
    # user 2 is new and sends 700 at once
    h = 24 * 3 * HOUR
    slots += [0] * 400 + [1] * 40 + [2] * 700
    ts += [h + i for i in range(400)] + [h + i for i in range(40)] + [h + i for i in range(700)]
    dropped, flagged = K.user_rate_update(np.array(slots, np.int64), np.array(ts, np.int64),
                                          st, *params)
    assert dropped == 0 and flagged == 2
    assert st[:, K.R_SURGES].tolist() == [1, 0, 1]  # once per hour, however far past
    assert st[0, K.R_SURGE_HOUR] == 24 * 3 and st[1, K.R_SURGE_HOUR] == -1
    f = (st[0, K.R_LEVEL] + 0.98 * st[0, K.R_TREND]) * st[0, K.R_PROFILE]
    assert 15 < f < 25  # the quiet days taught the profile


def test_user_rate_state_fits_the_light_tier_budget():
    st = K.user_rate_state(10)
    assert st.dtype == np.float32 and st[0].nbytes == 128
