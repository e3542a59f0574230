"""Markov navigation model: kernels against a dict-based reference, decay, back-off,
heavy-hitter bounding, batch top-k, expected requests, state, and eval_markov on slices of
the real data (read at run time from ../shared/data)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bae_core import errors
from bae_core.kernels import markov as mk
from bae_core.models.markov import FirstOrder, Markov, MostPopular
from daemon.cli import build_parser
from daemon.evaluate_markov import eval_markov

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MSNBC = DATA / "msnbc" / "msnbc_first_half.seq"
NASA = DATA / "nasa-http" / "nasa_19950801.tsv"
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
S = 1_000_000


# ----------------------------------------------------------------------------- reference

class RefMarkov:
    """The model's semantics with dicts and lists, one event at a time."""

    def __init__(self, R, min2, min1, half_life_s=0.0, gap_s=1800.0):
        self.R, self.min2, self.min1 = R, min2, min1
        self.lam = math.log(2) / (half_life_s * S) if half_life_s else 0.0
        self.gap = int(gap_s * S)
        self.rows = {}   # key -> [entries [[x, cnt, err]], tot, oth, ts]
        self.users = {}  # user -> (r1, r2, ts, seg)
        self.clock = 0

    def _add(self, key, x, t):
        row = self.rows.setdefault(key, [[], 0.0, 0.0, t])
        ent = row[0]
        if t > row[3]:
            if self.lam:
                f = math.exp(-self.lam * (t - row[3]))
                for e in ent:
                    e[1] *= f
                    e[2] *= f
                row[1] *= f
                row[2] *= f
            row[3] = t
        row[1] += 1
        for e in ent:
            if e[0] == x:
                e[1] += 1
                return
        if len(ent) < self.R:
            ent.append([x, 1.0, 0.0])
            return
        m = min(range(len(ent)), key=lambda j: (ent[j][1], j))
        c = ent[m][1]
        row[2] += c - ent[m][2]
        ent[m] = [x, c + 1, c]

    def learn(self, users, res, segs=None, ts=None):
        for i, (u, x) in enumerate(zip(users.tolist(), res.tolist())):
            s = 0 if segs is None else int(segs[i])
            t = self.clock if ts is None else int(ts[i])
            st = self.users.get(u)
            if st is None or t - st[2] > self.gap or s != st[3]:
                r1, r2 = None, "START"
            else:
                r1, r2 = st[0], st[1]
            self._add((0, s), x, t)
            self._add((1, s, r2), x, t)
            if r1 is not None:
                self._add((2, s, r1, r2), x, t)
            self.users[u] = (r2, x, t, s)
            self.clock = max(self.clock, t)

    def dist(self, u, now=None):
        now = self.clock if now is None else now
        st = self.users.get(u)
        if st is None or now - st[2] > self.gap:
            s, r1, r2 = (st[3] if st else 0), None, "START"
        else:
            r1, r2, _, s = st
        chain = [self.rows.get((0, s)), self.rows.get((1, s, r2)),
                 self.rows.get((2, s, r1, r2)) if r1 is not None else None]

        def f(row):
            return math.exp(-self.lam * (now - row[3])) if self.lam and now > row[3] else 1.0
        top = 0
        if chain[2] and chain[2][1] * f(chain[2]) >= self.min2:
            top = 2
        elif chain[1] and chain[1][1] * f(chain[1]) >= self.min1:
            top = 1
        p, w = {}, 1.0
        for lv in range(top, -1, -1):
            row = chain[lv]
            if not row or not row[0]:
                continue
            k, d = len(row[0]), f(row)
            denom = d * row[1] + k if lv else d * (row[1] - row[2])
            for x, c, e in row[0]:
                p[x] = p.get(x, 0.0) + w * d * (c - e) / denom
            w *= (d * row[2] + k) / denom if lv else 0.0
        return p


