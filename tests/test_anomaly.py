"""Anomaly kernels, AnomalyDetector, NAB scoring and ``bae detect``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest

from bae_core.kernels import anomaly as K
from bae_core.models.anomaly import AnomalyDetector
from daemon.detect import DetectInputError, add_detect_parser, detect
from perf import nab

NAB_FILE = nab.DATA / "data" / "realAWSCloudwatch" / "ec2_cpu_utilization_825cc2.csv"


def series(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * t / 96) + rng.normal(0, 1, n)


def run(values, **params):
    m = AnomalyDetector(**params)
    out = m.score_batch({"slot": np.zeros(len(values), np.int64), "value": values})
    return m, out


def test_spike_is_flagged_after_warm_up_and_nothing_during_it():
    x = series()
    x[700] += 40.0
    x[100] += 40.0  # inside the grace period
    _, out = run(x, grace_period=300, threshold=0.2)
    assert out["flag"][700] and out["score"][700] > 3 * np.delete(out["score"], 700).max()
    assert not out["flag"][:300].any() and not out["score"][:300].any()
    assert out["flag"][300:].sum() <= 3  # the spike, not the noise


def test_scores_use_only_the_past():
    x = series(800, seed=3)
    x[500:520] += 15
    _, full = run(x, grace_period=100)
    for cut in (150, 505, 611):
        _, pre = run(x[:cut], grace_period=100)
        assert np.array_equal(pre["score"], full["score"][:cut])
        assert np.array_equal(pre["flag"], full["flag"][:cut])


def test_many_slots_interleaved_equal_one_at_a_time():
    xs = [series(400, seed=s) for s in range(3)]
    m = AnomalyDetector(grace_period=50)
    slot = np.tile(np.arange(3, dtype=np.int64), 400)
    value = np.stack(xs, axis=1).ravel()
    out = m.score_batch({"slot": slot, "value": value})
    for s in range(3):
        _, alone = run(xs[s], grace_period=50)
        assert np.array_equal(out["score"][slot == s], alone["score"])


def test_scale_is_robust_to_a_few_outliers():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 2000)
    y = x.copy()
    y[[500, 900, 1300]] += 1e6
    a, _ = run(x, grace_period=10, window=0)
    b, _ = run(y, grace_period=10, window=0)
    mad_a, mad_b = a.state()["st"][0, K.MAD], b.state()["st"][0, K.MAD]
    assert mad_b < 1.5 * mad_a


def test_non_finite_values_are_skipped():
    x = series(400)
    x[[350, 351]] = [np.nan, np.inf]
    m, out = run(x, grace_period=50)
    assert m.skipped == 2 and out["score"][350] == 0 and not out["flag"][351]
    assert np.isfinite(out["score"]).all()


def test_predict_returns_the_latest_score_per_slot():
    m = AnomalyDetector(grace_period=10, holdoff=0)
    x = series(200)
    x[-1] += 80
    m.learn({"slot": np.zeros(200, np.int64), "value": x})
    p = m.predict({"slots": np.array([0, 5])})
    assert p["flag"][0] and not p["flag"][1] and p["score"][1] == 0


# --- NAB scoring on a synthetic corpus -------------------------------------------------

def synthetic_corpus(n=2000, n_series=4):
    ts = np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    corpus = {}
    for i in range(n_series):
        a = 600 + 300 * i
        corpus[f"cat/s{i}.csv"] = (ts, np.zeros(n), [(ts[a], ts[a + 99])])
    return corpus


def windows_mask(corpus, name, offset=0, only_one=True):
    ts, _, wins = corpus[name]
    sc = np.zeros(ts.shape[0])
    for a, _b in wins:
        i = int(np.searchsorted(ts, a)) + offset
        sc[i] = 1.0
    return sc


def test_nab_perfect_is_100_null_is_0_random_is_low():
    c = synthetic_corpus()
    for profile in ("standard", "low_fp", "low_fn"):
        perfect = {k: windows_mask(c, k) for k in c}
        assert nab.score_results(perfect, profile, corpus=c)["score"] == pytest.approx(100.0)
        null = {k: np.zeros(len(c[k][0])) for k in c}
        assert nab.score_results(null, profile, corpus=c)["score"] == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    rand = {k: rng.random(len(c[k][0])) for k in c}
    assert nab.score_results(rand, "standard", corpus=c)["score"] < 30.0


def test_nab_early_detection_beats_late():
    c = synthetic_corpus()
    early = nab.score_results({k: windows_mask(c, k, 5) for k in c}, corpus=c)["score"]
    late = nab.score_results({k: windows_mask(c, k, 90) for k in c}, corpus=c)["score"]
    assert 0 < late < early < 100


def test_nab_false_positives_cost():
    c = synthetic_corpus()
    res = {k: windows_mask(c, k, 5) for k in c}
    base = nab.score_results(res, corpus=c)["score"]
    for k in res:
        res[k][1000:1020] = 1.0
    assert nab.score_results(res, corpus=c)["score"] < base


def test_sigmoid_matches_nab_shape():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert nab.scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert nab.scaled_sigmoid(3.5) == -1.0


# --- bae detect ------------------------------------------------------------------------

def test_detect_on_a_real_nab_file(tmp_path):
    assert NAB_FILE.exists(), f"shared data missing: {NAB_FILE}"
    out = tmp_path / "out.csv"
    r = detect(NAB_FILE, out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert r["rows"] == len(rows) == 4032 and r["skipped"] == 0
    s = np.array([float(x["anomaly_score"]) for x in rows])
    assert ((s >= 0) & (s <= 1)).all() and (s[:300] == 0).all() and s.max() > 0
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]


def test_detect_bad_input(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DetectInputError, match="empty"):
        detect(empty, tmp_path / "o.csv")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("timestamp,v\n2020-01-01,1\n")
    with pytest.raises(DetectInputError, match="value"):
        detect(nocol, tmp_path / "o.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n" + "".join(
        f"t{i},{v}\n" for i, v in enumerate(["1", "nan", "inf", "x", "", "2"])) + "t9\n")
    r = detect(bad, tmp_path / "o.csv")
    assert r == {"rows": 7, "skipped": 5, "flagged": 0, "out": str(tmp_path / "o.csv")}
    with pytest.raises(DetectInputError, match="cannot read"):
        detect(tmp_path / "missing.csv", tmp_path / "o.csv")


def test_detect_parser_registers_the_command():
    p = argparse.ArgumentParser()
    add_detect_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["detect", "in.csv", "--out", "o.csv"])
    assert a.file == "in.csv" and a.out == "o.csv" and callable(a.fn)


def test_spectral_residual_fft_and_streaming():
    from bae_core.kernels import anomaly as K
    rng = np.random.default_rng(3)
    n = 64
    x = rng.normal(size=n)
    re, im = x.copy(), np.zeros(n)
    rev = np.array([int(format(i, "06b")[::-1], 2) for i in range(n)])
    ang = 2 * np.pi * np.arange(n // 2) / n
    K._fft(re, im, rev, np.cos(ang), np.sin(ang), False)
    assert np.allclose(re + 1j * im, np.fft.fft(x))
    K._fft(re, im, rev, np.cos(ang), np.sin(ang), True)
    assert np.allclose(re / n, x) and np.allclose(im / n, 0.0)
    # the SR detector alone scores, and prefixes score as the whole series does
    v = np.sin(np.arange(600) / 7.0) + rng.normal(0, 0.05, 600)
    v[500] += 3.0
    kw = dict(season=0, grace_period=100, likelihood_weight=0.0, raw_weight=0.0,
              sr_window=64, sr_raw_weight=1.0)
    whole = AnomalyDetector(**kw).score_batch({"slot": np.zeros(600, np.int64), "value": v})
    assert whole["score"][100:].max() > 0.0
    part = AnomalyDetector(**kw).score_batch({"slot": np.zeros(520, np.int64), "value": v[:520]})
    assert np.allclose(part["score"], whole["score"][:520])
    with pytest.raises(ValueError):
        AnomalyDetector(sr_window=48)
