"""Columnar state containers: one numpy array per field, indexed by slot.

``Columns`` grows its arrays with its slot map, resets the fields of reused slots, and
hands out checkpoint parts in chunks of rows (only chunks marked dirty, when asked) so a
checkpoint of millions of users is copied a piece at a time.
"""

from __future__ import annotations

import numpy as np

from ext.ringbuf import RingBuffer

from .kernels.hashmap import cached_slots
from .kernels.holt_winters import RATE_FILL, R_WIDTH
from .kernels.rates import IDLE_BINS
from .kernels.residuals import ERR_BINS
from .policy import WINDOW_SLOTS
from .slots import EMPTY, SlotMap

CHUNK_SHIFT = 14
CHUNK = 1 << CHUNK_SHIFT  # rows per checkpoint chunk and per dirty flag (<= 1.5 MiB a part)
HOURS = 24


CACHE = 1 << 12  # direct-mapped service id cache entries


def _full(shape, fill, dtype) -> np.ndarray:
    """Like np.full, but zero fills come from calloc: pages are only touched when used."""
    if np.isscalar(fill) and fill == 0:
        return np.zeros(shape, dtype)
    return np.full(shape, fill, dtype)


def _grow(a: np.ndarray, n: int, fill) -> np.ndarray:
    if len(a) >= n:
        return a
    out = _full((max(n, 2 * len(a)),) + a.shape[1:], fill, a.dtype)
    out[: len(a)] = a
    return out


