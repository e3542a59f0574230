"""Fixed-capacity float64 ring buffers of recent history for many series at once.

All series live in one C-contiguous ``(n_series, 2*capacity)`` array. Every item is
written twice, at ``pos`` and ``pos + capacity`` (the mirror trick), so the latest
``w <= capacity`` items of any series are always one contiguous run of its row and
``latest()`` can return a zero-copy view. Not thread-safe: use one writer at a time.
"""

from libc.math cimport NAN
from libc.stdint cimport int64_t
from cython cimport floating

import numpy as np


cdef int _gather(double[:, ::1] buf, int64_t[::1] pos, int64_t[::1] count, Py_ssize_t cap,
                 const int64_t[:] slots, Py_ssize_t w, floating[:, :] out) except -1 nogil:
    # Row i of out = last min(w, count) items of slots[i], oldest first, NaN-padded on the left.
    cdef Py_ssize_t i, j, s, m, pad, start
    for i in range(slots.shape[0]):
        s = <Py_ssize_t>slots[i]
        m = <Py_ssize_t>count[s]
        if m > w:
            m = w
        pad = w - m
        for j in range(pad):
            out[i, j] = NAN
        start = <Py_ssize_t>pos[s] + cap - m
        for j in range(m):
            out[i, pad + j] = <floating>buf[s, start + j]
    return 0


