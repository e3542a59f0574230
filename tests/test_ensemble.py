"""Per-series model selection: weights from rolling errors, and the eval adapter."""

from __future__ import annotations

import numpy as np

from bae_core.models.ensemble import Ensemble
from daemon import evaluate as E


def test_weights_follow_the_lower_error_per_series():
    e = Ensemble(members=("a", "b", "c"), n_series=2, decay=0.2, power=2.0)
    err = np.array([[1.0, 2.0, np.nan], [4.0, 1.0, 2.0]] * 10)
    e.learn({"slot": np.tile([0, 1], 10), "error": err})
    w = e.predict({"slots": np.array([0, 1])})["weights"]
    assert np.allclose(w.sum(1), 1.0)
    assert w[0, 0] > w[0, 1] and w[1, 1] > w[1, 2] > w[1, 0]
    # c was never scored on series 0: it weighs as an average scored member
    assert abs(w[0, 2] - (w[0, 0] + w[0, 1]) / 2) < 1e-12
    # an unknown series weighs its members equally; a missing forecast weighs nothing
    f = np.array([[[10.0], [20.0], [np.nan]]])
    out = e.predict({"slots": np.array([7]), "forecasts": f})
    assert out["mean"][0, 0] == 15.0 and out["weights"][0].tolist() == [0.5, 0.5, 0.0]


def test_margin_keeps_only_the_leaders():
    e = Ensemble(members=("a", "b"), n_series=1, decay=0.5, power=2.0, margin=0.1)
    e.learn({"slot": np.zeros(3, np.int64), "error": np.array([[1.0, 1.5]] * 3)})
    assert e.predict({"slots": np.array([0])})["weights"][0].tolist() == [1.0, 0.0]


def test_eval_ensemble_tracks_the_better_member():
    rng = np.random.default_rng(0)
    t = np.arange(288 * 6)
    y = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, len(t))
    res = E.eval_series(y, 288, 12, ["holt_winters", "seasonal_naive", "ensemble"],
                        origins=12, ensemble_members=["holt_winters", "seasonal_naive"])
    m = res["models"]
    best = min(m["holt_winters"]["mase"], m["seasonal_naive"]["mase"])
    assert m["ensemble"]["mase"] <= 1.05 * best
