"""Tests of ext.ringbuf.RingBuffer against a deque-per-series reference."""

import os
import shutil
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext.ringbuf import RingBuffer

ROOT = Path(__file__).resolve().parents[1]


class Ref:
    """Pure-Python model: one deque(maxlen=capacity) per series."""

    def __init__(self, n, cap):
        self.cap = cap
        self.q = [deque(maxlen=cap) for _ in range(n)]

    def push(self, s, v):
        self.q[s].append(v)

    def latest(self, s, w):
        return list(self.q[s])[-w:] if w else []

    def window(self, s, w):
        items = self.latest(s, w)
        return [np.nan] * (w - len(items)) + items


def check_equal(rb, ref, windows):
    for s in range(len(ref.q)):
        assert rb.count(s) == len(ref.q[s])
        for w in windows:
            assert rb.latest(s, w).tolist() == ref.latest(s, w)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 6))
    cap = draw(st.integers(1, 9))
    batches = draw(st.lists(st.lists(st.tuples(st.integers(0, n - 1), finite), max_size=40),
                            max_size=8))
    return n, cap, batches


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_push_batch_matches_reference(sc):
    n, cap, batches = sc
    rb, ref = RingBuffer(n, cap), Ref(n, cap)
    windows = range(0, cap + 3)
    for batch in batches:
        slots = np.array([s for s, _ in batch], dtype=np.int64)
        vals = np.array([v for _, v in batch], dtype=np.float64)
        rb.push_batch(slots, vals)
        for s, v in batch:
            ref.push(s, v)
        check_equal(rb, ref, windows)
        for w in windows:
            out = rb.window_into(np.arange(n, dtype=np.int64), w, np.empty((n, w)))
            expect = np.array([ref.window(s, w) for s in range(n)]).reshape(n, w)
            np.testing.assert_array_equal(out, expect)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 4), cap=st.integers(1, 6),
       ops=st.lists(st.tuples(st.sampled_from(["push", "clear"]), st.integers(0, 3), finite),
                    max_size=60))
def test_push_and_clear_match_reference(n, cap, ops):
    rb, ref = RingBuffer(n, cap), Ref(n, cap)
    for op, s, v in ops:
        s %= n
        if op == "push":
            rb.push(s, v)
            ref.push(s, v)
        else:
            rb.clear(s)
            ref.q[s].clear()
    check_equal(rb, ref, range(cap + 2))


def test_latest_is_zero_copy_and_sees_later_pushes():
    rb = RingBuffer(2, 8)
    for i in range(5):
        rb.push(0, float(i))
    view = rb.latest(0, 8)
    assert view.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert np.shares_memory(view, rb.state()["values"]) is False  # state() copies
    full = rb.latest(0, 3)
    assert full.base is not None and not full.flags.writeable
    rb.push(1, 1.0)
    assert np.shares_memory(rb.latest(0, 3), rb.latest(0, 8))
    with pytest.raises(ValueError):
        view[0] = 99.0  # read-only: a write would break the mirror


def test_zero_copy_against_backing_array():
    rb = RingBuffer(3, 4)
    for i in range(11):
        rb.push(2, float(i))
    a = rb.latest(2, 4)
    b = rb.latest(2, 2)
    assert np.shares_memory(a, b)
    assert a.flags.c_contiguous and a.tolist() == [7.0, 8.0, 9.0, 10.0]


def test_wraparound_many_times():
    cap = 7
    rb = RingBuffer(3, cap)
    n = 10_000
    vals = np.arange(n, dtype=np.float64)
    rb.push_batch(np.full(n, 1, dtype=np.int64), vals)
    assert rb.count(1) == cap and rb.count(0) == 0
    for w in range(cap + 2):
        assert rb.latest(1, w).tolist() == vals[n - min(w, cap):].tolist()
    ref = deque(vals[-cap:].tolist(), maxlen=cap)
    for i in range(5 * cap + 3):  # one item at a time across several more wraps
        rb.push(1, float(-i))
        ref.append(float(-i))
        assert rb.latest(1, cap).tolist() == list(ref)
    assert rb.count(0) == rb.count(2) == 0


