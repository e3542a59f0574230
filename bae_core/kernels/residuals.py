"""Empirical forecast-error quantiles per service (split-conformal style).

Each service keeps an exponentially decayed histogram of how far each closed bucket's
rate came out above the forecast made for it (and one of the rate itself: a forecast of
zero). Errors are binned as requests per bucket (rate x ``unit``, the bucket width): at
or below zero share bin 0; above zero, bins are ``BINS_PER_OCTAVE`` per octave of
``1 + error``, so one histogram spans 0.04 to 16M requests per bucket at about 4 %
resolution. A quantile reads the upper edge of its bin, so it errs towards more capacity.
"""

import math

import numpy as np
from numba import njit

from . import JIT

BINS_PER_OCTAVE = 16
ERR_BINS = 1 + 24 * BINS_PER_OCTAVE


@njit(**JIT)
def _bin(e):
    if not e > 0.0:
        return 0
    return min(ERR_BINS - 1, 1 + int(math.floor(BINS_PER_OCTAVE * math.log2(1.0 + e))))


@njit(**JIT)
def _upper(b):
    return 0.0 if b == 0 else 2.0 ** (b / BINS_PER_OCTAVE) - 1.0


@njit(**JIT)
def learn(slots, values, forecast, hist, decay, unit):
    """One closed bucket per entry: error ``values[i] - forecast[slots[i]]`` into the
    service's histogram after decaying it by ``decay``. A NaN or negative forecast (none
    made yet) is skipped."""
    for i in range(slots.shape[0]):
        s = slots[i]
        f = forecast[s]
        if not f >= 0.0:
            continue
        v = values[i]
        if not math.isfinite(v):
            continue
        row = hist[s]
        for b in range(row.shape[0]):
            row[b] *= decay
        row[_bin((v - f) * unit)] += 1.0


@njit(**JIT)
def quantiles(hist, n, qs, min_weight, unit, out):
    """``out[s, j]``: the ``qs[j]`` quantile (ascending ``qs``) of service ``s``'s errors
    (as a rate), at least zero; NaN while the histogram's decayed count is under ``min_weight``."""
    for s in range(n):
        row = hist[s]
        tot = 0.0
        for b in range(row.shape[0]):
            tot += row[b]
        if tot < min_weight or tot <= 0.0:
            for j in range(qs.shape[0]):
                out[s, j] = np.nan
            continue
        acc = 0.0
        j = 0
        for b in range(row.shape[0]):
            acc += row[b]
            while j < qs.shape[0] and acc >= qs[j] * tot:
                out[s, j] = _upper(b) / unit
                j += 1
            if j == qs.shape[0]:
                break
        while j < qs.shape[0]:
            out[s, j] = _upper(row.shape[0] - 1) / unit
            j += 1
