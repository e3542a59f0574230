"""Offline evaluation of forecasters on a CSV series: ``bae eval forecast``.

Rolling origin: every model is fed the series in time order; at each origin (evenly
spaced from ``initial`` to the end less ``horizon``) it forecasts ``horizon`` steps from
what it has seen so far. Reported per model, averaged over origins:

- ``mase``: mean absolute error over steps 1..H divided by the in-sample seasonal-naive
  error (lag ``season``) of the series up to the origin;
- ``smape``: 200 |y - f| / (|y| + |f|), in percent (0 where both are 0);
- ``p90_coverage``: share of actual values at or below the forecast p90 (nominal 0.90);
- ``update_s_per_origin`` / ``forecast_s_per_origin``: time spent learning the steps
  between two origins, and forecasting at one (a refitting model fits in ``forecast``).

Forecasters are registered by name in ``FORECASTERS`` (name -> factory). A factory is
called with keywords ``season``, ``season2``, ``horizon`` and returns an object with
``update(values: float64[])`` (the next observations, in order) and
``forecast(h) -> (mean[h], p90[h])``. ``register_forecaster`` adds one.
"""

from __future__ import annotations

import csv
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from bae_core.errors import ConfigError, LogFormatError

Z90 = 1.2815515655446004


# ---------------------------------------------------------------------------- forecasters

class HoltWintersForecaster:
    """BAE's online Holt-Winters on one series slot, fed observation by observation."""

    def __init__(self, season: int, season2: int = 0, horizon: int = 1, **_):
        from bae_core.models.holt_winters import HoltWinters
        self.m = HoltWinters(bucket_s=300, periods=(season, season2), n_series=1)
        self._slot = np.zeros(1, np.int64)
        self._q = {"h": 1, "slots": self._slot}

    def update(self, values: np.ndarray) -> None:
        slots = np.zeros(len(values), np.int64)
        self.m.learn_arrays(slots, np.ascontiguousarray(values, np.float64))

    def forecast(self, h: int):
        out = self.m.predict({"h": h, "slots": self._slot})
        return out["mean"][0], out["p90"][0]


