"""Holt-Winters over many series at once, and a light per-user hourly rate tier.

Many-series Holt-Winters (``hw_update`` / ``hw_forecast``)
----------------------------------------------------------
State is columnar, indexed by series slot ``s`` and parameter set ``k`` (K sets run side
by side on every series):

    level[s, k], trend[s, k]      level and damped additive trend
    slow[s, 4]                    sum of the current cycle and mean of the last complete
                                  one, for p1 and for p2 (the seasonal baselines)
    s1[s, p1, k], s2[s, p2, k]    first (daily) and second (weekly) seasonal component,
                                  Taylor's double-seasonal form; a period of 0 disables a
                                  component (its array then has length 1 and is unused)
    n_obs[s]                      observations seen (the series' own time index)
    err[s, j, k]                  exponentially weighted absolute error hz[j] steps ahead,
                                  hz = (1, h2, h3) (1, min(12, p1), max(h2, p1 // 2) by
                                  default: half a season represents a season's steps
                                  better than the season itself, where every set's
                                  seasonal index was just refreshed)
    var[s, k]                     exponentially weighted one-step squared error
    r2[s, h2, k], r3[s, h3, k]    rings of the level part (l + (phi+..+phi^h) b) of the
                                  forecasts made h2 and h3 steps earlier, slot t % h

Seasonal modes: ``SEASON_ADD`` (y = l + d + w + e) and ``SEASON_MUL``
(y = l * d * w + e, additive error). Level and trend follow the error-correction form
(Hyndman et al. 2008, ETS(A,Ad,A) / ETS(A,Ad,M)), with e the one-step error:

    additive:  l' = l + phi*b + alpha*e;   b' = phi*b + alpha*beta*e
    multiplicative: r = e / (d*w): l' = l + phi*b + alpha*r;  b' = phi*b + alpha*beta*r

Each set estimates its seasonal indices against a baseline (``against[k]``): either
the means m1, m2 of the last complete cycle of p1 and of p2 values (per series; a
cycle's mean holds no seasonal swing), or, as classic ETS does, the level forecast
L = l + phi*b:

    slow, additive:   d += g1*((y - m1) - d);        w += g2*((y - m2 - d) - w)
    slow, multiplicative: d += g1*(y / m1 - d);      w += g2*(y / (m2*d) - w)
    level, additive:  d += g1*((y - L - w) - d);     w += g2*((y - L - d) - w)
    level, multiplicative: d += g1*(y / (L*w) - d);  w += g2*(y / (L*d) - w)

with g1 = max(gamma, 1 / (n_obs // p1 + 1)) and g2 likewise with p2 (times 1 - alpha
against the level: ETS's error-correction gain): each seasonal index is the running
mean of its visits until 1/visits falls below gamma, then EW. Against the level, a fast
level carries the slow part of the daily shape and the index keeps only the rest, which
a forecast hours ahead then misses; such sets win one step ahead.

Warm-up (``wc`` cycles of p1, classical decomposition): the daily index is the mean of
the raw values at its position, re-centred (mean 0, or 1) at the end, when the level
becomes the mean of the last cycle; until then forecasts are those position means and
quantiles are NaN. The weekly index starts neutral. One-step errors are
tracked from the end of the warm-up; the EW weight is ``max(lam, 1/m)`` after m errors so
the first errors are a plain mean.

Parameter choice is online and per forecast step: step j follows, per series, the set
with the lowest ``err`` at the tracked horizon nearest j (in log steps) that has been
scored; one-step error favours high alpha, half a season ahead low alpha. Quantiles are Gaussian around the point forecast: sigma_h^2 = var[s, best] *
(1 + sum_{j<h} c_j^2), c_j = alpha*(1 + beta*(phi + .. + phi^j)) + gamma*[j % p1 == 0]
+ gamma*[j % p2 == 0] (the h-step variance factor of ETS(A,Ad,A); used as an
approximation for the multiplicative mode too). ``z`` holds the standard normal scores
of the wanted quantiles (0, 1.2816, 2.3263 for p50, p90, p99); they are upper quantiles.

Per observation the update touches K*(3 + 3 + 2 + 2) numbers (level, trend, var, 3 errors,
two seasonal indices, two ring slots), each run of K contiguous, and allocates nothing.

Light per-user tier (``user_rate_*``)
------------------------------------
Per user, one 128-byte float32 row (``R_*`` columns): request-count level (mean count
per hour) and trend, the hour being counted (hours since the epoch) and its count, closed
hours, the last surge hour and surge count, and a 24-slot hour-of-day profile (mean
about 1). An hour closes when an event of a later hour arrives (or ``user_rate_close``
is called with the clock); empty hours in between close as zero. Events for an hour
already closed are dropped and counted.
"""

