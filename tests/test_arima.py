"""Online ARIMA (ONS): it learns known processes to their noise floor, forecasts drift,
and its quantiles cover what they claim."""

import numpy as np
import pytest

from bae_core.models.arima import OnlineARIMA


def ar2(n, seed=0, mean=50.0):
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 0.6 * x[t - 1] - 0.3 * x[t - 2] + rng.normal()
    return x + mean


def feed(m, values, slot=0):
    m.learn({"slot": np.full(len(values), slot, np.int64), "value": np.asarray(values, float)})


def test_ar2_is_learned_to_the_noise_floor():
    m = OnlineARIMA(1, p=2, d=0, q=0)
    feed(m, ar2(6000))
    assert np.sqrt(m.err[0]) * m.scale[0] == pytest.approx(1.0, rel=0.15)
    assert m.gamma[0, 0] > 0.3 and m.gamma[0, 1] < 0  # the signs of the true 0.6, -0.3


def test_drift_of_a_random_walk_is_forecast():
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(0.5, 1.0, 5000))
    m = OnlineARIMA(1, p=2, d=1, q=0)
    feed(m, y)
    f = m.predict({"h": 20})["mean"][0]
    assert np.diff(f).mean() == pytest.approx(0.5, abs=0.15)
    assert abs(f[0] - y[-1]) < 3


def test_second_difference_follows_a_quadratic():
    t = np.arange(400, dtype=float)
    y = 0.01 * t ** 2 + 3 * t + 7
    m = OnlineARIMA(1, p=1, d=2, q=0)
    feed(m, y)
    f = m.predict({"h": 5})["mean"][0]
    truth = 0.01 * (t[-1] + np.arange(1, 6)) ** 2 + 3 * (t[-1] + np.arange(1, 6)) + 7
    np.testing.assert_allclose(f, truth, rtol=2e-3)


def test_p90_covers_about_ninety_percent_one_step_ahead():
    rng = np.random.default_rng(7)
    y = np.cumsum(rng.normal(0, 1.0, 4000)) + 1000
    m = OnlineARIMA(1, p=2, d=1, q=0)
    feed(m, y[:1000])
    hits = 0
    for v in y[1000:]:
        hits += v <= m.predict({"h": 1})["p90"][0, 0]
        feed(m, [v])
    assert 0.84 <= hits / 3000 <= 0.96


def test_many_series_are_independent_and_nan_is_skipped():
    a, b = ar2(2000, seed=1), ar2(2000, seed=2, mean=500)
    both = OnlineARIMA(2, p=2, d=0, q=0)
    both.learn({"slot": np.tile([0, 1], 2000), "value": np.column_stack([a, b]).ravel()})
    alone = OnlineARIMA(1, p=2, d=0, q=0)
    feed(alone, a)
    np.testing.assert_allclose(both.gamma[0], alone.gamma[0])
    before = both.state()
    both.learn({"slot": np.array([0, 1]), "value": np.array([np.nan, np.inf])})
    assert all(np.array_equal(before[k], v) for k, v in both.state().items())
    both.learn({"slot": np.array([5]), "value": np.array([1.0])})  # grows on demand
    assert both.n_series >= 6 and both.n[5] == 1
    with pytest.raises(IndexError):
        both.learn({"slot": np.array([-1]), "value": np.array([1.0])})


def test_no_data_forecasts_nan_and_short_history_repeats_the_last_value():
    m = OnlineARIMA(2, p=3, d=1, q=1)
    assert np.isnan(m.predict({"h": 2})["mean"]).all()
    feed(m, [5.0, 6.0], slot=1)
    assert (m.predict({"h": 3, "slots": np.array([1])})["mean"] == 6.0).all()
