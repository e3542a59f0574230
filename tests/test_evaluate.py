"""`bae eval forecast`: rolling-origin evaluation on real data and clear errors on bad CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bae_core.errors import ConfigError, LogFormatError
from daemon import evaluate as E
from daemon.cli import build_parser

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALIBABA = DATA / "datacenter-traces/alibaba2018/machine_usage_days_1_to_8_grouped_300_seconds.csv"
ELB = DATA / "nab/data/realAWSCloudwatch/elb_request_count_8c0756.csv"


def slice_csv(src: Path, dst: Path, rows: int) -> Path:
    """The header and the first ``rows`` rows of a real trace, read at run time."""
    with src.open() as f:
        lines = [next(f) for _ in range(rows + 1)]
    dst.write_text("".join(lines))
    return dst


def test_eval_on_a_real_trace_without_timestamps(tmp_path):
    assert ALIBABA.exists(), f"shared data missing: {ALIBABA}"
    p = slice_csv(ALIBABA, tmp_path / "a.csv", 1440)  # five days of 300 s steps
    res = E.eval_forecast(p, "cpu_util_percent", step_seconds=300, season=288, horizon=12,
                          models=["holt_winters", "seasonal_naive"], origins=8)
    assert res["n"] == 1440 and res["origins"] == 8 and res["season2"] == 0
    for name in ("holt_winters", "seasonal_naive"):
        r = res["models"][name]
        assert 0 < r["mase"] < 3 and 0 < r["smape"] < 100 and 0 <= r["p90_coverage"] <= 1
    assert res["models"]["holt_winters"]["mase"] < res["models"]["seasonal_naive"]["mase"]


def test_eval_with_a_timestamp_column_and_the_cli(tmp_path, capsys):
    assert ELB.exists(), f"shared data missing: {ELB}"
    p = slice_csv(ELB, tmp_path / "elb.csv", 1200)
    parser = build_parser()
    args = parser.parse_args(["eval", "forecast", str(p), "--value-column", "value",
                              "--timestamp-column", "timestamp", "--season", "288",
                              "--horizon", "6", "--origins", "4", "--models",
                              "holt_winters,seasonal_naive", "--json"])
    assert args.fn(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step_seconds"] == 300 and set(res["models"]) == {"holt_winters",
                                                                 "seasonal_naive"}
    args = parser.parse_args(["eval", "forecast", str(p), "--value-column", "value",
                              "--season", "288", "--horizon", "6", "--origins", "4",
                              "--models", "seasonal_naive"])
    assert args.fn(args) == 0
    assert "seasonal_naive" in capsys.readouterr().out


def test_statsmodels_and_registered_models(tmp_path):
    t = np.arange(24 * 12)
    y = 50 + 10 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 1, len(t))
    p = tmp_path / "s.csv"
    p.write_text("v\n" + "\n".join(f"{v:.4f}" for v in y) + "\n")

    class Mean:
        def __init__(self, season, **_):
            self.y = []

        def update(self, values):
            self.y.extend(values)

        def forecast(self, h):
            m = np.full(h, np.mean(self.y))
            return m, m + 1

    E.register_forecaster("mean_test", Mean)
    try:
        res = E.eval_forecast(p, "v", season=24, horizon=24, origins=3,
                              models=["holt_winters", "seasonal_naive", "statsmodels_ets",
                                      "mean_test"])
    finally:
        del E.FORECASTERS["mean_test"]
    m = res["models"]
    assert m["holt_winters"]["mase"] < m["mean_test"]["mase"]
    assert m["statsmodels_ets"]["mase"] < 1.0 and m["holt_winters"]["mase"] < 1.0
    assert 0.6 <= m["holt_winters"]["p90_coverage"] <= 1.0


def write(tmp_path, text, name="bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bad_values_are_counted_not_fatal(tmp_path):
    rows = [str(v) for v in (10 + np.sin(np.arange(120) / 2))]
    rows[5], rows[40], rows[41], rows[77] = "nan", "inf", "-3", "oops"
    p = write(tmp_path, "value\n" + "\n".join(rows) + "\n")
    res = E.eval_forecast(p, "value", season=10, horizon=5, origins=3,
                          models=["holt_winters", "seasonal_naive"])
    assert res["input"]["bad_values"] == 4
    assert all(np.isfinite(r["mase"]) for r in res["models"].values())


def test_gaps_in_timestamps_are_filled(tmp_path):
    lines = ["ts,value"] + [f"{i * 60},{i % 7}" for i in range(200) if i not in (50, 51)]
    res = E.eval_forecast(write(tmp_path, "\n".join(lines)), "value", "ts", season=7,
                          horizon=3, origins=2, models=["seasonal_naive"])
    assert res["input"]["gaps_filled"] == 2 and res["n"] == 200


@pytest.mark.parametrize("text,err", [
    ("", LogFormatError),                         # empty file
    ("value\n", LogFormatError),                  # header only
    ("value\n5\n", LogFormatError),               # a single value
    ("value\nnan\ninf\n-1\n", LogFormatError),    # nothing usable
    ("other\n1\n2\n", ConfigError),               # missing column
])
def test_bad_csvs_raise_clear_errors(tmp_path, text, err):
    with pytest.raises(err) as e:
        E.eval_forecast(write(tmp_path, text), "value", season=2, horizon=1,
                        models=["seasonal_naive"])
    assert len(str(e.value)) > 20


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(LogFormatError, match="no such file"):
        E.eval_forecast(tmp_path / "nope.csv", "value", season=2, horizon=1)
    p = write(tmp_path, "value\n" + "\n".join(str(i % 3) for i in range(50)))
    with pytest.raises(ConfigError, match="season"):
        E.eval_forecast(p, "value", season=0, horizon=1)
    with pytest.raises(ConfigError, match="unknown model"):
        E.eval_forecast(p, "value", season=3, horizon=1, models=["nope"])
    with pytest.raises(ConfigError, match="timestamp"):
        E.eval_forecast(p, "value", "time", season=3, horizon=1)