def check_against_ref(m, ref, users, k=4):
    out = m.predict({"users": np.asarray(users, np.uint64), "k": k})
    for i, u in enumerate(users):
        p = ref.dist(int(u))
        want = sorted(p.values(), reverse=True)[:k]
        got = out["prob"][i][: len(want)]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        for x, q in zip(out["resource"][i], out["prob"][i]):
            if q > 0:
                assert p[int(x)] == pytest.approx(q, rel=1e-9)
        assert np.all(out["resource"][i][len(p):] == EMPTY)
        assert sum(p.values()) == pytest.approx(1.0) or not p


@pytest.mark.parametrize("R,min2,half_life,seed", [(64, 2.0, 0.0, 0), (3, 1.0, 0.0, 1),
                                                   (2, 3.0, 20.0, 2), (4, 2.0, 5.0, 3)])
def test_matches_dict_reference(R, min2, half_life, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 40, n).astype(np.uint64)
    res = rng.zipf(1.4, n).clip(1, 25).astype(np.uint64)
    segs = (users % 3).astype(np.uint32)
    ts = np.cumsum(rng.integers(0, 3 * S, n)).astype(np.int64)
    p = dict(max_per_row=R, min_order2=min2, min_order1=1.0, half_life_s=half_life,
             session_gap_s=40.0, capacity=16)
    m, ref = Markov(**p), RefMarkov(R, min2, 1.0, half_life, 40.0)
    for a in range(0, n, 700):  # several batches, growth in between
        m.learn({"user": users[a:a + 700], "resource": res[a:a + 700],
                 "segment": segs[a:a + 700], "ts_us": ts[a:a + 700]})
    ref.learn(users, res, segs, ts)
    assert m.rows == len(ref.rows)
    check_against_ref(m, ref, np.arange(45))


def test_decay_forgets_old_transitions():
    m = Markov(max_per_row=8, min_order2=1.0, min_order1=1.0, half_life_s=10.0,
               session_gap_s=1e9, capacity=16)
    # 20 times A->B at t=0..19 s, then 3 times A->C at t=200 s
    users = np.arange(23, dtype=np.uint64)
    m.learn({"user": np.repeat(users[:20], 2), "resource": np.tile([1, 2], 20).astype(np.uint64),
             "ts_us": np.repeat(np.arange(20) * S, 2)})
    q = {"context": np.array([[EMPTY, 1]], np.uint64), "k": 2}
    assert m.predict(q)["resource"][0, 0] == 2
    m.learn({"user": np.repeat(users[20:], 2), "resource": np.tile([1, 3], 3).astype(np.uint64),
             "ts_us": np.full(6, 200 * S)})
    out = m.predict(dict(q, k=3))
    assert out["resource"][0, 0] == 3
    # B's 20 counts decayed by 2**-((200 - t) / 10): well under 1 left
    pb = out["prob"][0][out["resource"][0] == 2]
    assert len(pb) == 0 or pb[0] < 0.01
    # without decay B still wins
    m0 = Markov(max_per_row=8, min_order2=1.0, min_order1=1.0, half_life_s=0.0,
                session_gap_s=1e9, capacity=16)
    for b in ({"user": np.repeat(users[:20], 2), "resource": np.tile([1, 2], 20).astype(np.uint64),
               "ts_us": np.repeat(np.arange(20) * S, 2)},
              {"user": np.repeat(users[20:], 2), "resource": np.tile([1, 3], 3).astype(np.uint64),
               "ts_us": np.full(6, 200 * S)}):
        m0.learn(b)
    assert m0.predict(q)["resource"][0, 0] == 2


