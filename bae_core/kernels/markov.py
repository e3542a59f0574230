"""Navigation (next-resource) kernels: bounded, decaying Markov rows with PPM-style back-off.

Resources and users are dense slots (``slots.SlotMap``); a *row* is the next-resource
table of one context, keyed by a u64 built with ``row_key``:

- order 0: ``(segment)``, the segment's popularity;
- order 1: ``(segment, r2)``, the last resource (``START`` = the session has just begun:
  the row of entry pages);
- order 2: ``(segment, r1, r2)``, the last two (``r1 = START`` when r2 opened the session).

Rows live in an open-addressing table (``rkeys`` -> ``rvals`` = row index, probed with
``hashmap.probe``) over columnar row arrays. Each row keeps at most ``R`` transitions
(space-saving: a new target replaces the smallest counter, which keeps every target whose
share exceeds 1/R): ``res`` (resource slot, -1 empty), ``cnt`` (estimate), ``err`` (its
over-estimate; ``cnt - err`` is a guaranteed count), and per row ``nd`` (entries used),
``tot`` (all transitions seen), ``oth`` (the mass of targets not tracked: ``tot`` minus
the guaranteed counts) and ``rts`` (time of the last update).

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
from numba import njit

from . import JIT
from .hashmap import EMPTY, mix64, probe

NONE = -1     # no resource (order-2 context of a session's first request)
START = -2    # the session start marker, used as a context resource
UNKNOWN = -3  # a resource the model has never seen: no row of it exists

# meta indices (int64 array shared by learn and the wrapper)
M_ROWS, M_MAX_LOAD, M_CAP, M_TRANS = 0, 1, 2, 3


@njit(inline="always", **JIT)
def row_key(order, seg, a, b):
    """The u64 key of a row; ``a``, ``b`` are resource slots or START/NONE/UNKNOWN."""
    x = mix64(np.uint64(order) << np.uint64(32) ^ np.uint64(seg))
    x = mix64(x ^ np.uint64(a + 4))
    x = mix64(x ^ (np.uint64(b + 4) << np.uint64(1)))
    if x == EMPTY:
        x = EMPTY - np.uint64(1)
    return x


@njit(inline="always", **JIT)
def find_row(rkeys, rvals, k):
    h = probe(rkeys, k)
    if rkeys[h] == k:
        return rvals[h]
    return -1


@njit(inline="always", **JIT)
def _get_row(rkeys, rvals, row_key_, nd, tot, oth, rts, meta, k, t):
    h = probe(rkeys, k)
    if rkeys[h] == k:
        return rvals[h]
    r = meta[M_ROWS]
    meta[M_ROWS] = r + 1
    rkeys[h] = k
    rvals[h] = r
    row_key_[r] = k
    nd[r] = 0
    tot[r] = 0.0
    oth[r] = 0.0
    rts[r] = t
    return r


@njit(inline="always", **JIT)
def _add(r, x, t, lam, res, cnt, err, nd, tot, oth, rts):
    """One transition to target ``x`` in row ``r`` at time ``t`` (decay first)."""
    n = nd[r]
    if t > rts[r]:
        if lam > 0.0:
            f = np.exp(-lam * (t - rts[r]))
            for j in range(n):
                cnt[r, j] *= f
                err[r, j] *= f
            tot[r] *= f
            oth[r] *= f
        rts[r] = t
    tot[r] += 1.0
    for j in range(n):
        if res[r, j] == x:
            cnt[r, j] += 1.0
            return
    if n < res.shape[1]:
        res[r, n] = x
        cnt[r, n] = 1.0
        err[r, n] = 0.0
        nd[r] = n + 1
        return
    m = 0
    for j in range(1, n):
        if cnt[r, j] < cnt[r, m]:
            m = j
    c = cnt[r, m]
    oth[r] += c - err[r, m]
    res[r, m] = x
    err[r, m] = c
    cnt[r, m] = c + 1.0


@njit(**JIT)
def learn(users, items, segs, ts, start, gap, lam,
          u_r1, u_r2, u_ts, u_seg,
          rkeys, rvals, row_key_, res, cnt, err, nd, tot, oth, rts, meta):
    """Learn requests ``start:`` (user slot, resource slot, segment, time), in time order.

    A user's request follows its previous one unless more than ``gap`` time units passed
    or the segment changed (then it opens a session: context START). Per user state:
    ``u_r1``, ``u_r2`` (the last two resources, NONE/START as above; ``u_r2 == NONE``
    marks a user with no request yet), ``u_ts``, ``u_seg``. ``meta[M_TRANS]`` counts the
    transitions (requests that follow another in a session). Returns the index of the
    first event not learned: ``len(users)`` when done, earlier when fewer than three free
    rows are left under ``meta[M_MAX_LOAD]`` or ``meta[M_CAP]``.
    """
    n = users.shape[0]
    limit = min(meta[M_MAX_LOAD], meta[M_CAP]) - 3
    for i in range(start, n):
        if meta[M_ROWS] > limit:
            return i
        u = users[i]
        x = items[i]
        s = segs[i]
        t = ts[i]
        r1 = u_r1[u]
        r2 = u_r2[u]
        if r2 == NONE or t - u_ts[u] > gap or s != u_seg[u]:
            r1 = NONE
            r2 = START
        else:
            meta[M_TRANS] += 1
        r = _get_row(rkeys, rvals, row_key_, nd, tot, oth, rts, meta, row_key(0, s, NONE, NONE), t)
        _add(r, x, t, lam, res, cnt, err, nd, tot, oth, rts)
        r = _get_row(rkeys, rvals, row_key_, nd, tot, oth, rts, meta, row_key(1, s, NONE, r2), t)
        _add(r, x, t, lam, res, cnt, err, nd, tot, oth, rts)
        if r1 != NONE:
            r = _get_row(rkeys, rvals, row_key_, nd, tot, oth, rts, meta, row_key(2, s, r1, r2), t)
            _add(r, x, t, lam, res, cnt, err, nd, tot, oth, rts)
        u_r1[u] = r2
        u_r2[u] = x
        u_ts[u] = t
        u_seg[u] = s
    return n


@njit(inline="always", **JIT)
def _decay(r, now, lam, rts):
    if lam > 0.0 and now > rts[r]:
        return np.exp(-lam * (now - rts[r]))
    return 1.0


@njit(inline="always", **JIT)
def _spread(s, r1, r2, now, lam, min2, min1, w0, rkeys, rvals, res, cnt, err, nd, tot, oth,
            rts, acc, touched, nt):
    """Add ``w0`` times the next-step distribution of context (s, r1, r2) into ``acc``
    (indexed by resource slot). When ``touched`` is non-empty, the slots whose ``acc``
    went from 0 are appended to it from ``nt`` on; returns the new ``nt``."""
    rows = np.empty(3, np.int64)
    rows[0] = find_row(rkeys, rvals, row_key(0, s, NONE, NONE))
    rows[1] = -1
    rows[2] = -1
    if r2 != NONE:
        rows[1] = find_row(rkeys, rvals, row_key(1, s, NONE, r2))
        if r1 != NONE:
            rows[2] = find_row(rkeys, rvals, row_key(2, s, r1, r2))
    top = 0
    if rows[2] >= 0 and tot[rows[2]] * _decay(rows[2], now, lam, rts) >= min2:
        top = 2
    elif rows[1] >= 0 and tot[rows[1]] * _decay(rows[1], now, lam, rts) >= min1:
        top = 1
    track = touched.shape[0] > 0
    w = w0
    for lv in range(top, -1, -1):
        r = rows[lv]
        if r < 0:
            continue
        k = nd[r]
        if k == 0:
            continue
        f = _decay(r, now, lam, rts)
        if lv > 0:
            denom = f * tot[r] + k
            esc = (f * oth[r] + k) / denom
        else:
            denom = f * (tot[r] - oth[r])
            esc = 0.0
            if denom <= 0.0:
                continue
        for j in range(k):
            g = f * (cnt[r, j] - err[r, j])
            x = res[r, j]
            if track and acc[x] == 0.0:
                touched[nt] = x
                nt += 1
            acc[x] += w * g / denom
        w *= esc
        if w == 0.0:
            break
    return nt


@njit(**JIT)
def topk(q_seg, q_r1, q_r2, now, lam, min2, min1, rkeys, rvals, res, cnt, err, nd, tot,
         oth, rts, acc, out_res, out_p):
    """Top ``out_res.shape[1]`` next resources (slots, -1 when fewer) and probabilities of
    each context (q_seg, q_r1, q_r2). ``acc``: zeros, one per resource slot (left zero)."""
    n = q_seg.shape[0]
    K = out_res.shape[1]
    touched = np.empty(3 * res.shape[1] + 1, np.int64)
    for i in range(n):
        nt = _spread(q_seg[i], q_r1[i], q_r2[i], now, lam, min2, min1, 1.0, rkeys, rvals,
                     res, cnt, err, nd, tot, oth, rts, acc, touched, 0)
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
def expected(q_seg, q_r1, q_r2, weight, now, lam, min2, min1, rkeys, rvals, res, cnt, err,
             nd, tot, oth, rts, res_svc, out_res, out_svc):
    """Sum over contexts of ``weight[i]`` times the next-step distribution: into
    ``out_res`` (per resource slot) and ``out_svc`` (per service slot, ``res_svc`` maps a
    resource slot to its service slot, -1 when none is known). Returns the weight no row
    could place (contexts of a segment with no row at all)."""
    none = np.empty(0, np.int64)
    lost = 0.0
    for i in range(q_seg.shape[0]):
        _spread(q_seg[i], q_r1[i], q_r2[i], now, lam, min2, min1, weight[i], rkeys, rvals,
                res, cnt, err, nd, tot, oth, rts, out_res, none, 0)
        r = find_row(rkeys, rvals, row_key(0, q_seg[i], NONE, NONE))
        if r < 0 or nd[r] == 0:
            lost += weight[i]
    for x in range(out_res.shape[0]):
        sv = res_svc[x]
        if sv >= 0:
            out_svc[sv] += out_res[x]
    return lost


@njit(**JIT)
def contexts(user_slots, now, gap, u_r1, u_r2, u_ts, u_seg, q_seg, q_r1, q_r2):
    """Context of each user slot (-1: an unknown user) at time ``now``: a session that
    has been idle more than ``gap`` is over (context START)."""
    for i in range(user_slots.shape[0]):
        u = user_slots[i]
        if u < 0 or u_r2[u] == NONE or now - u_ts[u] > gap:
            q_seg[i] = u_seg[u] if u >= 0 and u_r2[u] != NONE else 0
            q_r1[i] = NONE
            q_r2[i] = START
        else:
            q_seg[i] = u_seg[u]
            q_r1[i] = u_r1[u]
            q_r2[i] = u_r2[u]