class SeasonalNaive:
    """The value one season back; p90 from the empirical 90th percentile of in-sample
    seasonal differences, widened by sqrt(seasons ahead)."""

    def __init__(self, season: int, horizon: int = 1, **_):
        self.m = max(1, season)
        self.y: list[float] = []

    def update(self, values: np.ndarray) -> None:
        self.y.extend(float(v) for v in values)

    def forecast(self, h: int):
        y = np.asarray(self.y)
        m = self.m if len(y) >= self.m else 1
        j = np.arange(h)
        mean = y[len(y) - m + (j % m)]
        d = y[m:] - y[:-m]
        q = float(np.quantile(d[-10 * m:], 0.9)) if len(d) else 0.0
        return mean, mean + q * np.sqrt(j // m + 1)


class StatsmodelsETS:
    """statsmodels ExponentialSmoothing (additive damped trend, additive season) refit at
    every origin on the trailing ``window`` observations; p90 Gaussian from the fit's
    residual scale and the ETS(A,Ad,A) h-step variance factor."""

    def __init__(self, season: int, horizon: int = 1, window: int | None = None, **_):
        from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: F401
        self.m = season
        self.window = window or 4 * season
        self.y: list[float] = []

    def update(self, values: np.ndarray) -> None:
        self.y.extend(float(v) for v in values)

    def forecast(self, h: int):
        import warnings

        from statsmodels.tsa.holtwinters import ExponentialSmoothing
        y = np.asarray(self.y[-self.window:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                       seasonal_periods=self.m,
                                       initialization_method="estimated").fit()
        mean = np.asarray(fit.forecast(h), float)
        p = fit.params
        a, b = p["smoothing_level"], p.get("smoothing_trend", 0.0) or 0.0
        g, phi = p.get("smoothing_seasonal", 0.0) or 0.0, p.get("damping_trend", 1.0)
        sigma = math.sqrt(fit.sse / max(1, len(y)))
        cum, psum, pw, sd = 0.0, 0.0, 1.0, np.empty(h)
        for j in range(h):
            sd[j] = sigma * math.sqrt(1 + cum)
            pw *= phi
            psum += pw
            c = a * (1 + b * psum) + (g if (j + 1) % self.m == 0 else 0.0)
            cum += c * c
        return mean, mean + Z90 * sd


class ARIMAForecaster:
    """BAE's online ARIMA (Online Newton Step), fed observation by observation."""

    def __init__(self, season: int = 0, horizon: int = 1, **_):
        from bae_core.models.arima import OnlineARIMA
        self.m = OnlineARIMA(1, p=4, d=1, q=2)
        self._q = {"h": 1, "slots": np.zeros(1, np.int64)}

    def update(self, values: np.ndarray) -> None:
        self.m.learn({"slot": np.zeros(len(values), np.int64),
                      "value": np.ascontiguousarray(values, np.float64)})

    def forecast(self, h: int):
        out = self.m.predict({"h": h, "slots": self._q["slots"]})
        return out["mean"][0], out["p90"][0]


class EnsembleForecaster:
    """Per-series model selection (``bae_core.models.ensemble``) over ``members``
    (default holt_winters and lstm; ``--ensemble-members`` adds arima or prophet): every
    ``horizon`` steps (at least 6) after two seasons each member forecasts ``horizon``
    steps; once the targets are seen its mean absolute error joins its rolling error
    (decay 0.05), and the forecast is the members' weighted mean with weights
    error^-8 (p90 likewise). Members that cannot be built (lstm without onnxruntime) are
    left out."""

    MEMBERS = ("holt_winters", "lstm")

    def __init__(self, season: int, season2: int = 0, horizon: int = 1, members=None, **_):
        from bae_core.models.ensemble import Ensemble
        self.h, self.every = horizon, max(horizon, 6)
        self.members, names = [], []
        for name in members or self.MEMBERS:
            try:
                self.members.append(FORECASTERS[name](season=season, season2=season2,
                                                      horizon=horizon))
                names.append(name)
            except ImportError:
                continue
        self.ens = Ensemble(members=tuple(names), n_series=1, decay=0.05, power=8.0)
        self.y = np.empty(0)
        self.start = max(2 * season, horizon)
        self.next_at = self.start
        self.pending: list[tuple[int, np.ndarray]] = []

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        i = 0
        while i < len(values):
            take = min(len(values) - i, max(1, self.next_at - len(self.y)))
            chunk = values[i:i + take]
            for m in self.members:
                m.update(chunk)
            self.y = np.concatenate([self.y, chunk])
            i += take
            self._score()
            if len(self.y) >= self.next_at:
                self.pending.append((len(self.y), np.stack(
                    [np.asarray(m.forecast(self.h)[0], float) for m in self.members])))
                self.next_at = len(self.y) + self.every

    def _score(self) -> None:
        done = [(t, f) for t, f in self.pending if t + self.h <= len(self.y)]
        self.pending = [(t, f) for t, f in self.pending if t + self.h > len(self.y)]
        for t, f in done:
            err = np.mean(np.abs(self.y[t:t + self.h][None, :] - f), 1)
            self.ens.learn({"slot": np.zeros(1, np.int64), "error": err[None, :]})

    def forecast(self, h: int):
        got = [m.forecast(h) for m in self.members]
        mean = np.stack([np.asarray(g[0], float) for g in got])[None]
        p90 = np.stack([np.asarray(g[1], float) for g in got])[None]
        slot = np.zeros(1, np.int64)
        w = self.ens.predict({"slots": slot, "forecasts": mean})
        wp = self.ens.predict({"slots": slot, "forecasts": p90})
        self.last_weights = dict(zip(self.ens.members, w["weights"][0].round(3).tolist()))
        return w["mean"][0], wp["mean"][0]


FORECASTERS: dict[str, Callable[..., object]] = {
    "holt_winters": HoltWintersForecaster,
    "arima": ARIMAForecaster,
    "seasonal_naive": SeasonalNaive,
    "statsmodels_ets": StatsmodelsETS,
    "lstm": lambda **kw: __import__("models.forecasters").forecasters.LSTMForecaster(**kw),
    "prophet": lambda **kw: __import__("models.forecasters").forecasters.ProphetForecaster(**kw),
    "ensemble": EnsembleForecaster,
}


def register_forecaster(name: str, factory: Callable[..., object]) -> None:
    """Make ``factory`` available to eval_forecast(models=[name, ...])."""
    FORECASTERS[name] = factory


# ---------------------------------------------------------------------------- CSV reading

def _parse_time(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return datetime.fromisoformat(s.strip()).timestamp()


def read_series(path, value_column: str, timestamp_column: str | None = None,
                step_seconds: float | None = None) -> tuple[np.ndarray, float | None, dict]:
    """Read one regular series from a CSV with a header row.

    Values that are empty, not numbers, NaN, infinite or negative are replaced by the
    previous good value and counted (``bad_values``); rows whose timestamp cannot be read
    or does not advance are dropped and counted (``bad_rows``); with a timestamp column,
    missing steps are filled with the previous value and counted (``gaps_filled``).
    Returns (values, step_seconds or None, counts)."""
    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"{path}: no such file; give the path of a CSV file")
    counts = {"rows": 0, "bad_values": 0, "bad_rows": 0, "gaps_filled": 0}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise LogFormatError(f"{path}: the file is empty; give a CSV with a header "
                                 "row and one value per line")
        header = [h.strip() for h in header]
        for col, what in ((value_column, "--value-column"),
                          (timestamp_column, "--timestamp-column")):
            if col is not None and col not in header:
                raise ConfigError(what, f"column {col!r} is not in {path.name} "
                                  f"(columns: {', '.join(header)})", "name one of those")
        vi = header.index(value_column)
        ti = header.index(timestamp_column) if timestamp_column else None
        vals: list[float] = []
        times: list[float] = []
        last = math.nan
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            counts["rows"] += 1
            if ti is not None:
                try:
                    t = _parse_time(row[ti])
                except (ValueError, IndexError):
                    counts["bad_rows"] += 1
                    continue
                if times and t <= times[-1]:
                    counts["bad_rows"] += 1
                    continue
            try:
                v = float(row[vi])
            except (ValueError, IndexError):
                v = math.nan
            if not math.isfinite(v) or v < 0:
                counts["bad_values"] += 1
                v = last
            else:
                last = v
            vals.append(v)
            if ti is not None:
                times.append(t)
    y = np.asarray(vals, float)
    good = np.isfinite(y)
    if not good.any():
        raise LogFormatError(f"{path}: column {value_column!r} holds no usable value "
                             "(finite, >= 0); check the column name and the file")
    y = y[np.argmax(good):]  # leading bad values have nothing to carry forward
    if ti is not None:
        t = np.asarray(times[len(times) - len(y):])
        if step_seconds is None and len(t) > 1:
            step_seconds = float(np.median(np.diff(t)))
        if step_seconds and len(t) > 1:
            idx = np.rint((t - t[0]) / step_seconds).astype(np.int64)
            keep = np.concatenate([[True], np.diff(idx) > 0])
            counts["bad_rows"] += int((~keep).sum())
            idx, y = idx[keep], y[keep]
            full = np.full(idx[-1] + 1, np.nan)
            full[idx] = y
            counts["gaps_filled"] = int(np.isnan(full).sum())
            for i in np.flatnonzero(np.isnan(full)):
                full[i] = full[i - 1]
            y = full
    return y, step_seconds, counts


# ---------------------------------------------------------------------------- evaluation

def _smape(y, f):
    den = np.abs(y) + np.abs(f)
    return np.where(den > 0, 200 * np.abs(y - f) / np.where(den > 0, den, 1), 0.0)


def eval_series(y: np.ndarray, season: int, horizon: int, models=None, season2: int = 0,
                origins: int = 24, initial: int | None = None,
                ensemble_members=None) -> dict:
    """Rolling-origin evaluation of the named models on one regular series."""
    if season < 1:
        raise ConfigError("--season", f"season must be >= 1, got {season}",
                          "give the seasonal period in steps (288 for a day of 300 s)")
    if horizon < 1:
        raise ConfigError("--horizon", f"horizon must be >= 1, got {horizon}",
                          "give the number of steps to forecast")
    n = len(y)
    if initial is None:
        initial = max(3 * season, n // 2)
    last = n - horizon
    if n < 2 or last < initial:
        raise LogFormatError(f"the series has {n} usable values, too few for an initial "
                             f"window of {initial} plus a horizon of {horizon}; use a "
                             "longer file, a shorter --horizon or a smaller --season")
    k = max(1, origins)
    at = np.unique(np.linspace(initial, last, k).astype(np.int64))
    names = list(models or FORECASTERS)
    notes, out = [], {}
    for name in names:
        if name not in FORECASTERS:
            raise ConfigError("models", f"unknown model {name!r}",
                              f"use some of {sorted(FORECASTERS)}")
        try:
            extra = {"members": ensemble_members} if name == "ensemble" else {}
            fc = FORECASTERS[name](season=season, season2=season2, horizon=horizon, **extra)
        except ImportError as e:
            notes.append(f"{name} skipped: {e}")
            continue
        mase, smape, cover, t_up, t_fc, fed = [], [], [], 0.0, 0.0, 0
        for o in at:
            t0 = time.perf_counter()
            fc.update(y[fed:o])
            t1 = time.perf_counter()
            mean, p90 = fc.forecast(horizon)
            t2 = time.perf_counter()
            t_up += t1 - t0
            t_fc += t2 - t1
            fed = o
            actual = y[o:o + horizon]
            train = y[:o]
            scale = np.mean(np.abs(train[season:] - train[:-season])) if o > season else \
                np.mean(np.abs(np.diff(train))) if o > 1 else 0.0
            err = np.mean(np.abs(actual - mean))
            mase.append(err / scale if scale > 0 else math.nan)
            smape.append(float(np.mean(_smape(actual, mean))))
            cover.append(float(np.mean(actual <= p90)))
        out[name] = {"mase": float(np.nanmean(mase)), "smape": float(np.mean(smape)),
                     "p90_coverage": float(np.mean(cover)),
                     "update_s_per_origin": t_up / len(at),
                     "forecast_s_per_origin": t_fc / len(at)}
    return {"n": n, "season": season, "season2": season2, "horizon": horizon,
            "origins": len(at), "initial": int(initial), "models": out, "notes": notes}


def eval_forecast(path, value_column: str, timestamp_column: str | None = None,
                  step_seconds: float | None = None, season: int = 288, horizon: int = 12,
                  models=None, season2: int | None = None, origins: int = 24,
                  initial: int | None = None, ensemble_members=None) -> dict:
    """Read ``path`` and evaluate; ``season2`` defaults to a week of ``season`` steps
    (7 * season) when the series holds at least three weeks, else 0."""
    y, step, counts = read_series(path, value_column, timestamp_column, step_seconds)
    if season2 is None:
        season2 = 7 * season if len(y) >= 21 * season else 0
    res = eval_series(y, season, horizon, models, season2=season2, origins=origins,
                      initial=initial, ensemble_members=ensemble_members)
    res.update(file=str(path), value_column=value_column, step_seconds=step, input=counts)
    return res


# ---------------------------------------------------------------------------- CLI

def cmd_eval_forecast(args) -> int:
    res = eval_forecast(args.file, args.value_column, args.timestamp_column,
                        args.step_seconds, args.season, args.horizon,
                        models=args.models.split(",") if args.models else None,
                        season2=args.season2, origins=args.origins,
                        ensemble_members=(args.ensemble_members.split(",")
                                          if args.ensemble_members else None))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['file']}  column {res['value_column']}  n={res['n']}  season={res['season']}"
          f"  season2={res['season2']}  horizon={res['horizon']}  origins={res['origins']}")
    print(f"{'model':<18}{'MASE':>8}{'sMAPE%':>9}{'p90 cov':>9}{'upd s':>10}{'fc s':>10}")
    for name, r in res["models"].items():
        print(f"{name:<18}{r['mase']:>8.3f}{r['smape']:>9.2f}{r['p90_coverage']:>9.2f}"
              f"{r['update_s_per_origin']:>10.2e}{r['forecast_s_per_origin']:>10.2e}")
    for note in res["notes"]:
        print("note:", note)
    if any(res["input"][k] for k in ("bad_values", "bad_rows", "gaps_filled")):
        print("input:", res["input"])
    return 0


def add_eval_forecast_parser(eval_subparsers) -> None:
    """Register ``forecast FILE.csv ...`` under ``bae eval``."""
    f = eval_subparsers.add_parser("forecast", help="rolling-origin MASE / sMAPE / p90 coverage of "
                      "forecasters on one CSV column")
    f.add_argument("file")
    f.add_argument("--value-column", dest="value_column", required=True)
    f.add_argument("--timestamp-column", dest="timestamp_column")
    f.add_argument("--step-seconds", dest="step_seconds", type=float,
                   help="seconds per row (needed to regrid a timestamp column with gaps; "
                   "informational without one)")
    f.add_argument("--season", type=int, required=True, help="seasonal period in steps")
    f.add_argument("--season2", type=int, default=None,
                   help="second (weekly) period for holt_winters; default 7*season when "
                   "the series holds three weeks, 0 disables")
    f.add_argument("--horizon", type=int, required=True)
    f.add_argument("--origins", type=int, default=24)
    f.add_argument("--models", help="comma-separated, default all registered")
    f.add_argument("--ensemble-members", dest="ensemble_members",
                   help="the models 'ensemble' weighs (default holt_winters,lstm)")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(fn=cmd_eval_forecast)