def test_repeated_slots_in_one_batch_keep_order():
    rb = RingBuffer(4, 5)
    slots = np.array([3, 1, 3, 3, 1, 3, 3, 3], dtype=np.int64)
    vals = np.arange(len(slots), dtype=np.float64)
    rb.push_batch(slots, vals)
    assert rb.latest(3, 5).tolist() == [2.0, 3.0, 5.0, 6.0, 7.0]
    assert rb.latest(1, 5).tolist() == [1.0, 4.0]


def test_grow_keeps_data():
    rb = RingBuffer(2, 3)
    rb.push_batch(np.array([0, 1, 0, 0, 0], dtype=np.int64), np.arange(5.0))
    old = rb.latest(0, 3)
    rb.grow(5)
    assert rb.n_series == 5
    assert rb.latest(0, 3).tolist() == [2.0, 3.0, 4.0]
    assert rb.latest(1, 3).tolist() == [1.0]
    assert [rb.count(s) for s in range(2, 5)] == [0, 0, 0]
    rb.push(4, 9.0)
    rb.push(0, 5.0)
    assert rb.latest(4, 3).tolist() == [9.0]
    assert rb.latest(0, 3).tolist() == [3.0, 4.0, 5.0]
    assert old.tolist() == [2.0, 3.0, 4.0]  # pre-grow views keep the old array
    rb.grow(5)
    with pytest.raises(ValueError):
        rb.grow(4)


def test_state_round_trip():
    rng = np.random.default_rng(1)
    rb = RingBuffer(50, 6)
    rb.push_batch(rng.integers(0, 50, 400), rng.normal(size=400))
    rb.clear(7)
    st_ = rb.state()
    assert set(st_) == {"values", "pos", "count"}
    assert st_["values"].shape == (50, 6) and st_["values"].dtype == np.float64
    assert all(isinstance(a, np.ndarray) for a in st_.values())
    rb2 = RingBuffer.from_state(**st_)
    assert (rb2.n_series, rb2.capacity) == (50, 6)
    for s in range(50):
        assert rb2.count(s) == rb.count(s)
        assert rb2.latest(s, 6).tolist() == rb.latest(s, 6).tolist()
    # both continue identically
    slots, vals = rng.integers(0, 50, 300), rng.normal(size=300)
    rb.push_batch(slots, vals)
    rb2.push_batch(slots, vals)
    for s in range(50):
        assert rb2.latest(s, 6).tolist() == rb.latest(s, 6).tolist()
    with pytest.raises(ValueError):
        RingBuffer.from_state(st_["values"], np.full(50, 6), st_["count"])


def test_invalid_slot_raises_and_leaves_data_intact():
    rb = RingBuffer(3, 4)
    rb.push_batch(np.array([0, 1, 2, 0], dtype=np.int64), np.array([1.0, 2.0, 3.0, 4.0]))
    before = rb.state()
    for bad in ([0, 1, 3], [2, -1, 0], [2**40], [-(2**62)]):
        with pytest.raises(IndexError, match="out of range"):
            rb.push_batch(np.array(bad, dtype=np.int64), np.zeros(len(bad)))
    for bad in (3, -1):
        with pytest.raises(IndexError):
            rb.push(bad, 1.0)
        with pytest.raises(IndexError):
            rb.latest(bad, 2)
        with pytest.raises(IndexError):
            rb.count(bad)
        with pytest.raises(IndexError):
            rb.clear(bad)
    with pytest.raises(IndexError):
        rb.window_into(np.array([0, 5], dtype=np.int64), 2, np.empty((2, 2)))
    after = rb.state()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    with pytest.raises(ValueError):
        rb.push_batch(np.array([0, 1], dtype=np.int64), np.zeros(3))