def test_back_off_to_first_order_when_second_order_is_thin():
    seqs = [[7, 1, 2]] * 10 + [[8, 1, 3]] * 2
    users = np.repeat(np.arange(len(seqs)), 3).astype(np.uint64)
    res = np.array(seqs, np.uint64).ravel()
    ctx = {"context": np.array([[8, 1], [7, 1], [EMPTY, 1], [99, 1], [EMPTY, 99]], np.uint64),
           "k": 1}
    for min2, want in ((3.0, [2, 2, 2, 2]), (2.0, [3, 2, 2, 2])):
        m = Markov(max_per_row=8, min_order2=min2, min_order1=1.0, half_life_s=0.0,
                   session_gap_s=1800.0, capacity=16)
        m.learn({"user": users, "resource": res})
        out = m.predict(ctx)["resource"][:, 0]
        assert out[:4].tolist() == want
        assert out[4] == 1  # unknown resource: global popularity (1 is most requested)


def test_heavy_hitters_keep_the_true_top_transitions():
    rng = np.random.default_rng(5)
    n = 60_000
    # after resource 0: 3 heavy targets (20%, 15%, 10%) in a long tail over 5,000 others
    tail = rng.integers(100, 5100, n)
    u = rng.random(n)
    nxt = np.where(u < 0.20, 1, np.where(u < 0.35, 2, np.where(u < 0.45, 3, tail)))
    res = np.stack([np.zeros(n, np.int64), nxt], 1).ravel().astype(np.uint64)
    users = np.repeat(np.arange(n), 2).astype(np.uint64)
    R = 16  # space-saving keeps every target above n / R, under-counted by at most n / R
    m = Markov(max_per_row=R, min_order2=1.0, min_order1=1.0, half_life_s=0.0,
               session_gap_s=1800.0, capacity=1024)
    m.learn({"user": users, "resource": res})
    # the order-1 row of resource 0
    r = mk.find_row(m._rkeys, m._rvals, mk.row_key(1, 0, mk.NONE, m._res.find_one(0)))
    g = m.cnt[r] - m.err[r]  # guaranteed counts
    top = np.argsort(-g, kind="stable")[:3]
    assert m._res.ids[m.res[r, top]].tolist() == [1, 2, 3]
    true = np.array([np.sum(nxt == x) for x in (1, 2, 3)])
    assert np.all(g[top] <= true) and np.all(g[top] >= true - n / R)
    assert m.tot[r] == n and m.oth[r] == pytest.approx(n - g.sum())
    # and the prediction ranks them in that order (0 is the globally popular one)
    out = m.predict({"context": np.array([[EMPTY, 0]], np.uint64), "k": 4})
    assert [x for x in out["resource"][0].tolist() if x != 0][:3] == [1, 2, 3]
    assert m.res.shape[1] == R and m.nd[r] == R  # the row holds at most R targets


def test_topk_for_many_users_at_once():
    rng = np.random.default_rng(11)
    n = 50_000
    users = rng.integers(0, 5000, n).astype(np.uint64)
    res = rng.zipf(1.3, n).clip(1, 300).astype(np.uint64)
    p = dict(max_per_row=6, min_order2=2.0, min_order1=1.0, half_life_s=0.0,
             session_gap_s=1800.0, capacity=64)
    m = Markov(**p)
    m.learn({"user": users, "resource": res})
    q = np.arange(5100, dtype=np.uint64)  # 100 unknown users at the end
    out = m.predict({"users": q, "k": 5})
    assert out["resource"].shape == (5100, 5) and out["prob"].shape == (5100, 5)
    assert np.all(np.diff(out["prob"], axis=1) <= 0)
    for i in rng.choice(5100, 50, replace=False):  # batch == one at a time
        one = m.predict({"users": q[i:i + 1], "k": 5})
        assert np.array_equal(one["resource"][0], out["resource"][i])
        assert np.array_equal(one["prob"][0], out["prob"][i])
    # unknown users get the entry distribution: all the same answer
    assert (out["resource"][-100:] == out["resource"][-1]).all()
    ref = RefMarkov(6, 2.0, 1.0)
    ref.learn(users[:20_000], res[:20_000])
    m2 = Markov(**p)
    m2.learn({"user": users[:20_000], "resource": res[:20_000]})
    check_against_ref(m2, ref, rng.choice(5000, 200, replace=False), k=5)


