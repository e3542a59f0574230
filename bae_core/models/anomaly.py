"""Streaming anomaly detector over many series (one slot per series): a thin typed wrapper
around ``bae_core.kernels.anomaly.score_rows``.

>>> import numpy as np
>>> m = AnomalyDetector(grace_period=50, window=32, season=0)
>>> x = np.sin(np.arange(200) / 5.0)
>>> x[150] += 10.0
>>> out = m.score_batch({"slot": np.zeros(200, np.int64), "value": x})
>>> bool(out["flag"][150]), bool(out["flag"][:50].any())
(True, False)
"""

from __future__ import annotations

import numpy as np

from ..kernels import anomaly as K
from .base import Model


class AnomalyDetector(Model):
    """Per-series anomaly score in [0, 1] and a flag (``score >= threshold``).

    ``alpha``: EW level weight of the forecaster; ``season`` (rows, 0 = none) and
    ``season_weight``: the seasonal-naive part of the forecast; ``mad_beta``: EW weight of
    the residual-scale (MAD) estimate; ``clip``: scale units an update may move it;
    ``window``: rows of the windowed robust z-test; ``grace_period``: rows scored 0 first;
    ``z0``: the z mapped to 0.5; ``long_alpha``/``short_alpha``: EW weights of the surprise
    run statistic; ``likelihood_weight``: weight of the anomaly likelihood in the score,
    ``likelihood_scale``: -log10 tail mapped to 0.5, ``sd_floor``: least sd of the raw
    surprise; ``raw_weight``: weight of the raw surprise in the score;
    ``holdoff``: rows silenced after a flag; ``sr_window`` (0 = off, else a power of two
    >= 16): window of the spectral-residual detector, ``sr_z0``: its saliency ratio mapped
    to 0.5, ``sr_likelihood_weight``/``sr_raw_weight``: weights of its likelihood and raw
    surprise in the score. Slots grow as needed; unset
    parameters take ``DEFAULTS``."""

    DEFAULTS = dict(alpha=0.5, season=288, season_weight=0.0, mad_beta=0.01, clip=2.0,
                    window=128, grace_period=300, z0=6.0, long_alpha=0.005, short_alpha=0.3,
                    likelihood_weight=1.0, likelihood_scale=5.0, threshold=0.33, holdoff=150,
                    scale_floor=0.1, sd_floor=0.01, raw_weight=0.345,
                    sr_window=64, sr_z0=6.0, sr_likelihood_weight=0.95, sr_raw_weight=0.0)

    def __init__(self, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown parameters {sorted(unknown)}; "
                            f"known: {sorted(self.DEFAULTS)}")
        self._params = dict(params)  # exactly as given
        p = {**self.DEFAULTS, **params}
        alpha, season, season_weight = p["alpha"], p["season"], p["season_weight"]
        mad_beta, clip, window = p["mad_beta"], p["clip"], p["window"]
        grace_period, z0, long_alpha = p["grace_period"], p["z0"], p["long_alpha"]
        short_alpha, threshold, holdoff = p["short_alpha"], p["threshold"], p["holdoff"]
        likelihood_weight, scale_floor = p["likelihood_weight"], p["scale_floor"]
        likelihood_scale = p["likelihood_scale"]
        cfg = np.zeros(K.N_CFG)
        cfg[K.C_ALPHA], cfg[K.C_SEASON], cfg[K.C_SEAS_W] = alpha, season, season_weight
        cfg[K.C_MAD_BETA], cfg[K.C_CLIP], cfg[K.C_WINDOW] = mad_beta, clip, window
        cfg[K.C_GRACE], cfg[K.C_Z0], cfg[K.C_LONG] = grace_period, z0, long_alpha
        cfg[K.C_SHORT], cfg[K.C_THRESHOLD] = short_alpha, threshold
        cfg[K.C_HOLDOFF], cfg[K.C_LIK_W] = holdoff, likelihood_weight
        cfg[K.C_FLOOR], cfg[K.C_L0] = scale_floor, likelihood_scale
        cfg[K.C_SD_FLOOR], cfg[K.C_SQ_W] = p["sd_floor"], p["raw_weight"]
        sr_window = int(p["sr_window"])
        if sr_window and (sr_window < 16 or sr_window & (sr_window - 1)):
            raise ValueError("sr_window must be 0 or a power of two >= 16")
        cfg[K.C_SR_W], cfg[K.C_SR_Z0] = sr_window, p["sr_z0"]
        cfg[K.C_SR_LIK_W], cfg[K.C_SR_SQ_W] = p["sr_likelihood_weight"], p["sr_raw_weight"]
        self._cfg = cfg
        self._ring_len = max(int(window), int(season), sr_window, 1) + 1
        self._st = np.zeros((0, K.N_COLS))
        self._n = np.zeros(0, np.int64)
        self._ring = np.zeros((0, self._ring_len))
        self._last_score = np.zeros(0)
        self._last_flag = np.zeros(0, bool)
        self.skipped = 0

    def params(self) -> dict:
        return dict(self._params)

    def _grow(self, need: int) -> None:
        have = self._n.shape[0]
        if need <= have:
            return
        cap = max(need, 2 * have, 8)
        extra = cap - have
        self._st = np.concatenate([self._st, np.zeros((extra, K.N_COLS))])
        self._n = np.concatenate([self._n, np.zeros(extra, np.int64)])
        self._ring = np.concatenate([self._ring, np.zeros((extra, self._ring_len))])
        self._last_score = np.concatenate([self._last_score, np.zeros(extra)])
        self._last_flag = np.concatenate([self._last_flag, np.zeros(extra, bool)])

    def score_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Learn the rows (in time order) and return each row's score and flag, computed
        from that row and the ones before it only. Non-finite values are skipped (score 0,
        counted in ``skipped``); negative slots raise ValueError."""
        slot = np.ascontiguousarray(batch["slot"], dtype=np.int64)
        value = np.ascontiguousarray(batch["value"], dtype=np.float64)
        if slot.shape != value.shape:
            raise ValueError("slot and value must have the same length")
        score = np.zeros(slot.shape[0])
        flag = np.zeros(slot.shape[0], bool)
        if slot.shape[0] == 0:
            return {"score": score, "flag": flag}
        if slot.min() < 0:
            raise ValueError("slots must be >= 0")
        self._grow(int(slot.max()) + 1)
        self.skipped += K.score_rows(slot, value, self._st, self._n, self._ring, self._cfg,
                                     score, flag)
        ok = np.isfinite(value)
        self._last_score[slot[ok]] = score[ok]  # fancy assignment: the last row wins
        self._last_flag[slot[ok]] = flag[ok]
        return {"score": score, "flag": flag}

    def learn(self, batch: dict[str, np.ndarray]) -> None:
        self.score_batch(batch)

    def predict(self, query: dict) -> dict[str, np.ndarray]:
        """Score and flag of the latest observation of each slot (0 / False if none)."""
        slots = np.asarray(query["slots"], dtype=np.int64)
        known = (slots >= 0) & (slots < self._n.shape[0])
        score = np.zeros(slots.shape[0])
        flag = np.zeros(slots.shape[0], bool)
        score[known] = self._last_score[slots[known]]
        flag[known] = self._last_flag[slots[known]]
        return {"score": score, "flag": flag}

    def state(self) -> dict[str, np.ndarray]:
        return {"st": self._st.copy(), "n": self._n.copy(), "ring": self._ring.copy(),
                "last_score": self._last_score.copy(), "last_flag": self._last_flag.copy(),
                "skipped": np.array(self.skipped, np.int64)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        ring = np.asarray(state["ring"], np.float64)
        if ring.ndim != 2 or ring.shape[1] != self._ring_len:
            raise ValueError("state was made with other window/season parameters")
        self._st = np.array(state["st"], np.float64)
        self._n = np.array(state["n"], np.int64)
        self._ring = ring.copy()
        self._last_score = np.array(state["last_score"], np.float64)
        self._last_flag = np.array(state["last_flag"], bool)
        self.skipped = int(state["skipped"])

    @classmethod
    def check_cases(cls):
        rng = np.random.default_rng(7)
        n = 120
        slot = np.tile(np.arange(3, dtype=np.int64), n)
        value = rng.normal(10.0, 1.0, slot.shape[0])
        value[-3:] += 25.0  # each series ends on a spike, so learning changes the answer
        batch = {"slot": slot, "value": value}
        query = {"slots": np.arange(4, dtype=np.int64)}
        return [
            (dict(grace_period=10, window=16, season=0), batch, query),
            (dict(grace_period=20, window=8, season=24, season_weight=0.5,
                  likelihood_weight=0.0, holdoff=5), batch, query),
        ]