class Columns:
    """Arrays named in ``FIELDS`` (name -> (dtype, fill, trailing shape)) plus a slot map.

    ``dirty`` holds one flag per ``CHUNK`` rows; kernels and setters mark rows they change.
    """

    FIELDS: dict[str, tuple] = {}

    def __init__(self, capacity: int = 1024, extra: dict[str, tuple] | None = None):
        self.fields = dict(self.FIELDS, **(extra or {}))
        self.slots = SlotMap(capacity)
        for f, (dt, fill, shape) in self.fields.items():
            setattr(self, f, _full((self.slots.capacity,) + shape, fill, dt))
        self.dirty = np.ones(1, np.uint8)

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def rows(self) -> int:
        """Slots handed out so far (live or free): the rows that hold state."""
        return self.slots.high_water

    def ensure(self) -> None:
        """Grow every array to the slot map's capacity."""
        n = self.slots.capacity
        first = next(iter(self.fields))
        if len(getattr(self, first)) < n:
            for f, (_, fill, _) in self.fields.items():
                setattr(self, f, _grow(getattr(self, f), n, fill))
        chunks = -(-n // CHUNK)
        if len(self.dirty) < chunks:
            self.dirty = _grow(self.dirty, chunks, 1)

    def assign(self, ids: np.ndarray) -> np.ndarray:
        """Slots for ``ids`` (new ids get fresh or reused slots with reset fields)."""
        fresh_from = self.slots.high_water  # slots at or above it still hold their fills
        slots = self.slots.slots_for(ids)
        self.ensure()
        new = self.slots.last_new
        if len(new):
            reused = new[new < fresh_from]
            if len(reused):
                self.reset(reused)
            self.mark(new)
        return slots

    def reset(self, slots: np.ndarray) -> None:
        for f, (_, fill, _) in self.fields.items():
            getattr(self, f)[slots] = fill
        self.mark(slots)

    def mark(self, slots: np.ndarray) -> None:
        self.dirty[np.asarray(slots) // CHUNK] = 1

    def parts(self, prefix: str, dirty_only: bool):
        """Yield (key, copy) per field and chunk of rows; clears the flags it copies."""
        n = self.rows
        yield f"{prefix}.rows", np.array([n], np.int64)
        for c in range(-(-n // CHUNK)):
            if dirty_only and not self.dirty[c]:
                continue
            lo, hi = c * CHUNK, min(n, (c + 1) * CHUNK)
            yield f"{prefix}.ids.{c:06d}", self.slots.ids[lo:hi].copy()
            for f in self.fields:
                yield f"{prefix}.{f}.{c:06d}", getattr(self, f)[lo:hi].copy()
            self.dirty[c] = 0

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``parts`` produced (chunks of a field may come from several
        checkpoints; fields missing from the checkpoint keep their fill)."""
        n = int(arrays[f"{prefix}.rows"][0])
        ids = [arrays[f"{prefix}.ids.{c:06d}"] for c in range(-(-n // CHUNK))]
        self.slots = SlotMap.from_state({"ids": np.concatenate(ids) if ids else
                                         np.zeros(0, np.uint64)})
        self.ensure()
        n = self.rows
        for c in range(-(-n // CHUNK)):
            lo = c * CHUNK
            for f, (_, _, shape) in self.fields.items():
                a = arrays.get(f"{prefix}.{f}.{c:06d}")
                if a is not None and a.shape[1:] == shape:
                    getattr(self, f)[lo:lo + len(a)] = a
        self.dirty[:] = 0


class Users(Columns):
    """Per-user state: last seen, segment, SLA tier, hour-of-day request counts (their sum
    is the user's request count), the light Holt-Winters tier (``rate``, see ``kernels.holt_winters``), and (when ``recent`` > 0) a Cython ring of the times
    (Unix seconds) of the user's latest requests."""

    FIELDS = {"last_seen_us": (np.int64, 0, ()), "segment": (np.uint32, 0, ()),
              "tier": (np.uint8, 0, ()), "hourly": (np.float32, 0.0, (HOURS,)),
              "rate": (np.float32, RATE_FILL, (R_WIDTH,)), "geo": (np.uint16, 0, ()),
              "device": (np.uint8, 0, ())}

    def __init__(self, capacity: int = 1024, recent: int = 0):
        super().__init__(capacity)
        self.recent = RingBuffer(self.slots.capacity, recent) if recent > 0 else None

    def ensure(self) -> None:
        super().ensure()
        if self.recent is not None and self.recent.n_series < self.slots.capacity:
            self.recent.grow(self.slots.capacity)

    def reset(self, slots: np.ndarray) -> None:
        super().reset(slots)
        if self.recent is not None:
            self.recent.clear_slots(np.ascontiguousarray(slots, np.int64))

    def parts(self, prefix: str, dirty_only: bool):
        dirty = self.dirty.copy()
        yield from super().parts(prefix, dirty_only)
        if self.recent is None:
            return
        for c in range(-(-self.rows // CHUNK)):
            if dirty_only and not dirty[c]:
                continue
            rows = self.recent.rows(c * CHUNK, min(self.rows, (c + 1) * CHUNK))
            for k, v in rows.items():
                yield f"{prefix}.recent_{k}.{c:06d}", v

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        super().load(prefix, arrays)
        if self.recent is None:
            return
        for c in range(-(-self.rows // CHUNK)):
            got = {k: arrays.get(f"{prefix}.recent_{k}.{c:06d}")
                   for k in ("values", "pos", "count")}
            if all(v is not None for v in got.values()) and \
                    got["values"].shape[1:] == (self.recent.capacity,):
                self.recent.set_rows(c * CHUNK, **got)


class Segments(Columns):
    """Per-segment aggregates, including the folded behaviour of evicted users, and the
    requests of the seasonal step being counted (the segment series' next value)."""

    FIELDS = {"requests": (np.int64, 0, ()), "users_evicted": (np.int64, 0, ()),
              "hourly": (np.float32, 0.0, (HOURS,)),
              "step_count": (np.float64, 0.0, ())}  # requests in the current seasonal step


class Services(Columns):
    """Per-service state: bucket rings, smoothing, history, capacity, allocation and the
    policy's memory (idle times, tier mix, learned start-up time, rate limits)."""

    FIELDS = {
        "closed": (np.int64, -1, ()), "level": (np.float64, 0.0, ()),
        "trend": (np.float64, 0.0, ()), "n_obs": (np.int64, 0, ()),
        "late_dropped": (np.int64, 0, ()), "requests": (np.int64, 0, ()),
        "errors": (np.int64, 0, ()), "bytes": (np.float64, 0.0, ()),
        "latency_ms": (np.float64, 0.0, ()), "observed_replicas": (np.uint32, 0, ()),
        "cpu": (np.float64, 0.0, ()), "learned_rps_per_replica": (np.float64, 0.0, ()),
        "cap_rate": (np.float64, 0.0, ()), "cap_busy": (np.float64, 0.0, ()),
        "metric_busy": (np.float64, np.nan, ()), "metric_us": (np.int64, 0, ()),
        "desired": (np.int64, 0, ()), "published": (np.int64, -1, ()),
        "down_ring": (np.int64, 0, (WINDOW_SLOTS,)), "down_slot": (np.int64, -1, (WINDOW_SLOTS,)),
        "fed": (np.int64, 0, ()),  # closed buckets already handed to the models
        "agg_sum": (np.float64, 0.0, ()),  # closed buckets summed towards one seasonal step
        "agg_n": (np.int64, 0, ()),
        # policy
        "last_req_us": (np.int64, 0, ()), "idle_hist": (np.float64, 0.0, (IDLE_BINS,)),
        "tier_counts": (np.float64, 0.0, (3,)), "tier_pub": (np.int64, -1, (3,)),
        "startup_s": (np.float64, 0.0, ()),  # learned: scale-up order -> replicas serving
        "order_us": (np.int64, -1, ()), "order_target": (np.int64, 0, ()),
        "panic_until_us": (np.int64, 0, ()), "last_up_us": (np.int64, 0, ()),
        "last_down_us": (np.int64, 0, ()), "prewarm_for_us": (np.int64, -1, ()),
        "peak_warm_us": (np.int64, -1, ()),
        "camp_base": (np.float64, 0.0, ()),  # forecast before the campaign in effect
        # forecast errors of the rate (decayed histogram) and the forecast being scored
        "err_hist": (np.float32, 0.0, (ERR_BINS,)), "err_fc": (np.float64, -1.0, ()),
        # the closed buckets' rates themselves (same bins and half-life)
        "demand_hist": (np.float32, 0.0, (ERR_BINS,)),
    }

    def __init__(self, ring: int, history: int, capacity: int = 64):
        self.ring = ring
        super().__init__(capacity, {"ring_ids": (np.int64, -1, (ring,)),
                                    "ring_counts": (np.float64, 0.0, (ring,)),
                                    "hist": (np.float64, 0.0, (history,))})
        self._cache_ids = np.full(CACHE, EMPTY, np.uint64)
        self._cache_slots = np.zeros(CACHE, np.int64)

    def assign(self, ids: np.ndarray) -> np.ndarray:
        """Slots for ``ids``: a few thousand services at most, so a direct-mapped cache in
        front of the slot map answers almost every batch in one kernel call."""
        out = np.empty(len(ids), np.int64)
        if cached_slots(ids, self._cache_ids, self._cache_slots, out) == 0:
            return out
        out = super().assign(ids)
        h = np.asarray(ids, np.uint64) & np.uint64(CACHE - 1)
        self._cache_ids[h] = ids
        self._cache_slots[h] = out
        return out

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        super().load(prefix, arrays)
        self._cache_ids[:] = EMPTY