import numpy as np
from numba import njit

from . import JIT
from .prefetch import AHEAD, prefetch_row

SEASON_NONE = 0
SEASON_ADD = 1
SEASON_MUL = 2
AGAINST_SLOW = 0  # seasonal indices estimated against the slow mean
AGAINST_LEVEL = 1  # ... against the level (classic ETS)

_TINY = 1e-12


@njit(**JIT)
def _warm(p1, wc):
    """Index at which one-step errors start counting."""
    return wc * p1 if p1 > 0 else 1


@njit(**JIT)
def _cycle_mean(s, t, y, p, slow, c):
    """The mean of the last complete cycle of p values before y (the mean so far during
    the first cycle), then count y in the current cycle: ``slow[s, c]`` holds the
    current cycle's sum, ``slow[s, c + 1]`` the last complete cycle's mean."""
    if p <= 0:
        return 0.0
    pos = t % p
    if pos == 0 and t > 0:
        slow[s, c + 1] = slow[s, c] / p
        slow[s, c] = 0.0
    if t >= p:
        m = slow[s, c + 1]
    elif pos > 0:
        m = slow[s, c] / pos
    else:
        m = y
    slow[s, c] += y
    return m


@njit(**JIT)
def hw_update(slots, values, mode, p1, p2, wc, alpha, beta, gamma, phi, against, lam, hz,
              psum, level, trend, s1, s2, slow, n_obs, err, var, r2, r3):
    """Feed one observation per row (``slots[i]``, ``values[i]``), rows in time order.
    ``hz`` = (1, h2, h3) are the tracked horizons (h2, h3 <= p1 when p1 > 0) and
    ``psum[j, k]`` = phi_k + .. + phi_k^hz[j]. Returns the number of rows skipped
    (non-finite value or slot out of range)."""
    n = level.shape[0]
    K = level.shape[1]
    h2 = hz[1]
    h3 = hz[2]
    W = _warm(p1, wc)
    skipped = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        y = values[i]
        if s < 0 or s >= n or not np.isfinite(y):
            skipped += 1
            continue
        t = n_obs[s]
        if t == 0:
            for k in range(K):
                level[s, k] = y
                trend[s, k] = 0.0
            for j in range(s1.shape[1]):
                for k in range(K):
                    s1[s, j, k] = 0.0
            for j in range(s2.shape[1]):
                for k in range(K):
                    s2[s, j, k] = 0.0 if mode != SEASON_MUL else 1.0
        sm1 = _cycle_mean(s, t, y, p1, slow, 0)
        sm2 = _cycle_mean(s, t, y, p2, slow, 2)
        if p1 > 0 and t < W:
            # warm-up (classical decomposition): s1 = mean of the raw values at each
            # position, level = mean so far, trend = mean of the current cycle
            c = t // p1
            pos = t - c * p1
            for k in range(K):
                s1[s, pos, k] += (y - s1[s, pos, k]) / (c + 1)
                level[s, k] += (y - level[s, k]) / (t + 1)
                trend[s, k] += (y - trend[s, k]) / (pos + 1)
            if t == W - 1:
                for k in range(K):
                    m = 0.0
                    for j in range(p1):
                        m += s1[s, j, k]
                    m /= p1
                    level[s, k] = trend[s, k]
                    trend[s, k] = 0.0
                    for j in range(p1):
                        if mode == SEASON_MUL:
                            s1[s, j, k] = s1[s, j, k] / m if abs(m) > _TINY else 1.0
                        else:
                            s1[s, j, k] -= m
            n_obs[s] = t + 1
            continue
        if t == 0:
            n_obs[s] = 1
            continue
        # one integer division per period (t >= 0): visits so far and position
        i1 = 0
        g1 = 0.0
        if p1 > 0:
            q1 = t // p1
            i1 = t - q1 * p1
            # each seasonal index is a running mean of its visits until 1/visits < gamma
            g1 = 1.0 / (q1 + 1)
        i2 = 0
        gw = 0.0
        if p2 > 0:
            q2 = t // p2
            i2 = t - q2 * p2
            gw = 1.0 / (q2 + 1)
        j2 = t % h2
        j3 = i1 if h3 == p1 else t % h3
        m_err = t - W + 1
        w = lam
        if m_err * lam < 1.0:
            w = 1.0 / m_err
        # h-step errors count once the forecast made h steps earlier exists
        m2 = m_err - h2
        w2 = lam
        if m2 * lam < 1.0:
            w2 = 1.0 / m2 if m2 > 0 else 0.0
        m3 = m_err - h3
        w3 = lam
        if m3 * lam < 1.0:
            w3 = 1.0 / m3 if m3 > 0 else 0.0
        for k in range(K):
            l = level[s, k]
            b = trend[s, k]
            ph = phi[k]
            a = alpha[k]
            g = gamma[k]
            ga = g if g > g1 else g1
            g2 = g if g > gw else gw
            if against[k] == AGAINST_LEVEL:  # ETS error-correction gain
                ga *= 1.0 - a
                g2 *= 1.0 - a
            base = l + ph * b
            if mode == SEASON_MUL:
                d = s1[s, i1, k] if p1 > 0 else 1.0
                wk = s2[s, i2, k] if p2 > 0 else 1.0
                dw = d * wk
                e = y - base * dw
                e2 = y - r2[s, j2, k] * dw
                e3 = y - r3[s, j3, k] * dw
                r = e / dw if abs(dw) > _TINY else 0.0
                ln = base + a * r
                bn = ph * b + a * beta[k] * r
                if against[k] == AGAINST_LEVEL:
                    den1 = base * wk
                    den2 = base * d
                else:  # the day's mean holds the weekly effect; the week's does not
                    den1 = sm1
                    den2 = sm2 * d
                if p1 > 0 and abs(den1) > _TINY:
                    s1[s, i1, k] = d + ga * (y / den1 - d)
                if p2 > 0 and abs(den2) > _TINY:
                    s2[s, i2, k] = wk + g2 * (y / den2 - wk)
            else:
                d = s1[s, i1, k] if p1 > 0 else 0.0
                wk = s2[s, i2, k] if p2 > 0 else 0.0
                e = y - base - d - wk
                e2 = y - r2[s, j2, k] - d - wk
                e3 = y - r3[s, j3, k] - d - wk
                ln = base + a * e
                bn = ph * b + a * beta[k] * e
                if against[k] == AGAINST_LEVEL:
                    x1 = y - base - wk
                    x2 = y - base - d
                else:  # the day's mean holds the weekly effect; the week's does not
                    x1 = y - sm1
                    x2 = y - sm2 - d
                if p1 > 0:
                    s1[s, i1, k] = d + ga * (x1 - d)
                if p2 > 0:
                    s2[s, i2, k] = wk + g2 * (x2 - wk)
            level[s, k] = ln
            trend[s, k] = bn
            # the level part of the forecasts h2 and h3 steps ahead; their seasonal
            # indices are not touched before then (h <= p1 <= p2)
            r2[s, j2, k] = ln + psum[1, k] * bn
            r3[s, j3, k] = ln + psum[2, k] * bn
            err[s, 0, k] += w * (abs(e) - err[s, 0, k])
            err[s, 1, k] += w2 * (abs(e2) - err[s, 1, k])
            err[s, 2, k] += w3 * (abs(e3) - err[s, 2, k])
            var[s, k] += w * (e * e - var[s, k])
        n_obs[s] = t + 1
    return skipped


