"""Holt-Winters over many regular series, with online choice among K parameter sets.

A thin typed wrapper over ``bae_core.kernels.holt_winters`` (see its docstring for the
equations, the warm-up and how quantiles are made).

>>> import numpy as np
>>> m = HoltWinters(periods=(4, 0), n_series=2, grid="single", warmup_cycles=2)
>>> y = np.tile([1.0, 2.0, 3.0, 2.0], 5)
>>> m.learn({"slot": np.zeros(20, np.int64), "value": y})
>>> np.round(m.predict({"h": 4, "slots": np.array([0])})["mean"], 3)
array([[1., 2., 3., 2.]])
"""

from __future__ import annotations

import numpy as np

from bae_core.errors import ConfigError
from bae_core.kernels import holt_winters as K

from .base import Model

S, L = K.AGAINST_SLOW, K.AGAINST_LEVEL
GRIDS = {
    # (alpha, beta, gamma, phi, seasonal baseline): from season-dominated (tiny alpha,
    # best far ahead; higher gamma follows the latest days) to level-following (best one
    # step ahead, seasonal indices against the level as in classic ETS), and one strongly
    # damped set. The forecast weighs them per step by their errors.
    "default": ((0.002, 0.0, 0.2, 0.9, S), (0.002, 0.0, 0.4, 0.9, S), (0.005, 0.0, 0.05, 0.9, S),
                (0.01, 0.0, 0.3, 0.9, S), (0.02, 0.0, 0.1, 0.9, S), (0.05, 0.0, 0.1, 0.8, S),
                (0.2, 0.0, 0.2, 0.9, S), (0.3, 0.0, 0.1, 0.5, S), (0.5, 0.02, 0.2, 0.9, S),
                (0.8, 0.0, 0.2, 0.9, S), (0.5, 0.02, 0.2, 0.9, L), (0.8, 0.0, 0.2, 0.9, L),
                (1.0, 0.0, 0.1, 0.9, L)),
    "single": ((0.2, 0.01, 0.1, 0.98, S),),
}
MODES = {"additive": K.SEASON_ADD, "multiplicative": K.SEASON_MUL}
Z = np.array([0.0, 1.2815515655446004, 2.3263478740408408])  # p50, p90, p99


