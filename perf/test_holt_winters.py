"""Holt-Winters update speed and state size: BAE's columnar kernel vs River.

Run with ``.venv/bin/python -m pytest -q perf/test_holt_winters.py --benchmark-only``, or
``.venv/bin/python perf/test_holt_winters.py`` for one JSON object.

* test_hw_update[zipf|uniform]: ``HoltWinters.learn_arrays`` over 1,000,000 series
  (hourly buckets, daily period 24, the default grid of K=13 parameter sets), batches of
  ``BATCH`` observations with slots drawn Zipf(1.2) or uniform, seeded. events/s.
* test_user_tier_update[zipf|uniform]: the light per-user tier the daemon runs for every
  user (``user_rate_update``: hourly request counts, level, trend and hour-of-day profile,
  128 bytes per user) over 1,000,000 users. Each round is one hour of ``BATCH`` request
  events (slots Zipf(1.2) or uniform); a user's first event in an hour closes its previous
  hour, which is one Holt-Winters update. Reports events/s and updates (hour closes)/s.
* test_river_update: River's ``time_series.HoltWinters.learn_one`` over a dict of
  per-user models (seasonality 24, one parameter set), ``RIVER_N`` updates on Zipf users,
  every model first fed 60 values untimed (River only buffers during its warm-up; ours are
  likewise fed 3 uniform batches first).
* test_state_bytes: bytes per series, ours from the arrays, River's by tracemalloc over
  building and warming ``RIVER_USERS`` models (pympler is not available).
* test_refit_vs_update: one statsmodels ExponentialSmoothing fit (additive damped trend,
  additive season 288) on 1,152 points (what ``bae eval forecast`` does per origin) vs one
  single-series Holt-Winters update (mean over 100,000 calls of the kernel on arrays).
"""

from __future__ import annotations

import json
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from bae_core.models.holt_winters import HoltWinters

N_SERIES = 1_000_000
BATCH = 1_000_000
RIVER_N = 20_000
RIVER_USERS = 2_000
SEED = 42


def slots(kind: str, n: int, rng) -> np.ndarray:
    if kind == "zipf":
        s = rng.zipf(1.2, n) - 1
        return (s % N_SERIES).astype(np.int64)
    return rng.integers(0, N_SERIES, n, dtype=np.int64)


def hw_rate(kind: str, rounds: int = 3) -> dict:
    rng = np.random.default_rng(SEED)
    m = HoltWinters(bucket_s=3600, periods=(24, 0), n_series=N_SERIES)
    s = slots(kind, BATCH, rng)
    v = rng.gamma(2.0, 5.0, BATCH)
    m.learn_arrays(s[:10], v[:10])  # compile
    for _ in range(3):  # get most series past the warm-up
        m.learn_arrays(slots("uniform", BATCH, rng), v)
    best = 1e9
    for _ in range(rounds):
        t0 = time.perf_counter()
        m.learn_arrays(s, v)
        best = min(best, time.perf_counter() - t0)
    return {"events_per_s": BATCH / best, "ns_per_event": 1e9 * best / BATCH,
            "bytes_per_series": m.state_bytes_per_series, "K": len(m._alpha)}


def user_tier_rate(kind: str, rounds: int = 3) -> dict:
    from bae_core.kernels import holt_winters as K
    rng = np.random.default_rng(SEED)
    st = K.user_rate_state(N_SERIES)
    args = (st,)
    params = (0.1, 0.01, 0.1, 0.98, 6.0, 60.0, 600.0, 24)
    hour = 3_600_000_000
    s = slots(kind, BATCH, rng)
    K.user_rate_update(s[:10], np.zeros(10, np.int64), *args, *params)  # compile
    for h in range(3):  # every user has an open hour
        K.user_rate_update(slots("uniform", BATCH, rng), np.full(BATCH, h * hour), *args,
                           *params)
    best, closes = 1e9, 0
    for r in range(rounds):
        ts = np.full(BATCH, (3 + r) * hour, np.int64)
        before = int(st[:, K.R_CLOSED].sum(dtype=np.float64))
        t0 = time.perf_counter()
        K.user_rate_update(s, ts, *args, *params)
        dt = time.perf_counter() - t0
        if dt < best:
            best, closes = dt, int(st[:, K.R_CLOSED].sum(dtype=np.float64)) - before
    return {"events_per_s": BATCH / best, "updates_per_s": closes / best,
            "updates_per_batch": closes,
            "bytes_per_user": st[0].nbytes}


