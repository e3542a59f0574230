"""SlotMap and its hashmap kernels: ids -> slots with release and slot reuse, growth spread
over calls (fill, then migrate), checkpoints that keep every slot."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bae_core.kernels import hashmap as hm
from bae_core.slots import EMPTY, SlotMap, _bitmap

E = int(EMPTY)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ID = st.one_of(st.integers(0, 40), st.integers(0, 300), st.integers(0, 2**64 - 2))
SPREAD = np.uint64(0x9E3779B97F4A7C15)


class Ref:
    """The specified behaviour: a new id takes the lowest free slot, else slot high_water."""

    def __init__(self):
        self.slot: dict[int, int] = {}
        self.free: set[int] = set()
        self.hw = 0
        self.max_live = 0

    def insert(self, batch) -> tuple[list[int], list[int]]:
        out, new = [], []
        for x in batch:
            if x == E:
                out.append(-1)
                continue
            if x not in self.slot:
                if self.free:
                    s = min(self.free)
                    self.free.remove(s)
                else:
                    s, self.hw = self.hw, self.hw + 1
                self.slot[x] = s
                new.append(s)
            out.append(self.slot[x])
        self.max_live = max(self.max_live, len(self.slot))
        return out, new

    def release_ids(self, batch) -> list[int]:
        freed = []
        for x in batch:
            if x in self.slot:
                s = self.slot.pop(x)
                self.free.add(s)
                freed.append(s)
        return freed

    def release_slots(self, slots) -> list[int]:
        by_slot = {s: x for x, s in self.slot.items()}
        return self.release_ids([by_slot.pop(s) for s in slots if s in by_slot])


def check(m: SlotMap, ref: Ref) -> None:
    """Every observable and internal invariant of ``m`` against the reference."""
    assert len(m) == m.live == len(ref.slot)
    assert m.high_water == m.n == ref.hw <= ref.max_live
    assert m.free_count == len(ref.free) == ref.hw - len(ref.slot)
    assert m.capacity == len(m.ids) >= m.high_water
    want = np.full(ref.hw, E, np.uint64)
    for x, s in ref.slot.items():
        want[s] = x
    assert np.array_equal(m.ids[: ref.hw], want)  # slot -> id, EMPTY at free slots
    assert (m.ids[ref.hw:] == EMPTY).all()
    keys = np.array(list(ref.slot), np.uint64)
    assert m.find(keys).tolist() == list(ref.slot.values())
    # no tombstones: the tables hold exactly the live ids
    held = np.count_nonzero(m._keys != EMPTY)
    if m._phase == 2:
        held += np.count_nonzero(m._okeys != EMPTY)
    assert held == len(ref.slot)


def longest_run(keys: np.ndarray) -> int:
    """Longest cluster of occupied cells (cyclic)."""
    full = np.concatenate([keys, keys]) != EMPTY
    if full.all():
        return len(keys)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], full.astype(np.int8), [0]])))
    return int((edges[1::2] - edges[::2]).max(initial=0))


# ---- against a dict -------------------------------------------------------------------------

@PROPS
@given(batches=st.lists(st.lists(ID, max_size=60), max_size=8),
       probes=st.lists(ID, max_size=30), capacity=st.integers(1, 40),
       step=st.integers(1, 64))
def test_slotmap_matches_dict(batches, probes, capacity, step):
    m = SlotMap(capacity, step=step)
    ref = Ref()
    for batch in batches:
        got = m.slots_for(np.array(batch, np.uint64))
        want, new = ref.insert(batch)
        assert got.dtype == np.int64 and got.tolist() == want
        assert m.last_new.tolist() == new
        check(m, ref)
    found = m.find(np.array(probes, np.uint64))
    assert found.tolist() == [ref.slot.get(i, -1) for i in probes]
    for i in probes:
        assert m.find_one(i) == ref.slot.get(i, -1)
    back = SlotMap.from_state(m.state())
    check(back, ref)
    assert back.state()["ids"].tolist() == m.state()["ids"].tolist()


class SlotMachine(RuleBasedStateMachine):
    """Interleaved inserts, finds, releases (by id and by slot) and checkpoint restores on
    tiny maps with tiny steps, so many steps run with a growth in progress."""

    @initialize(capacity=st.integers(1, 24), step=st.integers(1, 8),
                per_id=st.sampled_from([0, 1, SlotMap.STEP_PER_ID]), prefill=st.integers(0, 300))
    def setup(self, capacity, step, per_id, prefill):
        self.m = SlotMap(capacity, step=step)
        self.m.STEP_PER_ID = per_id  # below 4 the table often fills up mid-growth
        self.ref = Ref()
        for lo in range(0, prefill, 7):  # some ids to start with, so more growths follow
            self.insert(list(range(1000 + lo, 1000 + min(lo + 7, prefill))))

    @rule(batch=st.lists(st.one_of(ID, st.just(E)), max_size=50))
    def insert(self, batch):
        got = self.m.slots_for(np.array(batch, np.uint64))
        want, new = self.ref.insert(batch)
        assert got.tolist() == want
        assert self.m.last_new.tolist() == new

    @rule(batch=st.lists(ID, max_size=50))
    def find(self, batch):
        got = self.m.find(np.array(batch, np.uint64))
        assert got.tolist() == [self.ref.slot.get(x, -1) for x in batch]

    @rule(data=st.data())
    def release_ids(self, data):
        known = sorted(self.ref.slot)
        pick = st.sampled_from(known) if known else ID
        batch = data.draw(st.lists(st.one_of(pick, ID, st.just(E)), max_size=40))
        freed = self.m.release(ids=np.array(batch, np.uint64))
        assert freed.tolist() == self.ref.release_ids(batch)

    @rule(data=st.data())
    def release_slots(self, data):
        slots = data.draw(st.lists(st.integers(-2, self.ref.hw + 2), max_size=40))
        freed = self.m.release(slots=np.array(slots, np.int64))
        assert freed.tolist() == self.ref.release_slots(slots)

    @rule()
    def restore(self):
        back = SlotMap.from_state(self.m.state(), step=self.m.step)
        check(back, self.ref)
        back.STEP_PER_ID = self.m.STEP_PER_ID
        self.m = back  # later rules run on the restored map

    @invariant()
    def consistent(self):
        check(self.m, self.ref)


TestSlotMachine = SlotMachine.TestCase
TestSlotMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


# ---- growth ---------------------------------------------------------------------------------

def churn(m: SlotMap, ref: Ref, rng, rounds: int, batch: int, pool: int, phases=None):
    for _ in range(rounds):
        ids = rng.integers(0, pool, batch).astype(np.uint64)
        if phases is not None:
            phases.append(m._phase)
        assert m.slots_for(ids).tolist() == ref.insert(ids.tolist())[0]
        if rng.random() < 0.5:
            gone = rng.integers(0, pool, batch // 2).astype(np.uint64)
            assert m.release(ids=gone).tolist() == ref.release_ids(gone.tolist())


def test_growth_runs_over_many_calls_with_releases_in_between():
    rng = np.random.default_rng(7)
    m, ref, phases = SlotMap(16, step=8), Ref(), []
    churn(m, ref, rng, 600, 24, 5000, phases)
    check(m, ref)
    assert len(m._keys) >= 1024  # it grew several times ...
    assert phases.count(1) > 20 and phases.count(2) > 20  # ... each growth across calls


def test_growth_keeps_slots():
    m = SlotMap(16)
    assert m.capacity >= 16
    ids = np.arange(10_000, dtype=np.uint64) * SPREAD
    slots = m.slots_for(ids)  # one batch: growth finishes inside the call
    assert slots.tolist() == list(range(10_000)) == m.last_new.tolist()
    assert m.capacity >= 10_000 and len(m) == 10_000
    assert m.find(ids).tolist() == list(range(10_000))
    assert m.slots_for(ids[::-1]).tolist() == list(range(9_999, -1, -1))
    assert len(m) == 10_000 and len(m.last_new) == 0


def test_work_per_call_is_bounded():
    """No call does more than its budget plus one cluster, and no call finishes a growth
    on its own, while the table grows from 16 to 65536 cells."""
    m, batch, step = SlotMap(8, step=64), 16, 64
    budget = max(step, SlotMap.STEP_PER_ID * batch)
    ids = (np.arange(30_000, dtype=np.uint64) + np.uint64(1)) * SPREAD
    run, phases, grown = 0, [], 0
    for i in range(0, len(ids), batch):
        if m._phase != 2:
            run = longest_run(m._keys)  # the table a migration would start from
        size = len(m._keys)
        phases.append(m._phase)
        m.slots_for(ids[i:i + batch])
        if i >= 3 * batch:
            m.release(ids=ids[i - 3 * batch: i - 3 * batch + 4])
        # fill: 4*budget table cells and 4*budget ids entries; migrate: budget + a cluster
        assert m.last_work <= 8 * budget + budget + run + 1
        grown += len(m._keys) > size
    assert len(m._keys) >= 1 << 15 and grown >= 11
    assert phases.count(1) > 100 and phases.count(2) > 500
    kept = np.ones(len(ids), bool)
    kept[: len(ids) - 3 * batch] = np.arange(len(ids) - 3 * batch) % batch >= 4
    assert (m.find(ids[kept]) >= 0).all() and (m.find(ids[~kept]) == -1).all()


def test_a_batch_past_the_hard_limit_finishes_growth_in_its_call():
    m = SlotMap(16, step=1)
    first = (np.arange(20, dtype=np.uint64) + np.uint64(1)) * SPREAD
    m.slots_for(first)
    assert m._phase == 1  # started, barely advanced
    more = (np.arange(20, 5000, dtype=np.uint64) + np.uint64(1)) * SPREAD
    assert m.slots_for(more).tolist() == list(range(20, 5000))
    assert m.find(first).tolist() == list(range(20))
    assert m.last_work > 5000


# ---- release and reuse ----------------------------------------------------------------------

def test_release_frees_and_reuses_lowest_slots_first():
    m = SlotMap()
    ids = np.arange(100, 110, dtype=np.uint64)
    m.slots_for(ids)
    assert m.release(ids=np.array([103, 107, 103, 999], np.uint64)).tolist() == [3, 7]
    assert m.release(slots=np.array([5, 7, -1, 10, 99], np.int64)).tolist() == [5]
    assert len(m) == 7 and m.high_water == 10 and m.free_count == 3
    assert m.ids[[3, 5, 7]].tolist() == [E] * 3
    assert m.find(np.array([103, 105, 107, 104], np.uint64)).tolist() == [-1, -1, -1, 4]
    got = m.slots_for(np.array([500, 104, 501, 500, 502, 503], np.uint64))
    assert got.tolist() == [3, 4, 5, 3, 7, 10]
    assert m.last_new.tolist() == [3, 5, 7, 10]
    assert m.high_water == 11 and m.free_count == 0


def test_release_argument_errors():
    m = SlotMap()
    with pytest.raises(TypeError):
        m.release()
    with pytest.raises(TypeError):
        m.release(ids=np.zeros(1, np.uint64), slots=np.zeros(1, np.int64))
    assert m.release(ids=np.zeros(0, np.uint64)).tolist() == []


def test_churn_stops_slot_arrays_from_growing():
    m, ref = SlotMap(64, step=16), Ref()
    live = []
    for r in range(400):
        new = (np.arange(r * 50, r * 50 + 50, dtype=np.uint64) + np.uint64(1)) * SPREAD
        assert m.slots_for(new).tolist() == ref.insert(new.tolist())[0]
        live.extend(new.tolist())
        if len(live) > 2000:  # evict the oldest
            gone, live = live[:50], live[50:]
            assert m.release(ids=np.array(gone, np.uint64)).tolist() == ref.release_ids(gone)
        if r == 200:
            cap, hw = m.capacity, m.high_water
    check(m, ref)
    assert m.high_water == hw == ref.max_live <= 2050
    assert m.capacity == cap


def test_empty_id_is_reserved():
    m = SlotMap()
    got = m.slots_for(np.array([E, 5, E], np.uint64))
    assert got.tolist() == [-1, 0, -1] and len(m) == 1 and m.last_new.tolist() == [0]
    assert m.find_one(E) == -1
    assert m.release(ids=np.array([E], np.uint64)).tolist() == []


def test_out_argument_and_strided_ids():
    rec = np.zeros(4, [("ts", "<i8"), ("user", "<u8")])
    rec["user"] = [5, 6, 5, 9]
    m = SlotMap()
    out = np.full(4, -7, np.int64)
    assert m.slots_for(rec["user"], out) is out
    assert out.tolist() == [0, 1, 0, 2]
    assert m.find(rec["user"]).tolist() == [0, 1, 0, 2]


# ---- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("phase", [1, 2])
def test_state_round_trip_mid_growth(phase):
    rng = np.random.default_rng(phase)
    m, ref = SlotMap(16, step=4), Ref()
    for _ in range(5000):
        churn(m, ref, rng, 1, 16, 3000)
        if m._phase == phase and len(m._keys) >= 512:
            break
    assert m._phase == phase
    st_ = m.state()
    assert list(st_) == ["ids"] and len(st_["ids"]) == m.high_water
    back = SlotMap.from_state(st_, step=4)
    check(back, ref)
    assert back._phase == 0
    # both maps give the same slots (free slots included) from here on
    ref2 = Ref()
    ref2.slot, ref2.free, ref2.hw = dict(ref.slot), set(ref.free), ref.hw
    ref2.max_live = ref.max_live
    churn(m, ref, np.random.default_rng(9), 60, 16, 3000)
    churn(back, ref2, np.random.default_rng(9), 60, 16, 3000)
    assert np.array_equal(m.ids[: m.high_water], back.ids[: back.high_water])


def test_from_state_with_many_free_slots_and_legacy_dense_ids():
    ids = np.full(1000, E, np.uint64)
    ids[[3, 500, 999]] = [7, 8, 9]
    m = SlotMap.from_state({"ids": ids})
    assert len(m) == 3 and m.high_water == 1000 <= m.capacity
    assert m.find(np.array([7, 8, 9], np.uint64)).tolist() == [3, 500, 999]
    assert m.slots_for(np.array([1, 2], np.uint64)).tolist() == [0, 1]
    dense = SlotMap.from_state({"ids": np.array([30, 10, 20], np.uint64)})
    assert dense.find(np.array([10, 20, 30], np.uint64)).tolist() == [1, 2, 0]
    assert SlotMap.from_state({"ids": np.zeros(0, np.uint64)}).high_water == 0


def test_from_state_rejects_duplicates():
    with pytest.raises(ValueError):
        SlotMap.from_state({"ids": np.array([1, 2, E, 1], np.uint64)})


# ---- kernels --------------------------------------------------------------------------------

def test_hashmap_upsert_stops_at_max_live():
    keys = np.full(16, EMPTY, np.uint64)
    vals = np.full(16, -1, np.int64)
    ids_ = np.full(12, EMPTY, np.uint64)
    free, off = _bitmap(12)
    meta = np.array([0, 0, 2, 0], np.int64)
    batch = np.array([10, 11, 10, 12, 13], np.uint64)
    out, new = np.full(5, -9, np.int64), np.full(5, -9, np.int64)
    args = (keys, vals, keys, vals, False, ids_, ids_, 0, free, off, meta, batch, out, new)
    assert hm.upsert(*args, 0) == 3  # 12 did not fit
    assert out[:3].tolist() == [0, 1, 0] and meta.tolist() == [2, 2, 2, 2]
    meta[2] = 8
    assert hm.upsert(*args, 3) == 5
    assert out.tolist() == [0, 1, 0, 2, 3] and new.tolist() == [0, 1, 2, 3, -9]
    assert ids_[:4].tolist() == [10, 11, 12, 13]


def test_migrate_moves_whole_clusters():
    old = np.full(64, EMPTY, np.uint64)
    ov = np.full(64, -1, np.int64)
    ids_ = np.arange(1, 30, dtype=np.uint64) * SPREAD
    assert hm.insert_slots(old, ov, ids_) == -1
    keys = np.full(128, EMPTY, np.uint64)
    vals = np.full(128, -1, np.int64)
    start = hm.first_empty(old)
    cur = 0
    while cur < 64:
        nxt = hm.migrate(old, ov, keys, vals, start, cur, 3)
        assert nxt - cur >= min(3, 64 - cur)
        assert nxt == 64 or old[(start + nxt - 1) % 64] == EMPTY  # stops after an empty
        moved = (start + np.arange(nxt)) % 64
        assert (old[moved] == EMPTY).all()
        out = np.empty(len(ids_), np.int64)
        hm.find(keys, vals, old, ov, True, ids_, out)
        assert out.tolist() == list(range(len(ids_)))  # every id in exactly one table
        cur = nxt
    assert (old == EMPTY).all() and np.count_nonzero(keys != EMPTY) == len(ids_)


def test_backward_shift_delete_keeps_clusters_short():
    keys = np.full(64, EMPTY, np.uint64)
    vals = np.full(64, -1, np.int64)
    ids_ = np.full(48, EMPTY, np.uint64)
    free, off = _bitmap(48)
    meta = np.array([0, 0, 48, 0], np.int64)
    rng = np.random.default_rng(1)
    live: set[int] = set()
    for _ in range(300):
        batch = rng.integers(0, 40, 8).astype(np.uint64)
        out, new = np.empty(8, np.int64), np.empty(8, np.int64)
        meta[3] = 0
        hm.upsert(keys, vals, keys, vals, False, ids_, ids_, 0, free, off, meta, batch, out,
                  new, 0)
        live |= set(batch.tolist())
        gone = rng.integers(0, 40, 8).astype(np.uint64)
        hm.release(keys, vals, keys, vals, False, ids_, ids_, 0, free, off, meta, gone, False,
                   np.empty(8, np.int64))
        live -= set(gone.tolist())
        assert np.count_nonzero(keys != EMPTY) == len(live) == meta[0]
        # each id sits after its home with no empty cell in between
        for j in np.flatnonzero(keys != EMPTY):
            h = int(hm.home(keys[j], 63))
            assert (keys[(h + np.arange((j - h) % 64)) % 64] != EMPTY).all()


@PROPS
@given(ops=st.lists(st.one_of(st.integers(0, 5000), st.none()), max_size=300),
       cap=st.sampled_from([1, 64, 65, 4096, 5000]))
def test_free_bitmap_pops_lowest(ops, cap):
    bm, off = _bitmap(cap)
    ref: set[int] = set()
    for op in ops:
        if op is None:
            assert hm.bm_pop(bm, off) == (min(ref) if ref else -1)
            ref.discard(min(ref) if ref else -1)
        elif op < cap:
            hm.bm_push(bm, off, op)
            ref.add(op)
    l0 = bm[: off[1]] if len(off) > 1 else bm
    rebuilt, _ = _bitmap(cap, l0.copy())
    assert np.array_equal(rebuilt, bm)  # summary levels agree with level 0


def test_ctz_and_mix64():
    for i in range(64):
        assert hm.ctz(np.uint64(1 << i) | np.uint64(1 << 63)) == i
    low = {int(hm.mix64(np.uint64(i))) & 1023 for i in range(512)}
    assert len(low) > 300