class HoltWinters(Model):
    """Params: ``bucket_s`` (seconds per observation; informational), ``periods``
    (first and second seasonal period in buckets, 0 disables), ``grid`` (a name in GRIDS
    or a tuple of (alpha, beta, gamma, phi[, seasonal baseline S or L])), ``seasonal``
    ("additive" or "multiplicative"), ``n_series`` (initial slots; grows on demand),
    ``err_decay`` (EW weight of the tracked errors that weigh the sets and of the
    one-step variance behind the quantiles), ``warmup_cycles`` (first-period cycles
    averaged to start the seasonal index; until then forecasts are seasonal means and
    quantiles are NaN), ``weight_power`` (a set's weight is error^-power at each tracked
    horizon (1, ~12, half a season); one number or three)."""

    def __init__(self, bucket_s: int = 60, periods: tuple = (1440, 10080),
                 grid="default", seasonal: str = "additive", n_series: int = 1024,
                 err_decay: float = 0.02, warmup_cycles: int = 3, weight_power=(6.0, 4.0, 16.0)):
        self.bucket_s = bucket_s
        self.periods = periods
        self.grid = grid
        self.seasonal = seasonal
        self.n_series = n_series
        self.err_decay = err_decay
        self.warmup_cycles = warmup_cycles
        self.weight_power = weight_power
        self._power = np.broadcast_to(np.asarray(weight_power, float), (3,)).copy()
        self._wc = max(1, int(warmup_cycles))
        sets = GRIDS.get(grid) if isinstance(grid, str) else grid
        if sets is None:
            raise ConfigError("grid", f"unknown grid {grid!r}",
                              f"use one of {sorted(GRIDS)} or a tuple of "
                              "(alpha, beta, gamma, phi)")
        g = [tuple(x) + (S,) * (5 - len(x)) for x in sets]  # baseline defaults to slow
        g = np.asarray(g, float).reshape(-1, 5)
        if len(g) == 0 or np.any(g[:, :3] < 0) or np.any(g[:, :3] > 1) or \
                np.any(g[:, 3] <= 0) or np.any(g[:, 3] > 1) or not np.isin(g[:, 4], (S, L)).all():
            raise ConfigError("grid", "each set needs 0 <= alpha, beta, gamma <= 1, "
                              f"0 < phi <= 1 and a seasonal baseline {S} (slow mean) or "
                              f"{L} (level)", "fix the parameter sets")
        self._alpha, self._beta, self._gamma, self._phi = (np.ascontiguousarray(g[:, i])
                                                            for i in range(4))
        self._against = g[:, 4].astype(np.int64)
        if seasonal not in MODES:
            raise ConfigError("seasonal", f"unknown mode {seasonal!r}",
                              "use 'additive' or 'multiplicative'")
        self._mode = MODES[seasonal]
        p = tuple(int(x) for x in periods) + (0, 0)
        self._p1, self._p2 = p[0], p[1]
        if self._p1 < 0 or self._p2 < 0 or (self._p1 == 0 and self._p2 > 0):
            raise ConfigError("periods", f"bad periods {periods!r}",
                              "give (daily, weekly) in buckets, >= 0; put a single "
                              "period first")
        # tracked horizons: 1, ~an hour (12 steps) and one season; h2, h3 <= p1 so the
        # seasonal indices a ring forecast needs are not updated before it is scored
        h2 = min(12, self._p1) if self._p1 > 0 else 12
        h3 = max(h2, self._p1 // 2) if self._p1 > 0 else 24
        self._hz = np.array([1, h2, h3], np.int64)
        self._psum = np.array([[sum(ph ** i for i in range(1, h + 1)) for ph in self._phi]
                               for h in self._hz])
        self._alloc(max(1, int(n_series)))

    def _alloc(self, n: int) -> None:
        k = len(self._alpha)
        self._level = np.zeros((n, k))
        self._trend = np.zeros((n, k))
        # (series, position, set): one update touches one run of K numbers per array
        self._s1 = np.zeros((n, max(self._p1, 1), k))
        self._s2 = np.zeros((n, max(self._p2, 1), k))
        self._slow = np.zeros((n, 4))
        self._n_obs = np.zeros(n, np.int64)
        self._err = np.zeros((n, 3, k))
        self._var = np.zeros((n, k))
        self._r2 = np.zeros((n, int(self._hz[1]), k))
        self._r3 = np.zeros((n, int(self._hz[2]), k))

    def _grow(self, n: int) -> None:
        old = self.state()
        self._alloc(n)
        for name, a in old.items():
            getattr(self, "_" + name)[: len(a)] = a

    def params(self) -> dict:
        return dict(bucket_s=self.bucket_s, periods=self.periods, grid=self.grid,
                    seasonal=self.seasonal, n_series=self.n_series,
                    err_decay=self.err_decay, warmup_cycles=self.warmup_cycles,
                    weight_power=self.weight_power)

    @property
    def state_bytes_per_series(self) -> int:
        return sum(a[0].nbytes for a in self.state().values())

    def learn(self, batch: dict[str, np.ndarray]) -> None:
        slots = np.ascontiguousarray(batch["slot"], np.int64)
        values = np.ascontiguousarray(batch["value"], np.float64)
        if len(slots) == 0:
            return
        top = int(slots.max())
        if top >= len(self._n_obs):
            self._grow(max(top + 1, 2 * len(self._n_obs)))
        self.learn_arrays(slots, values)

    def learn_arrays(self, slots: np.ndarray, values: np.ndarray) -> int:
        """The hot path: int64 slots (all < current capacity) and float64 values, no
        checks or copies. Returns rows skipped."""
        return K.hw_update(slots, values, self._mode, self._p1, self._p2, self._wc, self._alpha,
                           self._beta, self._gamma, self._phi, self._against,
                           float(self.err_decay),
                           self._hz, self._psum, self._level, self._trend, self._s1,
                           self._s2, self._slow, self._n_obs, self._err, self._var, self._r2, self._r3)

    def predict(self, query: dict) -> dict[str, np.ndarray]:
        h = int(query["h"])
        slots = query.get("slots")
        slots = (np.arange(len(self._n_obs), dtype=np.int64) if slots is None
                 else np.ascontiguousarray(slots, np.int64))
        n = len(slots)
        mean = np.empty((n, h))
        q = np.empty((n, len(Z), h))
        best = np.empty(n, np.int64)
        K.hw_forecast(slots, h, self._mode, self._p1, self._p2, self._wc, self._alpha, self._beta,
                      self._gamma, self._phi, self._hz, self._power, self._level, self._trend, self._s1, self._s2,
                      self._n_obs, self._err, self._var, Z, mean, q, best)
        return {"mean": mean, "p50": q[:, 0], "p90": q[:, 1], "p99": q[:, 2], "set": best}

    def state(self) -> dict[str, np.ndarray]:
        return {"level": self._level.copy(), "trend": self._trend.copy(),
                "s1": self._s1.copy(), "s2": self._s2.copy(), "slow": self._slow.copy(),
                "n_obs": self._n_obs.copy(),
                "err": self._err.copy(), "var": self._var.copy(), "r2": self._r2.copy(),
                "r3": self._r3.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        n = len(state["n_obs"])
        self._alloc(n)
        for name, a in state.items():
            dst = getattr(self, "_" + name)
            if dst.shape != np.shape(a):
                raise ConfigError("state", f"{name} has shape {np.shape(a)}, expected "
                                  f"{dst.shape}", "restore into a model built with the "
                                  "same periods and grid")
            dst[...] = a

    @classmethod
    def check_cases(cls):
        rng = np.random.default_rng(7)
        t = np.arange(48)
        a = 10 + 3 * np.sin(2 * np.pi * t / 6) + rng.normal(0, 0.3, 48)
        b = 50 + 0.5 * t + rng.normal(0, 1, 48)
        slots = np.empty(96, np.int64)
        vals = np.empty(96)
        slots[0::2], slots[1::2] = 0, 1
        vals[0::2], vals[1::2] = a, b
        batch = {"slot": slots, "value": vals}
        return [
            (dict(bucket_s=60, periods=(6, 0), grid="default", seasonal="additive",
                  n_series=2, err_decay=0.05, warmup_cycles=2, weight_power=(6.0, 4.0, 16.0)),
             batch, {"h": 8}),
            (dict(bucket_s=300, periods=(3, 12), grid="default", seasonal="multiplicative",
                  n_series=4, err_decay=0.02, warmup_cycles=3, weight_power=50.0), batch,
             {"h": 5, "slots": np.array([1, 0])}),
            (dict(bucket_s=60, periods=(0, 0), grid=((0.3, 0.1, 0.0, 0.9),),
                  seasonal="additive", n_series=1, err_decay=0.1, warmup_cycles=1,
                  weight_power=4.0), batch, {"h": 3}),
        ]