cdef class RingBuffer:
    """``n_series`` float64 ring buffers of ``capacity`` items each, in one mirrored array.

    Views returned by ``latest``/``latest_all`` are read-only (writing them would break
    the mirror) and see later pushes; after ``grow`` or ``from_state`` they refer to the
    old array and no longer update.
    """

    def __cinit__(self, Py_ssize_t n_series, Py_ssize_t capacity):
        if n_series < 0:
            raise ValueError(f"n_series must be >= 0, got {n_series}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._set_arrays(np.zeros((n_series, 2 * capacity), dtype=np.float64),
                         np.zeros(n_series, dtype=np.int64),
                         np.zeros(n_series, dtype=np.int64))

    cdef int _set_arrays(self, object data, object pos, object count) except -1:
        self._data = data
        self._pos_arr = pos
        self._count_arr = count
        self._buf = data
        self._pos = pos
        self._count = count
        self._n = data.shape[0]
        return 0

    def __repr__(self):
        return f"RingBuffer(n_series={self._n}, capacity={self.capacity})"

    @property
    def n_series(self):
        """Number of series (slots ``0 .. n_series-1``)."""
        return self._n

    @property
    def nbytes(self):
        """Bytes held by the value, position and count arrays."""
        return self._data.nbytes + self._pos_arr.nbytes + self._count_arr.nbytes

    cdef int _check_slot(self, Py_ssize_t slot) except -1:
        if slot < 0 or slot >= self._n:
            raise IndexError(f"slot {slot} out of range for RingBuffer with {self._n} series")
        return 0

    cdef int check_slots(self, const int64_t[:] slots) except -1:
        cdef Py_ssize_t i, n = slots.shape[0]
        cdef int64_t lo, hi, v
        if n == 0:
            return 0
        lo = hi = slots[0]
        with nogil:
            for i in range(1, n):
                v = slots[i]
                lo = v if v < lo else lo
                hi = v if v > hi else hi
        if lo < 0 or hi >= self._n:
            raise IndexError(f"slot {lo if lo < 0 else hi} out of range for RingBuffer "
                             f"with {self._n} series (batch slots span {lo}..{hi})")
        return 0

    cdef int push_unchecked(self, Py_ssize_t slot, double value) except -1 nogil:
        cdef Py_ssize_t cap = self.capacity
        cdef Py_ssize_t p = <Py_ssize_t>self._pos[slot]
        self._buf[slot, p] = value
        self._buf[slot, p + cap] = value
        p += 1
        if p == cap:
            p = 0
        self._pos[slot] = p
        if self._count[slot] < cap:
            self._count[slot] += 1
        return 0

    def push(self, Py_ssize_t slot, double value):
        """Append ``value`` to series ``slot``, dropping its oldest item when full."""
        self._check_slot(slot)
        self.push_unchecked(slot, value)

    def push_batch(self, const int64_t[:] slots, const double[:] values):
        """Append ``values[i]`` to series ``slots[i]`` for every i, in order, without the GIL.

        Slots may repeat. All slots are range-checked first (IndexError, nothing written).
        """
        cdef Py_ssize_t i, s, p, n = slots.shape[0], cap = self.capacity
        cdef double v
        if values.shape[0] != n:
            raise ValueError(f"slots and values differ in length ({n} != {values.shape[0]})")
        if n == 0:
            return
        self.check_slots(slots)
        cdef double[:, ::1] buf = self._buf
        cdef int64_t[::1] pos = self._pos
        cdef int64_t[::1] count = self._count
        with nogil:
            for i in range(n):
                s = <Py_ssize_t>slots[i]
                v = values[i]
                p = <Py_ssize_t>pos[s]
                buf[s, p] = v
                buf[s, p + cap] = v
                p += 1
                if p == cap:
                    p = 0
                pos[s] = p
                if count[s] < cap:
                    count[s] += 1

    def count(self, Py_ssize_t slot):
        """Number of items held for ``slot`` (at most ``capacity``)."""
        self._check_slot(slot)
        return self._count[slot]

    def latest(self, Py_ssize_t slot, Py_ssize_t w):
        """Zero-copy read-only view of the last ``min(w, count(slot))`` items, oldest first."""
        self._check_slot(slot)
        if w < 0:
            raise ValueError(f"w must be >= 0, got {w}")
        cdef Py_ssize_t m = min(w, <Py_ssize_t>self._count[slot])
        cdef Py_ssize_t end = <Py_ssize_t>self._pos[slot] + self.capacity
        view = self._data[slot, end - m:end]
        view.flags.writeable = False
        return view

    def latest_all(self, Py_ssize_t w, out=None):
        """Last ``min(w, count)`` items of every series as one zero-copy ``(n_series, m)`` view.

        A numpy view has a single row stride, so it exists only when all series have
        the same write position and the same ``m`` (e.g. series pushed in lockstep).
        Otherwise this fills ``out`` like ``window_into(arange(n_series), w, out)`` and
        returns it, or raises ValueError when ``out`` is None.
        """
        if w < 0:
            raise ValueError(f"w must be >= 0, got {w}")
        cdef Py_ssize_t i, m, p0 = 0, mlo = 0, mhi = 0, cap = self.capacity
        cdef bint aligned = True
        cdef int64_t[::1] pos = self._pos
        cdef int64_t[::1] count = self._count
        if self._n > 0:
            p0 = <Py_ssize_t>pos[0]
            mlo = mhi = <Py_ssize_t>count[0]
            with nogil:
                for i in range(1, self._n):
                    if pos[i] != p0:
                        aligned = False
                        break
                    m = <Py_ssize_t>count[i]
                    mlo = m if m < mlo else mlo
                    mhi = m if m > mhi else mhi
        if aligned and min(w, mlo) == min(w, mhi):
            m = min(w, mlo)
            view = self._data[:, p0 + cap - m:p0 + cap]
            view.flags.writeable = False
            return view
        if out is None:
            raise ValueError("series are not aligned (different write positions or counts), "
                             "so no single strided view exists; pass out=(n_series, w) array "
                             "or use window_into")
        return self.window_into(np.arange(self._n, dtype=np.int64), w, out)

    def window_into(self, const int64_t[:] slots, Py_ssize_t w, out):
        """Copy the last ``w`` items of each ``slots[i]`` into row i of ``out`` and return it.

        ``out`` is a preallocated float64 or float32 array of shape ``(len(slots), w)``;
        rows are oldest first, left-padded with NaN where a series holds fewer than ``w``.
        """
        cdef Py_ssize_t k = slots.shape[0]
        cdef double[:, :] o64
        cdef float[:, :] o32
        if w < 0:
            raise ValueError(f"w must be >= 0, got {w}")
        if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != k or out.shape[1] != w:
            raise ValueError(f"out must be an ndarray of shape ({k}, {w})")
        self.check_slots(slots)
        if out.dtype == np.float64:
            o64 = out
            with nogil:
                _gather(self._buf, self._pos, self._count, self.capacity, slots, w, o64)
        elif out.dtype == np.float32:
            o32 = out
            with nogil:
                _gather(self._buf, self._pos, self._count, self.capacity, slots, w, o32)
        else:
            raise TypeError(f"out must be float64 or float32, got {out.dtype}")
        return out

    def clear(self, Py_ssize_t slot):
        """Forget all history of ``slot``."""
        self._check_slot(slot)
        self._pos[slot] = 0
        self._count[slot] = 0

    def clear_slots(self, const int64_t[:] slots):
        """Forget all history of every slot in ``slots`` (evicted or reused series)."""
        cdef Py_ssize_t i
        self.check_slots(slots)
        for i in range(slots.shape[0]):
            self._pos[slots[i]] = 0
            self._count[slots[i]] = 0

    def rows(self, Py_ssize_t lo, Py_ssize_t hi):
        """Copies of series ``lo:hi`` in the ``state()`` layout (checkpoints in chunks)."""
        if not 0 <= lo <= hi <= self._n:
            raise IndexError(f"rows {lo}:{hi} outside 0:{self._n}")
        return {"values": self._data[lo:hi, :self.capacity].copy(),
                "pos": self._pos_arr[lo:hi].copy(), "count": self._count_arr[lo:hi].copy()}

    def set_rows(self, Py_ssize_t lo, values, pos, count):
        """Load series ``lo:lo+len(pos)`` from arrays laid out as ``rows`` returns them."""
        values = np.asarray(values, dtype=np.float64)
        pos = np.asarray(pos, dtype=np.int64)
        count = np.asarray(count, dtype=np.int64)
        cdef Py_ssize_t n = pos.shape[0], cap = self.capacity
        if values.shape != (n, cap) or count.shape != (n,):
            raise ValueError(f"values must be ({n}, {cap}) and count ({n},)")
        if not 0 <= lo <= lo + n <= self._n:
            raise IndexError(f"rows {lo}:{lo + n} outside 0:{self._n}")
        if n and (pos.min() < 0 or pos.max() >= cap or count.min() < 0 or count.max() > cap):
            raise ValueError(f"pos must lie in [0, {cap}) and count in [0, {cap}]")
        self._data[lo:lo + n, :cap] = values
        self._data[lo:lo + n, cap:] = values
        self._pos_arr[lo:lo + n] = pos
        self._count_arr[lo:lo + n] = count

    def grow(self, Py_ssize_t n_series):
        """Extend to ``n_series`` series (new ones empty), keeping all existing history."""
        if n_series < self._n:
            raise ValueError(f"cannot shrink from {self._n} to {n_series} series")
        if n_series == self._n:
            return
        data = np.zeros((n_series, 2 * self.capacity), dtype=np.float64)
        pos = np.zeros(n_series, dtype=np.int64)
        count = np.zeros(n_series, dtype=np.int64)
        data[:self._n] = self._data
        pos[:self._n] = self._pos_arr
        count[:self._n] = self._count_arr
        self._set_arrays(data, pos, count)

    def state(self):
        """Copies of the contents as plain arrays: ``{"values": (n_series, capacity) float64,
        "pos": (n_series,) int64, "count": (n_series,) int64}``; see ``from_state``."""
        return {"values": self._data[:, :self.capacity].copy(),
                "pos": self._pos_arr.copy(),
                "count": self._count_arr.copy()}

    @classmethod
    def from_state(cls, values, pos, count):
        """Rebuild a buffer from ``state()`` arrays: ``RingBuffer.from_state(**rb.state())``."""
        values = np.asarray(values, dtype=np.float64)
        pos = np.asarray(pos, dtype=np.int64)
        count = np.asarray(count, dtype=np.int64)
        if values.ndim != 2 or values.shape[1] < 1:
            raise ValueError(f"values must have shape (n_series, capacity>=1), got {values.shape}")
        n, cap = values.shape
        if pos.shape != (n,) or count.shape != (n,):
            raise ValueError(f"pos and count must have shape ({n},), got {pos.shape} and {count.shape}")
        if n and (pos.min() < 0 or pos.max() >= cap or count.min() < 0 or count.max() > cap):
            raise ValueError(f"pos must lie in [0, {cap}) and count in [0, {cap}]")
        cdef RingBuffer rb = cls(n, cap)
        rb._data[:, :cap] = values
        rb._data[:, cap:] = values
        rb._pos_arr[:] = pos
        rb._count_arr[:] = count
        return rb
