"""Per-series model selection: weights of several forecasters from their rolling errors.

Each series keeps, per member forecaster, an exponentially weighted mean absolute error
of its forecasts once their targets are observed (``learn``). A member's weight is
``err ** -power`` normalised over the members that have a forecast (inverse-error
weighting: ``power`` 2 is the inverse-MSE-like rule, large ``power`` follows the
leader). Members not scored yet share the weight of an average member; a series with
no scores weighs its members equally.

>>> import numpy as np
>>> e = Ensemble(members=("a", "b"), n_series=1, decay=0.5, power=2.0)
>>> e.learn({"slot": np.array([0, 0]), "error": np.array([[1.0, 2.0], [1.0, 2.0]])})
>>> e.predict({"slots": np.array([0])})["weights"].round(2).tolist()
[[0.8, 0.2]]
"""

from __future__ import annotations

import numpy as np

from .base import Model


class Ensemble(Model):
    """Params: ``members`` (names, in the column order of errors and forecasts),
    ``n_series`` (grows on demand), ``decay`` (EW weight of a new error; the first
    errors are a plain mean), ``power``, ``margin`` (None: every member weighs; else
    only members within (1 + margin) x the best error: follow the leaders)."""

    def __init__(self, members=("holt_winters", "arima", "lstm"), n_series: int = 8,
                 decay: float = 0.05, power: float = 2.0, margin: float | None = None):
        self.members = tuple(members)
        self.margin = margin
        self.n_series = n_series
        self.decay = decay
        self.power = power
        self._err = np.full((max(1, n_series), len(self.members)), np.nan)
        self._n = np.zeros((max(1, n_series), len(self.members)), np.int64)

    def params(self) -> dict:
        return dict(members=self.members, n_series=self.n_series, decay=self.decay,
                    power=self.power, margin=self.margin)

    def _grow(self, n: int) -> None:
        if n > len(self._err):
            m = max(n, 2 * len(self._err))
            err = np.full((m, len(self.members)), np.nan)
            cnt = np.zeros((m, len(self.members)), np.int64)
            err[:len(self._err)], cnt[:len(self._n)] = self._err, self._n
            self._err, self._n = err, cnt

    def learn(self, batch: dict[str, np.ndarray]) -> None:
        """``slot`` (n,) and ``error`` (n, members): absolute errors of forecasts whose
        targets are now known (NaN: that member made none), rows in time order."""
        slots = np.asarray(batch["slot"], np.int64)
        if len(slots) == 0:
            return
        err = np.asarray(batch["error"], np.float64).reshape(len(slots), len(self.members))
        self._grow(int(slots.max()) + 1)
        for s, row in zip(slots.tolist(), err):  # rows are few: one per scored forecast
            ok = np.isfinite(row)
            n = self._n[s, ok] + 1
            w = np.maximum(self.decay, 1.0 / n)
            cur = self._err[s, ok]
            self._err[s, ok] = np.where(np.isnan(cur), row[ok], cur + w * (row[ok] - cur))
            self._n[s, ok] = n

    def scored(self, slots: np.ndarray) -> np.ndarray:
        """(n,) how many forecasts the best-scored member of each series has had judged."""
        slots = np.asarray(slots, np.int64)
        ok = slots < len(self._n)
        return np.where(ok, self._n[np.minimum(slots, len(self._n) - 1)].max(1), 0)

    def weights(self, slots: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        """(n, members) weights summing to 1 over the members ``available`` (default all)."""
        slots = np.asarray(slots, np.int64)
        m = len(self.members)
        known = (slots >= 0) & (slots < len(self._err))
        err = np.full((len(slots), m), np.nan)
        err[known] = self._err[slots[known]]
        avail = np.ones((len(slots), m), bool) if available is None else available
        inv = np.where(np.isfinite(err), 1.0 / np.maximum(err, 1e-12) ** self.power, np.nan)
        scored = np.isfinite(inv) & avail
        if self.margin is not None and scored.any():
            # follow the leaders: members worse than the best by more than the margin drop
            best = np.where(scored, err, np.inf).min(1, keepdims=True)
            avail = avail & ~(scored & (err > (1.0 + self.margin) * best))
            scored &= avail
        k = scored.sum(1)
        mean_inv = np.where(k > 0, np.where(scored, inv, 0.0).sum(1) / np.maximum(k, 1), 1.0)
        w = np.where(scored, inv, mean_inv[:, None]) * avail
        tot = w.sum(1, keepdims=True)
        return np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)

    def predict(self, query: dict) -> dict[str, np.ndarray]:
        """``slots``; with ``forecasts`` (n, members, h) also the combined ``mean``
        (n, h), each step weighing the members with a finite forecast there."""
        slots = np.asarray(query["slots"], np.int64)
        f = query.get("forecasts")
        if f is None:
            return {"weights": self.weights(slots)}
        f = np.asarray(f, np.float64)
        out = np.full((len(slots), f.shape[2]), np.nan)
        w_last = np.zeros((len(slots), len(self.members)))
        for j in range(f.shape[2]):
            avail = np.isfinite(f[:, :, j])
            w = self.weights(slots, avail)
            out[:, j] = np.where(avail.any(1), (w * np.nan_to_num(f[:, :, j])).sum(1), np.nan)
            w_last = w
        return {"mean": out, "weights": w_last}

    def state(self) -> dict[str, np.ndarray]:
        return {"err": self._err.copy(), "n": self._n.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self._err = np.array(state["err"], np.float64)
        self._n = np.array(state["n"], np.int64)

    @classmethod
    def check_cases(cls):
        rng = np.random.default_rng(3)
        slots = np.repeat(np.arange(3), 20)
        err = np.abs(rng.normal(0, [1.0, 2.0, 4.0], (60, 3)))
        err[::7, 2] = np.nan
        batch = {"slot": slots, "error": err}
        f = rng.normal(10, 1, (3, 3, 4))
        return [(dict(members=("holt_winters", "arima", "lstm"), n_series=2, decay=0.1,
                      power=2.0, margin=None), batch, {"slots": np.array([0, 1, 2]), "forecasts": f}),
                (dict(members=("holt_winters", "arima", "lstm"), n_series=8, decay=0.5,
                      power=8.0, margin=0.2), batch, {"slots": np.array([2, 5])})]