@njit(**JIT)
def hw_best(s, err, j):
    K = err.shape[2]
    best = 0
    for k in range(1, K):
        if err[s, j, k] < err[s, j, best]:
            best = k
    return best


@njit(**JIT)
def hw_horizon(h, hz, t, W):
    """The tracked horizon nearest (in log steps) to ``h`` that has errors at step t."""
    best = 0
    dist = 1e300
    for j in range(hz.shape[0]):
        if t - W - hz[j] < 1 and j > 0:
            continue
        dd = abs(np.log(h / hz[j]))
        if dd < dist:
            dist = dd
            best = j
    return best


@njit(**JIT)
def hw_weights(s, err, j, power, out):
    """Weights of the K sets for tracked horizon j: err^-power, normalised (the set with
    the lowest error gets the most). All equal before any error is scored."""
    K = err.shape[2]
    tot = 0.0
    for k in range(K):
        e = err[s, j, k]
        out[k] = 1.0 / (e + _TINY) ** power if e > 0.0 else 1.0
        tot += out[k]
    for k in range(K):
        out[k] /= tot


@njit(**JIT)
def hw_forecast(slots, h, mode, p1, p2, wc, alpha, beta, gamma, phi, hz, power,
                level, trend, s1, s2, n_obs, err, var, z, mean_out, q_out, best_out):
    """h-step forecasts of the series ``slots``. Step j is the mean of the K sets'
    forecasts weighted by ``hw_weights`` (with ``power[jh]``) at the tracked horizon jh
    nearest j (in log steps) that has been scored; its variance is the weighted mean of theirs.
    ``mean_out[i, j]`` is the mean j+1 steps ahead, ``q_out[i, q, j]`` the quantile with
    normal score ``z[q]``, ``best_out[i]`` the heaviest set at the last step. Series never
    seen get NaN and best -1. Nothing in the state changes."""
    n = level.shape[0]
    K = level.shape[1]
    nz = z.shape[0]
    W = _warm(p1, wc)
    nh = hz.shape[0]
    wts = np.empty((nh, K))
    psum = np.empty(K)
    pw = np.empty(K)
    cum = np.empty(K)  # per set: sum of c_j^2 for j < step
    for i in range(slots.shape[0]):
        s = slots[i]
        if s < 0 or s >= n or n_obs[s] == 0:
            best_out[i] = -1
            for j in range(h):
                mean_out[i, j] = np.nan
                for q in range(nz):
                    q_out[i, q, j] = np.nan
            continue
        t = n_obs[s]
        for jh in range(nh):
            hw_weights(s, err, hw_horizon(hz[jh], hz, t, W), power[jh], wts[jh])
        for k in range(K):
            psum[k] = 0.0
            pw[k] = 1.0
            cum[k] = 0.0
        jh = 0
        for j in range(h):
            step = j + 1
            jh = hw_horizon(step, hz, t, W)
            tt = t + j
            if p1 > 0 and t < W:
                # warm-up: the mean of the position's raw values, or the mean so far
                f = s1[s, tt % p1, 0] if (t >= p1 or tt % p1 < t) else level[s, 0]
                mean_out[i, j] = f
                for q in range(nz):
                    q_out[i, q, j] = np.nan
                continue
            f = 0.0
            v = 0.0
            for k in range(K):
                pw[k] *= phi[k]
                psum[k] += pw[k]
                base = level[s, k] + psum[k] * trend[s, k]
                if mode == SEASON_MUL:
                    d = s1[s, tt % p1, k] if p1 > 0 else 1.0
                    wk = s2[s, tt % p2, k] if p2 > 0 else 1.0
                    fk = base * d * wk
                else:
                    d = s1[s, tt % p1, k] if p1 > 0 else 0.0
                    wk = s2[s, tt % p2, k] if p2 > 0 else 0.0
                    fk = base + d + wk
                w = wts[jh, k]
                f += w * fk
                v += w * var[s, k] * (1.0 + cum[k])
                # c_step for the next horizon: alpha*(1 + beta*(phi+..+phi^step)) + seasonal
                c = alpha[k] * (1.0 + beta[k] * psum[k])
                if p1 > 0 and step % p1 == 0:
                    c += gamma[k]
                if p2 > 0 and step % p2 == 0:
                    c += gamma[k]
                cum[k] += c * c
            mean_out[i, j] = f
            sd = np.sqrt(v)
            for q in range(nz):
                q_out[i, q, j] = f + z[q] * sd
        best = 0
        for k in range(K):
            if wts[jh, k] > wts[jh, best]:
                best = k
        best_out[i] = best


