"""Online ARIMA by Online Newton Step (ARIMA-ONS: Anava et al. 2013; Liu et al. 2016).

An ARIMA(p, d, q) series is predicted through an AR(m) model, m = p + q lags, plus an
intercept (so a mean or a drift needs no lag to carry it), of its d-times differenced
values; the coefficients follow the Online Newton Step on the squared
one-step error, with the inverse Hessian kept by Sherman-Morrison updates (O(m^2) per
observation, no matrix inversion). Differences are divided by their running mean size per
series so one learning rate suits series of any magnitude. Many series at once, state by slot.
"""

import numpy as np
from numba import njit

from . import JIT

# state layout per series s: gamma[s, :m+1], ainv[s, :m+1, :m+1] (last: the intercept),
# hist[s, :m + d] (latest last),
# n[s] observations, scale[s] running mean |d-th difference|, err[s] EW mean squared
# scaled error


@njit(**JIT)
def _diffs(hist, s, m, d, out):
    """The last m d-times-differenced values of series s (latest last) into out[:m]."""
    w = m + d
    tmp = np.empty(w)
    for i in range(w):
        tmp[i] = hist[s, i]
    for _ in range(d):
        for i in range(w - 1, 0, -1):
            tmp[i] = tmp[i] - tmp[i - 1]
    for i in range(m):
        out[i] = tmp[w - m + i]


@njit(**JIT)
def _integrate(hist, s, d, diff_pred, w):
    """Turn a predicted d-th difference into a predicted value: add back the last values
    of each lower-order difference (x_t = nabla^d x_t + sum_i nabla^i x_{t-1})."""
    tmp = np.empty(w)
    for i in range(w):
        tmp[i] = hist[s, i]
    pred = diff_pred
    last = np.empty(d)
    for k in range(d):
        last[k] = tmp[w - 1]
        for i in range(w - 1, 0, -1):
            tmp[i] = tmp[i] - tmp[i - 1]
    for k in range(d):
        pred += last[k]
    return pred


@njit(**JIT)
def _dlast(hist, s, d, w, v):
    """The d-th difference that ends at the new value v."""
    tmp = np.empty(d + 1)
    for i in range(d):
        tmp[i] = hist[s, w - d + i]
    tmp[d] = v
    for k in range(d):
        for i in range(d, k, -1):
            tmp[i] = tmp[i] - tmp[i - 1]
    return tmp[d]


@njit(**JIT)
def learn(slots, values, m, d, lr, eps, gamma, ainv, hist, n, scale, err):
    """One observation per row, rows in time order (series interleaved)."""
    w = m + d
    f = m + 1
    x = np.empty(m)
    g = np.empty(f)
    ag = np.empty(f)
    for r in range(slots.shape[0]):
        s = slots[r]
        v = values[r]
        if not np.isfinite(v):
            continue
        if n[s] == 0:
            scale[s] = 0.0
            for i in range(f):
                for j in range(f):
                    ainv[s, i, j] = (1.0 / eps) if i == j else 0.0
        if n[s] >= d:  # scale: running mean |d-th difference|, what the AR part sees
            dv = abs(_dlast(hist, s, d, w, v))
            scale[s] = dv if scale[s] == 0.0 else scale[s] + 0.01 * (dv - scale[s])
        sc = scale[s] if scale[s] > 1e-12 else 1.0
        if n[s] >= w:
            _diffs(hist, s, m, d, x)
            for i in range(m):
                x[i] /= sc
            pred = gamma[s, m]
            for i in range(m):
                pred += gamma[s, i] * x[m - 1 - i]
            target = _integrate(hist, s, d, pred * sc, w)
            e = (target - v) / sc
            if e > 10.0:
                e = 10.0
            elif e < -10.0:
                e = -10.0
            err[s] += 0.01 * (e * e - err[s])
            for i in range(m):
                g[i] = 2.0 * e * x[m - 1 - i]
            g[m] = 2.0 * e
            # Sherman-Morrison: A <- A + g g^T  =>  Ainv <- Ainv - Ainv g g^T Ainv / (1 + g^T Ainv g)
            den = 1.0
            for i in range(f):
                acc = 0.0
                for j in range(f):
                    acc += ainv[s, i, j] * g[j]
                ag[i] = acc
                den += g[i] * acc
            for i in range(f):
                for j in range(f):
                    ainv[s, i, j] -= ag[i] * ag[j] / den
            for i in range(f):
                acc = 0.0
                for j in range(f):
                    acc += ainv[s, i, j] * g[j]
                gamma[s, i] -= acc / lr
                if gamma[s, i] > 2.0:  # projection onto a box keeps the AR part stable
                    gamma[s, i] = 2.0
                elif gamma[s, i] < -2.0:
                    gamma[s, i] = -2.0
        for i in range(w - 1):
            hist[s, i] = hist[s, i + 1]
        hist[s, w - 1] = v
        n[s] += 1


@njit(**JIT)
def forecast(slots, h, m, d, gamma, hist, n, scale, out):
    """Recursive h-step forecasts of each slot into out[k, :h] (NaN before any data)."""
    w = m + d
    x = np.empty(m)
    for k in range(slots.shape[0]):
        s = slots[k]
        if n[s] == 0:
            for t in range(h):
                out[k, t] = np.nan
            continue
        if n[s] < w:  # not enough history for the model yet: last value
            for t in range(h):
                out[k, t] = hist[s, w - 1]
            continue
        buf = np.empty(w + h)
        for i in range(w):
            buf[i] = hist[s, i]
        for t in range(h):
            tmp = np.empty(w)
            for i in range(w):
                tmp[i] = buf[t + i]
            work = tmp.copy()
            for _ in range(d):
                for i in range(w - 1, 0, -1):
                    work[i] = work[i] - work[i - 1]
            sc = scale[s] if scale[s] > 1e-12 else 1.0
            for i in range(m):
                x[i] = work[w - m + i] / sc
            pred = gamma[s, m]
            for i in range(m):
                pred += gamma[s, i] * x[m - 1 - i]
            lastsum = 0.0
            work = tmp.copy()
            for _ in range(d):
                lastsum += work[w - 1]
                for i in range(w - 1, 0, -1):
                    work[i] = work[i] - work[i - 1]
            buf[w + t] = pred * sc + lastsum
            out[k, t] = buf[w + t]
