# Declarations of ext/ringbuf.pyx for other Cython modules: ``from ext.ringbuf cimport RingBuffer``.
from libc.stdint cimport int64_t

cdef class RingBuffer:
    cdef readonly Py_ssize_t capacity   # items kept per series
    cdef Py_ssize_t _n                  # number of series
    cdef object _data                   # float64 ndarray (n_series, 2*capacity), mirrored rows
    cdef object _pos_arr                # int64 ndarray (n_series,): next write index in [0, capacity)
    cdef object _count_arr              # int64 ndarray (n_series,): items held, in [0, capacity]
    cdef double[:, ::1] _buf            # memoryviews of the three arrays above
    cdef int64_t[::1] _pos
    cdef int64_t[::1] _count

    cdef int _set_arrays(self, object data, object pos, object count) except -1
    cdef int _check_slot(self, Py_ssize_t slot) except -1
    # Raises IndexError unless every slot is in [0, n_series) (one min/max pass).
    cdef int check_slots(self, const int64_t[:] slots) except -1
    # No range check in the default build (caller guarantees 0 <= slot < n_series);
    # with BAE_DEBUG=1 an out-of-range slot raises IndexError.
    cdef int push_unchecked(self, Py_ssize_t slot, double value) except -1 nogil
