"""``OnlineARIMA``: ARIMA(p, d, q) per series by Online Newton Step (kernels/arima.py),
with the forecast and quantile interface of the other forecasters."""

from __future__ import annotations

import numpy as np

from ..kernels import arima as k
from .base import Model

Z90, Z99 = 1.2815515655446004, 2.3263478740408408


class OnlineARIMA(Model):
    """Forecasts ``h`` steps for many series; quantiles assume Gaussian one-step errors
    whose spread grows with the square root of the horizon."""

    def __init__(self, n_series: int = 1, p: int = 4, d: int = 1, q: int = 2,
                 lr: float = 1.0, eps: float = 1.0):
        self.n_series, self.p, self.d, self.q, self.lr, self.eps = n_series, p, d, q, lr, eps
        self.m = max(1, p + q)
        m, w = self.m, self.m + d
        self.gamma = np.zeros((n_series, m + 1))  # lag coefficients, then the intercept
        self.ainv = np.zeros((n_series, m + 1, m + 1))
        self.hist = np.zeros((n_series, w))
        self.n = np.zeros(n_series, np.int64)
        self.scale = np.ones(n_series)
        self.err = np.zeros(n_series)

    def grow(self, n_series: int) -> None:
        """Room for ``n_series`` series (new ones start empty)."""
        if n_series <= self.n_series:
            return
        for name in ("gamma", "ainv", "hist", "n", "scale", "err"):
            old = getattr(self, name)
            new = np.zeros((n_series,) + old.shape[1:], old.dtype)
            if name == "scale":
                new[:] = 1.0
            new[: len(old)] = old
            setattr(self, name, new)
        self.n_series = n_series

    def params(self) -> dict:
        return {"n_series": self.n_series, "p": self.p, "d": self.d, "q": self.q,
                "lr": self.lr, "eps": self.eps}

    def learn(self, batch: dict[str, np.ndarray]) -> None:
        slots = np.ascontiguousarray(batch["slot"], np.int64)
        if len(slots) and slots.min() < 0:
            raise IndexError("slots must be >= 0")
        if len(slots) and slots.max() >= self.n_series:
            self.grow(max(int(slots.max()) + 1, 2 * self.n_series))
        k.learn(slots, np.ascontiguousarray(batch["value"], np.float64), self.m, self.d,
                self.lr, self.eps, self.gamma, self.ainv, self.hist, self.n, self.scale,
                self.err)

    def predict(self, query: dict) -> dict[str, np.ndarray]:
        h = int(query["h"])
        asked = np.ascontiguousarray(query.get("slots", np.arange(self.n_series)), np.int64)
        known = (asked >= 0) & (asked < self.n_series)
        slots = np.where(known, asked, 0)  # series never learned: NaN below
        mean = np.empty((len(slots), h))
        k.forecast(slots, h, self.m, self.d, self.gamma, self.hist, self.n, self.scale, mean)
        mean[~known] = np.nan
        scale = np.where(self.scale[slots] > 1e-12, self.scale[slots], 1.0)
        sigma = (np.sqrt(self.err[slots]) * scale)[:, None] * np.sqrt(
            np.arange(1, h + 1))[None, :]
        return {"mean": mean, "p50": mean, "p90": mean + Z90 * sigma,
                "p99": mean + Z99 * sigma}

    def state(self) -> dict[str, np.ndarray]:
        return {k_: getattr(self, k_).copy() for k_ in
                ("gamma", "ainv", "hist", "n", "scale", "err")}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for k_, v in state.items():
            getattr(self, k_)[...] = v

    @classmethod
    def check_cases(cls):
        rng = np.random.default_rng(1)
        t = np.arange(200)
        a = 10 + 0.05 * t + np.sin(t / 5) + rng.normal(0, 0.1, 200)
        b = 100 + 5 * np.sin(t / 3) + rng.normal(0, 1, 200)
        slots = np.tile([0, 1], 200)
        values = np.column_stack([a, b]).ravel()
        batch = {"slot": slots, "value": values}
        return [({"n_series": 2, "p": 3, "d": 1, "q": 1, "lr": 1.0, "eps": 1.0}, batch,
                 {"h": 5}),
                ({"n_series": 2, "p": 2, "d": 0, "q": 0, "lr": 0.5, "eps": 0.1}, batch,
                 {"h": 3, "slots": np.array([1])})]