# ---------------------------------------------------------------------------------------
# Light per-user tier: hourly request counts, level + damped trend + hour-of-day profile
# ---------------------------------------------------------------------------------------

HOUR_US = 3_600_000_000
MAX_GAP_HOURS = 24 * 14  # longer silences close as this many empty hours

# Columns of a user's row in the float32 ``rate`` matrix (one 128-byte row per user: the
# fields an event touches share a cache line). Hours (since the epoch) and counts are
# exact in float32 up to 2**24.
R_LEVEL, R_TREND, R_HOUR, R_COUNT, R_CLOSED, R_SURGE_HOUR, R_SURGES = range(7)
R_PROFILE = 8  # 24 hour-of-day factors, mean about 1
R_WIDTH = R_PROFILE + 24
RATE_FILL = np.array([0, 0, -1, 0, 0, -1, 0, 0] + [1] * 24, np.float32)


@njit(**JIT)
def _user_close_hour(u, c, hod, rate, alpha, beta, gamma, phi, first):
    p = rate[u, R_PROFILE + hod]
    if first:
        rate[u, R_LEVEL] = c
        rate[u, R_TREND] = 0.0
        return
    # additive error against the profiled level: over a day the corrections sum to
    # alpha * (day's count - 24 * level), so the level is the mean count per hour
    prev = rate[u, R_LEVEL]
    b = rate[u, R_TREND]
    base = prev + phi * b
    lv = base + alpha * (c - base * p)
    if lv < 0.0:
        lv = 0.0
    rate[u, R_LEVEL] = lv
    rate[u, R_TREND] = beta * (lv - prev) + (1.0 - beta) * phi * b
    if lv > 1e-6:
        np_ = p + gamma * (c / lv - p)
        rate[u, R_PROFILE + hod] = np_ if np_ < 24.0 else 24.0


