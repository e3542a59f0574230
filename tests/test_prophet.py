"""models.prophet_refit on a short real series: quantile forecasts, seeding, the process
pool, and the `prophet` forecaster of `bae eval forecast`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from daemon.evaluate import eval_series, read_series
from models.prophet_refit import fit_forecast, refit_many, require_prophet
from tests.conftest import DATA

NAB = DATA / "nab" / "data" / "realAWSCloudwatch" / "elb_request_count_8c0756.csv"


def _nab() -> np.ndarray:
    y, step, _ = read_series(NAB, "value", "timestamp", 300)
    assert step == 300
    return y


def test_fit_forecast_quantiles_on_real_data():
    y = _nab()[:2 * 288]
    out = fit_forecast(y, 12, start_s=1_397_088_000)
    assert set(out) == {"p50", "p90", "p99"}
    for v in out.values():
        assert v.shape == (12,) and np.isfinite(v).all() and (v >= 0).all()
    assert (out["p50"] <= out["p90"]).all() and (out["p90"] <= out["p99"]).all()
    assert 0.2 * y.mean() < out["p50"].mean() < 5 * y.mean()
    again = fit_forecast(y, 12, start_s=1_397_088_000)
    np.testing.assert_array_equal(again["p90"], out["p90"])  # seeded


def test_constant_series_needs_no_fit():
    out = fit_forecast(np.full(50, 4.0), 3)
    assert out["p99"].tolist() == [4.0, 4.0, 4.0]


def test_refit_many_in_worker_processes():
    y = _nab()
    got = refit_many({"a": y[:400], "b": y[400:800]}, 6, workers=2)
    assert sorted(got) == ["a", "b"]
    assert all(v["p50"].shape == (6,) for v in got.values())
    np.testing.assert_allclose(got["a"]["p50"], fit_forecast(y[:400], 6)["p50"])


def test_prophet_forecaster_in_eval():
    res = eval_series(_nab()[:3 * 288 + 24], 288, 12, models=["prophet"], origins=2)
    r = res["models"]["prophet"]
    assert res["notes"] == [] and np.isfinite(r["mase"]) and r["mase"] < 3


def test_missing_prophet_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prophet", None)  # what an absent package looks like
    with pytest.raises(ImportError, match=r"pip install 'bae\[prophet\]'"):
        require_prophet()
    res = eval_series(_nab()[:3 * 288 + 24], 288, 12, models=["prophet"], origins=2)
    assert res["models"] == {} and "prophet skipped" in res["notes"][0]
