"""Per-record checks of input records. Each writes a code per record into ``codes``
(indices of ``wire.RECORD_REASONS``) and returns how many records are bad."""

import numpy as np
from numba import njit

from . import JIT

OK, NON_FINITE, NEGATIVE, SKEW, BAD_ENUM, BAD_INTERVAL, BAD_ID = 0, 1, 2, 3, 4, 5, 6
NO_ID = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(**JIT)
def check_requests(ts, user, resource, latency, status, lo, hi, codes):
    bad = 0
    for i in range(ts.shape[0]):
        c = OK
        lat = latency[i]
        if not np.isfinite(lat):
            c = NON_FINITE
        elif lat < 0:
            c = NEGATIVE
        elif ts[i] < lo or ts[i] > hi:
            c = SKEW
        elif user[i] == NO_ID or resource[i] == NO_ID:
            c = BAD_ID
        elif status[i] > 999:
            c = BAD_ENUM
        codes[i] = c
        bad += c != OK
    return bad


@njit(**JIT)
def check_metrics(ts, cpu, db_ms, lo, hi, codes):
    bad = 0
    for i in range(ts.shape[0]):
        c = OK
        if not (np.isfinite(cpu[i]) and np.isfinite(db_ms[i])):
            c = NON_FINITE
        elif cpu[i] < 0 or db_ms[i] < 0:
            c = NEGATIVE
        elif ts[i] < lo or ts[i] > hi:
            c = SKEW
        codes[i] = c
        bad += c != OK
    return bad


@njit(**JIT)
def check_contexts(ts, start, end, mult, lo, hi, codes):
    bad = 0
    for i in range(ts.shape[0]):
        c = OK
        if not np.isfinite(mult[i]):
            c = NON_FINITE
        elif mult[i] <= 0 or start[i] < 0:
            c = NEGATIVE
        elif ts[i] < lo or ts[i] > hi:
            c = SKEW
        elif end[i] <= start[i]:
            c = BAD_INTERVAL
        codes[i] = c
        bad += c != OK
    return bad


@njit(**JIT)
def check_profiles(ts, user, tier, lo, hi, codes):
    bad = 0
    for i in range(ts.shape[0]):
        c = OK
        if ts[i] < lo or ts[i] > hi:
            c = SKEW
        elif user[i] == NO_ID:
            c = BAD_ID
        elif tier[i] > 2:
            c = BAD_ENUM
        codes[i] = c
        bad += c != OK
    return bad