def test_expected_requests_sums_to_the_users_expected_counts():
    rng = np.random.default_rng(3)
    n = 5000
    users = rng.integers(0, 300, n).astype(np.uint64)
    res = rng.integers(0, 50, n).astype(np.uint64)
    svc = (res % 4 + 100).astype(np.uint32)
    ts = np.arange(n, dtype=np.int64) * S // 10
    m = Markov(max_per_row=4, min_order2=2.0, min_order1=1.0, half_life_s=30.0,
               session_gap_s=60.0, capacity=16)
    m.learn({"user": users, "resource": res, "service": svc, "ts_us": ts})
    q = np.arange(310, dtype=np.uint64)
    counts = rng.random(310) * 5
    e = m.expected_requests(q, counts)
    assert e["expected"].sum() == pytest.approx(counts.sum())
    assert e["service_expected"].sum() == pytest.approx(counts.sum())
    assert sorted(e["service"].tolist()) == [100, 101, 102, 103]
    # per resource: the sum of each user's full next-step distribution
    by = dict(zip(e["resource"].tolist(), e["expected"]))
    k = 60
    top = m.predict({"users": q, "k": k})
    want = {}
    for i in range(len(q)):
        for x, p in zip(top["resource"][i].tolist(), top["prob"][i]):
            if p > 0:
                want[x] = want.get(x, 0.0) + counts[i] * p
    assert by.keys() == want.keys()
    for x in want:
        assert by[x] == pytest.approx(want[x], rel=1e-9)
    # default users: those whose session is open at the clock
    d = m.expected_requests(counts=2.0)
    open_ = sum(1 for u in set(users.tolist())
                if ts[-1] - ts[np.flatnonzero(users == u)[-1]] <= 60 * S)
    assert d["expected"].sum() == pytest.approx(2.0 * open_)


def test_state_round_trip_after_growth():
    rng = np.random.default_rng(9)
    n = 20_000
    b = {"user": rng.integers(0, 3000, n).astype(np.uint64),
         "resource": rng.integers(0, 2000, n).astype(np.uint64),
         "ts_us": np.arange(n, dtype=np.int64) * 1000,
         "service": rng.integers(0, 5, n).astype(np.uint32)}
    p = dict(max_per_row=4, min_order2=2.0, min_order1=1.0, half_life_s=5.0,
             session_gap_s=10.0, capacity=16)
    m = Markov(**p)
    m.learn(b)
    r = Markov(**p)
    r.restore(m.state())
    q = {"users": np.arange(3100, dtype=np.uint64), "k": 5}
    for _ in range(2):
        a, c = m.predict(q), r.predict(q)
        assert all(np.array_equal(a[x], c[x]) for x in a)
        ea, ec = m.expected_requests(), r.expected_requests()
        assert all(np.array_equal(ea[x], ec[x]) for x in ea)
        b2 = dict(b, ts_us=b["ts_us"] + n * 1000)
        m.learn(b2)
        r.learn(b2)


def test_baselines():
    fo = FirstOrder().fit(np.array([1, 1, 1, 2], np.uint64), np.array([5, 5, 6, 7], np.uint64), 2)
    res, p = fo.top_k(np.array([1, 2, 3], np.uint64), 2)
    assert res.tolist() == [[5, 6], [7, int(EMPTY)], [int(EMPTY)] * 2]
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3], [1, 0], [0, 0]])
    mp = MostPopular().fit(np.array([3, 3, 4, 3, 4, 9], np.uint64), 2)
    assert mp.top_k(2, 3)[0].tolist() == [[3, 4, int(EMPTY)]] * 2


# ----------------------------------------------------------------------------- eval

def _need(path):
    if not path.exists():
        pytest.fail(f"{path} not found: tests read ../shared/data")


def _slice(src, dst, n):
    with open(src, "rb") as f:
        dst.write_bytes(b"".join(f.readline() for _ in range(n)))
    return dst


