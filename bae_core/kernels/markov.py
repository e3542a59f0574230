"""Navigation (next-resource) kernels: bounded, decaying Markov rows with PPM-style back-off.

Resources and users are dense slots (``slots.SlotMap``); a *row* is the next-resource
table of one context, keyed by a u64 built with ``row_key``:

- order 0: ``(segment)``, the segment's popularity;
- order 1: ``(segment, r2)``, the last resource (``START`` = the session has just begun:
  the row of entry pages);
- order 2: ``(segment, r1, r2)``, the last two (``r1 = START`` when r2 opened the session).

Rows live in an open-addressing table (``rkeys`` -> ``rvals`` = row index, probed with
``hashmap.probe``) over row arrays laid out so that one row touches few cache lines. Each
row keeps at most ``R`` transitions (space-saving: a new target replaces the smallest
counter, which keeps every target whose share exceeds 1/R): ``res[r, j]`` (i32 resource
slot), ``ce[r, j] = (cnt, err)`` (estimate and its over-estimate; ``cnt - err`` is a
guaranteed count), and ``rowm[r] = (tot, oth, ts, nd)``: all transitions seen, the mass
of targets not tracked (``tot`` minus the guaranteed counts), the time of the last update
and the entries in use. Per user, ``ust[u] = (r1, r2, ts, seg)``.

Decay is lazy: a row's numbers are multiplied by ``exp(-lam * (t - rts))`` when it is next
touched, never in a pass over all rows; readers apply the same factor to what they read.

Next-step distribution of a context (interpolated PPM, method C): start at the highest
order whose row holds at least ``min2`` (order 2) or ``min1`` (order 1) decayed
transitions, else order 0. A row of order > 0 gives target x ``g(x) / (tot + nd)`` and
passes the escape ``(oth + nd) / (tot + nd)`` down to the next lower order; the order-0
row spreads what reaches it over its tracked targets. The result sums to 1.

Kernels take arrays and scalars, write into buffers passed in and return status codes:
``learn`` returns the event index where it stopped for lack of room (the caller grows
the row arrays or table and calls again from there).
"""

import numpy as np
from numba import njit, prange

from . import JIT
from .hashmap import EMPTY, home, mix64, probe
from .prefetch import AHEAD, prefetch_row

NONE = -1     # no resource (order-2 context of a session's first request)
START = -2    # the session start marker, used as a context resource
UNKNOWN = -3  # a resource the model has never seen: no row of it exists

# meta indices (int64 array shared by learn and the wrapper)
M_ROWS, M_MAX_LOAD, M_CAP, M_TRANS = 0, 1, 2, 3
TOT, OTH, TS, ND = 0, 1, 2, 3  # columns of rowm
R1, R2, UTS, SEG = 0, 1, 2, 3  # columns of ust


@njit(inline="always", **JIT)
def row_key(order, seg, a, b):
    """The u64 key of a row; ``a``, ``b`` are resource slots or START/NONE/UNKNOWN (below
    2**31 - 4). For one (order, seg) distinct (a, b) give distinct keys (mix64 is a
    bijection); across them, keys collide with probability 2**-64."""
    ab = (np.uint64(a + 4) << np.uint64(32)) | np.uint64(b + 4)
    x = mix64(ab ^ mix64((np.uint64(order) << np.uint64(32)) | np.uint64(seg)))
    if x == EMPTY:
        x = EMPTY - np.uint64(1)
    return x


@njit(inline="always", **JIT)
def find_row(rkeys, rvals, k):
    h = probe(rkeys, k)
    if rkeys[h] == k:
        return rvals[h]
    return -1