@njit(**JIT)
def _user_advance(u, hour, rate, alpha, beta, gamma, phi):
    """Close user u's hours from the one being counted to hour-1; start counting ``hour``."""
    lh = np.int64(rate[u, R_HOUR])
    gap = hour - lh
    first = rate[u, R_CLOSED] == 0.0
    _user_close_hour(u, rate[u, R_COUNT], lh % 24, rate, alpha, beta, gamma, phi, first)
    rate[u, R_CLOSED] += 1.0
    if gap > MAX_GAP_HOURS:
        gap = MAX_GAP_HOURS
    for j in range(1, gap):
        _user_close_hour(u, 0.0, (lh + j) % 24, rate, alpha, beta, gamma, phi, False)
    rate[u, R_HOUR] = hour
    rate[u, R_COUNT] = 0.0


@njit(**JIT)
def user_rate_update(slots, ts_us, rate, alpha, beta, gamma, phi, k_sigma, min_count,
                     new_count, min_hours):
    """Count one request per event into its user's current hour, closing finished hours.
    A user not seen yet has ``rate[u, R_HOUR] < 0``.

    Surge check (streaming, from the counts so far): a user whose count in the current
    hour passes ``max(min_count, f + k_sigma * sqrt(f + 1))``, f the hour's forecast from
    their own profile, is flagged once for that hour (``R_SURGE_HOUR``, ``R_SURGES``);
    a user with fewer than ``min_hours`` closed hours has no profile yet and is flagged
    past ``new_count``. Returns (events dropped as late, users newly flagged)."""
    dropped = 0
    flagged = 0
    n = slots.shape[0]
    for i in range(n):
        if i + AHEAD < n:
            prefetch_row(rate, slots[i + AHEAD])
        u = slots[i]
        hour = ts_us[i] // HOUR_US
        lh = rate[u, R_HOUR]
        if lh < 0.0:
            rate[u, R_HOUR] = hour
            rate[u, R_COUNT] = 1.0
            continue
        if hour < lh:
            dropped += 1
            continue
        if hour > lh:
            _user_advance(u, hour, rate, alpha, beta, gamma, phi)
        c = rate[u, R_COUNT] + 1.0
        rate[u, R_COUNT] = c
        if c >= min_count and rate[u, R_SURGE_HOUR] != hour:
            if rate[u, R_CLOSED] >= min_hours:
                f = (rate[u, R_LEVEL] + phi * rate[u, R_TREND]) * rate[u, R_PROFILE + hour % 24]
                if f < 0.0:
                    f = 0.0
                thr = f + k_sigma * np.sqrt(f + 1.0)
                if thr < min_count:
                    thr = min_count
            else:
                thr = new_count
            if c >= thr:
                rate[u, R_SURGE_HOUR] = hour
                rate[u, R_SURGES] += 1.0
                flagged += 1
    return dropped, flagged


