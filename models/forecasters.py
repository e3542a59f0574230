"""``bae eval forecast`` adapters of the learned models (registered in daemon.evaluate).

Both follow that module's contract: ``update(values)`` appends observations,
``forecast(h) -> (p50[h], p90[h])``. Eval hands no timestamps, so calendar phases use the
position in the series (step 0 = first value), as in training on CSVs.
"""

from __future__ import annotations

import numpy as np

from models import features as F


class _History:
    def __init__(self):
        self._buf = np.empty(4096)
        self._n = 0

    def update(self, values) -> None:
        v = np.asarray(values, np.float64)
        if self._n + len(v) > len(self._buf):
            self._buf = np.concatenate([self._buf[:self._n],
                                        np.empty(max(len(self._buf), len(v)))])
        self._buf[self._n:self._n + len(v)] = v
        self._n += len(v)

    @property
    def y(self) -> np.ndarray:
        return self._buf[:self._n]


class LSTMForecaster(_History):
    """The shipped LSTM (``models/bae_lstm_v1.onnx``) through ``LSTMRuntime``. Horizons
    beyond HORIZON steps are iterated: the p50 path is fed back as observations and the
    next block forecast; p90 of later blocks is that block's p90 given the fed-back p50
    (it ignores the uncertainty of the fed values, so it is too narrow there)."""

    def __init__(self, season: int = F.DAY, horizon: int = F.HORIZON, path=None,
                 threads: int = 1, **_):
        super().__init__()
        from models.runtime import DEFAULT_MODEL, LSTMRuntime
        self.rt = LSTMRuntime(path or DEFAULT_MODEL, device="cpu", threads=threads,
                              max_batch=1)

    def forecast(self, h: int):
        y = self.y
        hist = np.full((1, F.HISTORY), np.nan)
        tail = y[-F.HISTORY:]
        if len(tail):
            hist[0, -len(tail):] = tail
        step = len(y) - 1
        p50, p90 = [], []
        while sum(len(b) for b in p50) < h:
            out = self.rt.predict(hist, step)
            p50.append(out["p50"][0].astype(np.float64))
            p90.append(out["p90"][0].astype(np.float64))
            hist = np.concatenate([hist[:, F.HORIZON:], p50[-1][None]], 1)
            step += F.HORIZON
        return np.concatenate(p50)[:h], np.concatenate(p90)[:h]


class ProphetForecaster(_History):
    """Prophet refit at every origin on the trailing ``window`` steps (default 4 weeks),
    daily and (with >= 2 weeks of data) weekly seasonality; p90 from its predictive
    samples."""

    def __init__(self, season: int = F.DAY, horizon: int = F.HORIZON,
                 window: int = 4 * F.WEEK, **_):
        super().__init__()
        from models.prophet_refit import require_prophet
        require_prophet()
        self.window = window

    def forecast(self, h: int):
        from models.prophet_refit import fit_forecast
        y = self.y
        start = max(0, len(y) - self.window)
        out = fit_forecast(y[start:], h, start_s=start * F.STEP_S)
        return out["p50"], out["p90"]