@njit(**JIT)
def learn(users, items, segs, ts, start, gap, lam, ust, rkeys, rvals, row_key_, res, ce,
          rowm, meta):
    """Learn requests ``start:`` (user slot, resource slot, segment, time), in time order.

    A user's request follows its previous one unless more than ``gap`` time units passed
    or the segment changed (then it opens a session: context START). ``ust[u, R2] ==
    NONE`` marks a user with no request yet. Each request adds one transition to the rows
    of orders 0, 1 and (unless it opens the session) 2. ``meta[M_TRANS]`` counts the
    requests that follow another in a session. Returns the index of the first event not
    learned: ``len(users)`` when done, earlier when fewer than three free rows are left
    under ``meta[M_MAX_LOAD]`` or ``meta[M_CAP]``.

    (The row code is written out here rather than called: helpers taking many arrays
    cost ~100 ns a call in reference counting.)
    """
    n = users.shape[0]
    R = res.shape[1]
    limit = min(meta[M_MAX_LOAD], meta[M_CAP]) - 3
    nrows = meta[M_ROWS]
    ntrans = meta[M_TRANS]
    mask = rkeys.shape[0] - 1
    for i in range(start, n):
        if nrows > limit:
            meta[M_ROWS] = nrows
            meta[M_TRANS] = ntrans
            return i
        # prefetch: the user's state 2*AHEAD events ahead, and the table cells of the
        # rows AHEAD events ahead (a guess from that user's state now; a wrong one only
        # costs bandwidth)
        if i + 2 * AHEAD < n:
            prefetch_row(ust, users[i + 2 * AHEAD])
        if i + AHEAD < n:
            j = i + AHEAD
            uj = users[j]
            b = ust[uj, R2]
            if b != NONE:
                h1 = home(row_key(1, segs[j], NONE, b), mask)
                prefetch_row(rkeys, h1)
                prefetch_row(rvals, h1)
                h2 = home(row_key(2, segs[j], ust[uj, R1] if ust[uj, R1] != NONE else START,
                                  b), mask)
                prefetch_row(rkeys, h2)
                prefetch_row(rvals, h2)
        u = users[i]
        x = items[i]
        s = segs[i]
        t = ts[i]
        r1 = ust[u, R1]
        r2 = ust[u, R2]
        if r2 == NONE or t - ust[u, UTS] > gap or s != ust[u, SEG]:
            r1 = NONE
            r2 = START
        else:
            ntrans += 1
        tf = np.float64(t)
        for lv in range(3):
            if lv == 0:
                k = row_key(0, s, NONE, NONE)
            elif lv == 1:
                k = row_key(1, s, NONE, r2)
            elif r1 != NONE:
                k = row_key(2, s, r1, r2)
            else:
                break
            h = probe(rkeys, k)
            if rkeys[h] == k:
                r = rvals[h]
            else:  # a new row
                r = nrows
                nrows += 1
                rkeys[h] = k
                rvals[h] = r
                row_key_[r] = k
                rowm[r, TOT] = 0.0
                rowm[r, OTH] = 0.0
                rowm[r, TS] = tf
                rowm[r, ND] = 0.0
            # lazy decay, then one transition to x (space-saving when the row is full)
            m = np.int64(rowm[r, ND])
            if tf > rowm[r, TS]:
                if lam > 0.0:
                    f = np.exp(-lam * (tf - rowm[r, TS]))
                    for j in range(m):
                        ce[r, j, 0] *= f
                        ce[r, j, 1] *= f
                    rowm[r, TOT] *= f
                    rowm[r, OTH] *= f
                rowm[r, TS] = tf
            rowm[r, TOT] += 1.0
            j = 0
            while j < m and res[r, j] != x:
                j += 1
            if j < m:
                ce[r, j, 0] += 1.0
            elif m < R:
                res[r, m] = x
                ce[r, m, 0] = 1.0
                ce[r, m, 1] = 0.0
                rowm[r, ND] = m + 1
            else:
                jm = 0
                for j in range(1, m):
                    if ce[r, j, 0] < ce[r, jm, 0]:
                        jm = j
                c = ce[r, jm, 0]
                rowm[r, OTH] += c - ce[r, jm, 1]
                res[r, jm] = x
                ce[r, jm, 1] = c
                ce[r, jm, 0] = c + 1.0
        ust[u, R1] = r2
        ust[u, R2] = x
        ust[u, UTS] = t
        ust[u, SEG] = s
    meta[M_ROWS] = nrows
    meta[M_TRANS] = ntrans
    return n


@njit(inline="always", **JIT)
def _chain(s, r1, r2, now, lam, min2, min1, rkeys, rvals, rowm):
    """The rows of a context's back-off chain (row of order 0, 1, 2; -1 where none) and
    the order to start from."""
    k0 = find_row(rkeys, rvals, row_key(0, s, NONE, NONE))
    k1 = -1
    k2 = -1
    if r2 != NONE:
        k1 = find_row(rkeys, rvals, row_key(1, s, NONE, r2))
        if r1 != NONE:
            k2 = find_row(rkeys, rvals, row_key(2, s, r1, r2))
    top = 0
    if k2 >= 0 and rowm[k2, TOT] * _decay(rowm[k2, TS], now, lam) >= min2:
        top = 2
    elif k1 >= 0 and rowm[k1, TOT] * _decay(rowm[k1, TS], now, lam) >= min1:
        top = 1
    return top, k0, k1, k2


@njit(inline="always", **JIT)
def _decay(ts, now, lam):
    if lam > 0.0 and now > ts:
        return np.exp(-lam * (now - ts))
    return 1.0


@njit(**JIT)
def _level(lv, k0, k1, k2, rowm, now, lam):
    """Back-off level ``lv`` of a context: (row, decay, denominator, escape probability,
    stored transitions); row -1 when the level has nothing to offer."""
    r = k2 if lv == 2 else (k1 if lv == 1 else k0)
    if r < 0 or rowm[r, ND] == 0.0:
        return -1, 0.0, 1.0, 1.0, 0
    m = np.int64(rowm[r, ND])
    f = _decay(rowm[r, TS], now, lam)
    if lv > 0:
        denom = f * rowm[r, TOT] + m
        return r, f, denom, (f * rowm[r, OTH] + m) / denom, m
    denom = f * (rowm[r, TOT] - rowm[r, OTH])
    if denom <= 0.0:
        return -1, 0.0, 1.0, 1.0, 0
    return r, f, denom, 0.0, m


