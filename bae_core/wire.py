"""Wire protocol v1: the numpy mirror of docs/protocol.md.

Every message starts with a 32-byte little-endian header frame; the records follow in one
body frame as fixed-size little-endian structs, so decoding is a cast (``np.frombuffer``),
not a parse. ``record_size`` in the header is the SBE block length: a v1 reader strides by
it and so skips fields that a later writer appended.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from . import errors
from .kernels import validate as _vk

MAGIC = b"BAEW"
VERSION = 1
HEADER = struct.Struct("<4sHHHHIQQ")  # magic version type record_size flags count producer sequence
HEADER_SIZE = HEADER.size  # 32
DEFAULT_MAX_RECORDS = 65536

ALL = 0xFFFFFFFF  # segment/service wildcard in CONTEXT records
NO_ID = 0xFFFFFFFFFFFFFFFF  # reserved: never a valid user or resource id
NAME_BYTES = 54

FLAG_ADVISORY = 0x0001  # output: shadow mode, the balancer should log, not act
FLAG_REJECTED = 0x0002  # ACK: the message was rejected for good; do not resend it
FLAG_DUPLICATE = 0x0004  # ACK: already in the journal; acknowledged again


class MsgType(IntEnum):
    # inputs (producer -> daemon)
    REQUEST = 1
    METRIC = 2
    CONTEXT = 3
    PROFILE = 4
    NAME = 5  # also an output: names of ids used in deltas
    # outputs (daemon -> balancer)
    ALLOCATION = 16
    PREWARM = 17
    TIER = 18
    PREFETCH = 19
    # control
    SNAPSHOT_REQUEST = 32
    SNAPSHOT_END = 33
    HEARTBEAT = 34
    ACK = 35  # durable ingest: the message (producer, sequence) is in the journal


class NameKind(IntEnum):
    USER = 1
    RESOURCE = 2
    SERVICE = 3
    SEGMENT = 4
    GEO = 5
    DEVICE = 6
    CAMPAIGN = 7


class Tier(IntEnum):
    BRONZE = 0
    SILVER = 1
    GOLD = 2


class Reason(IntEnum):
    """Bits of ALLOCATION.reasons: why the delta was made."""

    SCALE_UP = 1
    SCALE_DOWN = 2
    PANIC = 4
    DEFAULT_CAPACITY = 8
    CAMPAIGN = 16
    ANOMALY = 32
    FIRST = 64
    # the forecaster with the largest weight in the service's ensemble
    MODEL_HOLT_WINTERS = 128
    MODEL_ARIMA = 256
    MODEL_LSTM = 512
    MODEL_PROPHET = 1024


class PrewarmReason(IntEnum):
    """PREWARM.reason: why capacity should be ready at ``at_us``."""

    IDLE_RETURN = 1  # an idle service's traffic is expected back (idle-time histogram)
    PEAK = 2  # the forecast peaks within the hour


def _dt(fields):
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [f[1] for f in fields],
            "offsets": [f[2] for f in fields],
            "itemsize": fields[-1][2] + np.dtype(fields[-1][1]).itemsize,
        }
    )


REQUEST = _dt([
    ("ts_us", "<i8", 0), ("user", "<u8", 8), ("resource", "<u8", 16), ("bytes", "<u8", 24),
    ("service", "<u4", 32), ("latency_ms", "<f4", 36), ("status", "<u2", 40),
    ("geo", "<u2", 42), ("device", "u1", 44), ("reserved", "3u1", 45),
])
METRIC = _dt([
    ("ts_us", "<i8", 0), ("memory_bytes", "<u8", 8), ("service", "<u4", 16),
    ("replicas", "<u4", 20), ("cpu", "<f4", 24), ("db_query_ms", "<f4", 28),
])
CONTEXT = _dt([
    ("ts_us", "<i8", 0), ("start_us", "<i8", 8), ("end_us", "<i8", 16), ("campaign", "<u4", 24),
    ("segment", "<u4", 28), ("service", "<u4", 32), ("multiplier", "<f4", 36),
])
PROFILE = _dt([
    ("ts_us", "<i8", 0), ("user", "<u8", 8), ("segment", "<u4", 16), ("tier", "u1", 20),
    ("reserved", "3u1", 21),
])
NAME = _dt([
    ("id", "<u8", 0), ("kind", "u1", 8), ("length", "u1", 9), ("name", f"{NAME_BYTES}u1", 10),
])
ALLOCATION = _dt([
    ("ts_us", "<i8", 0), ("service", "<u4", 8), ("desired_replicas", "<u4", 12),
    ("previous_replicas", "<u4", 16), ("observed_replicas", "<u4", 20),
    ("predicted_rps", "<f4", 24), ("rps_per_replica", "<f4", 28), ("base_forecast", "<f4", 32),
    ("context_adjustment", "<f4", 36), ("anomaly_multiplier", "<f4", 40),
    ("lead_time_s", "<f4", 44), ("reasons", "<u4", 48), ("tier", "u1", 52),
    ("reserved", "3u1", 53),
])
PREWARM = _dt([
    ("ts_us", "<i8", 0), ("at_us", "<i8", 8), ("service", "<u4", 16), ("replicas", "<u4", 20),
    ("reason", "<u4", 24), ("confidence", "<f4", 28),
])
TIER = _dt([
    ("ts_us", "<i8", 0), ("service", "<u4", 8), ("tier", "u1", 12), ("reserved", "3u1", 13),
    ("replicas", "<u4", 16), ("maxconn", "<u4", 20), ("quantile", "<f4", 24),
    ("headroom", "<f4", 28),
])
PREFETCH = _dt([
    ("ts_us", "<i8", 0), ("resource", "<u8", 8), ("service", "<u4", 16), ("rank", "<u2", 20),
    ("reserved", "<u2", 22), ("probability", "<f4", 24), ("expected_hits", "<f4", 28),
])
EMPTY = np.dtype([])

DTYPES: dict[MsgType, np.dtype] = {
    MsgType.REQUEST: REQUEST, MsgType.METRIC: METRIC, MsgType.CONTEXT: CONTEXT,
    MsgType.PROFILE: PROFILE, MsgType.NAME: NAME, MsgType.ALLOCATION: ALLOCATION,
    MsgType.PREWARM: PREWARM, MsgType.TIER: TIER, MsgType.PREFETCH: PREFETCH,
}
INPUT_TYPES = frozenset({MsgType.REQUEST, MsgType.METRIC, MsgType.CONTEXT, MsgType.PROFILE,
                         MsgType.NAME})
CONTROL_TYPES = frozenset({MsgType.SNAPSHOT_REQUEST, MsgType.SNAPSHOT_END, MsgType.HEARTBEAT,
                           MsgType.ACK})
TOPICS: dict[MsgType, bytes] = {
    MsgType.ALLOCATION: b"alloc", MsgType.PREWARM: b"prewarm", MsgType.TIER: b"tier",
    MsgType.PREFETCH: b"prefetch", MsgType.NAME: b"name", MsgType.HEARTBEAT: b"hb",
    MsgType.SNAPSHOT_END: b"end",
}

# Record-level rejection codes written by the validation kernels (index = code).
RECORD_REASONS = ("ok", "non_finite", "negative", "timestamp_skew", "bad_enum",
                  "bad_interval", "bad_id", "bad_name")


class Header(NamedTuple):
    version: int
    type: MsgType
    record_size: int
    flags: int
    count: int
    producer: int
    sequence: int


_strided: dict[tuple[MsgType, int], np.dtype] = {}


def _dtype_for(mtype: MsgType, record_size: int) -> np.dtype:
    """The v1 dtype of ``mtype`` widened to ``record_size`` (fields a newer writer appended)."""
    base = DTYPES[mtype]
    if record_size == base.itemsize:
        return base
    key = (mtype, record_size)
    dt = _strided.get(key)
    if dt is None:
        fields = base.fields
        dt = np.dtype({"names": list(fields), "formats": [fields[n][0] for n in fields],
                       "offsets": [fields[n][1] for n in fields], "itemsize": record_size})
        _strided[key] = dt
    return dt


def decode_header(buf) -> Header:
    """Parse and check a header frame. Raises a ``WireError`` subclass naming the reason."""
    mv = memoryview(buf)
    if mv.nbytes != HEADER_SIZE:
        raise errors.BadHeader(f"header frame is {mv.nbytes} bytes, protocol v1 needs "
                               f"{HEADER_SIZE}")
    magic, version, mtype, rsize, flags, count, producer, seq = HEADER.unpack(mv)
    if magic != MAGIC:
        raise errors.BadMagic(f"frame starts with {magic!r}, not {MAGIC!r}: is the sender "
                              "speaking BAE protocol v1?")
    if version != VERSION:
        raise errors.UnsupportedVersion(f"version {version}; this daemon reads version "
                                        f"{VERSION} only: upgrade it or downgrade the sender")
    try:
        mt = MsgType(mtype)
    except ValueError:
        e = errors.UnknownType(f"message type {mtype} is not defined in protocol v1")
        e.producer, e.sequence = producer, seq  # lets a subscriber skip it in order
        raise e from None
    base = DTYPES.get(mt)
    problem = None
    if base is None and rsize != 0:
        problem = f"{mt.name} carries no records but record_size={rsize}"
    elif base is not None and rsize < base.itemsize:
        problem = f"{mt.name} records are at least {base.itemsize} bytes, header says {rsize}"
    if problem:
        e = errors.BadRecordSize(problem)
        e.count = count
        raise e
    return Header(version, mt, rsize, flags, count, producer, seq)


def decode(frames, *, max_records: int = DEFAULT_MAX_RECORDS,
           accept: frozenset = INPUT_TYPES) -> tuple[Header, np.ndarray]:
    """Decode a ``[header, body]`` message into its header and a zero-copy record array.

    ``frames`` holds bytes, memoryviews or zmq Frames. Raises a ``WireError`` subclass on
    any malformed input; never anything else.
    """
    if len(frames) != 2:
        raise errors.BadFrameCount(f"{len(frames)} frames; a v1 message is [header, body]")
    try:
        hdr = decode_header(_buffer(frames[0]))
    except errors.BadRecordSize as e:
        e.count = min(e.count, max_records)
        raise
    try:
        return hdr, _records(hdr, frames[1], max_records, accept)
    except errors.WireError as e:
        e.count = min(hdr.count, max_records)  # records the rejected frame declared
        raise


def _records(hdr: Header, body_frame, max_records: int, accept: frozenset) -> np.ndarray:
    if hdr.type not in accept:
        raise errors.UnexpectedType(f"{hdr.type.name} is not accepted on this socket")
    body = memoryview(_buffer(body_frame))
    if hdr.count > max_records:
        raise errors.OversizedFrame(f"{hdr.count} records, the limit is {max_records}: "
                                    "split the batch or raise ingest.max_records_per_frame")
    if hdr.type not in DTYPES:
        if body.nbytes or hdr.count:
            raise errors.CountMismatch(f"{hdr.type.name} has no body, got {body.nbytes} bytes")
        return np.empty(0, EMPTY)
    want = hdr.count * hdr.record_size
    if body.nbytes < want:
        raise errors.TruncatedFrame(f"body is {body.nbytes} bytes, {hdr.count} records of "
                                    f"{hdr.record_size} need {want}")
    if body.nbytes > want:
        raise errors.CountMismatch(f"body is {body.nbytes} bytes, {hdr.count} records of "
                                   f"{hdr.record_size} need exactly {want}")
    return np.frombuffer(body, dtype=_dtype_for(hdr.type, hdr.record_size), count=hdr.count)


def _buffer(frame):
    return frame.buffer if hasattr(frame, "buffer") else frame


def encode_header(mtype: MsgType, count: int, producer: int, sequence: int, flags: int = 0,
                  record_size: int | None = None) -> bytes:
    if record_size is None:
        dt = DTYPES.get(mtype)
        record_size = dt.itemsize if dt is not None else 0
    return HEADER.pack(MAGIC, VERSION, int(mtype), record_size, flags, count, producer, sequence)


def encode(mtype: MsgType, records: np.ndarray | None, producer: int, sequence: int,
           flags: int = 0) -> list[bytes]:
    """Build a ``[header, body]`` message from a record array of ``DTYPES[mtype]``."""
    if records is None or mtype not in DTYPES:
        return [encode_header(mtype, 0, producer, sequence, flags), b""]
    if records.dtype != DTYPES[mtype]:
        records = records.astype(DTYPES[mtype])
    if "reserved" in records.dtype.names and records["reserved"].any():
        records = records.copy()
        records["reserved"] = 0
    return [encode_header(mtype, len(records), producer, sequence, flags),
            np.ascontiguousarray(records).tobytes()]


def validate(mtype: MsgType, recs: np.ndarray, now_us: int, max_past_us: int,
             max_future_us: int) -> np.ndarray | None:
    """Per-record checks. Returns None when every record is valid, else a uint8 code per
    record (0 = valid, others index ``RECORD_REASONS``)."""
    n = len(recs)
    if n == 0:
        return None
    codes = np.zeros(n, np.uint8)
    lo = now_us - max_past_us if max_past_us > 0 else np.iinfo(np.int64).min
    hi = now_us + max_future_us if max_future_us > 0 else np.iinfo(np.int64).max
    if mtype == MsgType.REQUEST:
        bad = _vk.check_requests(recs["ts_us"], recs["user"], recs["resource"],
                                 recs["latency_ms"], recs["status"], lo, hi, codes)
    elif mtype == MsgType.METRIC:
        bad = _vk.check_metrics(recs["ts_us"], recs["cpu"], recs["db_query_ms"], lo, hi, codes)
    elif mtype == MsgType.CONTEXT:
        bad = _vk.check_contexts(recs["ts_us"], recs["start_us"], recs["end_us"],
                                 recs["multiplier"], lo, hi, codes)
    elif mtype == MsgType.PROFILE:
        bad = _vk.check_profiles(recs["ts_us"], recs["user"], recs["tier"], lo, hi, codes)
    elif mtype == MsgType.NAME:
        bad = _check_names(recs, codes)
    else:
        bad = 0
    return codes if bad else None


def _check_names(recs: np.ndarray, codes: np.ndarray) -> int:
    bad = 0
    for i in range(len(recs)):
        kind, length = int(recs["kind"][i]), int(recs["length"][i])
        if kind < NameKind.USER or kind > NameKind.CAMPAIGN:
            codes[i] = RECORD_REASONS.index("bad_enum")
        elif length == 0 or length > NAME_BYTES:
            codes[i] = RECORD_REASONS.index("bad_name")
        else:
            try:
                recs["name"][i, :length].tobytes().decode("utf-8")
            except UnicodeDecodeError:
                codes[i] = RECORD_REASONS.index("bad_name")
        bad += codes[i] != 0
    return bad


def name_str(rec) -> str:
    """The name of one valid NAME record."""
    return bytes(rec["name"][: rec["length"]]).decode("utf-8")


def make_names(kind: NameKind, ids, names) -> np.ndarray:
    """NAME records for parallel sequences of ids and strings (longer names are cut at a
    character boundary to 54 bytes)."""
    n = len(ids)
    out = np.zeros(n, NAME)
    if n == 0:
        return out
    enc = []
    for s in names:
        b = s.encode("utf-8")
        if len(b) > NAME_BYTES:
            b = b[:NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
        enc.append(b)
    out["id"] = np.array(ids, dtype=np.uint64)
    out["kind"] = int(kind)
    out["length"] = np.array([len(b) for b in enc], dtype=np.uint8)
    out["name"] = np.frombuffer(b"".join(b.ljust(NAME_BYTES, b"\0") for b in enc),
                                dtype=np.uint8).reshape(n, NAME_BYTES)
    return out
