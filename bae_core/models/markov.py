"""Next-resource prediction: a decaying, memory-bounded Markov model with PPM-style
back-off (kernels in ``bae_core.kernels.markov``), and two baselines for evaluation:
``MostPopular`` and ``FirstOrder`` (plain counts, no decay, no back-off).

>>> import numpy as np
>>> m = Markov(**Markov.check_cases()[0][0])
>>> m.learn({"user": np.array([1, 1, 1, 2, 2], np.uint64),
...          "resource": np.array([10, 20, 30, 10, 20], np.uint64)})
>>> m.predict({"users": np.array([2], np.uint64), "k": 1})["resource"].tolist()
[[30]]
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..kernels import hashmap as hm
from ..kernels import markov as mk
from ..slots import EMPTY, SlotMap
from .base import Model

_ROW_ARRAYS = ("row_key", "res", "ce", "rowm")


POP_HALF_LIFE_S = 3600.0  # of the per-resource request counts behind ``popular``
POP_LAMBDA = math.log(2) / (POP_HALF_LIFE_S * 1e6)  # per microsecond


class Markov(Model):
    """Next resource of each user from its last two requests.

    Hyperparameters: ``max_per_row`` (R: transitions a row keeps; the rest is folded
    into its "other" mass), ``min_order2`` / ``min_order1`` (decayed transitions a row of
    order 2 / 1 needs before it is used rather than the next lower order),
    ``half_life_s`` (decay of old counts; 0 = none), ``session_gap_s`` (a longer pause
    starts a new session), ``capacity`` (rows and users before the first growth).

    ``learn`` takes ``user`` and ``resource`` (u64) and optionally ``segment`` (u32),
    ``ts_us`` (i64; without it the clock stands still: no decay, no session gaps) and
    ``service`` (u32, the service of each resource, for ``expected_requests``).
    """

    def __init__(self, max_per_row: int = 16, min_order2: float = 2.0,
                 min_order1: float = 1.0, half_life_s: float = 0.0,
                 session_gap_s: float = 1800.0, capacity: int = 1024):
        self.max_per_row = max_per_row
        self.min_order2 = min_order2
        self.min_order1 = min_order1
        self.half_life_s = half_life_s
        self.session_gap_s = session_gap_s
        self.capacity = capacity
        self._lam = math.log(2) / (half_life_s * 1e6) if half_life_s > 0 else 0.0
        self._gap = int(session_gap_s * 1e6)
        cap = max(16, int(capacity))
        self._users = SlotMap(cap)
        self._res = SlotMap(cap)
        self._clock = 0  # the latest ts_us learned
        self._meta = np.zeros(4, np.int64)
        self._alloc_rows(cap, 1 << max(4, (2 * cap - 1).bit_length()))
        self._alloc_users(self._users.capacity)
        self._res_svc = np.full(self._res.capacity, EMPTY, np.uint64)
        self._res_pop = np.zeros(self._res.capacity)  # requests, decayed to _pop_clock
        self._pop_clock = 0

    def params(self) -> dict:
        return dict(max_per_row=self.max_per_row, min_order2=self.min_order2,
                    min_order1=self.min_order1, half_life_s=self.half_life_s,
                    session_gap_s=self.session_gap_s, capacity=self.capacity)

    # ---- storage ------------------------------------------------------------------
    def _alloc_rows(self, cap: int, tsize: int) -> None:
        R = int(self.max_per_row)
        self._rkeys = np.full(tsize, EMPTY, np.uint64)
        self._rvals = np.full(tsize, -1, np.int64)
        self.row_key = np.full(cap, EMPTY, np.uint64)
        self.res = np.full((cap, R), -1, np.int32)
        self.ce = np.zeros((cap, R, 2))
        self.rowm = np.zeros((cap, 4))
        self._meta[mk.M_MAX_LOAD] = tsize * 3 // 4
        self._meta[mk.M_CAP] = cap

    def _alloc_users(self, cap: int) -> None:
        self.ust = np.zeros((cap, 4), np.int64)
        self.ust[:, mk.R1] = self.ust[:, mk.R2] = mk.NONE

    # views of the row columns, for inspection
    cnt = property(lambda self: self.ce[:, :, 0])
    err = property(lambda self: self.ce[:, :, 1])
    tot = property(lambda self: self.rowm[:, mk.TOT])
    oth = property(lambda self: self.rowm[:, mk.OTH])
    nd = property(lambda self: self.rowm[:, mk.ND].astype(np.int64))

    def _grow_rows(self) -> None:
        nrows = int(self._meta[mk.M_ROWS])
        cap, tsize = len(self.row_key), len(self._rkeys)
        if nrows + 3 > cap - 0:
            cap *= 2
        if nrows + 3 > tsize * 3 // 4:
            tsize *= 2
        old = {a: getattr(self, a) for a in _ROW_ARRAYS}
        self._alloc_rows(cap, tsize)
        for a, v in old.items():
            getattr(self, a)[:nrows] = v[:nrows]
        hm.insert_slots(self._rkeys, self._rvals, self.row_key[:nrows])

    def _fit_users(self) -> None:
        cap = self._users.capacity
        if cap > len(self.ust):
            old = self.ust
            self._alloc_users(cap)
            self.ust[:len(old)] = old
        new = self._users.last_new
        self.ust[new, mk.R1] = mk.NONE
        self.ust[new, mk.R2] = mk.NONE

    def _fit_resources(self) -> None:
        cap = self._res.capacity
        if cap > len(self._res_svc):
            s = np.full(cap, EMPTY, np.uint64)
            s[:len(self._res_svc)] = self._res_svc
            self._res_svc = s
        if cap > len(self._res_pop):
            p = np.zeros(cap)
            p[:len(self._res_pop)] = self._res_pop
            self._res_pop = p

    def _decay_pop(self, now_us: int) -> None:
        if now_us > self._pop_clock:
            hr = self._res.high_water
            self._res_pop[:hr] *= math.exp(-POP_LAMBDA * (now_us - self._pop_clock))
            self._pop_clock = now_us

    def _rows(self):
        return self._rkeys, self._rvals, self.res, self.ce, self.rowm

    # ---- learning -----------------------------------------------------------------
    def learn(self, batch: dict[str, np.ndarray]) -> None:
        users = np.asarray(batch["user"], np.uint64)
        n = len(users)
        if n == 0:
            return
        us = self._users.slots_for(users)
        self._fit_users()
        rs = self._res.slots_for(np.asarray(batch["resource"], np.uint64))
        self._fit_resources()
        if "service" in batch:
            self._res_svc[rs] = np.asarray(batch["service"], np.uint64)
        seg = batch.get("segment")
        seg = np.zeros(n, np.int64) if seg is None else np.asarray(seg, np.int64)
        ts = batch.get("ts_us")
        ts = np.full(n, self._clock, np.int64) if ts is None else np.asarray(ts, np.int64)
        self._decay_pop(int(ts.max()))
        np.add.at(self._res_pop, rs, np.exp(-POP_LAMBDA * (self._pop_clock - ts)))
        i = 0
        while True:
            i = mk.learn(us, rs, seg, ts, i, self._gap, self._lam, self.ust, self._rkeys,
                         self._rvals, self.row_key, self.res, self.ce, self.rowm, self._meta)
            if i == n:
                break
            self._grow_rows()
        self._clock = max(self._clock, int(ts.max()))

    def compact(self, now_us: int, max_rows: int) -> dict[str, int]:
        """Bound the memory: forget users idle past the session gap (their context has
        ended), and when more than ``max_rows`` rows exist keep the 3/4 * ``max_rows``
        with the most decayed transitions (order-0 rows always stay). Returns what went."""
        hu = self._users.high_water
        u = self.ust[:hu]
        idle = np.flatnonzero((u[:, mk.R2] != mk.NONE) & (now_us - u[:, mk.UTS] > self._gap)
                              & (self._users.ids[:hu] != EMPTY))
        if len(idle):
            self._users.release(slots=idle)
            self.ust[idle, mk.R1] = self.ust[idle, mk.R2] = mk.NONE
        nrows = self.rows
        dropped = 0
        if nrows > max_rows:
            rm = self.rowm[:nrows]
            w = rm[:, mk.TOT] * np.exp(-self._lam * np.maximum(0.0, now_us - rm[:, mk.TS]))
            order0 = np.isin(self.row_key[:nrows], self._order0_keys())
            w[order0] = np.inf
            keep = np.sort(np.argsort(-w, kind="stable")[:max(1, max_rows * 3 // 4)])
            old = {a: getattr(self, a)[keep].copy() for a in _ROW_ARRAYS}
            cap, tsize = len(self.row_key), len(self._rkeys)
            self._alloc_rows(cap, tsize)
            for a, v in old.items():
                getattr(self, a)[:len(keep)] = v
            hm.insert_slots(self._rkeys, self._rvals, self.row_key[:len(keep)])
            self._meta[mk.M_ROWS] = len(keep)
            dropped = nrows - len(keep)
        return {"users": len(idle), "rows": dropped}

    def _order0_keys(self) -> np.ndarray:
        segs = np.unique(self.ust[:self._users.high_water, mk.SEG])
        return np.array([mk.row_key(0, int(g), mk.NONE, mk.NONE) for g in segs.tolist()],
                        np.uint64)

    @property
    def transitions(self) -> int:
        """Requests learned that followed another one of the same session."""
        return int(self._meta[mk.M_TRANS])

    @property
    def rows(self) -> int:
        return int(self._meta[mk.M_ROWS])

    # ---- queries ------------------------------------------------------------------
    def _query_contexts(self, query: dict):
        now = int(query.get("now_us", self._clock))
        if "users" in query:
            us = self._users.find(np.asarray(query["users"], np.uint64))
            n = len(us)
            seg, r1, r2 = (np.empty(n, np.int64) for _ in range(3))
            mk.contexts(us, now, self._gap, self.ust, seg, r1, r2)
            return seg, r1, r2, now
        ctx = np.asarray(query["context"], np.uint64).reshape(-1, 2)
        n = len(ctx)
        seg = query.get("segment")
        seg = np.zeros(n, np.int64) if seg is None else np.broadcast_to(
            np.asarray(seg, np.int64), (n,)).copy()
        r1, r2 = (self._context_slots(ctx[:, j]) for j in (0, 1))
        start = r2 == mk.NONE
        r2[start] = mk.START
        r1[start] = mk.NONE
        r1[~start & (r1 == mk.NONE)] = mk.START
        return seg, r1, r2, now

    def _context_slots(self, ids: np.ndarray) -> np.ndarray:
        s = self._res.find(ids)
        s[s < 0] = mk.UNKNOWN
        s[ids == EMPTY] = mk.NONE
        return s

    def predict(self, query: dict) -> dict[str, np.ndarray]:
        """Top ``k`` next resources of each of ``users`` (u64 ids; unknown users and those
        idle past the session gap at ``now_us`` get the entry pages), or of each
        ``context`` row ``[previous, last]`` (u64 resource ids, EMPTY = none: ``[EMPTY,
        EMPTY]`` is a session start), with optional ``segment``. Returns ``resource``
        (n, k) u64 (EMPTY where fewer are known) and ``prob`` (n, k) float64."""
        k = int(query.get("k", 3))
        seg, r1, r2, now = self._query_contexts(query)
        n = len(seg)
        out = np.empty((n, k), np.int64)
        prob = np.empty((n, k))
        chunks = min(numba.get_num_threads(), max(1, n // 20_000))
        acc = np.zeros((chunks, max(1, self._res.high_water)))
        (mk.topk_parallel if chunks > 1 else mk.topk)(
            seg, r1, r2, now, self._lam, float(self.min_order2), float(self.min_order1),
            *self._rows(), acc if chunks > 1 else acc[0], out, prob)
        ids = np.full((n, k), EMPTY, np.uint64)
        ok = out >= 0
        ids[ok] = self._res.ids[out[ok]]
        return {"resource": ids, "prob": prob}

    def expected_requests(self, users: np.ndarray | None = None, counts=1.0,
                          now_us: int | None = None) -> dict[str, np.ndarray]:
        """Expected requests per resource and per service in the next interval: the sum
        over ``users`` (default: every user whose session is still open at ``now_us``) of
        ``counts`` (that user's expected requests in the interval; scalar or per user)
        times its next-step distribution. Returns ``resource`` / ``expected`` (every
        resource with a non-zero expectation) / ``resource_service`` (EMPTY if unknown), ``service`` / ``service_expected`` (by the
        ``service`` learned with each resource; resources without one are left out) and
        ``unplaced`` (weight of users in segments the model knows nothing about)."""
        now = self._clock if now_us is None else int(now_us)
        if users is None:
            hw = self._users.high_water
            u = self.ust[:hw]
            live = (u[:, mk.R2] != mk.NONE) & (now - u[:, mk.UTS] <= self._gap)
            users = self._users.ids[:hw][live]
        users = np.asarray(users, np.uint64)
        seg, r1, r2, now = self._query_contexts({"users": users, "now_us": now})
        w = np.broadcast_to(np.asarray(counts, np.float64), (len(users),)).copy()
        hw = self._res.high_water
        svc_ids, svc_slot = np.unique(self._res_svc[:hw], return_inverse=True)
        svc_slot = svc_slot.astype(np.int64).ravel()
        svc_slot[self._res_svc[:hw] == EMPTY] = -1
        out_res = np.zeros(max(1, hw))
        out_svc = np.zeros(len(svc_ids))
        lost = mk.expected(seg, r1, r2, w, now, self._lam, float(self.min_order2),
                           float(self.min_order1), *self._rows(),
                           np.append(svc_slot, -1)[:len(out_res)], out_res, out_svc)
        nz = np.flatnonzero(out_res[:hw])
        keep = svc_ids != EMPTY
        return {"resource": self._res.ids[nz].copy(), "expected": out_res[nz],
                "resource_service": self._res_svc[nz].copy(),
                "service": svc_ids[keep].astype(np.uint32), "service_expected": out_svc[keep],
                "unplaced": float(lost)}

    def popular(self, now_us: int) -> dict[str, np.ndarray]:
        """Every resource with a known service and its requests of the last hours
        (half-life ``POP_HALF_LIFE_S``): ``resource``, ``service``, ``weight``."""
        hr = self._res.high_water
        ok = np.flatnonzero((self._res_svc[:hr] != EMPTY) & (self._res_pop[:hr] > 0))
        decay = math.exp(-POP_LAMBDA * max(0, int(now_us) - self._pop_clock))
        return {"resource": self._res.ids[ok].copy(), "service": self._res_svc[ok].copy(),
                "weight": self._res_pop[ok] * decay}

    # ---- checkpoints --------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        nrows, hu, hr = self.rows, self._users.high_water, self._res.high_water
        st = {a: getattr(self, a)[:nrows].copy() for a in _ROW_ARRAYS}
        st["ust"] = self.ust[:hu].copy()
        st["user_ids"] = self._users.state()["ids"]
        st["resource_ids"] = self._res.state()["ids"]
        st["resource_service"] = self._res_svc[:hr].copy()
        st["resource_pop"] = self._res_pop[:hr].copy()
        st["pop_clock"] = np.array([self._pop_clock], np.int64)
        st["meta"] = np.array([self._clock, self.transitions], np.int64)
        return st

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self._users = SlotMap.from_state({"ids": state["user_ids"]})
        self._res = SlotMap.from_state({"ids": state["resource_ids"]})
        nrows = len(state["row_key"])
        cap = max(16, 2 * nrows)
        self._alloc_rows(cap, 1 << max(4, (2 * cap - 1).bit_length()))
        for a in _ROW_ARRAYS:
            getattr(self, a)[:nrows] = state[a]
        hm.insert_slots(self._rkeys, self._rvals, self.row_key[:nrows])
        self._meta[mk.M_ROWS] = nrows
        self._clock, self._meta[mk.M_TRANS] = (int(v) for v in state["meta"])
        self._alloc_users(self._users.capacity)
        self.ust[:len(state["ust"])] = state["ust"]
        self._res_svc = np.full(self._res.capacity, EMPTY, np.uint64)
        self._res_svc[:len(state["resource_service"])] = state["resource_service"]
        self._res_pop = np.zeros(self._res.capacity)
        if "resource_pop" in state:  # checkpoints before popularity have none
            self._res_pop[:len(state["resource_pop"])] = state["resource_pop"]
            self._pop_clock = int(state["pop_clock"][0])

    @classmethod
    def check_cases(cls):
        rng = np.random.default_rng(7)
        n = 400
        users = rng.integers(0, 20, n).astype(np.uint64)
        res = rng.zipf(1.5, n).clip(1, 60).astype(np.uint64)
        batch = {"user": users, "resource": res,
                 "ts_us": np.arange(n, dtype=np.int64) * 1_000_000,
                 "segment": (users % 2).astype(np.uint32)}
        query = {"users": np.arange(25, dtype=np.uint64), "k": 3}
        p0 = dict(max_per_row=4, min_order2=2.0, min_order1=1.0, half_life_s=60.0,
                  session_gap_s=30.0, capacity=16)
        p1 = dict(max_per_row=16, min_order2=1.0, min_order1=1.0, half_life_s=0.0,
                  session_gap_s=1800.0, capacity=1024)
        ctx = {"context": np.stack([res[:10], res[10:20]], 1), "k": 2}
        return [(p0, batch, query), (p1, batch, ctx)]


# ---------------------------------------------------------------------------- baselines

class MostPopular:
    """The k resources seen most often, the same answer for everyone."""

    def __init__(self):
        self.top = np.empty(0, np.uint64)
        self.prob = np.empty(0)

    def fit(self, targets: np.ndarray, k: int = 10) -> "MostPopular":
        ids, c = np.unique(np.asarray(targets, np.uint64), return_counts=True)
        o = np.lexsort((ids, -c))[:k]
        self.top, self.prob = ids[o], c[o] / max(1, c.sum())
        return self

    def top_k(self, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        res = np.full((n, k), EMPTY, np.uint64)
        p = np.zeros((n, k))
        m = min(k, len(self.top))
        res[:, :m] = self.top[:m]
        p[:, :m] = self.prob[:m]
        return res, p


class FirstOrder:
    """Plain first-order Markov chain: counts of (previous, next), no decay, no bound, no
    back-off (a previous resource never seen gives no prediction)."""

    def __init__(self):
        self.keys = np.empty(0, np.uint64)

    def fit(self, prev: np.ndarray, nxt: np.ndarray, k: int = 10) -> "FirstOrder":
        prev = np.asarray(prev, np.uint64)
        nxt = np.asarray(nxt, np.uint64)
        pairs = np.stack([prev, nxt], 1)
        uniq, c = np.unique(pairs, axis=0, return_counts=True)
        o = np.lexsort((uniq[:, 1], -c, uniq[:, 0]))
        uniq, c = uniq[o], c[o]
        self.keys, first, per = np.unique(uniq[:, 0], return_index=True, return_counts=True)
        rank = np.arange(len(uniq)) - np.repeat(first, per)
        tot = np.repeat(np.add.reduceat(c, first), per)
        keep = rank < k
        self.res = np.full((len(self.keys), k), EMPTY, np.uint64)
        self.prob = np.zeros((len(self.keys), k))
        row = np.repeat(np.arange(len(self.keys)), per)[keep]
        self.res[row, rank[keep]] = uniq[keep, 1]
        self.prob[row, rank[keep]] = (c / tot)[keep]
        return self

    def top_k(self, prev: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        prev = np.asarray(prev, np.uint64)
        res = np.full((len(prev), k), EMPTY, np.uint64)
        p = np.zeros((len(prev), k))
        if len(self.keys):
            i = np.searchsorted(self.keys, prev).clip(0, len(self.keys) - 1)
            hit = self.keys[i] == prev
            m = min(k, self.res.shape[1])
            res[hit, :m] = self.res[i[hit], :m]
            p[hit, :m] = self.prob[i[hit], :m]
        return res, p