@njit(**JIT)
def topk(q_seg, q_r1, q_r2, now, lam, min2, min1, rkeys, rvals, res, ce, rowm, acc,
         out_res, out_p):
    """Top ``out_res.shape[1]`` next resources (slots, -1 when fewer) and probabilities of
    each context (q_seg, q_r1, q_r2). ``acc``: zeros, one per resource slot (left zero)."""
    _topk_range(0, q_seg.shape[0], q_seg, q_r1, q_r2, now, lam, min2, min1, rkeys, rvals,
                res, ce, rowm, acc, out_res, out_p)


@njit(parallel=True, **JIT)
def topk_parallel(q_seg, q_r1, q_r2, now, lam, min2, min1, rkeys, rvals, res, ce, rowm,
                  acc, out_res, out_p):
    """``topk`` in ``acc.shape[0]`` chunks on numba's threads (``acc``: one zero row per
    chunk)."""
    n = q_seg.shape[0]
    c = acc.shape[0]
    for t in prange(c):
        _topk_range(t * n // c, (t + 1) * n // c, q_seg, q_r1, q_r2, now, lam, min2, min1,
                    rkeys, rvals, res, ce, rowm, acc[t], out_res, out_p)


@njit(**JIT)
def _topk_range(lo, hi, q_seg, q_r1, q_r2, now, lam, min2, min1, rkeys, rvals, res, ce,
                rowm, acc, out_res, out_p):
    K = out_res.shape[1]
    R = res.shape[1]
    touched = np.empty(3 * R + 1, np.int64)
    for i in range(lo, hi):
        top, k0, k1, k2 = _chain(q_seg[i], q_r1[i], q_r2[i], now, lam, min2, min1, rkeys,
                                 rvals, rowm)
        nt = 0
        w = 1.0
        for lv in range(top, -1, -1):
            r, f, denom, esc, m = _level(lv, k0, k1, k2, rowm, now, lam)
            if r < 0:
                continue
            c = w * f / denom
            for j in range(m):
                x = res[r, j]
                if acc[x] == 0.0:
                    touched[nt] = x
                    nt += 1
                acc[x] += c * (ce[r, j, 0] - ce[r, j, 1])
            w *= esc
            if w == 0.0:
                break
        for j in range(K):
            out_res[i, j] = -1
            out_p[i, j] = 0.0
        for a in range(nt):
            x = touched[a]
            p = acc[x]
            acc[x] = 0.0
            # insertion into the sorted top-K (ties: the lower slot first)
            j = K
            while j > 0 and (out_res[i, j - 1] < 0 or p > out_p[i, j - 1]
                             or (p == out_p[i, j - 1] and x < out_res[i, j - 1])):
                j -= 1
            if j < K:
                for b in range(K - 1, j, -1):
                    out_res[i, b] = out_res[i, b - 1]
                    out_p[i, b] = out_p[i, b - 1]
                out_res[i, j] = x
                out_p[i, j] = p


@njit(**JIT)
def expected(q_seg, q_r1, q_r2, weight, now, lam, min2, min1, rkeys, rvals, res, ce, rowm,
             res_svc, out_res, out_svc):
    """Sum over contexts of ``weight[i]`` times the next-step distribution (the one
    ``topk`` ranks): into ``out_res`` (per resource slot) and ``out_svc`` (per service
    slot; ``res_svc`` maps a resource slot to its service slot, -1 when none is known).
    Returns the weight no row could place (contexts of a segment with no row at all)."""
    lost = 0.0
    for i in range(q_seg.shape[0]):
        top, k0, k1, k2 = _chain(q_seg[i], q_r1[i], q_r2[i], now, lam, min2, min1, rkeys,
                                 rvals, rowm)
        w = weight[i]
        for lv in range(top, -1, -1):
            r, f, denom, esc, m = _level(lv, k0, k1, k2, rowm, now, lam)
            if r < 0:
                continue
            c = w * f / denom
            for j in range(m):
                out_res[res[r, j]] += c * (ce[r, j, 0] - ce[r, j, 1])
            w *= esc
            if w == 0.0:
                break
        lost += w
    for x in range(out_res.shape[0]):
        sv = res_svc[x]
        if sv >= 0:
            out_svc[sv] += out_res[x]
    return lost


@njit(**JIT)
def contexts(user_slots, now, gap, ust, q_seg, q_r1, q_r2):
    """Context of each user slot (-1: an unknown user) at time ``now``: a session that
    has been idle more than ``gap`` is over (context START)."""
    for i in range(user_slots.shape[0]):
        u = user_slots[i]
        if u < 0 or ust[u, R2] == NONE:
            q_seg[i] = 0
            q_r1[i] = NONE
            q_r2[i] = START
        elif now - ust[u, UTS] > gap:
            q_seg[i] = ust[u, SEG]
            q_r1[i] = NONE
            q_r2[i] = START
        else:
            q_seg[i] = ust[u, SEG]
            q_r1[i] = ust[u, R1]
            q_r2[i] = ust[u, R2]
