"""Seeded, reproducible input for the ingest benchmarks.

Everything here is a pure function of its ``seed``: the same seed gives the same bytes on
every machine (numpy's PCG64 ``default_rng``), so two runs differ only in the machine.

* Users: ``N_USERS`` (1,000,000) distinct 64-bit ids, the splitmix64 image of 1..N (a
  bijection, so unique without a check, and scattered like real hashed ids).
* Popularity: bounded Zipf over the users (rank k drawn with weight 1/k**ZIPF_S, the rank
  order itself a seeded permutation of the ids) or uniform.
* Services: ``N_SERVICES`` (~50) random u32 ids with a milder Zipf skew.
* Timestamps: "near now", spread over one second at most ~10 s before the call, inside
  one rate bucket (the daemon rejects records more than ``ingest.max_past_s`` old; a
  whole ``make bench`` fits well inside).
"""

from __future__ import annotations

import time

import numpy as np

from bae_core import wire

SEED = 0xBAE
N_USERS = 1_000_000
N_SERVICES = 50
N_RESOURCES = 100_000
ZIPF_S = 1.0  # user popularity exponent (web traffic is usually 0.8..1.2)
SERVICE_ZIPF_S = 0.8
RECORDS_PER_FRAME = 1024
FRAMES = 2000  # messages per round of the 1,024-record benchmarks: 2,048,000 events
SINGLE = 20000  # messages per round of the one-event-per-message baseline
BUCKET_US = 10_000_000  # config default model.bucket_s

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser over a uint64 array: a bijection of u64."""
    x = np.asarray(x, np.uint64).copy()
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def user_ids(n: int = N_USERS, seed: int = SEED) -> np.ndarray:
    """``n`` distinct user ids (never ``wire.NO_ID``), in popularity-rank order."""
    base = np.uint64(seed) << np.uint64(32)
    ids = splitmix64(np.arange(1, n + 1, dtype=np.uint64) + base)
    assert not (ids == _M64).any()
    return ids


def zipf_cdf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    c = np.cumsum(w)
    c /= c[-1]
    return c


def draw_ranks(rng: np.random.Generator, size: int, n: int, dist: str,
               s: float = ZIPF_S, cdf: np.ndarray | None = None) -> np.ndarray:
    """``size`` indices in 0..n-1: bounded Zipf (rank 0 the most popular) or uniform."""
    if dist == "uniform":
        return rng.integers(0, n, size)
    if dist == "zipf":
        cdf = zipf_cdf(n, s) if cdf is None else cdf
        return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n - 1)
    raise ValueError(f"unknown distribution {dist!r}")


def requests(users: np.ndarray, now_us: int | None = None, *, seed: int = SEED,
             spread_us: int = 1_000_000, bucket_us: int = BUCKET_US,
             n_services: int = N_SERVICES) -> np.ndarray:
    """REQUEST records, one per entry of ``users`` (user ids, in stream order).

    Every record passes ``wire.validate``: finite non-negative latency, status <= 999, ids
    other than NO_ID, timestamps in a ``spread_us`` window ending at ``now`` (within the
    engine's lateness tolerance, so none is dropped as late)."""
    rng = np.random.default_rng([seed, 1])
    n = len(users)
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    assert spread_us <= bucket_us
    lo = now_us - spread_us
    services = np.unique(splitmix64(np.arange(n_services, dtype=np.uint64) + np.uint64(seed))
                         >> np.uint64(40)).astype(np.uint32) + np.uint32(1)
    assert len(services) == n_services  # distinct, never wire.ALL
    services = services[rng.permutation(n_services)]
    r = np.zeros(n, wire.REQUEST)
    r["ts_us"] = lo + rng.integers(0, spread_us, n)
    r["user"] = users
    r["resource"] = draw_ranks(rng, n, N_RESOURCES, "zipf", 1.0)
    r["bytes"] = rng.lognormal(8.0, 1.5, n).astype(np.uint64)
    r["service"] = services[draw_ranks(rng, n, n_services, "zipf", SERVICE_ZIPF_S)]
    r["latency_ms"] = rng.gamma(2.0, 15.0, n).astype(np.float32)
    r["status"] = rng.choice(np.array([200, 200, 200, 200, 200, 200, 304, 404, 500, 503],
                                      np.uint16), n)
    r["geo"] = rng.integers(0, 250, n)
    r["device"] = rng.integers(0, 4, n)
    return r


def zipf_users(n_events: int, *, seed: int = SEED, n_users: int = N_USERS,
               dist: str = "zipf") -> np.ndarray:
    """A stream of ``n_events`` user ids drawn from ``dist`` over ``n_users`` users."""
    rng = np.random.default_rng([seed, 2])
    ids = user_ids(n_users, seed)[rng.permutation(n_users)]
    return ids[draw_ranks(rng, n_events, n_users, dist)]


def covering_users(extra: int, dist: str, *, seed: int = SEED,
                   n_users: int = N_USERS) -> np.ndarray:
    """A stream in which every one of ``n_users`` ids appears: each id once (its first
    visit) plus ``extra`` repeat visits drawn from ``dist``, shuffled together.

    Drawing until every id has appeared would take ~n ln n events even when uniform
    (~14 M for 1 M users) and far more under Zipf, so the arrivals are built in: the
    engine still sees 1 M new users interleaved with popular, cache-hot ones."""
    rng = np.random.default_rng([seed, 3, 0 if dist == "zipf" else 1])
    ids = user_ids(n_users, seed)[rng.permutation(n_users)]
    stream = np.concatenate([ids, ids[draw_ranks(rng, extra, n_users, dist)]])
    rng.shuffle(stream)
    return stream


def bodies(recs: np.ndarray, per_frame: int = RECORDS_PER_FRAME) -> list[bytes]:
    """Body frames of ``per_frame`` records each (the tail that does not fill one is
    dropped)."""
    raw = np.ascontiguousarray(recs, wire.REQUEST).tobytes()
    step = per_frame * wire.REQUEST.itemsize
    return [raw[i:i + step] for i in range(0, len(raw) - step + 1, step)]


def headers(n: int, per_frame: int, producer: int, first_seq: int = 0) -> list[bytes]:
    """Header frames for ``n`` REQUEST messages of one producer, in sequence."""
    return [wire.encode_header(wire.MsgType.REQUEST, per_frame, producer, first_seq + i)
            for i in range(n)]