def test_window_into_pads_with_nan():
    rb = RingBuffer(4, 3)
    rb.push_batch(np.array([1, 1, 2, 2, 2, 2], dtype=np.int64), np.arange(6.0))
    slots = np.array([2, 0, 1, 2], dtype=np.int64)
    out = np.full((4, 5), 7.0)
    res = rb.window_into(slots, 5, out)
    assert res is out
    nan = np.nan
    expect = [[nan, nan, 3, 4, 5], [nan] * 5, [nan, nan, nan, 0, 1], [nan, nan, 3, 4, 5]]
    np.testing.assert_array_equal(out, expect)
    out32 = rb.window_into(slots, 2, np.empty((4, 2), dtype=np.float32))
    np.testing.assert_array_equal(out32, np.array([[4, 5], [nan, nan], [0, 1], [4, 5]], np.float32))
    strided = np.zeros((4, 6))[:, ::3]
    rb.window_into(slots, 2, strided)
    np.testing.assert_array_equal(strided, out32)
    with pytest.raises(ValueError):
        rb.window_into(slots, 2, np.empty((4, 3)))
    with pytest.raises(TypeError):
        rb.window_into(slots, 2, np.empty((4, 2), dtype=np.int64))


def test_latest_all_view_when_aligned_else_out():
    rb = RingBuffer(3, 4)
    for t in range(6):
        rb.push_batch(np.arange(3, dtype=np.int64), np.arange(3.0) * 10 + t)
    v = rb.latest_all(3)
    assert v.shape == (3, 3) and not v.flags.writeable
    assert np.shares_memory(v, rb.latest(0, 1))
    np.testing.assert_array_equal(v, [[3, 4, 5], [13, 14, 15], [23, 24, 25]])
    assert rb.latest_all(9).shape == (3, 4)
    rb.push(1, 99.0)  # positions now differ: no single strided view
    with pytest.raises(ValueError, match="not aligned"):
        rb.latest_all(3)
    out = np.empty((3, 3))
    res = rb.latest_all(3, out=out)
    assert res is out and not np.shares_memory(res, rb.latest(0, 1))
    np.testing.assert_array_equal(out, [[3, 4, 5], [14, 15, 99], [23, 24, 25]])
    assert RingBuffer(0, 4).latest_all(2).shape == (0, 0)


def test_properties_and_constructor_checks():
    rb = RingBuffer(10, 32)
    assert (rb.n_series, rb.capacity) == (10, 32)
    assert rb.nbytes == 10 * 64 * 8 + 2 * 10 * 8
    with pytest.raises(ValueError):
        RingBuffer(1, 0)
    with pytest.raises(ValueError):
        RingBuffer(-1, 4)
    with pytest.raises(ValueError):
        rb.latest(0, -1)


PROBE = '''
from ext.ringbuf cimport RingBuffer

def push_unchecked(RingBuffer rb, Py_ssize_t slot, double value):
    rb.push_unchecked(slot, value)
'''

CHECK = '''
import sys
import numpy as np
import ext.ringbuf, ext._rb_probe as probe
from ext.ringbuf import RingBuffer
assert ext.ringbuf.__file__.startswith(sys.argv[1]), ext.ringbuf.__file__
rb = RingBuffer(2, 3)
rb.push_batch(np.array([0, 0, 1, 0, 0], dtype=np.int64), np.arange(5.0))
probe.push_unchecked(rb, 1, 7.0)            # the cimport path works in range
assert rb.latest(0, 5).tolist() == [1.0, 3.0, 4.0], rb.latest(0, 5)
assert rb.latest(1, 5).tolist() == [2.0, 7.0]
try:
    probe.push_unchecked(rb, 2, 1.0)        # no pre-check on this path
except IndexError as e:
    print("debug IndexError:", e)
else:
    raise SystemExit("debug build did not bounds-check push_unchecked")
assert rb.latest(0, 5).tolist() == [1.0, 3.0, 4.0]
print("OK")
'''


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_debug_build_bounds_checks_unchecked_path(tmp_path):
    """BAE_DEBUG=1 build: the cdef push_unchecked path (no pre-check) raises IndexError."""
    (tmp_path / "ext").mkdir()
    shutil.copy(ROOT / "setup.py", tmp_path)
    for name in ("__init__.py", "ringbuf.pyx", "ringbuf.pxd"):  # only ours: others may be mid-edit
        shutil.copy(ROOT / "ext" / name, tmp_path / "ext")
    (tmp_path / "ext" / "_rb_probe.pyx").write_text(PROBE)
    (tmp_path / "check.py").write_text(textwrap.dedent(CHECK))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["BAE_DEBUG"] = "1"
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run([sys.executable, "check.py", str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "debug IndexError" in run.stdout and "OK" in run.stdout
