"""Streaming anomaly scores for many series at once, and per-user rate anomalies.

State is columnar by series slot: ``st[s, COL]`` (float64 scalars per slot, columns named
below), ``n[s]`` (observations seen) and ``ring[s, :]`` (the last ``ring.shape[1]`` values).
Each score uses only the observations up to and including the row scored, so feeding a
prefix gives the same scores as the whole series on that prefix.

Two detectors of different families, then one combined score:

(a) forecast residual: the forecast is a blend of an exponentially weighted level and the
    seasonal-naive value one season ago; the residual's scale is an exponentially weighted
    median absolute deviation (updates are clipped at ``CLIP`` scales, so a few outliers
    cannot inflate it): ``za = |x - f| / (1.4826 * mad)``.
(b) windowed robust z-test: median and MAD of the previous ``window`` values,
    ``zb = |x - median| / (1.4826 * MAD)`` (a level shift or spike against recent history).

(c) spectral residual (Ren et al. 2019): on the last ``sr_window - 5`` values plus 5
    extrapolated ones, the log amplitude spectrum minus its local (3-bin) average is
    inverted (radix-2 FFT) into a saliency map; ``zc = max(0, (S - mean) / mean)`` compares
    the latest value's saliency with the mean of the 21 before it. ``zc`` gets its own raw
    surprise ``zc^2 / (zc^2 + sr_z0^2)`` and anomaly likelihood (same machinery as below),
    joined to the score by max with weights ``sr_lik_w`` / ``sr_sq_w``.

Combined: ``z = max(za, zb)``, raw surprise ``q = z^2 / (z^2 + z0^2)`` in [0, 1). Its
"anomaly likelihood" (Numenta): the upper-tail probability of the short EW mean of ``q``
under a Gaussian fitted to the long EW mean/variance of ``q`` (sd floored at ``sd_floor``),
mapped to [0, 1) as ``ll / (ll + l0)`` with ``ll = -log10(tail)``; it normalises per series
and ignores surprise a series always has. Score = ``max(lik_w * lik, raw_w * q)`` (the raw
term lets a single huge spike through). During the grace period (``n <= grace``) the score
is 0 and the flag false. After a flag, scores stay 0 for ``holdoff`` rows (one alarm per
event). ``flag = score >= threshold``.

Parameters travel as one float64 array ``cfg`` indexed by the ``C_*`` constants (the
wrapper in ``bae_core.models.anomaly`` builds it).
"""

import math

import numpy as np
from numba import njit

from . import JIT

# state columns of st[s, :]
LEVEL, MAD, ZMEAN, ZVAR, ZSHORT, HOLD, ABSMEAN, SLOW, SPREAD, PEAK, SRMEAN, SRVAR, SRSHORT = range(13)
N_COLS = 13

# cfg indices
(C_ALPHA, C_SEASON, C_SEAS_W, C_MAD_BETA, C_CLIP, C_WINDOW, C_GRACE, C_Z0, C_LONG,
 C_SHORT, C_THRESHOLD, C_HOLDOFF, C_LIK_W, C_FLOOR, C_L0, C_SD_FLOOR, C_SQ_W,
 C_SR_W, C_SR_Z0, C_SR_LIK_W, C_SR_SQ_W) = range(21)
N_CFG = 21
SR_EXT = 5     # estimated future points appended to the spectral-residual window
SR_Q = 3       # width of the log-amplitude average filter
SR_Z = 21      # width of the saliency average the latest point is compared with

_SQRT2 = math.sqrt(2.0)