@njit(**JIT)
def user_rate_close(now_us, rate, alpha, beta, gamma, phi):
    """Close, for every user, the hours that ended before ``now_us``."""
    hour = now_us // HOUR_US
    for u in range(rate.shape[0]):
        lh = rate[u, R_HOUR]
        if lh >= 0.0 and lh < hour:
            _user_advance(u, hour, rate, alpha, beta, gamma, phi)


@njit(**JIT)
def user_rate_forecast(slots, now_us, rate, phi, out):
    """Expected requests of each user in the hours now, now+1, .. (``out.shape[1]`` of
    them). The hour being counted never forecasts below what it already holds; a user not
    seen yet gets 0; one without a closed hour yet repeats its current count."""
    h = out.shape[1]
    hour = now_us // HOUR_US
    for i in range(slots.shape[0]):
        u = slots[i]
        for j in range(h):
            out[i, j] = 0.0
        if rate[u, R_HOUR] < 0.0:
            continue
        lh = np.int64(rate[u, R_HOUR])
        cnt = rate[u, R_COUNT]
        if rate[u, R_CLOSED] == 0.0:
            for j in range(h):
                if hour + j >= lh:
                    out[i, j] = cnt
            continue
        # the state is as of hour lh - 1; target hour H is H - lh + 1 steps ahead
        for j in range(h):
            target = hour + j
            steps = target - lh + 1
            if steps < 1:
                steps = 1
            psum = 0.0
            pw = 1.0
            for _ in range(steps):
                pw *= phi
                psum += pw
            f = (rate[u, R_LEVEL] + psum * rate[u, R_TREND]) * rate[u, R_PROFILE + target % 24]
            if f < 0.0:
                f = 0.0
            if target == lh and f < cnt:
                f = cnt
            out[i, j] = f


def user_rate_state(n_users):
    """Fresh light-tier state for ``n_users`` users: a (n, R_WIDTH) float32 matrix."""
    return np.tile(RATE_FILL, (n_users, 1))
