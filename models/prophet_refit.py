"""Prophet refits: one regular series -> H-step p50/p90/p99, and a process pool for many.

Prophet (an optional extra: ``pip install 'bae[prophet]'``) is slow to fit (Stan, ~0.1-2 s
per series) and holds the GIL, so scheduled batch refits of many segment series run in
worker processes (``refit_many``), never in the daemon's event loop. Quantiles come from
Prophet's predictive samples (``uncertainty_samples``), seeded.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

STEP_S = 300
QUANTILES = (0.5, 0.9, 0.99)


def require_prophet():
    """Import prophet quietly, or raise ImportError saying how to install it."""
    for name in ("cmdstanpy", "prophet", "prophet.plot"):  # before the import: it logs
        lg = logging.getLogger(name)
        lg.setLevel(logging.CRITICAL)
        lg.propagate = False
    logging.getLogger("cmdstanpy").disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import prophet
    except ImportError as e:
        raise ImportError("Prophet is not installed; pip install 'bae[prophet]' "
                          f"(import failed: {e})") from e
    return prophet


def fit_forecast(values, horizon: int, *, start_s: float = 0.0, step_s: float = STEP_S,
                 samples: int = 200, seed: int = 0, changepoints: int = 10) -> dict:
    """Fit Prophet on ``values`` (float[n], regular steps of ``step_s`` from unix time
    ``start_s``) and forecast ``horizon`` steps. Daily seasonality with >= 2 days of data,
    weekly with >= 2 weeks. Returns {"p50", "p90", "p99"}: float64[horizon], clipped at
    0; a constant series gives its value."""
    prophet = require_prophet()
    import pandas as pd
    y = np.asarray(values, np.float64)
    n = len(y)
    if n < 2:
        raise ValueError(f"Prophet needs at least 2 values, got {n}")
    if np.ptp(y) == 0:
        flat = np.full(horizon, y[0])
        return {"p50": flat, "p90": flat.copy(), "p99": flat.copy()}
    ds = pd.to_datetime(start_s + step_s * np.arange(n + horizon), unit="s")
    span_days = n * step_s / 86400
    m = prophet.Prophet(daily_seasonality=span_days >= 2, weekly_seasonality=span_days >= 14,
                        yearly_seasonality=False, uncertainty_samples=samples,
                        n_changepoints=min(changepoints, max(0, n // 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(pd.DataFrame({"ds": ds[:n], "y": y}), seed=seed)
        state = np.random.get_state()
        np.random.seed(seed)  # Prophet samples with the global numpy generator
        try:
            draws = m.predictive_samples(pd.DataFrame({"ds": ds[n:]}))["yhat"]
        finally:
            np.random.set_state(state)
    q = np.maximum(0.0, np.quantile(np.asarray(draws, np.float64), QUANTILES, axis=1))
    return {"p50": q[0], "p90": q[1], "p99": q[2]}


def _job(args):
    key, values, horizon, start_s, kw = args
    return key, fit_forecast(values, horizon, start_s=start_s, **kw)


def refit_many(series: dict, horizon: int, *, workers: int = 2, start_s=None,
               **kw) -> dict:
    """Refit every ``series[key]`` (float[n]) in ``workers`` spawned processes; returns
    {key: fit_forecast result}. ``start_s``: a dict key -> unix start, or None (0). For
    a schedule, call it from a thread or ``loop.run_in_executor`` (it blocks until all
    are done)."""
    require_prophet()
    jobs = [(k, np.asarray(v, np.float64), horizon, (start_s or {}).get(k, 0.0), kw)
            for k, v in series.items()]
    if not jobs:
        return {}
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                             mp_context=get_context("spawn")) as ex:
        return dict(ex.map(_job, jobs))