@njit(**JIT)
def _median(buf, m):
    tmp = np.sort(buf[:m])
    if m % 2 == 1:
        return tmp[m // 2]
    return 0.5 * (tmp[m // 2 - 1] + tmp[m // 2])


@njit(**JIT)
def _window_z(s, x, nn, ring, window, scratch, floor):
    """Robust z of x against the last ``window`` values of slot s (before x)."""
    r = ring.shape[1]
    m = min(window, nn)
    if m < 3:
        return 0.0
    for j in range(m):
        scratch[j] = ring[s, (nn - 1 - j) % r]
    med = _median(scratch, m)
    for j in range(m):
        scratch[j] = abs(scratch[j] - med)
    mad = _median(scratch, m)
    return abs(x - med) / (1.4826 * mad + floor)


@njit(**JIT)
def _fft(re, im, rev, cw, sw, inverse):
    """In-place radix-2 FFT of length n = re.shape[0] (a power of two); ``rev`` is the
    bit-reversal permutation, ``cw``/``sw`` the n/2 twiddles cos/sin(2 pi k / n)."""
    n = re.shape[0]
    for i in range(n):
        j = rev[i]
        if j > i:
            t = re[i]
            re[i] = re[j]
            re[j] = t
            t = im[i]
            im[i] = im[j]
            im[j] = t
    sgn = 1.0 if inverse else -1.0
    size = 2
    while size <= n:
        half = size // 2
        step = n // size
        for start in range(0, n, size):
            for k in range(half):
                c = cw[k * step]
                sn = sgn * sw[k * step]
                a = start + k
                b = a + half
                tr = re[b] * c - im[b] * sn
                ti = re[b] * sn + im[b] * c
                re[b] = re[a] - tr
                im[b] = im[a] - ti
                re[a] += tr
                im[a] += ti
        size *= 2


@njit(**JIT)
def _sr_score(s, nn, ring, nw, re, im, amp, lg, rev, cw, sw):
    """Spectral residual (Ren et al. 2019) saliency of the latest value of slot s (the one
    at ``nn - 1``), relative to the mean saliency of the ones before it: ``(S - mean) /
    mean``. The window is the last ``nw - SR_EXT`` values plus SR_EXT extrapolated ones."""
    r = ring.shape[1]
    m = nw - SR_EXT
    if nn < m:
        return 0.0
    for j in range(m):
        re[j] = ring[s, (nn - m + j) % r]
        im[j] = 0.0
    last = re[m - 1]
    g = 0.0
    for i in range(1, SR_EXT + 1):
        g += (last - re[m - 1 - i]) / i
    g /= SR_EXT
    est = re[m - SR_EXT] + g * SR_EXT
    for j in range(m, nw):
        re[j] = est
        im[j] = 0.0
    _fft(re, im, rev, cw, sw, False)
    for j in range(nw):
        a = math.sqrt(re[j] * re[j] + im[j] * im[j])
        amp[j] = a
        lg[j] = math.log(a + 1e-8)
    for j in range(nw):
        acc = 0.0
        cnt = 0
        for q in range(max(0, j - SR_Q + 1), j + 1):
            acc += lg[q]
            cnt += 1
        res = lg[j] - acc / cnt
        e = math.exp(res)
        if amp[j] > 1e-12:
            re[j] = re[j] / amp[j] * e
            im[j] = im[j] / amp[j] * e
        else:
            re[j] = 0.0
            im[j] = 0.0
    _fft(re, im, rev, cw, sw, True)
    for j in range(m):
        amp[j] = math.sqrt(re[j] * re[j] + im[j] * im[j]) / nw
    zz = min(SR_Z, m - 1)
    acc = 0.0
    for j in range(m - 1 - zz, m - 1):
        acc += amp[j]
    mean = acc / zz
    return (amp[m - 1] - mean) / (mean + 1e-12)


@njit(**JIT)
def score_rows(slot, value, st, n, ring, cfg, out_score, out_flag):
    """Learn each row (slot, value) in order and write its score and flag.

    Rows whose value is not finite are skipped (score 0, flag false, state unchanged).
    Returns the number of skipped rows."""
    alpha = cfg[C_ALPHA]
    season = int(cfg[C_SEASON])
    seas_w = cfg[C_SEAS_W]
    beta = cfg[C_MAD_BETA]
    clip = cfg[C_CLIP]
    window = int(cfg[C_WINDOW])
    grace = int(cfg[C_GRACE])
    z0 = cfg[C_Z0]
    a_long = cfg[C_LONG]
    a_short = cfg[C_SHORT]
    thr = cfg[C_THRESHOLD]
    holdoff = cfg[C_HOLDOFF]
    lik_w = cfg[C_LIK_W]
    floor_frac = cfg[C_FLOOR]
    l0 = cfg[C_L0]
    sd_floor = cfg[C_SD_FLOOR]
    sq_w = cfg[C_SQ_W]
    z0sq = z0 * z0
    sr_w = int(cfg[C_SR_W])
    sr_z0sq = cfg[C_SR_Z0] * cfg[C_SR_Z0]
    sr_lik_w = cfg[C_SR_LIK_W]
    sr_sq_w = cfg[C_SR_SQ_W]
    r = ring.shape[1]
    scratch = np.empty(max(window, 1))
    nw = max(sr_w, 2)
    sre = np.empty(nw)
    sim = np.empty(nw)
    samp = np.empty(nw)
    slg = np.empty(nw)
    rev = np.zeros(nw, np.int64)
    bits = 0
    while (1 << bits) < nw:
        bits += 1
    for i in range(nw):
        b = 0
        for k in range(bits):
            if i & (1 << k):
                b |= 1 << (bits - 1 - k)
        rev[i] = b
    cw = np.empty(nw // 2)
    sw = np.empty(nw // 2)
    for k in range(nw // 2):
        cw[k] = math.cos(2.0 * math.pi * k / nw)
        sw[k] = math.sin(2.0 * math.pi * k / nw)
    skipped = 0
    for i in range(slot.shape[0]):
        s = slot[i]
        x = value[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not np.isfinite(x):
            skipped += 1
            continue
        nn = n[s]
        if nn == 0:
            st[s, LEVEL] = x
            st[s, MAD] = 0.0
            st[s, ABSMEAN] = abs(x)
            st[s, ZMEAN] = 0.0
            st[s, ZVAR] = 1.0
            st[s, ZSHORT] = 0.0
            st[s, HOLD] = 0.0
            st[s, PEAK] = 0.0
            st[s, SLOW] = x
            st[s, SPREAD] = 0.0
            st[s, SRMEAN] = 0.0
            st[s, SRVAR] = 1.0
            st[s, SRSHORT] = 0.0
            ring[s, 0] = x
            n[s] = 1
            continue
        # scale floor: relative to the series' typical magnitude, so flat series still score
        floor = 1e-3 * st[s, ABSMEAN] + floor_frac * st[s, SPREAD] + 1e-9
        # (a) forecast residual with EW-MAD scale
        f = st[s, LEVEL]
        if season > 0 and nn >= season and season <= r:
            f = (1.0 - seas_w) * f + seas_w * ring[s, (nn - season) % r]
        res = abs(x - f)
        mad = st[s, MAD]
        za = res / (1.4826 * mad + floor) if nn > 1 else 0.0
        # (b) windowed robust z
        zb = _window_z(s, x, nn, ring, window, scratch, floor)
        z = max(za, zb)
        # raw surprise in [0, 1), then its "anomaly likelihood": the tail probability of
        # the short-run mean surprise under a Gaussian fitted to the long-run surprises
        z2 = z * z
        sq = z2 / (z2 + z0sq)
        zm = st[s, ZMEAN]
        zv = st[s, ZVAR]
        zs = (1.0 - a_short) * st[s, ZSHORT] + a_short * sq
        lik = 0.0
        if nn > 2:
            t = (zs - zm) / max(math.sqrt(zv), sd_floor)
            tail = 0.5 * math.erfc(t / _SQRT2)  # P(N(0,1) > t), exact in the far tail
            ll = -math.log10(tail + 1e-300)
            lik = ll / (ll + l0)
        # state updates (after scoring: the score only uses the past)
        st[s, ZSHORT] = zs
        d = sq - zm
        st[s, ZMEAN] = zm + a_long * d
        st[s, ZVAR] = (1.0 - a_long) * (zv + a_long * d * d)
        st[s, LEVEL] += alpha * (x - st[s, LEVEL])
        if nn == 1:
            st[s, MAD] = res
        else:
            cap = clip * (1.4826 * mad + floor)
            st[s, MAD] = mad + beta * (min(res, cap) - mad)
        st[s, ABSMEAN] += 0.01 * (abs(x) - st[s, ABSMEAN])
        st[s, SPREAD] += 0.01 * (abs(x - st[s, SLOW]) - st[s, SPREAD])
        st[s, SLOW] += 0.01 * (x - st[s, SLOW])
        ring[s, nn % r] = x
        n[s] = nn + 1
        # (c) spectral residual saliency of x (now in the ring), its own likelihood
        sq2 = 0.0
        lik2 = 0.0
        if sr_w >= 16:
            zc = max(_sr_score(s, nn + 1, ring, nw, sre, sim, samp, slg, rev, cw, sw), 0.0)
            z2c = zc * zc
            sq2 = z2c / (z2c + sr_z0sq)
            zm2 = st[s, SRMEAN]
            zv2 = st[s, SRVAR]
            zs2 = (1.0 - a_short) * st[s, SRSHORT] + a_short * sq2
            if nn > 2:
                t = (zs2 - zm2) / max(math.sqrt(zv2), sd_floor)
                tail = 0.5 * math.erfc(t / _SQRT2)
                ll = -math.log10(tail + 1e-300)
                lik2 = ll / (ll + l0)
            st[s, SRSHORT] = zs2
            d = sq2 - zm2
            st[s, SRMEAN] = zm2 + a_long * d
            st[s, SRVAR] = (1.0 - a_long) * (zv2 + a_long * d * d)
        # combined score, grace period, hold-off
        if nn + 1 <= grace:
            continue
        sc = max(max(sq_w * sq, lik_w * lik), max(sr_lik_w * lik2, sr_sq_w * sq2))
        # re-flag suppression: after a flag, ``holdoff`` rows score 0 (NAB counts only the
        # first detection in a window, and every later one outside it is a false positive)
        if st[s, HOLD] > 0.0:
            st[s, HOLD] -= 1.0
            continue
        out_score[i] = sc
        if sc >= thr:
            out_flag[i] = True
            st[s, HOLD] = holdoff
    return skipped