def test_eval_markov_on_real_slices(tmp_path):
    _need(MSNBC)
    _need(NASA)
    ms = eval_markov(_slice(MSNBC, tmp_path / "m.seq", 30_007), "msnbc")
    na = eval_markov(_slice(NASA, tmp_path / "n.tsv", 8001), "nasa", k=3)
    for r in (ms, na):
        assert set(r["models"]) == {"markov", "first_order", "most_popular"}
        for s in r["models"].values():
            assert 0.0 <= s["top1"] <= s["top3"] <= 1.0
        assert r["models"]["markov"]["top3"] >= r["models"]["first_order"]["top3"]
        assert r["models"]["markov"]["top3"] > r["models"]["most_popular"]["top3"]
    assert ms["sessions"]["train"] == 24_000 and ms["skipped_lines"] == 0
    assert ms["models"]["markov"]["top1"] > 0.6


def test_eval_markov_bad_input(tmp_path):
    empty = tmp_path / "e.seq"
    empty.write_text("")
    with pytest.raises(errors.LogFormatError, match="session"):
        eval_markov(empty, "msnbc")
    g = tmp_path / "g.seq"
    g.write_text("1 2 3\nnot numbers\n4 5 x\n2 3 2\n1 1\n\n3 2 1\n")
    r = eval_markov(g, "msnbc", train_fraction=0.5)
    assert r["skipped_lines"] == 2 and r["test_transitions"] == 3
    with pytest.raises(errors.LogFormatError):
        eval_markov(empty, "nasa")
    with pytest.raises(errors.LogFormatError, match="format"):
        eval_markov(g, "csv")


def test_eval_markov_cli(tmp_path):
    _need(MSNBC)
    args = build_parser().parse_args(["eval", "markov", str(_slice(MSNBC, tmp_path / "m.seq", 2007)),
                         "--format", "msnbc", "--train-fraction", "0.5", "--json"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert args.fn(args) == 0
    out = json.loads(buf.getvalue())
    assert set(out["models"]) == {"markov", "first_order", "most_popular"}
    assert out["sessions"]["train"] == 1000


def test_compact_forgets_idle_users_and_keeps_the_heaviest_rows():
    rng = np.random.default_rng(11)
    m = Markov(half_life_s=0.0, session_gap_s=10.0)
    n = 20_000
    # one busy path 1 -> 2 -> 3 -> 1 ... and a long tail of random pages
    users = rng.integers(0, 400, n).astype(np.uint64)
    res = np.where(np.arange(n) % 2 == 0, rng.integers(1000, 5000, n),
                   np.tile([1, 2, 3], n // 3 + 1)[:n]).astype(np.uint64)
    busy = np.zeros(3000, np.uint64) + 7
    path = np.tile(np.array([1, 2, 3], np.uint64), 1000)
    m.learn({"user": np.concatenate([users, busy]), "resource": np.concatenate([res, path]),
             "ts_us": np.arange(n + 3000, dtype=np.int64) * 1000})
    rows_before = m.rows
    before = m.predict({"context": np.array([[2, 3]], np.uint64), "k": 1})
    now = (n + 3000) * 1000 + 11_000_000  # everyone idle past the 10 s gap
    gone = m.compact(now, max_rows=200)
    assert gone["users"] == 400 and len(m._users) == 0  # user 7 is among the 400
    assert m.rows == 150 and gone["rows"] == rows_before - 150
    after = m.predict({"context": np.array([[2, 3]], np.uint64), "k": 1})
    assert after["resource"][0, 0] == before["resource"][0, 0] == 1
    # it keeps learning after a compaction
    m.learn({"user": np.array([9, 9, 9], np.uint64), "resource": np.array([1, 2, 3], np.uint64),
             "ts_us": np.array([now, now + 1, now + 2], np.int64)})
    assert m.predict({"users": np.array([9], np.uint64), "k": 1})["resource"][0, 0] == 1
