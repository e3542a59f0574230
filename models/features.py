"""Window features of the LSTM forecaster: the one place training and serving build them.

A caller hands ``history``, float[n, L] raw values of n series at 5-minute steps, oldest
first, ending at the last observed value (L >= WINDOW; NaN marks "not observed", as
``RingBuffer.window_into`` left-pads), and ``steps``, int64[n], the step index of that
last value (``unix_seconds // 300`` for wall-clock calendar phases, or the position in the
series). The model sees the last ``WINDOW`` steps; longer histories add seasonal lags:
L >= 320 gives the day lags, L >= 596 the two-day lag, L >= HISTORY (2,048) the week lags.

Normalisation, per row: ``mu`` = mean of the window, ``scale`` = sqrt(std^2 +
(0.05 mean|window|)^2) (1 when that is 0); every value feature is ``(v - mu) / scale``
clipped to +-CLIP. Outputs come back in that unit; ``denormalise`` maps them to raw values
(clipped at 0: loads are not negative).
"""

from __future__ import annotations

import numpy as np

WINDOW = 32
HORIZON = 12
STEP_S = 300
DAY = 288
WEEK = 7 * DAY
QUANTILES = (0.5, 0.9, 0.99)
CLIP = 10.0
REL_FLOOR = 0.05

# value lags: feature name -> (lag, shift): at window step t, the value at t + shift - lag
# (shift HORIZON puts the last HORIZON window steps over the days before the forecast steps)
LAGS = {"day": (DAY, 0), "day_h": (DAY, HORIZON), "day2_h": (2 * DAY, HORIZON),
        "week": (WEEK, 0), "week_h": (WEEK, HORIZON)}
FEATURES = ("z", "dz", "day", "day_h", "day2_h", "week", "week_h", "has_day", "has_week",
            "z_minus_day", "day_sin", "day_cos", "week_sin", "week_cos", "pos", "cv")
N_FEATURES = len(FEATURES)
HISTORY = WINDOW + WEEK  # longest history any feature reads
NORMALISATION = ("per-window: mu=mean(window), scale=sqrt(std^2+(0.05*mean|window|)^2) "
                 "or 1 if 0; features (v-mu)/scale clipped to +-10; "
                 "outputs raw = max(0, mu + scale*q)")
_F = {name: i for i, name in enumerate(FEATURES)}


def _fill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along rows; leading NaN take the first finite value; all-NaN rows
    become 0. Returns a new float64 array."""
    ok = np.isfinite(a)
    if ok.all():
        return a.astype(np.float64)
    w = a.shape[1]
    idx = np.where(ok, np.arange(w), -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    first = ok.argmax(1)
    idx = np.where(idx < 0, first[:, None], idx)
    out = np.take_along_axis(a, idx, 1).astype(np.float64)
    out[~ok.any(1)] = 0.0
    return out


_LAG_NAMES = tuple(LAGS)
# first column of the window, then of each lag's block, relative to the history length
_STARTS = np.array([-WINDOW] + [-WINDOW - lag + shift for lag, shift in LAGS.values()])
_POS = np.arange(WINDOW) / (WINDOW - 1)


def _phase(steps: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """sin, cos float64[n, WINDOW] of the phase of each window step in ``period``, by angle
    addition (n trig calls per function, not n * WINDOW)."""
    w = 2 * np.pi / period
    a = w * ((steps - (WINDOW - 1)) % period)[:, None]
    b = w * np.arange(WINDOW)
    sa, ca, sb, cb = np.sin(a), np.cos(a), np.sin(b), np.cos(b)
    return sa * cb + ca * sb, ca * cb - sa * sb


def build_features(history: np.ndarray, steps, out: np.ndarray | None = None):
    """Model input of ``history`` (see module doc). Returns (x float32[n, WINDOW,
    N_FEATURES], mu float64[n], scale float64[n]); ``x`` is written into ``out`` when
    given (a float32 array of at least that shape, e.g. a preallocated buffer's rows)."""
    history = np.asarray(history)
    if history.ndim != 2 or history.shape[1] < WINDOW:
        raise ValueError(f"history must be 2-D with at least {WINDOW} columns (steps), "
                         f"got shape {history.shape}")
    n, L = history.shape
    steps = np.broadcast_to(np.asarray(steps, np.int64), (n,))
    g = np.empty((n, 1 + len(LAGS), WINDOW))  # the window, then each lag: column slices
    for k, a in enumerate(L + _STARTS):
        if a >= 0:
            g[:, k] = history[:, a:a + WINDOW]
        else:
            g[:, k, :-a] = np.nan
            g[:, k, -a:] = history[:, :max(0, a + WINDOW)]
    win = _fill(g[:, 0])
    mu = win.mean(1)
    sd = win.std(1)
    scale = np.sqrt(sd * sd + (REL_FLOOR * np.abs(win).mean(1)) ** 2)
    scale[scale == 0] = 1.0
    g[:, 0] = win
    g -= mu[:, None, None]
    g *= (1.0 / scale)[:, None, None]
    z, lags = g[:, 0], g[:, 1:]
    miss = np.isnan(lags)
    np.copyto(lags, np.broadcast_to(z[:, None], lags.shape), where=miss)  # persistence
    f = np.empty((n, N_FEATURES, WINDOW), np.float32)  # feature-major: contiguous writes
    f[:, _F["z"]] = z
    f[:, _F["dz"], 0] = 0.0
    f[:, _F["dz"], 1:] = np.diff(z, axis=1)
    f[:, _F["day"]:_F["day"] + len(LAGS)] = lags
    f[:, _F["has_day"]] = ~miss[:, _LAG_NAMES.index("day")]
    f[:, _F["has_week"]] = ~miss[:, _LAG_NAMES.index("week")]
    f[:, _F["z_minus_day"]] = f[:, _F["z"]] - f[:, _F["day"]]
    f[:, _F["day_sin"]], f[:, _F["day_cos"]] = _phase(steps, DAY)
    f[:, _F["week_sin"]], f[:, _F["week_cos"]] = _phase(steps, WEEK)
    f[:, _F["pos"]] = _POS
    f[:, _F["cv"]] = (scale / (np.abs(mu) + 1e-12))[:, None]
    np.clip(f, -CLIP, CLIP, out=f)
    x = np.empty((n, WINDOW, N_FEATURES), np.float32) if out is None else out[:n]
    x[...] = f.transpose(0, 2, 1)
    return x, mu, scale


def denormalise(q: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Raw values of normalised model outputs q[n, ...]: max(0, mu + scale * q)."""
    sh = (-1,) + (1,) * (q.ndim - 1)
    return np.maximum(0.0, mu.reshape(sh) + scale.reshape(sh) * q)


def normalise_targets(future: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Training targets: future[n, HORIZON] raw values in the unit of the window."""
    return ((future - mu[:, None]) / scale[:, None]).astype(np.float32)