def river_models(users: int):
    from river import time_series
    return {u: time_series.HoltWinters(alpha=0.2, beta=0.01, gamma=0.1, seasonality=24)
            for u in range(users)}


def river_rate() -> dict:
    from river import time_series
    rng = np.random.default_rng(SEED)
    s = slots("zipf", RIVER_N, rng)
    v = rng.gamma(2.0, 5.0, RIVER_N)
    models: dict = {}
    for u in np.unique(s).tolist():  # past River's warm-up (it only buffers until then)
        m = models[u] = time_series.HoltWinters(alpha=0.2, beta=0.01, gamma=0.1,
                                                seasonality=24)
        for y in v[:60].tolist():
            m.learn_one(y)
    t0 = time.perf_counter()
    for u, y in zip(s.tolist(), v.tolist()):
        models[u].learn_one(y)
    dt = time.perf_counter() - t0
    return {"events_per_s": RIVER_N / dt, "users": len(models)}


def river_bytes() -> float:
    rng = np.random.default_rng(SEED)
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    models = river_models(RIVER_USERS)
    for m in models.values():
        for y in rng.gamma(2.0, 5.0, 60).tolist():  # past River's warm-up
            m.learn_one(y)
    b = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(st.size_diff for st in b.compare_to(a, "filename"))
    return total / RIVER_USERS


def refit_vs_update() -> dict:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    rng = np.random.default_rng(SEED)
    t = np.arange(1152)
    y = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, len(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                             seasonal_periods=288).fit().forecast(288)
        fit = time.perf_counter() - t0
    m = HoltWinters(bucket_s=300, periods=(288, 2016), n_series=1)
    m.learn({"slot": np.zeros(1152, np.int64), "value": y})
    one_s, one_v = np.zeros(1, np.int64), np.ones(1)
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        m.learn_arrays(one_s, one_v)
    upd = (time.perf_counter() - t0) / n
    return {"statsmodels_fit_s": fit, "hw_update_s": upd, "ratio": fit / upd}


@pytest.mark.parametrize("kind", ["zipf", "uniform"])
def test_hw_update(benchmark, kind):
    r = benchmark.pedantic(hw_rate, args=(kind, 1), rounds=1, iterations=1)
    benchmark.extra_info.update(r)


@pytest.mark.parametrize("kind", ["zipf", "uniform"])
def test_user_tier_update(benchmark, kind):
    r = benchmark.pedantic(user_tier_rate, args=(kind, 1), rounds=1, iterations=1)
    benchmark.extra_info.update(r)


def test_river_update(benchmark):
    r = benchmark.pedantic(river_rate, rounds=1, iterations=1)
    benchmark.extra_info.update(r)


def test_state_bytes(benchmark):
    r = benchmark.pedantic(river_bytes, rounds=1, iterations=1)
    benchmark.extra_info.update(river_bytes_per_series=r, hw_bytes_per_series=HoltWinters(
        bucket_s=3600, periods=(24, 0), n_series=1).state_bytes_per_series)


def test_refit_vs_update(benchmark):
    r = benchmark.pedantic(refit_vs_update, rounds=1, iterations=1)
    benchmark.extra_info.update(r)


if __name__ == "__main__":
    out = {"hw_zipf": hw_rate("zipf"), "hw_uniform": hw_rate("uniform"),
           "user_tier_zipf": user_tier_rate("zipf"),
           "user_tier_uniform": user_tier_rate("uniform"),
           "river": river_rate(), "river_bytes_per_series": river_bytes(),
           "refit_vs_update": refit_vs_update()}
    out["speedup_zipf"] = out["hw_zipf"]["events_per_s"] / out["river"]["events_per_s"]
    out["speedup_uniform"] = out["hw_uniform"]["events_per_s"] / out["river"]["events_per_s"]
    for k in ("zipf", "uniform"):
        out[f"user_tier_update_speedup_{k}"] = (out[f"user_tier_{k}"]["updates_per_s"]
                                                / out["river"]["events_per_s"])
    print(json.dumps(out, indent=1))
